"""Run a patch on a module right after it is imported, or at once if it already is.

The kernel-side wiring and the cost guard both adjust third-party SDKs (a transport, a poll interval) without
importing those SDKs early: a notebook that never uses Azure never imports azure-core because of us.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder for one module name: it lets the normal loader load the module, then runs the patches on it."""

    def __init__(self, name: str, patch: Callable):
        self.name, self.patches, self._loader = name, [patch], None

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        sys.meta_path.remove(self)
        for patch in self.patches:
            patch(module)


def after_import(name: str, patch: Callable) -> None:
    """Call `patch(module)` once `name` is imported (now, if it is). Patches must be safe to run twice."""
    if name in sys.modules:
        patch(sys.modules[name])
        return
    pending = next((f for f in sys.meta_path if isinstance(f, _PatchOnImport) and f.name == name), None)
    if pending is None:
        sys.meta_path.insert(0, _PatchOnImport(name, patch))
    elif patch not in pending.patches:
        pending.patches.append(patch)
