"""Point the unmodified AWS SDKs (boto3, the SageMaker SDK v2) at the local cloud, inside this kernel.

`AWS_ENDPOINT_URL` does most of it. The SageMaker SDK needs three things more:
- it builds its STS client with an explicit regional URL (https://sts.<region>.amazonaws.com), which
  AWS_ENDPOINT_URL does not override: botocore clients asked for an *.amazonaws.com URL get the local cloud's;
- it sends telemetry unless a SageMaker config file opts out: we write one into the state folder;
- its waiters sleep 5 s per training-job poll and 30 s per endpoint poll: on the local cloud jobs take seconds,
  so its sleeps are capped at FAST_POLL_S (set LABCLOUD_FAST_POLL=0 to keep the SDK's own timing);
- with a config file, it re-checks its constant JSON schema against the metaschema on every config lookup
  (about 0.1 s each, some twenty per `deploy()`): the schema is checked once, each config still validated;
- it parses botocore's endpoints file (about 0.1 s) each time it resolves a region's endpoint, several times
  per `fit()`: the resolver, which never changes, is built once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import types
from pathlib import Path
from urllib.parse import urlparse

from .on_import import after_import

FAST_POLL_S = 0.1
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
    # The SDK turns on INFO logging for the whole process (basicConfig in sagemaker.experiments); keep its own
    # job messages, not botocore's "Found endpoint ... via environment_global" or the opt-out notice on every call.
    for noisy in ("sagemaker.config", "sagemaker.telemetry", "sagemaker.image_uris", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sdk_status_to_stdout("sagemaker")
    _redirect_aws_urls()
    if os.environ.get("LABCLOUD_FAST_POLL", "1") != "0":
        after_import("sagemaker.session", _fast_sagemaker_polls)
    after_import("sagemaker.config.config", _check_config_schema_once)
    after_import("sagemaker.utils", _resolve_endpoints_once)
    after_import("sagemaker_core.main.utils", _keep_ipython_tracebacks)
    return env


def is_local() -> bool:
    return os.environ.get("LABCLOUD_BACKEND") == "local" and bool(os.environ.get("AWS_ENDPOINT_URL"))


# --- the SDK's status messages: one plain line on stdout, not a pink stderr box --------------------------------


class StreamAtWrite(logging.Handler):
    """Writes records to `sys.<stream>` as it is when written: ipykernel and pytest replace it."""

    def __init__(self, stream: str, level: int, form: str) -> None:
        super().__init__(level)
        self.stream = stream
        self.setFormatter(logging.Formatter(form))

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=getattr(sys, self.stream), flush=True)


def sdk_status_to_stdout(logger_name: str) -> None:
    """`logger_name`'s INFO messages ("Creating model with name: ...") as plain lines on stdout, which a notebook
    shows as progress, and its warnings and errors on stderr: in place of the root logger's stderr handler, which
    the SDK itself installs at INFO (`basicConfig` in sagemaker.experiments). Once per logger."""
    logger = logging.getLogger(logger_name)
    if any(isinstance(handler, StreamAtWrite) for handler in logger.handlers):
        return
    status = StreamAtWrite("stdout", logging.INFO, "%(message)s")
    status.addFilter(lambda record: record.levelno < logging.WARNING)
    logger.addHandler(status)
    logger.addHandler(StreamAtWrite("stderr", logging.WARNING, "%(levelname)s:%(name)s:%(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False


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


class FastTime(types.ModuleType):
    """The `time` module as sagemaker.session sees it: the same, except that sleeps are short locally, and its
    clock counts each shortened sleep as the full sleep asked for. The SDK's log tail (`fit()` with logs)
    re-checks the job's status only every 30 s of `time.time()`: three of its 10 s polls, 3 x FAST_POLL_S here. (A
    `timeout` given to `logs_for_job` is counted on that clock too.)"""

    def __init__(self):
        super().__init__("time")
        self._skipped_s = 0.0

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if not is_local():
            time.sleep(seconds)
            return
        short = min(seconds, FAST_POLL_S)
        time.sleep(short)
        self._skipped_s += max(0.0, seconds - short)

    def time(self) -> float:
        return time.time() + self._skipped_s


def _fast_sagemaker_polls(module) -> None:
    if getattr(module, "time", None) is time:
        module.time = FastTime()


# --- the SDK's config validation, with its schema checked once ------------------------------------------------


class _SchemaCheckedOnce(types.ModuleType):
    """`jsonschema` as sagemaker.config.config sees it: `validate` checks a schema once, then reuses its validator."""

    def __init__(self):
        super().__init__("jsonschema")
        self._validators: dict[int, tuple] = {}

    def __getattr__(self, name):
        import jsonschema

        return getattr(jsonschema, name)

    def validate(self, instance, schema, *args, **kwargs):
        import jsonschema

        if args or kwargs:
            return jsonschema.validate(instance, schema, *args, **kwargs)
        cached = self._validators.get(id(schema))
        if cached is None or cached[0] is not schema:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
            cached = self._validators[id(schema)] = (schema, validator_class(schema))
        if (error := jsonschema.exceptions.best_match(cached[1].iter_errors(instance))) is not None:
            raise error  # what jsonschema.validate raises


def _check_config_schema_once(module) -> None:
    if getattr(module, "jsonschema", None) is not None and not isinstance(module.jsonschema, _SchemaCheckedOnce):
        module.jsonschema = _SchemaCheckedOnce()


# --- botocore's endpoint resolver, built once ------------------------------------------------------------------


def _resolve_endpoints_once(module) -> None:
    resolver = getattr(module, "_botocore_resolver", None)
    if resolver is not None and not hasattr(resolver, "cache_info"):
        module._botocore_resolver = functools.cache(resolver)


def _keep_ipython_tracebacks(module) -> None:
    """sagemaker_core, imported by the SDK, installs rich tracebacks when it is imported: IPython's errors become
    panels printed as display output, so a cell's error carries no exception type any more (for the learner's
    tools, papermill or nbval). Put IPython's own traceback methods, and Python's excepthook, back."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    for name in ("_showtraceback", "showtraceback"):
        if shell is not None and _from_rich(shell.__dict__.get(name)):
            delattr(shell, name)  # the instance attribute rich set; the class's method shows again
    if _from_rich(sys.excepthook):
        sys.excepthook = sys.__excepthook__


def _from_rich(function) -> bool:
    return function is not None and getattr(function, "__module__", "").startswith("rich.")
