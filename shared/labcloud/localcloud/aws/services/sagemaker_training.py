"""SageMaker training jobs that really run: CreateTrainingJob starts the learner's script on this machine.

moto validates and stores a CreateTrainingJob, but it says Completed at once, produces no model artifact, lets a
second job take an existing name, has no StopTrainingJob, and answers a request without its required fields with
an internal error. Here:
- CreateTrainingJob is checked against the API's own shapes (botocore's service model) and for a unique name,
  stored by moto, then run in the background by `labcloud.runtime.sagemaker_training` (downloads, one process per
  instance under SageMaker's container contract, checkpoints, model.tar.gz to S3).
- DescribeTrainingJob answers from the job's record: TrainingJobStatus InProgress -> Completed | Failed |
  Stopped, SecondaryStatus and its transitions (Starting, Downloading, Training, Uploading, Completed; Interrupted
  and Restarting for managed spot), FailureReason, ModelArtifacts, times, billable time, final metrics (the
  estimator's metric_definitions applied to the log).
- StopTrainingJob stops the processes (SIGTERM, then SIGKILL), uploads the model and ends Stopped.
- ListTrainingJobs lists the jobs with their real status.
- Each host's output goes to CloudWatch Logs, group /aws/sagemaker/TrainingJobs, stream `<job>/algo-<i>-<epoch>`,
  while it runs, so `estimator.fit()` prints it.
- Managed spot: the training-job tag `labcloud:interrupt-after-seconds` interrupts a job on purpose (see
  `labcloud.runtime.sagemaker_training.INTERRUPT_TAG`); BillableTimeInSeconds is the training time scaled by the
  spot / on-demand price ratio, as the savings the SDK prints.
- When a job ends, the cost meter gets its instance-hours at the catalog's price for the instance type (spot
  price for managed spot). The instance type is simulated: a job "on" ml.p4d.24xlarge runs on this machine.
- Job records are JSON files under the state folder (`training-jobs/<region>/<job>/record.json`, beside the job's
  work folder); a job that was running when the local cloud stopped (`labcloud down`, or a crash) is Failed at the
  next start, with FailureReason "the local cloud stopped while the job ran" (`CloudContext.on_interrupted`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from ....pricing.catalog import UnknownInstanceType
from ....runtime.sagemaker_training import JobFailed, Outcome, TrainingRun, TrainingSpec
from ...context import LOCAL_CLOUD_STOPPED
from ..context import AwsContext, json_response, read_json
from ..errors import Response, aws_error
from ..requests import AwsRequest

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SHUTDOWN_REASON = f"{LOCAL_CLOUD_STOPPED} while the job ran"
FINAL_STATUSES = ("Completed", "Failed", "Stopped")
MAX_LOG_MESSAGE = 256 * 1024 - 26  # CloudWatch Logs' limit for one event
# Beyond what botocore's model requires: what moto and the runner need (AWS's own model made them optional
# for training plans and serverless jobs, which the local cloud does not offer).
_ALSO_REQUIRED = (("AlgorithmSpecification",), ("ResourceConfig", "InstanceType"), ("ResourceConfig", "InstanceCount"))


# --- the API's shapes, from botocore's service model ---------------------------------------------------------


@cache
def _sagemaker_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def _validation_problems(body: dict) -> list[str]:
    """What AWS would reject in a CreateTrainingJob body, in its words."""
    from botocore.validate import ParamValidator

    shape = _sagemaker_model().operation_model("CreateTrainingJob").input_shape
    missing = [(name,) for name in shape.required_members if body.get(name) is None]
    missing += [path for path in _ALSO_REQUIRED if _lookup(body, path) is None and path[:1] not in missing]
    problems = [
        f"Value null at '{'.'.join(p[0].lower() + p[1:] for p in path)}' failed to satisfy constraint: "
        "Member must not be null"
        for path in missing
    ]
    if problems:
        return problems
    report = ParamValidator().validate(body, shape)
    if report.has_errors():
        return [line for line in report.generate_report().splitlines() if line.strip()]
    instance_type = body["ResourceConfig"]["InstanceType"]
    if instance_type not in shape.members["ResourceConfig"].members["InstanceType"].enum:
        problems.append(
            f"Value '{instance_type}' at 'resourceConfig.instanceType' failed to satisfy constraint: "
            "Member must satisfy enum value set (TrainingInstanceType)"
        )
    return problems


def _lookup(body: dict, path: tuple[str, ...]):
    value = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


@cache
def _described_fields() -> frozenset[str]:
    """The request fields DescribeTrainingJob echoes back."""
    return frozenset(_sagemaker_model().operation_model("DescribeTrainingJob").output_shape.members)


# --- one job's record ------------------------------------------------------------------------------------


@dataclass
class JobRecord:
    """What DescribeTrainingJob reports, kept as JSON so it survives a restart. Times are epoch seconds."""

    name: str
    region: str
    arn: str
    request: dict
    created: float
    status: str = "InProgress"
    secondary_status: str = "Starting"
    transitions: list[dict] = field(default_factory=list)
    failure_reason: str | None = None
    model_artifacts: str | None = None
    training_start: float | None = None
    training_end: float | None = None
    training_seconds: int | None = None
    billable_seconds: int | None = None
    last_modified: float = 0.0
    final_metrics: dict[str, list[float]] = field(default_factory=dict)  # name -> [value, timestamp]
    log_streams: dict[str, str] = field(default_factory=dict)  # host -> stream

    def transition(self, status: str, message: str) -> None:
        now = time.time()
        if self.transitions and self.transitions[-1]["Status"] == status:
            return
        if self.transitions:
            self.transitions[-1].setdefault("EndTime", now)
        self.transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
        self.secondary_status, self.last_modified = status, now

    def description(self) -> dict:
        described = {k: v for k, v in self.request.items() if k in _described_fields()}
        answer = {
            **described,
            **_with_service_defaults(described),
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
            "SecondaryStatusTransitions": self.transitions,
            "CreationTime": self.created,
            "LastModifiedTime": self.last_modified,
            "EnableManagedSpotTraining": bool(self.request.get("EnableManagedSpotTraining")),
            "EnableNetworkIsolation": bool(self.request.get("EnableNetworkIsolation")),
            "EnableInterContainerTrafficEncryption": bool(self.request.get("EnableInterContainerTrafficEncryption")),
        }
        optional = {
            "FailureReason": self.failure_reason,
            "ModelArtifacts": {"S3ModelArtifacts": self.model_artifacts} if self.model_artifacts else None,
            "TrainingStartTime": self.training_start,
            "TrainingEndTime": self.training_end,
            "TrainingTimeInSeconds": self.training_seconds,
            "BillableTimeInSeconds": self.billable_seconds,
            "FinalMetricDataList": [
                {"MetricName": name, "Value": value, "Timestamp": at}
                for name, (value, at) in sorted(self.final_metrics.items())
            ]
            or None,
        }
        answer.update({k: v for k, v in optional.items() if v is not None})
        return answer

    def summary(self) -> dict:
        summary = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.last_modified,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
        }
        if self.training_end is not None:
            summary["TrainingEndTime"] = self.training_end
        return summary


def _with_service_defaults(described: dict) -> dict:
    """The defaults SageMaker fills in and reports (the SDK's `Estimator.attach` reads them)."""
    return {
        "OutputDataConfig": {"KmsKeyId": "", "CompressionType": "GZIP", **described.get("OutputDataConfig", {})},
        "ResourceConfig": {"VolumeSizeInGB": 0, **described.get("ResourceConfig", {})},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400, **described.get("StoppingCondition", {})},
    }


class TrainingJob:
    """A job's record, its folder, and (while it runs) the run and its log streams."""

    def __init__(self, record: JobRecord, folder: Path):
        self.record = record
        self.folder = folder
        self.lock = threading.RLock()
        self.run: TrainingRun | None = None

    def save(self) -> None:
        with self.lock:
            data = json.dumps(asdict(self.record), indent=1)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "record.json.tmp"
        tmp.write_text(data)
        os.replace(tmp, self.folder / "record.json")

    @property
    def final(self) -> bool:
        return self.record.status in FINAL_STATUSES


# --- what the run reports: statuses, log lines, metrics ------------------------------------------------------


class JobObserver:
    """Receives the run's reports: status transitions go to the record, log lines to CloudWatch Logs (buffered,
    written at each of the run's ticks), and lines matching the estimator's metric definitions to the metrics."""

    def __init__(self, context: AwsContext, job: TrainingJob):
        self.context = context
        self.job = job
        self._buffer: dict[str, list[dict]] = {}
        self._last_timestamp: dict[str, int] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        definitions = (job.record.request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        self._metrics = [(d["Name"], re.compile(d["Regex"])) for d in definitions if _compiles(d.get("Regex"))]

    def secondary_status(self, status: str, message: str) -> None:
        with self.job.lock:
            if self.job.final:
                return
            self.job.record.transition(status, message)
            if status == "Downloading" and self.job.record.training_start is None:
                self.job.record.training_start = time.time()
        self.job.save()

    def log(self, host: str, line: str) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            timestamp = max(now, self._last_timestamp.get(host, 0))  # one stream's events never go back in time
            self._last_timestamp[host] = timestamp
            self._buffer.setdefault(host, []).append({"timestamp": timestamp, "message": line[:MAX_LOG_MESSAGE]})
        for name, pattern in self._metrics:
            if (match := pattern.search(line)) and (value := _number(match)) is not None:
                with self.job.lock:
                    self.job.record.final_metrics[name] = [value, timestamp / 1000]

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                pending, self._buffer = self._buffer, {}
            if not pending:
                return
            streams = self.job.record.log_streams
            with self.context.lock:
                backend = self._log_backend()  # again: the learner may have deleted the group meanwhile
                for host, events in pending.items():
                    backend.ensure_log_stream(LOG_GROUP, streams[host])
                    backend.put_log_events(LOG_GROUP, streams[host], events)
            self.context.mark_dirty("logs")

    def open_streams(self, hosts: list[str]) -> None:
        """Create the job's log streams up front, so the SDK finds one per instance from the start."""
        started = int(time.time())
        self.job.record.log_streams = {host: f"{self.job.record.name}/{host}-{started}" for host in hosts}
        with self.context.lock:
            backend = self._log_backend()
            for stream in self.job.record.log_streams.values():
                backend.ensure_log_stream(LOG_GROUP, stream)
        self.context.mark_dirty("logs")

    def _log_backend(self):
        """moto's CloudWatch Logs for the job's region, with the training jobs' group (call under the lock)."""
        backend = self.context.moto_backend("logs", self.job.record.region)
        if LOG_GROUP not in backend.groups:
            backend.create_log_group(LOG_GROUP, {})
        return backend


def _compiles(pattern) -> bool:
    try:
        re.compile(pattern)
        return True
    except (re.error, TypeError):
        return False


def _number(match: re.Match) -> float | None:
    try:
        return float(match.group(1) if match.groups() else match.group(0))
    except (TypeError, ValueError):
        return None


# --- the service --------------------------------------------------------------------------------------------


class TrainingJobs:
    def __init__(self, context: AwsContext):
        self.context = context
        self._jobs: dict[tuple[str, str], TrainingJob] = {}
        self._lock = threading.Lock()
        self._s3_clients: dict[str, object] = {}
        self._clients_lock = threading.Lock()

    # -- state --

    def restore(self) -> None:
        """Load the records (`end_interrupted` then fails those that were running when the local cloud stopped)."""
        for path in sorted(self.context.records("training-jobs").glob("*/*/record.json")):
            try:
                record = JobRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                log.exception("could not read the training job record %s", path)
                continue
            self._jobs[(record.region, record.name)] = TrainingJob(record, path.parent)

    def end_interrupted(self, reason: str) -> list[str]:
        """Fail (or, when a stop was asked, stop) the jobs that ran when the local cloud stopped; their names."""
        with self._lock:
            unfinished = [job for job in self._jobs.values() if not job.final and job.run is None]
        for job in unfinished:
            self._end_abruptly(job, f"{reason} while the job ran")
        return [job.record.name for job in unfinished]

    def shutdown(self) -> None:
        with self._lock:
            running = [job for job in self._jobs.values() if not job.final]
        for job in running:
            if job.run is not None:
                job.run.abort(SHUTDOWN_REASON)
            self._end_abruptly(job, SHUTDOWN_REASON)

    def _end_abruptly(self, job: TrainingJob, reason: str) -> None:
        with job.lock:
            stopping = job.record.status == "Stopping"
            job.record.status = "Stopped" if stopping else "Failed"
            job.record.failure_reason = None if stopping else reason
            job.record.transition(job.record.status, "Training job stopped" if stopping else "Training job failed")
            job.record.training_end = job.record.training_end or job.record.last_modified
            job.record.transitions[-1]["EndTime"] = job.record.last_modified
        job.save()

    def _job(self, request: AwsRequest, body: dict) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get((request.region, str(body.get("TrainingJobName"))))

    def _s3(self, region: str):
        with self._clients_lock:
            if region not in self._s3_clients:
                self._s3_clients[region] = self.context.client("s3", region)
            return self._s3_clients[region]

    def warm_up(self) -> None:
        """Load the API model and an S3 client before the first job needs them (a few tenths of a second)."""
        _described_fields()
        self._s3("us-east-1")

    # -- handlers --

    def create(self, request: AwsRequest, environ: dict) -> Response:
        body, error = _parse(request, environ)
        if error:
            return error
        if problems := _validation_problems(body):
            return _validation_error(request, problems)
        name = body["TrainingJobName"]
        with self._lock:
            if existing := self._jobs.get((request.region, name)):
                return aws_error(
                    request.protocol,
                    400,
                    "ResourceInUse",
                    "Training job names must be unique within an AWS account and region, and a training job with "
                    f"this name already exists ({existing.record.arn})",
                )
            status, headers, answer = self.context.call_moto(request, environ)
            if status != 200:
                return status, headers, answer
            job = self._new_job(request.region, body, json.loads(answer)["TrainingJobArn"])
            self._jobs[(request.region, name)] = job
        self._start(job)
        return status, headers, answer

    def describe(self, request: AwsRequest, environ: dict) -> Response:
        body, error = _parse(request, environ)
        if error:
            return error
        if (job := self._job(request, body)) is None:
            return _not_found(request)
        with job.lock:
            return json_response(job.record.description())

    def stop(self, request: AwsRequest, environ: dict) -> Response:
        body, error = _parse(request, environ)
        if error:
            return error
        if (job := self._job(request, body)) is None:
            return _not_found(request)
        with job.lock:
            if job.record.status != "InProgress":
                return aws_error(
                    request.protocol,
                    400,
                    "ValidationException",
                    f"The request was rejected because the training job is in status {job.record.status}.",
                )
            job.record.status = "Stopping"
            job.record.transition("Stopping", "Stopping the training job")
            run = job.run  # None only while the job is being started: _start then stops it itself
        job.save()
        if run is not None:
            run.stop()
        return json_response({})

    def list(self, request: AwsRequest, environ: dict) -> Response:
        body, error = _parse(request, environ)
        if error:
            return error
        with self._lock:
            jobs = [job for (region, _), job in self._jobs.items() if region == request.region]
        summaries = [s for s in (job.record.summary() for job in jobs) if _matches(s, body)]
        sort_key = {"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(body.get("SortBy"), "CreationTime")
        summaries.sort(key=lambda s: s[sort_key], reverse=body.get("SortOrder", "Descending") == "Descending")
        try:
            start = int(body.get("NextToken") or 0)
            end = start + int(body.get("MaxResults") or 10)
        except (TypeError, ValueError):
            return aws_error(request.protocol, 400, "ValidationException", "Invalid NextToken or MaxResults.")
        answer: dict = {"TrainingJobSummaries": summaries[start:end]}
        if end < len(summaries):
            answer["NextToken"] = str(end)
        return json_response(answer)

    # -- running --

    def _new_job(self, region: str, body: dict, arn: str) -> TrainingJob:
        name = body["TrainingJobName"]
        now = time.time()
        record = JobRecord(
            name=name,
            region=region,
            arn=arn,
            request=body,
            created=now,
            last_modified=now,
        )
        record.transition("Starting", "Preparing the instances for training")
        job = TrainingJob(record, self.context.records("training-jobs") / region / name)
        job.save()
        return job

    def _start(self, job: TrainingJob) -> None:
        record = job.record
        observer = JobObserver(self.context, job)
        try:
            spec = TrainingSpec.from_request(record.request, record.arn, record.region)
        except JobFailed as failure:
            self._finish(job, Outcome("Failed", "Failed", "Training job failed", failure_reason=str(failure)))
            return
        observer.open_streams(spec.hosts)
        job.save()
        run = TrainingRun(
            spec,
            job.folder / "work",
            self._s3(record.region),
            self.context.children,
            observer,
            script_environment=self.context.sdk_environment(record.region),
        )
        with job.lock:
            job.run = run
            if record.status == "Stopping":  # a StopTrainingJob came while the job was being started
                run.stop()
        self._note_unpriced(observer, spec)
        self.context.in_background(self._run, f"training-job-{record.name}", job)

    def _run(self, job: TrainingJob) -> None:
        outcome = job.run.execute()
        self._finish(job, outcome)

    def _finish(self, job: TrainingJob, outcome: Outcome) -> None:
        with job.lock:
            if job.final:
                return  # the local cloud's shutdown ended it already
            record = job.record
            record.status = outcome.status
            record.failure_reason = outcome.failure_reason
            record.model_artifacts = outcome.model_artifacts
            record.training_start = record.training_start or outcome.training_start
            record.training_end = outcome.training_end or time.time()
            record.transition(outcome.secondary_status, outcome.message)
            record.transitions[-1]["EndTime"] = record.last_modified
            if record.training_start is not None:
                self._bill(record)
        job.save()
        job.run = None

    def _bill(self, record: JobRecord) -> None:
        """Training and billable seconds in the record, and the job's line in the cost meter."""
        resources = record.request["ResourceConfig"]
        wall_s = max(0.0, record.training_end - record.training_start)
        record.training_seconds = max(1, math.ceil(wall_s))
        spot = bool(record.request.get("EnableManagedSpotTraining"))
        try:
            on_demand, hourly, price_key = _hourly_price(self.context.catalog, resources["InstanceType"], spot)
        except UnknownInstanceType:
            record.billable_seconds = record.training_seconds
            return
        # round() first: 3 * 1.408 / 1.408 is 3.0000000000000004, which ceil() makes 4
        record.billable_seconds = max(1, math.ceil(round(record.training_seconds * hourly / on_demand, 6)))
        instance_hours = int(resources.get("InstanceCount") or 1) * wall_s / 3600
        self.context.meter(
            service="sagemaker",
            action="TrainingJob",
            resource=record.name,
            quantity=instance_hours,
            unit="instance-hour",
            usd=hourly * instance_hours,
            price_key=price_key,
        )

    def _note_unpriced(self, observer: JobObserver, spec: TrainingSpec) -> None:
        try:
            _hourly_price(self.context.catalog, spec.instance_type, spec.spot)
        except UnknownInstanceType:
            observer.log(
                spec.hosts[0],
                f"[labcloud] {spec.instance_type} is not in the course's price catalog: this job is not metered.",
            )


def _hourly_price(catalog, instance_type: str, spot: bool) -> tuple[float, float, str]:
    """(on-demand, charged, price key) per instance-hour. Managed spot: the catalog's spot price for the
    training instance, or else the same discount as the EC2 instance of that type (SageMaker publishes no
    fixed spot price); with neither, spot is charged on demand."""
    instance = catalog.get(instance_type, service="sagemaker-training")
    on_demand = instance.on_demand_usd_per_hour
    if not spot:
        return on_demand, on_demand, instance.id
    if instance.spot_usd_per_hour is not None:
        return on_demand, instance.spot_usd_per_hour, instance.id
    try:
        ec2 = catalog.get(instance_type.removeprefix("ml."), service="ec2")
    except UnknownInstanceType:
        return on_demand, on_demand, instance.id
    ratio = (ec2.spot_usd_per_hour or ec2.on_demand_usd_per_hour) / ec2.on_demand_usd_per_hour
    return on_demand, on_demand * ratio, instance.id


def _matches(summary: dict, body: dict) -> bool:
    checks = (
        ("NameContains", lambda v: str(v).lower() in summary["TrainingJobName"].lower()),
        ("StatusEquals", lambda v: summary["TrainingJobStatus"] == v),
        ("CreationTimeAfter", lambda v: summary["CreationTime"] > float(v)),
        ("CreationTimeBefore", lambda v: summary["CreationTime"] < float(v)),
        ("LastModifiedTimeAfter", lambda v: summary["LastModifiedTime"] > float(v)),
        ("LastModifiedTimeBefore", lambda v: summary["LastModifiedTime"] < float(v)),
    )
    return all(check(body[key]) for key, check in checks if body.get(key) is not None)


def _parse(request: AwsRequest, environ: dict) -> tuple[dict, Response | None]:
    try:
        return read_json(environ), None
    except ValueError as exc:
        return {}, aws_error(request.protocol, 400, "SerializationException", str(exc))


def _not_found(request: AwsRequest) -> Response:
    return aws_error(request.protocol, 400, "ValidationException", "Requested resource not found.")


def _validation_error(request: AwsRequest, problems: list[str]) -> Response:
    count = len(problems)
    message = f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
    return aws_error(request.protocol, 400, "ValidationException", message)


def register(gateway, context: AwsContext) -> None:
    jobs = TrainingJobs(context)
    jobs.restore()
    context.on_interrupted("SageMaker training jobs", jobs.end_interrupted)
    context.on_started(lambda: context.in_background(jobs.warm_up, "sagemaker-training-warm-up"))
    context.on_shutdown(jobs.shutdown)
    for action, handler in (
        ("CreateTrainingJob", jobs.create),
        ("DescribeTrainingJob", jobs.describe),
        ("StopTrainingJob", jobs.stop),
        ("ListTrainingJobs", jobs.list),
    ):
        gateway.intercept("sagemaker", action, handler)
