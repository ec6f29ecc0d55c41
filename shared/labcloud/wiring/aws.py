"""Point the unmodified AWS SDKs (boto3, the SageMaker SDK v2) at the local cloud, inside this kernel.

`AWS_ENDPOINT_URL` does most of it. The SageMaker SDK needs three things more:
- it builds its STS client with an explicit regional URL (https://sts.<region>.amazonaws.com), which
  AWS_ENDPOINT_URL does not override: botocore clients asked for an *.amazonaws.com URL get the local cloud's;
- it sends telemetry unless a SageMaker config file opts out: we write one into the state folder;
- its waiters sleep 5 s per training-job poll and 30 s per endpoint poll: on the local cloud jobs take seconds,
  so its sleeps are capped at FAST_POLL_S (set LABCLOUD_FAST_POLL=0 to keep the SDK's own timing).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import time
import types
from pathlib import Path
from urllib.parse import urlparse

FAST_POLL_S = 0.2
CONFIG_VARIABLE = "SAGEMAKER_USER_CONFIG_OVERRIDE"
WIRED_VARIABLES = (CONFIG_VARIABLE, "SAGEMAKER_SUPPRESS_V2_WARNING")
_SAGEMAKER_CONFIG = """\
# Written by labcloud.connect("local"): no telemetry from the local cloud.
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def wire(state_dir: Path) -> dict[str, str]:
    """Install the kernel-side hooks; returns the extra environment variables it set."""
    config = Path(state_dir) / "sagemaker-config.yaml"
    if not config.exists() or config.read_text() != _SAGEMAKER_CONFIG:
        config.write_text(_SAGEMAKER_CONFIG)
    env = dict(zip(WIRED_VARIABLES, (str(config), "1"), strict=True))
    os.environ.update(env)
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # it announces where it read defaults from
    _redirect_aws_urls()
    if os.environ.get("LABCLOUD_FAST_POLL", "1") != "0":
        _after_import("sagemaker.session", _fast_sagemaker_polls)
    return env


def is_local() -> bool:
    return os.environ.get("LABCLOUD_BACKEND") == "local" and bool(os.environ.get("AWS_ENDPOINT_URL"))


# --- *.amazonaws.com -> the local cloud ----------------------------------------------------------------------

_original_create_client = None


def _redirect_aws_urls() -> None:
    global _original_create_client
    import botocore.session

    if _original_create_client is not None:
        return
    _original_create_client = botocore.session.Session.create_client

    def create_client(self, service_name, *args, endpoint_url=None, **kwargs):
        if endpoint_url and is_local() and (urlparse(endpoint_url).hostname or "").endswith(".amazonaws.com"):
            endpoint_url = os.environ["AWS_ENDPOINT_URL"]
        return _original_create_client(self, service_name, *args, endpoint_url=endpoint_url, **kwargs)

    botocore.session.Session.create_client = create_client


# --- fast polls for the SageMaker SDK's waiters ---------------------------------------------------------------


class _FastTime(types.ModuleType):
    """The `time` module as sagemaker.session sees it: the same, except that sleeps are short locally."""

    def __init__(self):
        super().__init__("time")

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, FAST_POLL_S) if is_local() else seconds)


def _fast_sagemaker_polls(module) -> None:
    if getattr(module, "time", None) is time:
        module.time = _FastTime()


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Run a patch right after a module is imported (or at once, if it already is)."""

    def __init__(self, name: str, patch):
        self.name, self.patch, self._loader = name, patch, None

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
        self.patch(module)


def _after_import(name: str, patch) -> None:
    if name in sys.modules:
        patch(sys.modules[name])
    elif not any(isinstance(f, _PatchOnImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(name, patch))
