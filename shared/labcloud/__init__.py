"""Cloud AI Lab's helper library and local cloud.

A notebook needs one call: `cloud = labcloud.connect(backend)`.
"""

__version__ = "0.1.0"

from .connect import Connection, connect  # noqa: E402

__all__ = ["Connection", "__version__", "connect"]
