"""SageMaker real-time endpoints that really serve: model servers running the learner's inference code.

moto validates and stores models, endpoint configs and endpoints, and answers Describe/List from its records; it
says InService at once, has no UpdateEndpoint, and its InvokeEndpoint answers a constant. Here:

- CreateEndpoint (status Creating): for each production variant, the model archive is downloaded and extracted
  under records("endpoints")/<region>/<endpoint>/<variant>/<deployment>/ and InitialInstanceCount model servers
  (`labcloud.runtime.model_server`, the inference toolkit's contract) are started; InService once every instance
  answers /ping, Failed with the log tail in FailureReason when one exits (model_fn raising, a bad script).
  Each server's output goes to CloudWatch Logs, group /aws/sagemaker/Endpoints/<endpoint>,
  stream <variant>/<instance id>.
- InvokeEndpoint: a variant drawn by weight (or TargetVariant), its instances in turn, the request proxied over
  kept-alive connections; the learner's errors come back as ModelError (424) as sagemaker-runtime sends them.
- UpdateEndpointWeightsAndCapacities changes the routing at once and starts or stops instances (Updating, then
  InService); UpdateEndpoint starts the new config's servers, then switches traffic and stops the old ones;
  DeleteEndpoint stops the servers.
- DataCaptureConfig: sampled requests and responses are written as SageMaker's JSON Lines capture files to
  <DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/, flushed every second and at delete.
- The meter: instance-hours per variant at the real-time inference price, added when instances stop (delete,
  scale-in, update, shutdown). GPU instance types are simulated: a g4dn runs on this machine's CPU.
- Restart: endpoints are kept as JSON records; those that were serving (InService) are started again
  (SystemUpdating, then InService) when the local cloud comes back, after `labcloud down` as after a crash. One
  that was being created is Failed, FailureReason "the local cloud stopped while the endpoint was being created";
  one that was being updated is started again on the configuration it served, as SageMaker rolls back a failed
  update, with the reason in FailureReason (`CloudContext.on_interrupted`).

Model files, model-server processes, their logs and the instance-hour meter are `sagemaker_hosting`'s, shared
with batch transform jobs.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import logging
import os
import random
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import urllib3
from moto.sagemaker.utils import arn_formatter

from ..context import ACCOUNT_ID, AwsContext, json_response, read_json
from ..errors import Response, aws_error
from ..requests import AwsRequest, read_body
from .sagemaker_hosting import (
    Clients,
    DeploymentAborted,
    DeploymentFailed,
    Instance,
    LogShipper,
    ServerDown,
    ServerLaunch,
    meter_instance_hours,
    prepare_model,
    primary_container,
    spawn_model_server,
    stop_processes,
    wait_until_ready,
)

log = logging.getLogger(__name__)

SERVING = ("InService", "Updating")  # an endpoint being updated keeps serving its current config
RESTARTABLE = ("InService", "Updating", "SystemUpdating", "Creating")
STARTUP_TIMEOUT_S = 300.0  # when a variant sets no ContainerStartupHealthCheckTimeoutInSeconds
FLUSH_INTERVAL_S = 1.0
FAILURE_REASON_MAX = 1024  # DescribeEndpoint's limit


# --- what runs ------------------------------------------------------------------------------------------------


@dataclass
class VariantSpec:
    """A production variant as its endpoint config and model describe it (kept in the endpoint's record)."""

    name: str
    model_name: str
    instance_type: str | None
    instance_count: int
    weight: float
    container: dict
    startup_timeout_s: float = STARTUP_TIMEOUT_S

    @classmethod
    def from_config(cls, variant: dict, model) -> VariantSpec:
        container = primary_container(model)
        serverless = variant.get("ServerlessConfig")
        return cls(
            name=variant["VariantName"],
            model_name=variant["ModelName"],
            instance_type=variant.get("InstanceType"),
            instance_count=1 if serverless else int(variant.get("InitialInstanceCount") or 1),
            weight=float(variant.get("InitialVariantWeight", 1.0)),
            container=container,
            startup_timeout_s=float(variant.get("ContainerStartupHealthCheckTimeoutInSeconds") or STARTUP_TIMEOUT_S),
        )


@dataclass
class Variant:
    """A running production variant: its instances (replaced as a whole, so readers need no lock) and weight."""

    spec: VariantSpec
    folder: Path
    weight: float
    desired_count: int
    instances: tuple[Instance, ...] = ()
    _turn: itertools.count = field(default_factory=itertools.count)

    def next_instance(self) -> Instance:
        instances = self.instances
        return instances[next(self._turn) % len(instances)]


@dataclass
class Endpoint:
    name: str
    region: str
    config_name: str
    status: str
    specs: list[VariantSpec]
    deployment: str  # names the folder of the model files the running instances use
    capture: CaptureConfig | None = None
    failure_reason: str | None = None
    variants: dict[str, Variant] = field(default_factory=dict)
    starting: set = field(default_factory=set)  # instances not yet serving, stopped too if the endpoint goes
    deleted: bool = False
    restored_routing: dict = field(default_factory=dict)  # weights and counts to restart with

    @property
    def arn(self) -> str:
        return arn_formatter("endpoint", self.name, ACCOUNT_ID, self.region)

    @property
    def log_group(self) -> str:
        return f"/aws/sagemaker/Endpoints/{self.name}"

    def record(self) -> dict:
        return {
            "name": self.name,
            "region": self.region,
            "config_name": self.config_name,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "deployment": self.deployment,
            "specs": [asdict(s) for s in self.specs],
            "capture": self.capture.raw if self.capture else None,
            # Weights and counts changed by UpdateEndpointWeightsAndCapacities outlive a restart.
            "routing": {n: {"weight": v.weight, "count": v.desired_count} for n, v in self.variants.items()}
            or self.restored_routing,
        }

    def variant_summaries(self) -> list[dict]:
        summaries = []
        for spec in self.specs:
            live = self.variants.get(spec.name)
            weight = live.weight if live else spec.weight
            summaries.append(
                {
                    "VariantName": spec.name,
                    "CurrentWeight": weight,
                    "DesiredWeight": weight,
                    "CurrentInstanceCount": len(live.instances) if live else 0,
                    "DesiredInstanceCount": live.desired_count if live else spec.instance_count,
                }
            )
        return summaries


# --- data capture ---------------------------------------------------------------------------------------------


@dataclass
class CaptureConfig:
    """An endpoint config's DataCaptureConfig, and how one request/response pair becomes a capture line."""

    raw: dict
    enabled: bool
    percentage: float
    bucket: str
    prefix: str
    capture_input: bool
    capture_output: bool
    json_types: tuple[str, ...]
    csv_types: tuple[str, ...]

    @classmethod
    def from_api(cls, raw: dict | None) -> CaptureConfig | None:
        if not raw or not raw.get("DestinationS3Uri"):
            return None
        bucket, _, prefix = raw["DestinationS3Uri"].removeprefix("s3://").partition("/")
        modes = {str(o.get("CaptureMode", "")).lower() for o in raw.get("CaptureOptions") or []}
        headers = raw.get("CaptureContentTypeHeader") or {}
        return cls(
            raw=raw,
            enabled=bool(raw.get("EnableCapture")),
            percentage=float(raw.get("InitialSamplingPercentage", 0)),
            bucket=bucket,
            prefix=prefix.strip("/"),
            capture_input=bool(modes & {"input", "inputandoutput"}),
            capture_output=bool(modes & {"output", "inputandoutput"}),
            json_types=tuple(headers.get("JsonContentTypes") or ()),
            csv_types=tuple(headers.get("CsvContentTypes") or ()),
        )

    def summary(self) -> dict:
        return {
            "EnableCapture": self.enabled,
            "CaptureStatus": "Started" if self.enabled else "Stopped",
            "CurrentSamplingPercentage": int(self.percentage),
            "DestinationS3Uri": self.raw["DestinationS3Uri"],
        }

    def sampled(self) -> bool:
        return self.enabled and random.random() * 100 < self.percentage

    def _payload(self, body: bytes, content_type: str, mode: str) -> dict:
        media_type = content_type.split(";", 1)[0].strip()
        # Without CaptureContentTypeHeader, SageMaker base64-encodes everything.
        encoding = "JSON" if media_type in self.json_types else "CSV" if media_type in self.csv_types else "BASE64"
        data = base64.b64encode(body).decode() if encoding == "BASE64" else body.decode("utf-8", "replace")
        return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}

    def line(self, request: tuple[bytes, str], response: tuple[bytes, str], at: float, inference_id: str | None):
        data = {}
        if self.capture_input:
            data["endpointInput"] = self._payload(*request, "INPUT")
        if self.capture_output:
            data["endpointOutput"] = self._payload(*response, "OUTPUT")
        metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": _utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if inference_id:
            metadata["inferenceId"] = inference_id
        return json.dumps({"captureData": data, "eventMetadata": metadata, "eventVersion": "0"})


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc)


class CaptureWriter:
    """Capture lines waiting for S3; each flush writes one file per endpoint, variant and hour."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str, float, str]] = []  # region, bucket, folder, time, line

    def add(self, endpoint: Endpoint, variant: str, capture: CaptureConfig, at: float, line: str) -> None:
        folder = "/".join(p for p in (capture.prefix, endpoint.name, variant, _utc(at).strftime("%Y/%m/%d/%H")) if p)
        with self._lock:
            self._pending.append((endpoint.region, capture.bucket, folder, at, line))

    def flush(self, put) -> None:
        """Write what is pending with `put(region, bucket, key, body)`."""
        with self._lock:
            pending, self._pending = self._pending, []
        files: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
        for region, bucket, folder, at, line in pending:
            files.setdefault((region, bucket, folder), []).append((at, line))
        for (region, bucket, folder), lines in files.items():
            first = _utc(lines[0][0])
            name = f"{first:%M-%S}-{first.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            body = "".join(line + "\n" for _, line in lines).encode()
            try:
                put(region, bucket, f"{folder}/{name}", body)
            except Exception as exc:  # a missing bucket loses the captures, as on SageMaker; the endpoint serves on
                log.warning("data capture to s3://%s/%s failed: %s", bucket, folder, exc)


# --- the service ----------------------------------------------------------------------------------------------


class EndpointService:
    def __init__(self, context: AwsContext):
        self.context = context
        self._lock = threading.RLock()  # endpoint lifecycle changes; invocations read without it
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self._captures = CaptureWriter()
        self._client = Clients(context)
        self._logs = LogShipper(self._client)
        self._stopping = threading.Event()

    def register(self, gateway) -> None:
        for action, handler in {
            "CreateEndpoint": self.create_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
            "InvokeEndpoint": self.invoke_endpoint,
        }.items():
            gateway.intercept("sagemaker", action, handler)
        self.context.on_started(self._started)
        self.context.on_shutdown(self._shutdown)
        self.context.on_interrupted("SageMaker endpoints", self._end_interrupted)

    # --- API handlers ---------------------------------------------------------------------------------------

    def create_endpoint(self, request: AwsRequest, environ: dict) -> Response:
        params = _params(environ)
        name, region = params.get("EndpointName", ""), request.region
        with self._lock:
            if (region, name) in self._endpoints:
                arn = self._endpoints[(region, name)].arn
                return _control_error(f'Cannot create already existing endpoint "{arn}".')
            with self.context.lock:  # moto stores it, then our record mirrors it (_commit), in one step
                response = self.context.call_moto(request, environ)
                if response[0] >= 300:
                    return response
                endpoint = Endpoint(name, region, params["EndpointConfigName"], "Creating", [], _new_id())
                try:
                    endpoint.specs, endpoint.capture = self._config(region, endpoint.config_name)
                except LookupError as exc:  # the config's model was deleted since
                    endpoint.status, endpoint.failure_reason = "Failed", str(exc)
                self._endpoints[(region, name)] = endpoint
                self._commit(endpoint)
        if endpoint.status == "Creating":
            self.context.in_background(self._create, f"endpoint-{name}", endpoint)
        return response

    def update_endpoint(self, request: AwsRequest, environ: dict) -> Response:
        params = _params(environ)
        endpoint = self._endpoints.get((request.region, params.get("EndpointName", "")))
        if endpoint is None:
            arn = arn_formatter("endpoint", params.get("EndpointName", ""), ACCOUNT_ID, request.region)
            return _control_error(f"Could not find endpoint '{arn}'.")
        with self._lock:
            if endpoint.status != "InService":
                return _control_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')
            try:
                with self.context.lock:
                    specs, capture = self._config(request.region, params.get("EndpointConfigName", ""))
            except LookupError as exc:
                return _control_error(str(exc))
            endpoint.status, endpoint.failure_reason = "Updating", None
            self._commit(endpoint)
        self.context.in_background(
            self._update, f"endpoint-{endpoint.name}", endpoint, params["EndpointConfigName"], specs, capture
        )
        return json_response({"EndpointArn": endpoint.arn})

    def update_weights_and_capacities(self, request: AwsRequest, environ: dict) -> Response:
        params = _params(environ)
        endpoint = self._endpoints.get((request.region, params.get("EndpointName", "")))
        with self._lock:
            if endpoint is not None and endpoint.status != "InService":
                return _control_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')
            with self.context.lock:  # moto validates the variant names; we then correct what it stored
                response = self.context.call_moto(request, environ)
                if response[0] >= 300 or endpoint is None:
                    return response
                self._apply_weights_and_counts(endpoint, params)
        self.context.in_background(self._scale, f"endpoint-{endpoint.name}", endpoint)
        return response

    def _apply_weights_and_counts(self, endpoint: Endpoint, params: dict) -> None:
        desired = {d["VariantName"]: d for d in params.get("DesiredWeightsAndCapacities", [])}
        for name, change in desired.items():
            variant = endpoint.variants[name]
            if "DesiredWeight" in change:
                variant.weight = float(change["DesiredWeight"])  # routing changes at once
            if "DesiredInstanceCount" in change:
                variant.desired_count = int(change["DesiredInstanceCount"])
        endpoint.status, endpoint.failure_reason = "Updating", None
        self._commit(endpoint)

    def delete_endpoint(self, request: AwsRequest, environ: dict) -> Response:
        params = _params(environ)
        key = (request.region, params.get("EndpointName", ""))
        with self._lock:
            response = self.context.call_moto(request, environ)
            endpoint = self._endpoints.pop(key, None)
            if endpoint is None:
                return response
            endpoint.deleted = True
            variants, endpoint.variants = endpoint.variants, {}
            starting, endpoint.starting = set(endpoint.starting), set()
        for variant in variants.values():
            self._stop_instances(endpoint, variant, variant.instances)
        self._stop_processes(starting)
        self._captures.flush(self._put_with_client)
        self._record_path(endpoint).unlink(missing_ok=True)
        shutil.rmtree(self._folder(endpoint), ignore_errors=True)
        return response

    def invoke_endpoint(self, request: AwsRequest, environ: dict) -> Response:
        name = request.path_params.get("EndpointName", "")
        endpoint = self._endpoints.get((request.region, name))
        if endpoint is None:
            return _runtime_error(400, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found.")
        if endpoint.status not in SERVING:
            message = f"Endpoint {name} of account {ACCOUNT_ID} is not in service (its status is {endpoint.status})."
            return _runtime_error(400, "ValidationError", message)
        target = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_VARIANT")
        variant = self._route(endpoint, target)
        if isinstance(variant, str):
            return _runtime_error(400, "ValidationError", variant)
        body = read_body(environ)
        content_type = environ.get("CONTENT_TYPE") or "application/json"
        headers = {"Content-Type": content_type}
        if accept := environ.get("HTTP_ACCEPT"):
            headers["Accept"] = accept
        instance = variant.next_instance()
        try:
            answer = instance.pool.urlopen("POST", "/invocations", body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            exit_code = instance.process.poll()
            reason = f"the model server exited with code {exit_code}" if exit_code is not None else str(exc)
            return self._model_error(endpoint, 500, f"No response from the model server: {reason}")
        answer_type = answer.headers.get("Content-Type", "application/octet-stream")
        if answer.status != 200:
            original = answer.data.decode("utf-8", "replace")
            return self._model_error(endpoint, answer.status, original)
        capture = endpoint.capture
        if capture is not None and capture.sampled():
            at = time.time()
            line = capture.line(
                (body, content_type), (answer.data, answer_type), at, environ.get("HTTP_X_AMZN_SAGEMAKER_INFERENCE_ID")
            )
            self._captures.add(endpoint, variant.spec.name, capture, at, line)
        headers = [("Content-Type", answer_type), ("x-Amzn-Invoked-Production-Variant", variant.spec.name)]
        return 200, headers, answer.data

    # --- routing and errors ---------------------------------------------------------------------------------

    @staticmethod
    def _route(endpoint: Endpoint, target: str | None) -> Variant | str:
        """The variant to serve this request, or why there is none."""
        variants = endpoint.variants
        if target:
            variant = variants.get(target)
            if variant is None or not variant.instances:
                return f"The variant {target} is not serving on endpoint {endpoint.name} (TargetVariant)."
            return variant
        candidates = [v for v in variants.values() if v.weight > 0 and v.instances]
        if not candidates:
            return f"Endpoint {endpoint.name} has no variant with a weight above 0 to serve the request."
        if len(candidates) == 1:
            return candidates[0]
        return random.choices(candidates, weights=[v.weight for v in candidates])[0]

    @staticmethod
    def _model_error(endpoint: Endpoint, status: int, original: str) -> Response:
        kind = "client" if 400 <= status < 500 else "server"
        region = endpoint.region
        console = (
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#logEventViewer:group={endpoint.log_group}"
        )
        message = (
            f'Received {kind} error ({status}) from primary with message "{original}". '
            f"See {console} in account {ACCOUNT_ID} for more information."
        )
        body = {
            "Message": message,
            "OriginalStatusCode": status,
            "OriginalMessage": original,
            "LogStreamArn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{endpoint.log_group}",
        }
        return _runtime_error(424, "ModelError", message, body)

    # --- bringing instances up ------------------------------------------------------------------------------

    def _create(self, endpoint: Endpoint) -> None:
        try:
            variants = self._start_variants(endpoint, endpoint.specs, endpoint.deployment, endpoint.restored_routing)
        except DeploymentAborted:
            return
        except DeploymentFailed as exc:
            self._fail(endpoint, str(exc))
            return
        with self._lock:
            if endpoint.deleted:
                for variant in variants.values():
                    self._stop_instances(endpoint, variant, variant.instances)
                return
            endpoint.variants, endpoint.status = variants, "InService"
            self._commit(endpoint)

    def _update(self, endpoint: Endpoint, config_name: str, specs, capture) -> None:
        deployment = _new_id()
        try:
            variants = self._start_variants(endpoint, specs, deployment, {})
        except DeploymentAborted:
            return
        except DeploymentFailed as exc:  # SageMaker rolls back: the old config keeps serving
            with self._lock:
                endpoint.status, endpoint.failure_reason = "InService", str(exc)
                self._commit(endpoint)
            return
        with self._lock:
            if endpoint.deleted:
                old = variants
            else:
                old, endpoint.variants = endpoint.variants, variants
                endpoint.config_name, endpoint.specs, endpoint.capture = config_name, specs, capture
                endpoint.deployment, endpoint.status = deployment, "InService"
                self._commit(endpoint)
        for variant in old.values():
            self._stop_instances(endpoint, variant, variant.instances)
            shutil.rmtree(variant.folder, ignore_errors=True)

    def _scale(self, endpoint: Endpoint) -> None:
        problems = []
        for variant in list(endpoint.variants.values()):
            missing = variant.desired_count - len(variant.instances)
            try:
                if missing > 0:
                    started = self._start_instances(endpoint, variant.spec, variant.folder, missing)
                    try:
                        self._wait_all(endpoint, variant.spec, started)
                    except BaseException:
                        self._abandon(endpoint, started)
                        raise
                    variant.instances = (*variant.instances, *started)
                elif missing < 0:
                    kept, removed = variant.instances[:missing], variant.instances[missing:]
                    variant.instances = kept  # out of the rotation before they stop
                    self._stop_instances(endpoint, variant, removed)
            except DeploymentAborted:
                return
            except DeploymentFailed as exc:
                problems.append(str(exc))
        with self._lock:
            endpoint.status, endpoint.failure_reason = "InService", "; ".join(problems) or None
            self._commit(endpoint)

    def _start_variants(self, endpoint: Endpoint, specs, deployment: str, routing: dict) -> dict[str, Variant]:
        """Start every variant's instances and wait until all answer /ping; stop them all if one fails."""
        variants: dict[str, Variant] = {}
        try:
            for spec in specs:
                folder = self._folder(endpoint) / spec.name / deployment
                self._prepare_model(endpoint.region, spec, folder)
                kept = routing.get(spec.name, {})
                variant = Variant(spec, folder, kept.get("weight", spec.weight), kept.get("count", spec.instance_count))
                variant.instances = tuple(self._start_instances(endpoint, spec, folder, variant.desired_count))
                variants[spec.name] = variant
            for variant in variants.values():
                self._wait_all(endpoint, variant.spec, variant.instances)
        except BaseException:
            for variant in variants.values():
                self._abandon(endpoint, variant.instances)
            raise
        return variants

    def _abandon(self, endpoint: Endpoint, instances) -> None:
        """Stop instances that never served (not metered: SageMaker bills from InService)."""
        self._stop_processes(instances)
        with self._lock:
            endpoint.starting.difference_update(instances)

    def _start_instances(self, endpoint: Endpoint, spec: VariantSpec, folder: Path, count: int) -> list[Instance]:
        instances = []
        for _ in range(count):
            instance_id = f"i-{uuid.uuid4().hex[:17]}"
            stream = f"{spec.name}/{instance_id}"
            self._logs.open_stream(endpoint.region, endpoint.log_group, stream)
            with self._lock:
                if endpoint.deleted or self._stopping.is_set():
                    self._stop_processes(instances)
                    raise DeploymentAborted(endpoint.name)
                instance = self._spawn(endpoint, spec, folder, instance_id, stream)
                endpoint.starting.add(instance)
            instances.append(instance)
        return instances

    def _spawn(self, endpoint: Endpoint, spec: VariantSpec, folder: Path, instance_id: str, stream: str) -> Instance:
        labels = ("--endpoint", endpoint.name, "--variant", spec.name)
        launch = ServerLaunch(endpoint.region, endpoint.log_group, stream, instance_id, labels)
        return spawn_model_server(self.context, self._logs, spec.container, folder, launch)

    def _wait_all(self, endpoint: Endpoint, spec: VariantSpec, instances) -> None:
        deadline = time.monotonic() + spec.startup_timeout_s
        for instance in instances:
            self._wait_ready(endpoint, spec, instance, deadline)
            with self._lock:
                endpoint.starting.discard(instance)

    def _wait_ready(self, endpoint: Endpoint, spec: VariantSpec, instance: Instance, deadline: float) -> None:
        def aborted() -> bool:
            return endpoint.deleted or self._stopping.is_set()

        try:
            wait_until_ready(instance, deadline, spec.startup_timeout_s, aborted)
        except ServerDown as down:
            raise DeploymentFailed(self._failure_reason(endpoint, spec, instance, str(down))) from None

    def _failure_reason(self, endpoint: Endpoint, spec: VariantSpec, instance: Instance, what: str) -> str:
        tail = instance.log_tail()
        self._logs.flush()
        head = (
            f"The primary container for production variant {spec.name} did not pass the ping health check: "
            f"the model server {what}. CloudWatch Logs {endpoint.log_group}, stream {instance.log_stream}, ends:\n"
        )
        return head + tail[-(FAILURE_REASON_MAX - len(head)) :]

    def _fail(self, endpoint: Endpoint, reason: str) -> None:
        with self._lock:
            endpoint.status, endpoint.failure_reason = "Failed", reason
            self._commit(endpoint)

    # --- model files ----------------------------------------------------------------------------------------

    def _prepare_model(self, region: str, spec: VariantSpec, folder: Path) -> None:
        prepare_model(self._client("s3", region), spec.container, folder)

    # --- stopping and metering ------------------------------------------------------------------------------

    def _stop_processes(self, instances) -> None:
        stop_processes(self.context, instances)

    def _stop_instances(self, endpoint: Endpoint, variant: Variant, instances) -> None:
        self._stop_processes(instances)
        self._meter(endpoint, variant, instances)

    def _meter(self, endpoint: Endpoint, variant: Variant, instances, until: float | None = None) -> None:
        until = until or time.time()
        hours = sum(max(0.0, until - i.started_at) for i in instances) / 3600
        instance_type = variant.spec.instance_type
        if not instances or instance_type is None:  # serverless variants are billed per request: not metered here
            return
        meter_instance_hours(
            self.context,
            instance_type=instance_type,
            hours=hours,
            action="Endpoint",
            resource=f"{endpoint.name}/{variant.spec.name}",
        )

    # --- moto's record, our record --------------------------------------------------------------------------

    def _config(self, region: str, config_name: str) -> tuple[list[VariantSpec], CaptureConfig | None]:
        """The variants and data capture of an endpoint config, from moto (hold context.lock)."""
        from moto.sagemaker.exceptions import ValidationError

        sagemaker = self.context.moto_backend("sagemaker", region)
        try:
            config = sagemaker.describe_endpoint_config(config_name)
            variants = config["ProductionVariants"]
            specs = [VariantSpec.from_config(v, sagemaker.describe_model(v["ModelName"])) for v in variants]
        except ValidationError as exc:
            raise LookupError(exc.message) from exc
        return specs, CaptureConfig.from_api(config.get("DataCaptureConfig"))

    def _commit(self, endpoint: Endpoint) -> None:
        """Mirror the endpoint into moto's record (which Describe and List answer from) and save our record."""
        from moto.core.utils import utcnow

        if endpoint.deleted:
            return
        with self.context.lock:
            fake = self.context.moto_backend("sagemaker", endpoint.region).endpoints.get(endpoint.name)
            if fake is not None:
                fake.endpoint_status = endpoint.status
                fake.failure_reason = endpoint.failure_reason
                fake.endpoint_config_name = endpoint.config_name
                fake.production_variants = endpoint.variant_summaries()
                fake.data_capture_config = endpoint.capture.summary() if endpoint.capture else None
                fake.last_modified_time = utcnow()
        self.context.mark_dirty("sagemaker")
        _write_record(self._record_path(endpoint), endpoint.record())

    def _folder(self, endpoint: Endpoint) -> Path:
        return self.context.records("endpoints") / endpoint.region / endpoint.name

    def _record_path(self, endpoint: Endpoint) -> Path:
        return self._folder(endpoint) / "endpoint.json"

    def _put_with_client(self, region: str, bucket: str, key: str, body: bytes) -> None:
        self._client("s3", region).put_object(Bucket=bucket, Key=key, Body=body)

    def _put_into_moto(self, region: str, bucket: str, key: str, body: bytes) -> None:
        """At shutdown the server takes no more requests (its accept loop runs the signal handler): write directly."""
        with self.context.lock:
            self.context.moto_backend("s3", "aws").put_object(bucket, key, body)
        self.context.mark_dirty("s3")

    # --- the local cloud's start and stop -------------------------------------------------------------------

    def _end_interrupted(self, reason: str) -> list[str]:
        """Before the restart below: Failed, an endpoint that was being created; with a FailureReason, one that was
        being updated (its record still holds the configuration it served). The names of both."""
        ended = []
        rolled_back = f"{reason} while the endpoint was updating: it serves the configuration it had before"
        for path in sorted(self.context.records("endpoints").glob("*/*/endpoint.json")):
            record = json.loads(path.read_text())
            if record["status"] == "Creating":
                record.update(status="Failed", failure_reason=f"{reason} while the endpoint was being created")
            elif record["status"] == "Updating":
                record["failure_reason"] = rolled_back
            else:
                continue
            _write_record(path, record)
            ended.append(record["name"])
        return ended

    def _started(self) -> None:
        self.context.in_background(self._flush_every_second, "endpoint-flusher")
        for path in sorted(self.context.records("endpoints").glob("*/*/endpoint.json")):
            try:
                self._restore(json.loads(path.read_text()), path)
            except Exception:
                log.exception("could not restore the endpoint recorded in %s", path)

    def _restore(self, record: dict, path: Path) -> None:
        with self.context.lock:
            known = record["name"] in self.context.moto_backend("sagemaker", record["region"]).endpoints
        if not known:  # moto's state was reset: the endpoint is gone
            shutil.rmtree(path.parent, ignore_errors=True)
            return
        endpoint = Endpoint(
            name=record["name"],
            region=record["region"],
            config_name=record["config_name"],
            status=record["status"],
            specs=[VariantSpec(**s) for s in record["specs"]],
            deployment=record["deployment"],
            capture=CaptureConfig.from_api(record.get("capture")),
            failure_reason=record.get("failure_reason"),
            restored_routing=record.get("routing") or {},
        )
        self._endpoints[(endpoint.region, endpoint.name)] = endpoint
        if endpoint.status in RESTARTABLE:
            endpoint.status = "Creating" if endpoint.status == "Creating" else "SystemUpdating"
            self._commit(endpoint)
            self.context.in_background(self._create, f"endpoint-{endpoint.name}", endpoint)
        else:
            self._commit(endpoint)  # moto's may say otherwise: an older snapshot, a create replayed from the journal

    def _flush_every_second(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self._flush(self._put_with_client)

    def _flush(self, put) -> None:
        for flush in (lambda: self._captures.flush(put), self._logs.flush):
            try:
                flush()
            except Exception:
                log.exception("flushing endpoint captures and logs failed")

    def _shutdown(self) -> None:
        """Meter the time so far; the processes themselves are stopped with every child of the local cloud."""
        self._stopping.set()
        now = time.time()
        for endpoint in list(self._endpoints.values()):
            for variant in endpoint.variants.values():
                self._meter(endpoint, variant, variant.instances, until=now)
        self._captures.flush(self._put_into_moto)


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _params(environ: dict) -> dict:
    """The request's JSON (moto answers a malformed one with its own error)."""
    try:
        return read_json(environ)
    except ValueError:
        return {}


def _new_id() -> str:
    return uuid.uuid4().hex[:8]


def _control_error(message: str) -> Response:
    return aws_error("json", 400, "ValidationException", message)


def _runtime_error(status: int, code: str, message: str, body: dict | None = None) -> Response:
    payload = body or {"message": message}
    return (
        status,
        [
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
        json.dumps(payload).encode(),
    )


def register(gateway, context: AwsContext) -> None:
    EndpointService(context).register(gateway)
