"""Lambda: moto stores the functions (and checks that the role exists); the local cloud really runs the handlers.

moto's Invoke needs Docker, so Invoke is ours: each function version gets worker processes
(runtime/lambda_worker.py), each one execution environment that serves one request at a time. The first call
cold-starts a worker (spawn + import of the handler's module, the REPORT line's `Init Duration`); later calls
reuse a warm one; concurrent calls start more. UpdateFunctionCode (or a configuration change) retires the
workers of $LATEST, so the next call is cold again; DeleteFunction stops them. Provisioned concurrency
(on a published version or an alias, as on AWS) starts initialised workers ahead of time and keeps them.

What the learner sees is Lambda's: the handler's JSON result as the payload, FunctionError "Unhandled" with
the runtime's error payloads (Runtime.ImportModuleError, Sandbox.Timedout, ...), the execution log
(START / the handler's output / END / REPORT) in the X-Amz-Log-Result header and in CloudWatch Logs
(/aws/lambda/<name>, one stream per worker), throttling at the concurrency limits, and the cost of each call:
requests plus GB-seconds of billed duration (since August 2025 the billed duration of a cold start includes
its init phase).

Knobs (environment of the local cloud process):
- LABCLOUD_LAMBDA_IDLE_S (default 300): an idle on-demand worker is stopped after this many seconds, and the
  next call is cold (AWS keeps idle environments for an undocumented while, minutes to hours). Provisioned
  workers are never reclaimed.
- LABCLOUD_LAMBDA_CONCURRENCY (default 10, the quota of a new AWS account; 1,000 is the usual one): the most
  invocations running at once over all functions; beyond it a synchronous call is throttled (429).
Every python3.x runtime runs on the local cloud's own interpreter; other runtimes and container images are
refused at invoke time.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

from ....pricing.catalog import load_service_prices
from ....runtime import lambda_worker
from ..context import ACCOUNT_ID, AwsContext, read_json
from ..errors import Response, aws_error
from ..requests import AwsRequest, read_body

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(lambda_worker.__file__)
LOG_TAIL_BYTES = 4096
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
INIT_LIMIT_S = 10.0  # AWS's limit on an on-demand init phase
PROVISIONED_INIT_LIMIT_S = 120.0
PRICE_REQUESTS = "aws.lambda.request_per_million"
PRICE_DURATION = "aws.lambda.gb_second"
PRICE_PROVISIONED_DURATION = "aws.lambda.provisioned_invocation_gb_second"
PRICE_PROVISIONED = "aws.lambda.provisioned_gb_second"


def register(gateway, context: AwsContext) -> None:
    service = LambdaService(
        context,
        idle_s=float(os.environ.get("LABCLOUD_LAMBDA_IDLE_S", 300)),
        concurrency=int(os.environ.get("LABCLOUD_LAMBDA_CONCURRENCY", 10)),
    )
    for action, handler in service.handlers().items():
        gateway.intercept("lambda", action, handler)
    context.on_started(service.start)
    context.on_shutdown(service.shutdown)


# ---- what a function is, and its errors ------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """One function version as moto stores it: what its workers are started from."""

    region: str
    name: str
    version: str  # "$LATEST" or a published version number
    handler: str
    runtime: str
    package_type: str
    memory_mb: int
    timeout_s: int
    environment: tuple[tuple[str, str], ...]
    code_sha: str
    reserved_concurrency: int | None = field(default=None, compare=False)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"


class LambdaError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra

    def response(self) -> Response:
        status, headers, body = aws_error("rest-json", self.status, self.code, str(self))
        if self.extra:
            body = json.dumps({**json.loads(body), **self.extra}).encode()
        return status, headers, body


def function_not_found(region: str, name: str, qualifier: str | None = None) -> LambdaError:
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}" + (f":{qualifier}" if qualifier else "")
    return LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn}")


def throttled(reason: str) -> LambdaError:
    return LambdaError(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason, Type="User")


def split_function_name(raw: str) -> tuple[str, str | None]:
    """A FunctionName parameter (name, name:qualifier, or a full or partial ARN) as (name, qualifier)."""
    if ":function:" in raw:
        raw = raw.split(":function:", 1)[1]
    name, _, qualifier = raw.partition(":")
    return name, qualifier or None


# ---- one worker process ----------------------------------------------------------------------------------------


@dataclass
class Reply:
    message: dict | None  # None: the worker died or timed out
    timed_out: bool
    log: str
    init_ms: float = 0.0  # for the init phase's reply: spawn to ready
    stream: str | None = None  # for a failed init: the log stream it was logged to


class Worker:
    """A lambda_worker.py process: one execution environment, one request at a time."""

    def __init__(self, process: subprocess.Popen, requests, responses, log_path: Path, stream: str, provisioned: bool):
        self.process = process
        self.stream = stream
        self.provisioned = provisioned
        self.max_memory_mb = 0
        self.last_used = time.monotonic()
        self.init_ms = 0.0
        self.init_log = ""  # what the init phase printed, logged with the first invocation
        self._requests = requests
        self._replies: queue.Queue = queue.Queue()
        self._log_path = log_path
        self._log = open(log_path, encoding="utf-8", errors="replace")  # noqa: SIM115 (open until stop)
        self._stopped = False
        threading.Thread(target=self._read, args=(responses,), daemon=True, name=f"lambda-{process.pid}").start()

    def _read(self, responses) -> None:
        with responses:
            for line in responses:
                self._replies.put(line)
        self._replies.put(None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float) -> Reply:
        """The worker's next message, with what it logged meanwhile."""
        try:
            line = self._replies.get(timeout=max(timeout_s, 0.001))
        except queue.Empty:
            return Reply(None, True, self.read_log())
        if line is None:
            self.process.wait()
            return Reply(None, False, self.read_log())
        message = json.loads(line)
        self.max_memory_mb = message.get("max_memory_mb", self.max_memory_mb)
        return Reply(message, False, self.read_log())

    def send(self, request: dict, timeout_s: float) -> Reply:
        try:
            self._requests.write(json.dumps(request) + "\n")
            self._requests.flush()
        except (BrokenPipeError, ValueError):
            return Reply(None, False, self.read_log())
        return self.wait(timeout_s)

    def read_log(self) -> str:
        return self._log.read()

    def stop(self, children, kill: bool = False) -> None:
        if self._stopped:
            return
        self._stopped = True
        if kill and self.alive():
            self.process.kill()
        with contextlib.suppress(OSError):
            self._requests.close()  # the worker exits when its request pipe closes
        children.stop(self.process, timeout=2.0)
        self._log.close()
        self._log_path.unlink(missing_ok=True)


@dataclass
class Pool:
    """The workers of one function version."""

    spec: FunctionSpec
    idle: list[Worker] = field(default_factory=list)
    busy: set[Worker] = field(default_factory=set)
    provisioned_target: int = 0
    retired: bool = False

    def take_idle(self) -> Worker | None:
        self.idle.sort(key=lambda w: not w.provisioned)  # provisioned environments first
        while self.idle:
            worker = self.idle.pop(0)
            if worker.alive():
                self.busy.add(worker)
                return worker
        return None

    def provisioned(self) -> list[Worker]:
        return [w for w in [*self.idle, *self.busy] if w.provisioned]


@dataclass
class ProvisionedConfig:
    region: str
    function: str
    qualifier: str
    version: str
    requested: int
    memory_mb: int
    status: str = "IN_PROGRESS"
    reason: str = ""
    last_modified: str = field(default_factory=lambda: _aws_time())
    since: float = field(default_factory=time.time)  # start of the time not metered yet

    def record(self) -> dict:
        return {k: getattr(self, k) for k in ("region", "function", "qualifier", "version", "requested", "memory_mb")}


def _aws_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


@dataclass
class Invocation:
    request_id: str
    event: object
    invoked_arn: str
    client_context: dict | None = None


@dataclass
class Outcome:
    payload: bytes
    function_error: str | None
    log: str  # START ... REPORT


# ---- the service -----------------------------------------------------------------------------------------------


class LambdaService:
    def __init__(self, context: AwsContext, idle_s: float, concurrency: int):
        self.context = context
        self.idle_s = idle_s
        self.concurrency = concurrency
        self.prices = load_service_prices()
        self._cond = threading.Condition()
        self._pools: dict[tuple[str, str, str], Pool] = {}
        self._running: dict[str, int] = {}  # function name -> invocations in flight
        self._configs: dict[tuple[str, str, str], ProvisionedConfig] = {}
        self._stopping = threading.Event()
        self._records = context.records("lambda")
        self._configs_file = self._records / "provisioned-concurrency.json"
        self._log_dir = self._records / "worker-logs"

    def handlers(self) -> dict[str, Callable]:
        return {
            "CreateFunction": self._guarded(self.create_function),
            "UpdateFunctionCode": self._guarded(self.update_function_code),
            "DeleteFunction": self._guarded(self.delete_function),
            "Invoke": self._guarded(self.invoke),
            "PutProvisionedConcurrencyConfig": self._guarded(self.put_provisioned),
            "GetProvisionedConcurrencyConfig": self._guarded(self.get_provisioned),
            "DeleteProvisionedConcurrencyConfig": self._guarded(self.delete_provisioned),
        }

    @staticmethod
    def _guarded(handler: Callable) -> Callable:
        def run(request: AwsRequest, environ: dict) -> Response:
            try:
                return handler(request, environ)
            except LambdaError as error:
                return error.response()

        return run

    # -- lifecycle --

    def start(self) -> None:
        shutil.rmtree(self._log_dir, ignore_errors=True)
        self._log_dir.mkdir(parents=True)
        self.context.in_background(self._reclaim_idle_workers, "lambda-idle-reaper")
        if self._configs_file.exists():
            for record in json.loads(self._configs_file.read_text()):
                config = ProvisionedConfig(**record)
                self._configs[(config.region, config.function, config.qualifier)] = config
                self.context.in_background(self._provision, f"lambda-provision-{config.function}", config)

    def shutdown(self) -> None:
        self._stopping.set()
        with self._cond:
            configs = list(self._configs.values())
            pools = list(self._pools.values())
            self._pools.clear()
        for config in configs:
            self._meter_provisioned(config)
        self._save_configs()
        for pool in pools:
            self._retire(pool)

    def _reclaim_idle_workers(self) -> None:
        interval = min(max(self.idle_s / 4, 0.05), 5.0)
        while not self._stopping.wait(interval):
            now = time.monotonic()
            expired = []
            with self._cond:
                for pool in self._pools.values():
                    keep = [w for w in pool.idle if w.provisioned or now - w.last_used < self.idle_s]
                    expired += [w for w in pool.idle if w not in keep]
                    pool.idle = keep
            for worker in expired:
                worker.stop(self.context.children)

    # -- functions in moto --

    def _spec(self, region: str, raw_name: str, qualifier: str | None) -> FunctionSpec:
        from moto.core.exceptions import JsonRESTError, ServiceException

        name, in_name = split_function_name(raw_name)
        qualifier = in_name or qualifier
        with self.context.lock:
            try:
                fn = self.context.moto_backend("lambda", region).get_function(name, qualifier)
            except (JsonRESTError, ServiceException):
                fn = None
            if fn is None:
                raise function_not_found(region, name, qualifier)
            spec = FunctionSpec(
                region=region,
                name=fn.function_name,
                version=str(fn.version),
                handler=fn.handler or "",
                runtime=fn.run_time or "",
                package_type=fn.package_type,
                memory_mb=int(fn.memory_size),
                timeout_s=int(fn.timeout),
                environment=tuple(sorted((fn.environment_vars or {}).items())),
                code_sha=getattr(fn, "code_digest", ""),
                reserved_concurrency=fn.reserved_concurrency,
            )
            code = getattr(fn, "code_bytes", None) if not self._code_dir(spec).exists() else None
        if code is not None:
            self._unpack(spec, code)
        return spec

    def _code_dir(self, spec: FunctionSpec) -> Path:
        return self._records / "code" / spec.code_sha

    def _unpack(self, spec: FunctionSpec, code: bytes) -> None:
        """Unpack a code zip once per content hash (shared by the versions that have that code)."""
        target = self._code_dir(spec)
        staging = target.with_name(f"{target.name}.{uuid.uuid4().hex}")
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            archive.extractall(staging)
        try:
            staging.rename(target)
        except OSError:  # unpacked meanwhile by another call
            shutil.rmtree(staging, ignore_errors=True)

    # -- CreateFunction / UpdateFunctionCode / DeleteFunction: moto answers, we check the zip and retire workers --

    def create_function(self, request: AwsRequest, environ: dict) -> Response:
        _check_zip(read_json(environ).get("Code") or {})
        return self.context.call_moto(request, environ)

    def update_function_code(self, request: AwsRequest, environ: dict) -> Response:
        _check_zip(read_json(environ))
        response = self.context.call_moto(request, environ)
        if response[0] < 300:
            name, _ = split_function_name(request.path_params["FunctionName"])
            self._retire_versions(request.region, name, "$LATEST")
        return response

    def delete_function(self, request: AwsRequest, environ: dict) -> Response:
        name, qualifier = split_function_name(request.path_params["FunctionName"])
        qualifier = qualifier or _query(environ, "Qualifier")
        response = self.context.call_moto(request, environ)
        if response[0] < 300:
            with self._cond:
                configs = [
                    key
                    for key, c in self._configs.items()
                    if key[:2] == (request.region, name) and qualifier in (None, c.qualifier, c.version)
                ]
            for key in configs:
                self._drop_config(key)
            self._retire_versions(request.region, name, qualifier)
        return response

    def _retire_versions(self, region: str, name: str, version: str | None) -> None:
        with self._cond:
            keys = [k for k in self._pools if k[:2] == (region, name) and version in (None, k[2])]
            pools = [self._pools.pop(k) for k in keys]
        for pool in pools:
            self._retire(pool)

    def _retire(self, pool: Pool) -> None:
        """Stop a pool's idle workers now; its busy ones stop when their request ends."""
        with self._cond:
            pool.retired = True
            idle, pool.idle = pool.idle, []
        for worker in idle:
            worker.stop(self.context.children)

    # -- Invoke --

    def invoke(self, request: AwsRequest, environ: dict) -> Response:
        spec = self._spec(request.region, request.path_params["FunctionName"], _query(environ, "Qualifier"))
        if not (spec.package_type == "Zip" and spec.runtime.startswith("python3")):
            raise LambdaError(
                502,
                "InvalidRuntimeException",
                f"The local cloud runs Python .zip functions only; this function is {spec.package_type} "
                f"with runtime {spec.runtime or 'none'}.",
            )
        body = read_body(environ)
        if len(body) > SYNC_PAYLOAD_LIMIT:
            raise LambdaError(
                413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes for the Invoke operation"
            )
        try:
            event = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise LambdaError(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: Could not parse payload into json: {exc}",
            ) from None
        qualifier = _qualifier_of(request, environ)
        invoked_arn = f"{spec.arn}:{qualifier}" if qualifier else spec.arn
        invocation = Invocation(str(uuid.uuid4()), event, invoked_arn, _client_context(environ))
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        headers = [("x-amzn-RequestId", invocation.request_id), ("X-Amz-Executed-Version", spec.version)]
        if invocation_type == "DryRun":
            return 204, headers, b""
        if invocation_type == "Event":
            self.context.in_background(self._run, f"lambda-event-{spec.name}", spec, invocation, True)
            return 202, headers, b""
        outcome = self._run(spec, invocation, wait=False)
        headers.append(("Content-Type", "application/json"))
        if outcome.function_error:
            headers.append(("X-Amz-Function-Error", outcome.function_error))
        if environ.get("HTTP_X_AMZ_LOG_TYPE") == "Tail":
            tail = outcome.log.encode()[-LOG_TAIL_BYTES:]
            headers.append(("X-Amz-Log-Result", base64.b64encode(tail).decode()))
        return 200, headers, outcome.payload

    def _run(self, spec: FunctionSpec, invocation: Invocation, wait: bool) -> Outcome:
        pool, worker = self._acquire(spec, wait)
        provisioned = worker is not None and worker.provisioned
        alive = False
        try:
            if worker is None:
                worker, failure = self._start_worker(pool, provisioned=False, limit_s=max(INIT_LIMIT_S, spec.timeout_s))
                if worker is None:
                    return self._finish(spec, invocation, failure, cold_init_ms=failure.init_ms, provisioned=False)
                with self._cond:
                    pool.busy.add(worker)
                cold_init_ms = worker.init_ms
            else:
                cold_init_ms = None
            result = self._call(worker, spec, invocation)
            alive = not result.message.get("crashed") and worker.alive()
            return self._finish(spec, invocation, result, cold_init_ms, provisioned, worker)
        finally:
            self._release(spec, pool, worker, alive)

    def _acquire(self, spec: FunctionSpec, wait: bool) -> tuple[Pool, Worker | None]:
        """Admit an invocation under the concurrency limits and take a warm worker if one is free."""
        with self._cond:
            while True:
                reason = self._over_limit(spec)
                if reason is None:
                    break
                if not wait:
                    raise throttled(reason)
                self._cond.wait(0.5)  # asynchronous invocations queue, as on AWS
            self._running[spec.name] = self._running.get(spec.name, 0) + 1
            pool = self._pool(spec)
            return pool, pool.take_idle()

    def _over_limit(self, spec: FunctionSpec) -> str | None:
        if spec.reserved_concurrency is not None and self._running.get(spec.name, 0) >= spec.reserved_concurrency:
            return "ReservedFunctionConcurrentInvocationLimitExceeded"
        if sum(self._running.values()) >= self.concurrency:
            return "ConcurrentInvocationLimitExceeded"
        return None

    def _pool(self, spec: FunctionSpec) -> Pool:
        """The pool for this function version; a changed configuration or code retires the old one. Holds _cond."""
        key = (spec.region, spec.name, spec.version)
        pool = self._pools.get(key)
        if pool is not None and pool.spec != spec:
            self._pools.pop(key)
            pool.retired = True
            stale, pool.idle = pool.idle, []
            for worker in stale:
                self.context.in_background(worker.stop, "lambda-retire", self.context.children)
            pool = None
        if pool is None:
            pool = self._pools[key] = Pool(spec)
        return pool

    def _release(self, spec: FunctionSpec, pool: Pool, worker: Worker | None, alive: bool) -> None:
        keep = replenish = False
        with self._cond:
            self._running[spec.name] -= 1
            if worker is not None:
                pool.busy.discard(worker)
                keep = alive and not pool.retired
                if keep:
                    worker.last_used = time.monotonic()
                    pool.idle.append(worker)
                replenish = worker.provisioned and not keep and not pool.retired
            self._cond.notify_all()
        if worker is not None and not keep:
            worker.stop(self.context.children, kill=True)
            if replenish:  # a provisioned environment that died is replaced, as AWS does
                self.context.in_background(self._top_up, f"lambda-replenish-{spec.name}", pool)

    def _start_worker(self, pool: Pool, provisioned: bool, limit_s: float) -> tuple[Worker | None, Reply]:
        """Spawn a worker and wait for its init phase; (worker, ready reply) or (None, the failure)."""
        spec = pool.spec
        stream = f"{datetime.now(timezone.utc):%Y/%m/%d}/[{spec.version}]{uuid.uuid4().hex}"
        code_dir = self._code_dir(spec)
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        log_path = self._log_dir / f"{uuid.uuid4().hex}.log"
        started = time.perf_counter()
        try:
            with open(log_path, "wb") as log_file:
                process = self.context.children.spawn(
                    [sys.executable, str(WORKER_SCRIPT), str(requests_read), str(replies_write)],
                    cwd=code_dir,
                    env=self._worker_environment(spec, code_dir, stream, provisioned),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    pass_fds=(requests_read, replies_write),
                )
        except BaseException:
            os.close(requests_write)
            os.close(replies_read)
            raise
        finally:
            os.close(requests_read)
            os.close(replies_write)
        worker = Worker(
            process,
            os.fdopen(requests_write, "w", encoding="utf-8"),
            os.fdopen(replies_read, "r", encoding="utf-8"),
            log_path,
            stream,
            provisioned,
        )
        reply = worker.wait(limit_s)
        worker.init_ms = reply.init_ms = (time.perf_counter() - started) * 1000
        worker.init_log, reply.stream = reply.log, stream
        if provisioned:  # its init output goes to the log now, not with a first invocation
            self._write_logs(spec, stream, reply.log)
            worker.init_log = ""
        if reply.message is not None and reply.message.get("type") == "ready":
            return worker, reply
        worker.stop(self.context.children, kill=True)
        if reply.message is None:
            error = _runtime_exit(reply.timed_out, limit_s)
            reply.message = {"type": "init_error", "error": error}
        return None, reply

    def _worker_environment(self, spec: FunctionSpec, code_dir: Path, stream: str, provisioned: bool) -> dict:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.context.sdk_environment(spec.region),
            **dict(spec.environment),
            "_HANDLER": spec.handler,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency" if provisioned else "on-demand",
        }
        return env

    def _call(self, worker: Worker, spec: FunctionSpec, invocation: Invocation) -> Reply:
        deadline_ms = time.time() * 1000 + spec.timeout_s * 1000
        request = {
            "request_id": invocation.request_id,
            "event": invocation.event,
            "deadline_ms": deadline_ms,
            "invoked_function_arn": invocation.invoked_arn,
            "client_context": invocation.client_context,
        }
        started = time.perf_counter()
        reply = worker.send(request, spec.timeout_s)
        if reply.message is None:  # timed out or died: the environment is gone (stopped on release)
            duration_ms = spec.timeout_s * 1000 if reply.timed_out else (time.perf_counter() - started) * 1000
            reply.message = {"type": "error", "error": _runtime_exit(reply.timed_out, spec.timeout_s, invocation)}
            reply.message["duration_ms"] = duration_ms
            reply.message["crashed"] = True
        return reply

    def _finish(
        self,
        spec: FunctionSpec,
        invocation: Invocation,
        reply: Reply,
        cold_init_ms: float | None,
        provisioned: bool,
        worker: Worker | None = None,
    ) -> Outcome:
        """The log, the cost line and the payload of one invocation."""
        message = reply.message
        init_failed = message["type"] == "init_error"
        duration_ms = 0.0 if init_failed else message["duration_ms"]
        # Since August 2025 AWS bills a cold start's init phase too.
        billed_ms = max(1, math.ceil(duration_ms) + (math.ceil(cold_init_ms) if cold_init_ms is not None else 0))
        memory_used = message.get("max_memory_mb") or (worker.max_memory_mb if worker else 0)
        report = _report_line(spec, invocation, message, duration_ms, billed_ms, memory_used, cold_init_ms)
        body = "" if init_failed else reply.log
        if message.get("crashed") and message["error"]["errorType"] == "Sandbox.Timedout":
            body += f"{_aws_time()[:-5]}Z {invocation.request_id} Task timed out after {spec.timeout_s:.2f} seconds\n"
        invocation_log = (
            f"START RequestId: {invocation.request_id} Version: {spec.version}\n{body}"
            f"END RequestId: {invocation.request_id}\n{report}\n"
        )
        # A cold start's init output precedes START in the stream; a failed init's output is in the tail too.
        init_output = reply.log if init_failed else (worker.init_log if worker and cold_init_ms is not None else "")
        self._write_logs(spec, worker.stream if worker else reply.stream, init_output + invocation_log)
        self._meter(spec, billed_ms, provisioned)
        if "error" in message:
            error = {k: v for k, v in message["error"].items() if k != "requestId" or v}
            tail = init_output + invocation_log if init_failed else invocation_log
            return Outcome(json.dumps(error).encode(), "Unhandled", tail)
        return Outcome(message["payload"].encode(), None, invocation_log)

    # -- provisioned concurrency --

    def put_provisioned(self, request: AwsRequest, environ: dict) -> Response:
        name, qualifier = self._provisioned_target(request, environ)
        spec = self._spec(request.region, name, qualifier)
        if spec.version == "$LATEST":
            raise LambdaError(
                400,
                "InvalidParameterValueException",
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
            )
        requested = read_json(environ).get("ProvisionedConcurrentExecutions")
        if not isinstance(requested, int) or requested < 1:
            raise LambdaError(
                400, "InvalidParameterValueException", "ProvisionedConcurrentExecutions must be at least 1."
            )
        key = (request.region, spec.name, qualifier)
        with self._cond:
            previous = self._configs.get(key)
        if previous is not None:
            self._meter_provisioned(previous)
        config = ProvisionedConfig(request.region, spec.name, qualifier, spec.version, requested, spec.memory_mb)
        with self._cond:
            self._configs[key] = config
        self._save_configs()
        self.context.in_background(self._provision, f"lambda-provision-{spec.name}", config)
        body = {
            "RequestedProvisionedConcurrentExecutions": requested,
            "AllocatedProvisionedConcurrentExecutions": 0,
            "Status": config.status,
            "LastModified": config.last_modified,
        }
        return 202, [("Content-Type", "application/json")], json.dumps(body).encode()

    def get_provisioned(self, request: AwsRequest, environ: dict) -> Response:
        config = self._config(request, environ)
        with self._cond:
            pool = self._pools.get((config.region, config.function, config.version))
            workers = pool.provisioned() if pool else []
            available = sum(1 for w in workers if pool and w in pool.idle)
        body = {
            "RequestedProvisionedConcurrentExecutions": config.requested,
            "AvailableProvisionedConcurrentExecutions": available,
            "AllocatedProvisionedConcurrentExecutions": len(workers),
            "Status": config.status,
            "LastModified": config.last_modified,
        }
        if config.reason:
            body["StatusReason"] = config.reason
        return 200, [("Content-Type", "application/json")], json.dumps(body).encode()

    def delete_provisioned(self, request: AwsRequest, environ: dict) -> Response:
        config = self._config(request, environ)
        self._drop_config((config.region, config.function, config.qualifier))
        return 204, [], b""

    def _provisioned_target(self, request: AwsRequest, environ: dict) -> tuple[str, str]:
        name, qualifier = split_function_name(request.path_params["FunctionName"])
        qualifier = qualifier or _query(environ, "Qualifier")
        if not qualifier:
            raise LambdaError(400, "InvalidParameterValueException", "The Qualifier parameter is required.")
        return name, qualifier

    def _config(self, request: AwsRequest, environ: dict) -> ProvisionedConfig:
        name, qualifier = self._provisioned_target(request, environ)
        spec = self._spec(request.region, name, qualifier)  # ResourceNotFoundException for an unknown function
        with self._cond:
            config = self._configs.get((request.region, spec.name, qualifier))
        if config is None:
            raise LambdaError(
                404,
                "ProvisionedConcurrencyConfigNotFoundException",
                "No Provisioned Concurrency Config found for this function",
            )
        return config

    def _provision(self, config: ProvisionedConfig) -> None:
        try:
            spec = self._spec(config.region, config.function, config.version)
        except LambdaError:
            self._drop_config((config.region, config.function, config.qualifier))
            return
        with self._cond:
            pool = self._pool(spec)
            pool.provisioned_target = config.requested
        failure = self._top_up(pool)
        with self._cond:
            if self._configs.get((config.region, config.function, config.qualifier)) is not config:
                return  # replaced or deleted meanwhile
            if failure is None:
                config.status = "READY"
            else:
                error = failure.message["error"]
                config.status = "FAILED"
                config.reason = f"FUNCTION_ERROR_INIT_FAILURE: {error['errorType']}: {error['errorMessage']}"
            config.last_modified = _aws_time()

    def _top_up(self, pool: Pool) -> Reply | None:
        """Start provisioned workers until the pool has its target (in parallel); the first failure, if any."""
        with self._cond:
            surplus = [w for w in pool.idle if w.provisioned][pool.provisioned_target :]
            for worker in surplus:
                pool.idle.remove(worker)
            missing = max(0, pool.provisioned_target - len(pool.provisioned()))
        for worker in surplus:
            worker.stop(self.context.children)
        failures: list[Reply] = []

        def start_one() -> None:
            worker, reply = self._start_worker(pool, provisioned=True, limit_s=PROVISIONED_INIT_LIMIT_S)
            if worker is None:
                failures.append(reply)
                return
            with self._cond:
                if not pool.retired:
                    pool.idle.append(worker)
                    self._cond.notify_all()
                    return
            worker.stop(self.context.children)

        threads = [threading.Thread(target=start_one, daemon=True) for _ in range(missing)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return failures[0] if failures else None

    def _drop_config(self, key: tuple[str, str, str]) -> None:
        with self._cond:
            config = self._configs.pop(key, None)
            pool = self._pools.get((key[0], key[1], config.version)) if config else None
            still_used = config is not None and any(
                c.version == config.version and k[:2] == key[:2] for k, c in self._configs.items()
            )
            surplus = []
            if pool is not None and not still_used:
                pool.provisioned_target = 0
                surplus = [w for w in pool.idle if w.provisioned]
                pool.idle = [w for w in pool.idle if not w.provisioned]
                for worker in pool.busy:
                    worker.provisioned = False  # an on-demand environment from now on
        if config is None:
            return
        self._meter_provisioned(config)
        self._save_configs()
        for worker in surplus:
            worker.stop(self.context.children)

    def _save_configs(self) -> None:
        with self._cond:
            records = [c.record() for c in self._configs.values()]
        tmp = self._configs_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, self._configs_file)

    # -- logs and costs --

    def _write_logs(self, spec: FunctionSpec, stream: str | None, text: str) -> None:
        """Append an invocation's log to CloudWatch Logs, one event per line, in the worker's stream."""
        if not text or stream is None:
            return
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in text.rstrip("\n").split("\n")]
        with self.context.lock:
            logs = self.context.moto_backend("logs", spec.region)
            logs.ensure_log_group(spec.log_group)
            logs.ensure_log_stream(spec.log_group, stream)
            logs.put_log_events(spec.log_group, stream, events)
        self.context.mark_dirty("logs")

    def _meter(self, spec: FunctionSpec, billed_ms: int, provisioned: bool) -> None:
        gb_seconds = billed_ms / 1000 * spec.memory_mb / 1024
        duration_key = PRICE_PROVISIONED_DURATION if provisioned else PRICE_DURATION
        usd = gb_seconds * self._price(duration_key) + self._price(PRICE_REQUESTS) / 1_000_000
        self.context.meter(
            service="lambda",
            action="Invoke",
            resource=spec.name,
            quantity=gb_seconds,
            unit="GB-second",
            usd=usd,
            price_key=f"{duration_key} + {PRICE_REQUESTS}",
        )

    def _meter_provisioned(self, config: ProvisionedConfig) -> None:
        """Provisioned concurrency is billed while configured, per GB-second, rounded up to 5 minutes."""
        now = time.time()
        seconds = math.ceil(max(now - config.since, 1) / 300) * 300
        config.since = now
        gb_seconds = seconds * config.requested * config.memory_mb / 1024
        self.context.meter(
            service="lambda",
            action="ProvisionedConcurrency",
            resource=f"{config.function}:{config.qualifier}",
            quantity=gb_seconds,
            unit="GB-second configured",
            usd=gb_seconds * self._price(PRICE_PROVISIONED),
            price_key=PRICE_PROVISIONED,
        )

    def _price(self, key: str) -> float:
        return self.prices[key].usd if key in self.prices else 0.0


# ---- helpers ---------------------------------------------------------------------------------------------------


def _query(environ: dict, name: str) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    return values[0] if values else None


def _qualifier_of(request: AwsRequest, environ: dict) -> str | None:
    return split_function_name(request.path_params["FunctionName"])[1] or _query(environ, "Qualifier")


def _client_context(environ: dict) -> dict | None:
    raw = environ.get("HTTP_X_AMZ_CLIENT_CONTEXT")
    if not raw:
        return None
    try:
        data = json.loads(base64.b64decode(raw))
    except ValueError:
        raise LambdaError(400, "InvalidRequestContentException", "Client context must be base64-encoded JSON") from None
    return data if isinstance(data, dict) else None


def _check_zip(code: dict) -> None:
    """Refuse a ZipFile that is not a zip archive, as Lambda does (moto stores anything)."""
    if "ZipFile" not in code:
        return
    try:
        data = base64.b64decode(code["ZipFile"])
        zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (ValueError, TypeError, zipfile.BadZipFile):
        raise LambdaError(
            400,
            "InvalidParameterValueException",
            "Could not unzip uploaded file. Please check your file, then try to upload again.",
        ) from None


def _runtime_exit(timed_out: bool, limit_s: float, invocation: Invocation | None = None) -> dict:
    """The error payload of an environment that timed out or exited, as the Lambda service reports it."""
    request = f"RequestId: {invocation.request_id} " if invocation else ""
    if timed_out:
        message = f"{request}Error: Task timed out after {limit_s:.2f} seconds"
        return {"errorType": "Sandbox.Timedout", "errorMessage": message}
    message = f"{request}Error: Runtime exited without providing a reason"
    return {"errorType": "Runtime.ExitError", "errorMessage": message}


def _report_line(
    spec: FunctionSpec,
    invocation: Invocation,
    message: dict,
    duration_ms: float,
    billed_ms: int,
    memory_used_mb: int,
    init_ms: float | None,
) -> str:
    """Lambda's REPORT line: tab-separated fields, Init Duration on cold starts only, a Status when it failed."""
    fields = [
        f"REPORT RequestId: {invocation.request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {billed_ms} ms",
        f"Memory Size: {spec.memory_mb} MB",
        f"Max Memory Used: {memory_used_mb} MB",
    ]
    if init_ms is not None:
        fields.append(f"Init Duration: {init_ms:.2f} ms")
    if message["type"] == "init_error" or message.get("crashed"):
        error_type = message["error"]["errorType"]
        fields.append(
            "Status: timeout" if error_type == "Sandbox.Timedout" else f"Status: error\tError Type: {error_type}"
        )
    return "\t".join(fields) + "\t"
