"""One Lambda execution environment: imports the function's handler once (init), then serves its invocations.

The local cloud (localcloud/aws/services/awslambda.py) starts it as
`python lambda_worker.py REQUESTS_FD RESPONSES_FD`, with the function's unpacked code as the working directory
and the environment a Lambda function sees (`_HANDLER`, `LAMBDA_TASK_ROOT`, `AWS_LAMBDA_FUNCTION_NAME`, ...).
Its stdout and stderr are the function's log. It speaks one JSON line per message over the two inherited pipes:

  worker -> cloud, once:  {"type": "ready", "max_memory_mb"} | {"type": "init_error", "error": {...}}
  cloud -> worker:        {"request_id", "event", "deadline_ms", "invoked_function_arn", "client_context"}
  worker -> cloud:        {"type": "result", "payload": "<JSON text>", "duration_ms", "max_memory_mb"}
                        | {"type": "error", "error": {...}, "duration_ms", "max_memory_mb"}

Errors have the shape and the errorType names of AWS's Python runtime (awslambdaric): Runtime.ImportModuleError,
Runtime.UserCodeSyntaxError, Runtime.HandlerNotFound, Runtime.MarshalError, or the exception's class name.
It uses the standard library only: it runs with the learner's code, which should find nothing of ours on its path.
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import os
import sys
import time
import traceback


class CognitoIdentity:
    cognito_identity_id = None
    cognito_identity_pool_id = None


class ClientContext:
    def __init__(self, data: dict):
        self.client = data.get("client")
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    """The `context` argument of a handler, with the attributes of the real Python runtime's LambdaContext."""

    def __init__(self, request: dict):
        self.aws_request_id = request["request_id"]
        self.invoked_function_arn = request["invoked_function_arn"]
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]  # a string, as in the real runtime
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = CognitoIdentity()
        self.client_context = ClientContext(request["client_context"]) if request.get("client_context") else None
        self.tenant_id = None
        self._deadline_ms = request["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(message)


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


def _install_lambda_logging() -> _RequestIdFilter:
    """The runtime's root log handler: `[LEVEL]\\t<UTC time>Z\\t<request id>\\t<message>`, as on Lambda."""
    request_ids = _RequestIdFilter()
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(request_ids)
    logging.getLogger().addHandler(handler)
    return request_ids


def _max_memory_mb() -> int:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, Linux does not carry it over an exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(peak / (1024 * 1024 if sys.platform == "darwin" else 1024))


def _fault(error_type: str, message: str, stack: list[str] | None = None) -> dict:
    return {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": stack or []}


def _exception_error(exc: BaseException, request_id: str) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # drop this runtime's own frame
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def _log_error(error: dict) -> None:
    stack = "".join(error["stackTrace"])
    trace = f"\nTraceback (most recent call last):\n{stack}" if stack else ""
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}{trace}", file=sys.stderr, flush=True)


def load_handler(handler: str):
    """Import the handler's module and return the function, or raise a Lambda runtime fault as a dict."""
    module_name, _, function_name = handler.rpartition(".")
    if not module_name:
        raise _Fault(_fault("Runtime.MalformedHandlerName", f"Bad handler '{handler}': expected 'module.function'"))
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Fault(_fault("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")) from exc
    except SyntaxError as exc:
        stack = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        message = f"Syntax error in module '{module_name}': {exc}"
        raise _Fault(_fault("Runtime.UserCodeSyntaxError", message, stack)) from exc
    except Exception as exc:  # an exception in the module's top-level code
        raise _Fault(_exception_error(exc, "")) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise _Fault(_fault("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"))
    return function


class _Fault(Exception):
    def __init__(self, error: dict):
        super().__init__(error["errorMessage"])
        self.error = error


def _json_default(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def invoke(function, request: dict, request_ids: _RequestIdFilter) -> dict:
    request_ids.request_id = request["request_id"]
    started = time.perf_counter()
    try:
        result = function(request["event"], LambdaContext(request))
        try:
            reply = {"type": "result", "payload": json.dumps(result, default=_json_default)}
        except (TypeError, ValueError) as exc:
            error = _fault("Runtime.MarshalError", f"Unable to marshal response: {exc}")
            error["requestId"] = request["request_id"]
            reply = {"type": "error", "error": error}
    except Exception as exc:
        reply = {"type": "error", "error": _exception_error(exc, request["request_id"])}
    reply["duration_ms"] = (time.perf_counter() - started) * 1000
    if reply["type"] == "error":
        _log_error(reply["error"])
    return reply


def main(argv: list[str]) -> None:
    requests = os.fdopen(int(argv[1]), "r", encoding="utf-8")
    responses = os.fdopen(int(argv[2]), "w", encoding="utf-8")

    def send(message: dict) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        message["max_memory_mb"] = _max_memory_mb()
        responses.write(json.dumps(message) + "\n")
        responses.flush()

    task_root = os.environ["LAMBDA_TASK_ROOT"]
    sys.path[0] = task_root  # the task root replaces this runtime's own folder, as /var/task on Lambda
    request_ids = _install_lambda_logging()
    try:
        function = load_handler(os.environ["_HANDLER"])
    except _Fault as fault:
        _log_error(fault.error)
        send({"type": "init_error", "error": fault.error})
        return
    send({"type": "ready"})
    for line in requests:
        send(invoke(function, json.loads(line), request_ids))


if __name__ == "__main__":
    main(sys.argv)
