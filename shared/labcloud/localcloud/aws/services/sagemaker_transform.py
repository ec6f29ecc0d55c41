"""SageMaker batch transform jobs that really run: the Model's inference code over every object of the input.

moto validates and stores a CreateTransformJob, but it says Completed at once and writes no output; it also lets a
second job take an existing name, accepts a model that does not exist, and has no StopTransformJob. Here:

- CreateTransformJob checks the name is new, the Model exists and the fields the run needs (SageMaker's
  ValidationException and ResourceInUse), lets moto store the job, and runs it in the background. Describe and
  List answer from moto's record, which the run keeps current: TransformJobStatus InProgress -> Completed | Failed
  (FailureReason) | Stopped, TransformStartTime, TransformEndTime.
- The run: the Model's archive is prepared and InstanceCount model servers started exactly as for an endpoint
  (`sagemaker_hosting`: `labcloud.runtime.model_server` with the learner's model_fn/input_fn/predict_fn/output_fn),
  with the batch environment SageMaker gives the container (SAGEMAKER_BATCH, SAGEMAKER_MAX_PAYLOAD_IN_MB,
  SAGEMAKER_MAX_CONCURRENT_TRANSFORMS) plus the job's Environment. The input objects (every object under an
  S3Prefix, or those a ManifestFile lists; CompressionType Gzip is decompressed) are shared out between the
  instances. SplitType None sends each object as one request; SplitType Line splits it into lines (empty lines
  dropped), sent one per request (BatchStrategy SingleRecord) or as many as fit in MaxPayloadInMB joined by
  newlines (MultiRecord). Requests carry TransformInput.ContentType and TransformOutput.Accept. The answers for
  one object are joined (AssembleWith Line: each followed by a newline; None: back to back) and written to
  `<S3OutputPath>/<input key below the prefix's folder>.out`, as SageMaker names them.
- Failed, with a FailureReason naming the object and the model's message: a model error (any answer but 200), a
  model server that exits or never answers /ping, a model archive that cannot be downloaded, no input objects,
  unreadable input (not gzip when Gzip is declared, a record above MaxPayloadInMB), an output that cannot be written.
- StopTransformJob stops the servers; the job ends Stopped (objects already written stay).
- Logs: each instance's output in CloudWatch Logs, group /aws/sagemaker/TransformJobs, stream
  `<job>/<instance id>-<epoch>`, with a line per object written, so `transform(logs=True)` prints them.
- The meter: the instances' hours from their start to their stop, at the catalog's SageMaker inference price
  (SageMaker lists batch transform at the real-time inference rates per instance type), as one line per job.
- Restart: a job that was running when the local cloud stopped (`labcloud down`, or a crash) is Failed when it
  comes back (`CloudContext.on_interrupted`).

Simulated, or not served: the instance type (a GPU type runs on this machine's CPU), MaxConcurrentTransforms beyond
one request at a time per instance (the model server has one worker), SplitType RecordIO and TFRecord,
AugmentedManifestFile input, DataProcessing filters and joins other than the identity, DataCaptureConfig, and KMS
keys: a job asking for one of these fails with a FailureReason that says so, instead of giving a wrong result.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field

import urllib3
from moto.sagemaker.utils import arn_formatter

from ...context import LOCAL_CLOUD_STOPPED
from ..context import ACCOUNT_ID, AwsContext, json_response, read_json
from ..errors import Response, aws_error
from ..requests import AwsRequest
from .sagemaker_hosting import (
    Clients,
    DeploymentAborted,
    DeploymentFailed,
    Instance,
    LogShipper,
    ServerDown,
    ServerLaunch,
    meter_instance_hours,
    model_container,
    prepare_model,
    spawn_model_server,
    stop_processes,
    wait_until_ready,
)

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TransformJobs"
FINAL_STATUSES = ("Completed", "Failed", "Stopped")
SHUTDOWN_REASON = f"{LOCAL_CLOUD_STOPPED} while the job ran"
STARTUP_TIMEOUT_S = 300.0  # a model server that has not answered /ping by then fails the job
DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker's default MaxPayloadInMB
FAILURE_REASON_MAX = 1024  # DescribeTransformJob's limit
FLUSH_INTERVAL_S = 1.0
_ENUMS = {  # (path in the request, the values SageMaker accepts; the first is the default)
    ("TransformInput", "SplitType"): ("None", "Line", "RecordIO", "TFRecord"),
    ("TransformInput", "CompressionType"): ("None", "Gzip"),
    ("TransformInput", "DataSource", "S3DataSource", "S3DataType"): (
        "S3Prefix",
        "ManifestFile",
        "AugmentedManifestFile",
        "Converse",
    ),
    ("BatchStrategy",): ("SingleRecord", "MultiRecord"),  # SageMaker's default depends on the split: see below
    ("TransformOutput", "AssembleWith"): ("None", "Line"),
}
_REQUIRED = (
    ("TransformJobName",),
    ("ModelName",),
    ("TransformInput", "DataSource", "S3DataSource", "S3Uri"),
    ("TransformOutput", "S3OutputPath"),
    ("TransformResources", "InstanceType"),
    ("TransformResources", "InstanceCount"),
)
_IDENTITY_PROCESSING = {"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}


class TransformFailed(Exception):
    """The job fails; the message is its FailureReason."""


class TransformStopped(Exception):
    """StopTransformJob (or the local cloud's shutdown) ended the run."""


# --- what the job asks for -------------------------------------------------------------------------------------


def _lookup(body: dict, path: tuple[str, ...]):
    value = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _camel(path: tuple[str, ...]) -> str:
    return ".".join(p[0].lower() + p[1:] for p in path)


def validation_problems(body: dict) -> list[str]:
    """What SageMaker would reject in a CreateTransformJob body, in its words."""
    problems = [
        f"Value null at '{_camel(path)}' failed to satisfy constraint: Member must not be null"
        for path in _REQUIRED
        if _lookup(body, path) is None
    ]
    for path, allowed in _ENUMS.items():
        value = _lookup(body, path)
        if value is not None and value not in allowed:
            problems.append(
                f"Value '{value}' at '{_camel(path)}' failed to satisfy constraint: Member must satisfy enum value "
                f"set: [{', '.join(allowed)}]"
            )
    for path in (("TransformInput", "DataSource", "S3DataSource", "S3Uri"), ("TransformOutput", "S3OutputPath")):
        value = _lookup(body, path)
        if isinstance(value, str) and not value.startswith("s3://"):
            problems.append(
                f"Value '{value}' at '{_camel(path)}' failed to satisfy constraint: Member must be an S3 URI"
            )
    count = _lookup(body, ("TransformResources", "InstanceCount"))
    if count is not None and (not isinstance(count, int) or count < 1):
        problems.append(
            f"Value '{count}' at 'transformResources.instanceCount' failed to satisfy constraint: Member must have "
            "value greater than or equal to 1"
        )
    payload = body.get("MaxPayloadInMB")
    if payload is not None and (not isinstance(payload, int) or not 0 <= payload <= 100):
        problems.append(
            f"Value '{payload}' at 'maxPayloadInMB' failed to satisfy constraint: Member must be between 0 and 100"
        )
    return problems


@dataclass(frozen=True)
class TransformSpec:
    """A CreateTransformJob request, with SageMaker's defaults filled in."""

    input_uri: str
    data_type: str
    content_type: str | None
    compression: str
    split_type: str
    batch_strategy: str
    max_payload_bytes: int
    output_path: str
    accept: str | None
    assemble_with: str
    instance_type: str
    instance_count: int
    max_concurrent: int
    environment: dict[str, str]

    @classmethod
    def from_request(cls, body: dict) -> TransformSpec:
        inputs, output = body["TransformInput"], body["TransformOutput"]
        source = inputs["DataSource"]["S3DataSource"]
        split = inputs.get("SplitType") or "None"
        payload_mb = body.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB)
        return cls(
            input_uri=source["S3Uri"],
            data_type=source.get("S3DataType") or "S3Prefix",
            content_type=inputs.get("ContentType"),
            compression=inputs.get("CompressionType") or "None",
            split_type=split,
            # Without a BatchStrategy, SageMaker sends whole records one at a time unless they are split.
            batch_strategy=body.get("BatchStrategy") or ("MultiRecord" if split != "None" else "SingleRecord"),
            # 0 means no limit (for streaming); the local cloud keeps the largest value SageMaker allows then.
            max_payload_bytes=(payload_mb or 100) * 1024 * 1024,
            output_path=output["S3OutputPath"],
            accept=output.get("Accept"),
            assemble_with=output.get("AssembleWith") or "None",
            instance_type=body["TransformResources"]["InstanceType"],
            instance_count=int(body["TransformResources"]["InstanceCount"]),
            max_concurrent=int(body.get("MaxConcurrentTransforms") or 1),
            environment={str(k): str(v) for k, v in (body.get("Environment") or {}).items()},
        )

    def unserved(self, body: dict) -> str | None:
        """Why the local cloud cannot run this job faithfully, or None."""
        if self.split_type in ("RecordIO", "TFRecord"):
            return f"SplitType {self.split_type}"
        if self.data_type not in ("S3Prefix", "ManifestFile"):
            return f"S3DataType {self.data_type}"
        processing = body.get("DataProcessing") or {}
        if any(processing.get(key, identity) != identity for key, identity in _IDENTITY_PROCESSING.items()):
            return "DataProcessing (InputFilter, OutputFilter, JoinSource)"
        if body.get("DataCaptureConfig"):
            return "DataCaptureConfig"
        if (body.get("TransformOutput") or {}).get("KmsKeyId"):
            return "TransformOutput.KmsKeyId"
        return None

    def server_environment(self) -> dict[str, str]:
        """What SageMaker sets in a batch transform container, then the job's own Environment."""
        return {
            "SAGEMAKER_BATCH": "true",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(self.max_payload_bytes // (1024 * 1024)),
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": str(self.max_concurrent),
            **self.environment,
        }


# --- input objects, records and output -------------------------------------------------------------------------


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass(frozen=True)
class InputObject:
    bucket: str
    key: str
    relative: str  # its name below the input prefix's folder: the output is <S3OutputPath>/<relative>.out

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _below_folder(prefix: str, key: str) -> str:
    """`key` relative to the folder of `prefix` (in/ -> in/a/b.csv is a/b.csv; in/b.csv -> in/b.csv is b.csv)."""
    folder = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(folder) :]


def list_inputs(s3, spec: TransformSpec) -> list[InputObject]:
    """The objects a job transforms; TransformFailed in SageMaker's words when there are none."""
    bucket, prefix = _split_uri(spec.input_uri)
    try:
        if spec.data_type == "ManifestFile":
            objects = _manifest_objects(s3, bucket, prefix)
        else:
            objects = [
                InputObject(bucket, item["Key"], _below_folder(prefix, item["Key"]))
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])
                if not item["Key"].endswith("/")  # a console "folder" is no input
            ]
    except TransformFailed:
        raise
    except Exception as exc:
        raise TransformFailed(f'ClientError: Could not read the input at "{spec.input_uri}": {exc}') from exc
    if not objects:
        raise TransformFailed(
            f'ClientError: No S3 objects found under S3 URL "{spec.input_uri}" given in input data source. Please '
            "ensure that the bucket exists in the selected region, that objects exist under that S3 prefix, and that "
            "the role has s3:ListBucket permissions on the bucket."
        )
    return objects


def _manifest_objects(s3, bucket: str, key: str) -> list[InputObject]:
    """A ManifestFile: [{"prefix": "s3://bucket/folder/"}, "relative/key", ...]."""
    try:
        entries = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        base_bucket, base_key = _split_uri(entries[0]["prefix"])
        relatives = [str(entry) for entry in entries[1:]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TransformFailed(
            f'ClientError: The manifest file "s3://{bucket}/{key}" is not a JSON list that starts with '
            f'{{"prefix": "s3://..."}}: {exc}'
        ) from exc
    return [InputObject(base_bucket, base_key + relative, relative) for relative in relatives]


def requests_for(data: bytes, spec: TransformSpec, uri: str) -> list[bytes]:
    """The request bodies one input object becomes, by SplitType and BatchStrategy."""
    if spec.split_type == "None":
        records = [data]
    else:  # Line
        records = [line.rstrip(b"\r") for line in data.split(b"\n")]
        records = [record for record in records if record.strip()]
    for record in records:
        if len(record) > spec.max_payload_bytes:
            raise TransformFailed(
                f"ClientError: A record of {uri} is {len(record)} bytes, above MaxPayloadInMB "
                f"({spec.max_payload_bytes // (1024 * 1024)} MB). Split the input (SplitType) or raise MaxPayloadInMB."
            )
    if spec.batch_strategy == "SingleRecord" or spec.split_type == "None":
        return records
    return _mini_batches(records, spec.max_payload_bytes)


def _mini_batches(records: list[bytes], limit: int) -> list[bytes]:
    """MultiRecord: as many records per request as fit in the payload limit, joined by newlines."""
    batches: list[list[bytes]] = []
    size = 0
    for record in records:
        if batches and size + 1 + len(record) <= limit:
            batches[-1].append(record)
            size += 1 + len(record)
        else:
            batches.append([record])
            size = len(record)
    return [b"\n".join(batch) for batch in batches]


def assemble(answers: list[bytes], assemble_with: str) -> bytes:
    if assemble_with == "Line":
        return b"".join(answer if answer.endswith(b"\n") else answer + b"\n" for answer in answers)
    return b"".join(answers)


def output_key(spec: TransformSpec, item: InputObject) -> tuple[str, str]:
    bucket, prefix = _split_uri(spec.output_path)
    return bucket, "/".join(part for part in (prefix.strip("/"), f"{item.relative}.out") if part)


# --- one job ---------------------------------------------------------------------------------------------------


@dataclass
class TransformJob:
    """A job's state; the record (`record()`) is what survives a restart."""

    name: str
    region: str
    instance_type: str
    status: str = "InProgress"
    failure_reason: str | None = None
    started: float | None = None
    ended: float | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    stop_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    instances: list[Instance] = field(default_factory=list, repr=False)
    metered: bool = False

    @property
    def arn(self) -> str:
        return arn_formatter("transform-job", self.name, ACCOUNT_ID, self.region)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def record(self) -> dict:
        names = ("name", "region", "instance_type", "status", "failure_reason", "started", "ended")
        return {name: getattr(self, name) for name in names}


def _utc(at: float | None) -> dt.datetime | None:
    return None if at is None else dt.datetime.fromtimestamp(at, dt.timezone.utc).replace(tzinfo=None)


class TransformService:
    def __init__(self, context: AwsContext):
        self.context = context
        self._jobs: dict[tuple[str, str], TransformJob] = {}
        self._lock = threading.Lock()
        self._client = Clients(context)
        self._logs = LogShipper(self._client)
        self._stopping = threading.Event()

    def register(self, gateway) -> None:
        gateway.intercept("sagemaker", "CreateTransformJob", self.create)
        gateway.intercept("sagemaker", "StopTransformJob", self.stop)
        self.context.on_started(self._started)
        self.context.on_shutdown(self._shutdown)
        self.context.on_interrupted("SageMaker batch transform jobs", self._end_interrupted)

    # --- API handlers ---------------------------------------------------------------------------------------

    def create(self, request: AwsRequest, environ: dict) -> Response:
        try:
            body = read_json(environ)
        except ValueError as exc:
            return aws_error(request.protocol, 400, "SerializationException", str(exc))
        if problems := validation_problems(body):
            count = len(problems)
            message = f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
            return aws_error(request.protocol, 400, "ValidationException", message)
        name = body["TransformJobName"]
        key = (request.region, name)
        with self._lock:
            if key in self._jobs:
                return aws_error(
                    request.protocol,
                    400,
                    "ResourceInUse",
                    "Job name must be unique within an AWS account and region, and a job with this name already "
                    f"exists ({self._jobs[key].arn})",
                )
            try:
                container = model_container(self.context, request.region, body["ModelName"])
            except LookupError as missing:
                return aws_error(request.protocol, 400, "ValidationException", str(missing))
            with self.context.lock:  # moto stores it; _commit then corrects its status, in one step
                response = self.context.call_moto(request, environ)
                if response[0] >= 300:
                    return response
                instance_type = body["TransformResources"]["InstanceType"]
                job = TransformJob(name, request.region, instance_type, started=time.time())
                self._jobs[key] = job
                self._commit(job)
        self.context.in_background(self._run, f"transform-job-{job.name}", job, body, container)
        return response

    def stop(self, request: AwsRequest, environ: dict) -> Response:
        try:
            name = str(read_json(environ).get("TransformJobName", ""))
        except ValueError as exc:
            return aws_error(request.protocol, 400, "SerializationException", str(exc))
        job = self._jobs.get((request.region, name))
        if job is None:
            arn = arn_formatter("transform-job", name, ACCOUNT_ID, request.region)
            return aws_error(request.protocol, 400, "ValidationException", f"Could not find transform job '{arn}'.")
        with job.lock:
            if job.status != "InProgress":
                return aws_error(
                    request.protocol,
                    400,
                    "ValidationException",
                    f"The transform job {name} is {job.status}: only a job in progress can be stopped.",
                )
            job.status = "Stopping"
            job.stop_requested.set()
            instances = list(job.instances)
            self._commit(job)
        stop_processes(self.context, instances)  # the run notices and ends Stopped
        return json_response({})

    # --- the run --------------------------------------------------------------------------------------------

    def _run(self, job: TransformJob, body: dict, container: dict) -> None:
        spec = TransformSpec.from_request(body)
        folder = self.context.records("transform-jobs") / job.region / job.name
        try:
            if unserved := spec.unserved(body):
                raise TransformFailed(f"ClientError: The local cloud does not serve {unserved} in batch transform.")
            prepare_model(self._client("s3", job.region), container, folder / "deployment")
            inputs = list_inputs(self._client("s3", job.region), spec)
            self._start_instances(job, spec, container, folder / "deployment")
            self._transform_all(job, spec, inputs)
            self._finish(job, "Completed")
        except (TransformStopped, DeploymentAborted):
            self._finish(job, "Stopped")
        except (TransformFailed, DeploymentFailed) as failure:
            self._finish(job, "Failed", str(failure))
        except Exception as exc:  # a bug of ours must still end the job, with the reason
            log.exception("transform job %s failed", job.name)
            self._finish(job, "Failed", f"InternalServerError: {exc}")
        finally:
            shutil.rmtree(folder / "deployment", ignore_errors=True)

    def _start_instances(self, job: TransformJob, spec: TransformSpec, container: dict, folder) -> None:
        for _ in range(spec.instance_count):
            instance_id = f"i-{uuid.uuid4().hex[:17]}"
            stream = f"{job.name}/{instance_id}-{int(time.time())}"
            self._logs.open_stream(job.region, LOG_GROUP, stream)
            launch = ServerLaunch(
                job.region, LOG_GROUP, stream, instance_id, ("--transform-job", job.name), spec.server_environment()
            )
            with job.lock:
                if job.stop_requested.is_set() or self._stopping.is_set():
                    raise TransformStopped(job.name)
                job.instances.append(spawn_model_server(self.context, self._logs, container, folder, launch))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for instance in job.instances:
            try:
                wait_until_ready(instance, deadline, STARTUP_TIMEOUT_S, self._aborted(job))
            except ServerDown as down:
                tail = instance.log_tail()
                head = (
                    f"ClientError: The model server {down} before serving. CloudWatch Logs {LOG_GROUP}, stream "
                    f"{instance.log_stream}, ends:\n"
                )
                raise TransformFailed(head + tail[-(FAILURE_REASON_MAX - len(head)) :]) from None

    def _aborted(self, job: TransformJob):
        return lambda: job.stop_requested.is_set() or self._stopping.is_set()

    def _transform_all(self, job: TransformJob, spec: TransformSpec, inputs: list[InputObject]) -> None:
        """Every input object through the instances, one worker thread per instance; the first failure wins."""
        todo: queue.Queue[InputObject] = queue.Queue()
        for item in inputs:
            todo.put(item)
        failures: list[BaseException] = []

        def work(instance: Instance) -> None:
            while not failures and not self._aborted(job)():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._transform_object(job, spec, instance, item)
                except Exception as exc:
                    failures.append(exc)

        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in job.instances]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if self._aborted(job)():
            raise TransformStopped(job.name)
        if failures:
            raise failures[0]

    def _transform_object(self, job: TransformJob, spec: TransformSpec, instance: Instance, item: InputObject) -> None:
        s3 = self._client("s3", job.region)
        data = self._read(s3, spec, item)
        bodies = requests_for(data, spec, item.uri)
        answers = [self._invoke(job, spec, instance, body, item) for body in bodies]
        bucket, key = output_key(spec, item)
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=assemble(answers, spec.assemble_with))
        except Exception as exc:
            raise TransformFailed(f'ClientError: Could not write the output "s3://{bucket}/{key}": {exc}') from exc
        self._logs.write(
            job.region,
            LOG_GROUP,
            instance.log_stream,
            f"[labcloud] {item.uri}: {len(bodies)} request(s) -> s3://{bucket}/{key}",
        )

    @staticmethod
    def _read(s3, spec: TransformSpec, item: InputObject) -> bytes:
        try:
            data = s3.get_object(Bucket=item.bucket, Key=item.key)["Body"].read()
        except Exception as exc:
            raise TransformFailed(f'ClientError: Could not read the input "{item.uri}": {exc}') from exc
        if spec.compression != "Gzip":
            return data
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise TransformFailed(
                f'ClientError: The input "{item.uri}" is not gzip data, but the job says CompressionType Gzip: {exc}'
            ) from exc

    def _invoke(self, job: TransformJob, spec: TransformSpec, instance: Instance, body: bytes, item) -> bytes:
        headers = {k: v for k, v in (("Content-Type", spec.content_type), ("Accept", spec.accept)) if v}
        try:
            answer = instance.pool.urlopen("POST", "/invocations", body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            if self._aborted(job)():
                raise TransformStopped(job.name) from exc
            exit_code = instance.process.poll()
            reason = f"it exited with code {exit_code}" if exit_code is not None else str(exc)
            raise TransformFailed(
                f"ClientError: No response from the model server for {item.uri}: {reason}. See CloudWatch Logs "
                f"{LOG_GROUP}, stream {instance.log_stream}."
            ) from exc
        if answer.status != 200:
            message = answer.data.decode("utf-8", "replace").strip()
            head = (
                f"ClientError: The model answered {answer.status} for {item.uri}. See CloudWatch Logs {LOG_GROUP}, "
                f"stream {instance.log_stream}. The model's message: "
            )
            raise TransformFailed(head + message[: FAILURE_REASON_MAX - len(head)])
        return answer.data

    def _finish(self, job: TransformJob, status: str, reason: str | None = None) -> None:
        with job.lock:
            instances, job.instances = job.instances, []
        stop_processes(self.context, instances)
        self._meter(job, instances)
        self._logs.flush()  # before the status: the SDK reads the logs once more when it sees the job end
        with job.lock:
            if job.final:
                return  # the local cloud's shutdown ended it already
            job.status, job.failure_reason, job.ended = status, reason, time.time()
            self._commit(job)

    def _meter(self, job: TransformJob, instances: list[Instance], until: float | None = None) -> None:
        with job.lock:
            if job.metered or not instances:
                return
            job.metered = True
        until = until or time.time()
        hours = sum(max(0.0, until - instance.started_at) for instance in instances) / 3600
        meter_instance_hours(
            self.context, instance_type=job.instance_type, hours=hours, action="TransformJob", resource=job.name
        )

    # --- moto's record, our record --------------------------------------------------------------------------

    def _commit(self, job: TransformJob) -> None:
        """Mirror the job into moto's record (which Describe and List answer from) and save our record."""
        self._mirror(job, modified=True)
        path = self.context.records("transform-jobs") / job.region / f"{job.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.record()))
        os.replace(tmp, path)

    def _mirror(self, job: TransformJob, modified: bool) -> None:
        from moto.core.utils import utcnow

        with self.context.lock:
            fake = self.context.moto_backend("sagemaker", job.region).transform_jobs.get(job.name)
            if fake is not None:
                fake.transform_job_status = job.status
                fake.failure_reason = job.failure_reason
                fake.transform_start_time = _utc(job.started)
                fake.transform_end_time = _utc(job.ended)
                fake.labeling_job_arn = fake.auto_ml_job_arn = None  # moto's "" for jobs that were not made by one
                if modified:
                    fake.last_modified_time = utcnow()
        self.context.mark_dirty("sagemaker")

    # --- the local cloud's start and stop -------------------------------------------------------------------

    def _records(self):
        """The jobs of the records that moto still knows (a record of a job moto's reset state lost is dropped)."""
        for path in sorted(self.context.records("transform-jobs").glob("*/*.json")):
            try:
                job = TransformJob(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                log.exception("could not read the transform job record %s", path)
                continue
            with self.context.lock:
                known = job.name in self.context.moto_backend("sagemaker", job.region).transform_jobs
            if known:
                yield job
            else:
                path.unlink(missing_ok=True)

    def _end_interrupted(self, reason: str) -> list[str]:
        """Failed: the jobs that ran when the local cloud stopped (at start, before any runs); their names."""
        ended = []
        for job in self._records():
            if not job.final:
                job.status, job.failure_reason = "Failed", f"{reason} while the job ran"
                job.ended = job.ended or time.time()
                self._commit(job)
                ended.append(job.name)
        return ended

    def _started(self) -> None:
        for job in self._records():
            # moto's state may predate the job's last change (a crash; a replayed create says Completed): ours wins.
            self._mirror(job, modified=False)
            self._jobs[(job.region, job.name)] = job
        self.context.in_background(self._flush_every_second, "transform-log-flusher")

    def _flush_every_second(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self._logs.flush()

    def _shutdown(self) -> None:
        """Meter the time so far and end running jobs Failed; their processes stop with the local cloud's children."""
        self._stopping.set()
        now = time.time()
        for job in list(self._jobs.values()):
            with job.lock:
                if job.final:
                    continue
                instances = list(job.instances)
                job.status, job.failure_reason, job.ended = "Failed", SHUTDOWN_REASON, now
                self._commit(job)
            self._meter(job, instances, until=now)


def register(gateway, context: AwsContext) -> None:
    TransformService(context).register(gateway)
