"""What SageMaker endpoints and batch transform jobs share: a SageMaker Model's files, and the model servers that
serve them.

Both run a Model's container the same way: the model archive (and a separate source archive) is downloaded and
extracted into a folder of the local cloud's records, and model-server processes (`labcloud.runtime.model_server`,
the inference toolkit's contract with the learner's inference.py) are started on it, each with its output in a
CloudWatch Logs stream, ready once it answers /ping. Their instance-hours go to the cost meter at the catalog's
SageMaker inference price. The instance type is simulated: a server "on" ml.g4dn.xlarge runs on this machine's CPU.

`sagemaker_endpoints` keeps them running behind InvokeEndpoint; `sagemaker_transform` runs them over a job's
input and stops them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from ....pricing.catalog import UnknownInstanceType
from ....runtime import model_server
from ..context import AwsContext

log = logging.getLogger(__name__)

INVOCATION_TIMEOUT_S = 60.0  # sagemaker-runtime's limit for a model's answer
LOG_TAIL_LINES = 20
LOCAL_MODEL_DIR = "/opt/ml/model"  # where the container would have the model; ours is a folder of the records
PRICE_SERVICE = "sagemaker-inference"  # the catalog rows real-time endpoints and batch transform are priced at


class DeploymentFailed(Exception):
    """The model could not be put on an instance; the message says why (a FailureReason)."""


class DeploymentAborted(Exception):
    """The endpoint or job went away, or the local cloud is stopping, while instances were starting."""


class ServerDown(Exception):
    """A model server exited or did not answer /ping in time; the message says which."""


class Clients:
    """boto3 clients of the local cloud, one per (service, region), made when first asked for."""

    def __init__(self, context: AwsContext):
        self._context = context
        self._clients: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str, region: str):
        with self._lock:
            if (service, region) not in self._clients:
                self._clients[(service, region)] = self._context.client(service, region)
            return self._clients[(service, region)]


# --- one model-server process ---------------------------------------------------------------------------------


@dataclass(eq=False)  # hashed by identity: an endpoint keeps a set of the instances still starting
class Instance:
    """One model-server process."""

    id: str
    process: subprocess.Popen
    port_file: Path
    log_stream: str
    started_at: float = field(default_factory=time.time)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    reader: threading.Thread | None = None
    pool: urllib3.HTTPConnectionPool | None = None

    def connect(self, port: int) -> None:
        self.pool = urllib3.HTTPConnectionPool(
            "127.0.0.1",
            port,
            maxsize=16,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=2.0, read=INVOCATION_TIMEOUT_S),
        )

    def pings(self) -> bool:
        try:
            self.connect(int(self.port_file.read_text()))
            return self.pool.urlopen("GET", "/ping").status == 200
        except (ValueError, OSError, urllib3.exceptions.HTTPError):
            return False

    def log_tail(self) -> str:
        if self.reader is not None:
            self.reader.join(timeout=2)  # the process has exited: its last lines are on their way
        return "\n".join(self.tail)


class LogShipper:
    """Model-server output to CloudWatch Logs, one stream per instance, sent in batches by `flush`."""

    def __init__(self, client: Callable):
        self._client = client  # (service, region) -> a boto3 client of the local cloud
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[dict]] = {}

    def open_stream(self, region: str, group: str, stream: str) -> None:
        logs = self._client("logs", region)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)

    def write(self, region: str, group: str, stream: str, line: str) -> None:
        """One line of the local cloud's own in a stream (the job's progress, say), sent with the next flush."""
        if line.strip():  # CloudWatch Logs refuses empty events
            with self._lock:
                event = {"timestamp": int(time.time() * 1000), "message": line}
                self._pending.setdefault((region, group, stream), []).append(event)

    def follow(self, instance: Instance, region: str, group: str) -> None:
        """Read the instance's output until it exits (on a thread of its own)."""
        for raw in iter(instance.process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            instance.tail.append(line)
            self.write(region, group, instance.log_stream, line)
        instance.process.stdout.close()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for (region, group, stream), events in pending.items():
            try:
                self._client("logs", region).put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
            except Exception as exc:
                log.warning("could not ship %d log line(s) to %s %s: %s", len(events), group, stream, exc)


@dataclass(frozen=True)
class ServerLaunch:
    """Where and for whom a model server starts: its region, log group and stream, and the names `ps` shows."""

    region: str
    log_group: str
    log_stream: str
    instance_id: str
    labels: tuple[str, ...]  # e.g. ("--endpoint", name, "--variant", variant): only so that `ps` tells them apart
    environment: dict[str, str] = field(default_factory=dict)  # on top of the container's own


def spawn_model_server(context: AwsContext, logs: LogShipper, container: dict, folder: Path, launch: ServerLaunch):
    """Start one model server on the model prepared in `folder` (see `prepare_model`); its output is followed."""
    model_dir, code = folder / "model", code_dir(container, folder)
    port_file = folder / f"{launch.instance_id}.port"
    port_file.unlink(missing_ok=True)
    environment = {
        **os.environ,
        **context.sdk_environment(launch.region),
        **{k: str(v) for k, v in (container.get("Environment") or {}).items()},
        **launch.environment,
        "SAGEMAKER_SUBMIT_DIRECTORY": str(code),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        model_server.__file__,  # as a file: `-m labcloud...` would import the whole local cloud first
        *("--model-dir", str(model_dir), "--code-dir", str(code), "--port", "0", "--port-file", str(port_file)),
        *launch.labels,
        *("--instance-id", launch.instance_id),
    ]
    process = context.children.spawn(
        command,
        cwd=model_dir,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    instance = Instance(launch.instance_id, process, port_file, launch.log_stream)
    instance.reader = threading.Thread(
        target=logs.follow, args=(instance, launch.region, launch.log_group), daemon=True
    )
    instance.reader.start()
    return instance


def wait_until_ready(instance: Instance, deadline: float, timeout_s: float, aborted: Callable[[], bool]) -> None:
    """Return once the server answers /ping. ServerDown when it exits or `deadline` (monotonic) passes;
    DeploymentAborted when it was stopped on purpose (`aborted()`, or killed by a signal)."""
    while True:
        exit_code = instance.process.poll()
        if exit_code is not None:
            if aborted() or exit_code in (-signal.SIGTERM, -signal.SIGKILL):
                raise DeploymentAborted(instance.id)
            raise ServerDown(f"exited with code {exit_code}")
        if instance.port_file.exists() and instance.pings():
            return
        if time.monotonic() > deadline:
            raise ServerDown(f"did not answer /ping within {timeout_s:.0f} s")
        time.sleep(0.01)


def stop_processes(context: AwsContext, instances) -> None:
    """Stop model servers: all are asked at once, then each is waited for (and killed if it lingers)."""
    for instance in instances:
        if instance.process.poll() is None:
            instance.process.terminate()
    for instance in instances:
        context.children.stop(instance.process)
        if instance.pool is not None:
            instance.pool.close()


# --- a Model's files ------------------------------------------------------------------------------------------


def prepare_model(s3, container: dict, folder: Path) -> None:
    """Download and extract a Model's archive (and a separate source archive) into `folder`, once.

    DeploymentFailed, in SageMaker's words, when an archive cannot be downloaded or read."""
    done = folder / ".prepared"
    if done.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    model_dir.mkdir(exist_ok=True)
    source = container.get("ModelDataSource", {}).get("S3DataSource", {})
    url = container.get("ModelDataUrl") or source.get("S3Uri")
    if url:
        compressed = source.get("CompressionType", "Gzip") != "None" if source else True
        _download(s3, url, model_dir, compressed, what="model data")
    submit = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submit.startswith("s3://"):
        _download(s3, submit, folder / "code", compressed=True, what="source code")
    done.touch()


def _download(s3, url: str, into: Path, compressed: bool, what: str) -> None:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        if compressed:
            archive = into.parent / f"{into.name}.tar.gz"
            s3.download_file(bucket, key, str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
            archive.unlink()
        else:  # an uncompressed model: every object under the prefix
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                for item in page.get("Contents", []):
                    target = into / item["Key"][len(key) :].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target))
    except Exception as exc:
        raise DeploymentFailed(
            f'Failed to download {what} from URL "{url}": {exc}. Please ensure that there is an object '
            "located at the URL and that it is a tar.gz archive."
        ) from exc


def code_dir(container: dict, folder: Path) -> Path:
    """Where the inference code of a Model prepared in `folder` is (SAGEMAKER_SUBMIT_DIRECTORY, as the toolkit
    reads it: an S3 source archive, a folder inside the model, or the model's code/)."""
    submit = (container.get("Environment") or {}).get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    if submit.startswith("s3://"):
        return folder / "code"
    if submit.startswith(LOCAL_MODEL_DIR):
        return folder / "model" / submit[len(LOCAL_MODEL_DIR) :].lstrip("/")
    return folder / "model" / "code"


def primary_container(model) -> dict:
    """The container a moto SageMaker Model runs: its PrimaryContainer, else the first of its Containers."""
    return dict(model.primary_container or (model.containers or [{}])[0])


def model_container(context: AwsContext, region: str, model_name: str) -> dict:
    """The primary container of a SageMaker Model as moto stored it; LookupError in SageMaker's words."""
    from moto.sagemaker.exceptions import ValidationError

    with context.lock:
        try:
            return primary_container(context.moto_backend("sagemaker", region).describe_model(model_name))
        except ValidationError as exc:
            raise LookupError(exc.message) from exc


# --- the meter ------------------------------------------------------------------------------------------------


def meter_instance_hours(context: AwsContext, *, instance_type: str, hours: float, action: str, resource: str) -> None:
    """Model-server instance-hours at the catalog's SageMaker inference price ($0 for a type it does not list)."""
    try:
        instance = context.catalog.get(instance_type, service=PRICE_SERVICE)
        usd, price_key = hours * instance.hourly(), instance.id
    except UnknownInstanceType:
        log.warning("%s is not in the instance catalog: its %s hours are metered at $0", instance_type, action)
        usd, price_key = 0.0, f"{PRICE_SERVICE}:{instance_type}"
    context.meter(
        service="sagemaker",
        action=action,
        resource=resource,
        quantity=hours,
        unit="instance-hour",
        usd=usd,
        price_key=price_key,
    )
