"""The AWS services the local cloud makes real, one module per service; moto answers everything else.

Every module here with a `register(gateway, context)` function is registered when the local cloud starts.
"""

from __future__ import annotations

import importlib
import pkgutil


def register_all(gateway, context) -> list[str]:
    registered = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        if hasattr(module, "register"):
            module.register(gateway, context)
            registered.append(module_info.name)
    return registered
