"""Vertex AI models, endpoints and online prediction on the local cloud, over Vertex's REST API (v1).

- Models: `models:upload` (LRO), get, list (`filter=display_name="..."`), delete (LRO; refused while deployed).
  A model with a serving container gets `supportedDeploymentResourcesTypes: [DEDICATED_RESOURCES]`, as on Vertex:
  without it the SDK drops `machine_type` and the replica counts from `deploy()`.
- Endpoints: create (LRO), get, list, delete (LRO; refused while models are deployed), `deployModel` and
  `undeployModel` (LROs), `predict`.
- `deployModel` downloads the model's `artifactUri` from the local Cloud Storage and starts one model-server
  child process per replica (`labcloud.runtime.vertex_model_server`, which serves `model.joblib`/`model.pkl`/
  `model.bst` as Vertex's prebuilt scikit-learn and XGBoost containers do; what is not served is listed there).
  The operation is done when every replica answers its health route; a replica that exits fails it with the
  server's log tail. `minReplicaCount` replicas are started (at most MAX_LOCAL_REPLICAS processes; the meter
  still counts every replica asked for); autoscaling up to `maxReplicaCount` is not simulated.
- `predict` checks the body (`instances` must be a list: 400 INVALID_ARGUMENT), picks a deployed model by the
  endpoint's `trafficSplit` (weighted at random, as Vertex routes), then a replica in turn, and answers
  `{"predictions": [...], "deployedModelId", "model", "modelDisplayName", "modelVersionId"}`. An endpoint with
  no deployed model answers 400 FAILED_PRECONDITION.
- Machine and accelerator types are simulated: a model "on" n1-standard-4 with a T4 runs on this machine. The
  meter charges node-hours (replicas x hours deployed) at the catalog's `vertex-prediction` price for that
  machine + accelerator when the model is undeployed or the local cloud stops; an unpriced shape is logged and
  metered at 0.
- Long-running operations answer like Vertex's (`projects/.../<resource>/operations/<id>`, polled by the SDK
  under `/ui/`), with `done`, `response` or `error`.
- Models and endpoints are JSON records under the state folder; after a restart the deployed models' servers are
  started again.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from ....runtime import vertex_model_server
from .. import storage_store
from ..gateway import GcpRequest, GoogleError, json_response

log = logging.getLogger(__name__)

LOCATION = r"/(?:ui/)?v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."
MAX_LOCAL_REPLICAS = 4
STARTUP_TIMEOUT_S = 120.0
PREDICT_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 40
_ID = r"(?P<id>[^/:]+)"


def new_id() -> str:
    """A numeric resource id, as Vertex gives its endpoints, models and operations."""
    return str(random.randrange(10**17, 10**18))


def now_rfc3339() -> str:
    return storage_store.rfc3339(time.time())


def resource_name(request: GcpRequest, kind: str, resource_id: str) -> str:
    p = request.params
    return f"projects/{p['project']}/locations/{p['location']}/{kind}/{resource_id}"


def not_found(kind: str, name: str) -> GoogleError:
    return GoogleError(404, f"{kind} `{name}` not found.")


def failed_precondition(message: str) -> GoogleError:
    return GoogleError(400, message, "failedPrecondition", "FAILED_PRECONDITION")


def display_name_filter(request: GcpRequest):
    """The `display_name="x"` (or `displayName`) filter the SDK's list() sends, as a predicate on resources."""
    text = (request.query.get("filter") or "").strip()
    if not text:
        return lambda resource: True
    key, _, value = text.partition("=")
    if key.strip() not in ("display_name", "displayName") or not value.strip():
        raise GoogleError(400, f'Unsupported filter on the local cloud: {text!r} (only display_name="...").')
    wanted = value.strip().strip('"')
    return lambda resource: resource.get("displayName") == wanted


# --- long-running operations ----------------------------------------------------------------------------------


class Operations:
    """Vertex's long-running operations, in memory: `start` one, then `finish` or `fail` it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._operations: dict[str, dict] = {}

    def start(self, resource: str, metadata_type: str) -> dict:
        at = now_rfc3339()
        operation = {
            "name": f"{resource}/operations/{new_id()}",
            "metadata": {"@type": TYPE_PREFIX + metadata_type, "genericMetadata": {"createTime": at, "updateTime": at}},
            "done": False,
        }
        with self._lock:
            self._operations[operation["name"]] = operation
        return dict(operation)

    def finish(self, name: str, response_type: str, response: dict | None = None) -> dict:
        type_url = (
            "type.googleapis.com/google.protobuf.Empty" if response_type == "Empty" else TYPE_PREFIX + response_type
        )
        return self._end(name, response={"@type": type_url, **(response or {})})

    def fail(self, name: str, code: int, message: str) -> dict:
        """End with an error; `code` is google.rpc.Code (3 INVALID_ARGUMENT, 9 FAILED_PRECONDITION, 13 INTERNAL)."""
        return self._end(name, error={"code": code, "message": message})

    def _end(self, name: str, **outcome) -> dict:
        with self._lock:
            operation = self._operations[name]
            operation.update(done=True, **outcome)
            operation["metadata"]["genericMetadata"]["updateTime"] = now_rfc3339()
            return json.loads(json.dumps(operation))

    def get(self, request: GcpRequest):
        name = request.path.split("/", 2)[2]  # after the /ui/ or /v1/ prefix
        with self._lock:
            operation = self._operations.get(name)
            if operation is None:
                raise not_found("Operation", name)
            return json_response(json.loads(json.dumps(operation)))


# --- deployed models and their replicas --------------------------------------------------------------------------


@dataclass(eq=False)
class Replica:
    """One model-server process of a deployed model."""

    process: subprocess.Popen
    port_file: Path
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    pool: urllib3.HTTPConnectionPool | None = None
    reader: threading.Thread | None = None

    def follow_output(self) -> None:
        for line in iter(self.process.stdout.readline, b""):
            self.tail.append(line.decode("utf-8", "replace").rstrip())

    def log_tail(self) -> str:
        if self.reader is not None:
            self.reader.join(timeout=2)
        return "\n".join(self.tail)

    def healthy(self) -> bool:
        try:
            port = int(self.port_file.read_text())
        except (OSError, ValueError):
            return False
        if self.pool is None:
            self.pool = urllib3.HTTPConnectionPool(
                "127.0.0.1", port, maxsize=8, retries=False, timeout=urllib3.Timeout(connect=2, read=PREDICT_TIMEOUT_S)
            )
        try:
            return self.pool.urlopen("GET", vertex_model_server.DEFAULT_HEALTH_ROUTE).status == 200
        except urllib3.exceptions.HTTPError:
            return False


@dataclass(eq=False)
class Serving:
    """What runs for one deployed model: its replicas (taken in turn) and since when they are billed."""

    replicas: list[Replica]
    started_at: float = field(default_factory=time.time)
    _turn: itertools.cycle | None = None

    def next_replica(self) -> Replica:
        if self._turn is None:
            self._turn = itertools.cycle(self.replicas)
        return next(self._turn)


class DeploymentFailed(Exception):
    pass


# --- the service -----------------------------------------------------------------------------------------------


class VertexAi:
    """Models, endpoints and their deployed models, with their records on disk."""

    def __init__(self, context):
        self.context = context
        self.store = storage_store.for_context(context)
        self.operations = Operations()
        self._lock = threading.RLock()
        self._models_dir = context.records("vertex-models")
        self._endpoints_dir = context.records("vertex-endpoints")
        self._servers_dir = context.records("vertex-model-servers")
        self.models: dict[str, dict] = _load_records(self._models_dir)
        self.endpoints: dict[str, dict] = _load_records(self._endpoints_dir)
        self.serving: dict[str, Serving] = {}  # deployedModelId -> its replicas
        context.on_started(self._restart_deployed_models)
        context.on_shutdown(self._shutdown)

    def register(self, gateway) -> None:
        route = gateway.route
        route("POST", LOCATION + r"/models:upload", self.upload_model)
        route("GET", LOCATION + r"/models", self.list_models)
        route("GET", LOCATION + rf"/models/{_ID}", self.get_model)
        route("DELETE", LOCATION + rf"/models/{_ID}", self.delete_model)
        route("POST", LOCATION + r"/endpoints", self.create_endpoint)
        route("GET", LOCATION + r"/endpoints", self.list_endpoints)
        route("GET", LOCATION + rf"/endpoints/{_ID}", self.get_endpoint)
        route("DELETE", LOCATION + rf"/endpoints/{_ID}", self.delete_endpoint)
        route("PATCH", LOCATION + rf"/endpoints/{_ID}", self.update_endpoint)
        route("POST", LOCATION + rf"/endpoints/{_ID}:deployModel", self.deploy_model)
        route("POST", LOCATION + rf"/endpoints/{_ID}:undeployModel", self.undeploy_model)
        route("POST", LOCATION + rf"/endpoints/{_ID}:predict", self.predict)
        operations = r"/(?:ui|v1|v1beta1)/projects/[^/]+/locations/[^/]+/(?:[^:]+/)?operations/[^/:]+"
        route("GET", operations, self.operations.get)

    # ---- models

    def add_model(self, name: str, spec: dict) -> dict:
        """Register a model (from `models:upload` or a training pipeline); returns its resource."""
        at = now_rfc3339()
        model = {
            **{k: v for k, v in spec.items() if k not in ("name", "deployedModels")},
            "name": name,
            "versionId": "1",
            "versionAliases": ["default"],
            "createTime": at,
            "updateTime": at,
            "versionCreateTime": at,
            "versionUpdateTime": at,
            "etag": new_id(),
        }
        if model.get("containerSpec"):
            model["supportedDeploymentResourcesTypes"] = ["DEDICATED_RESOURCES"]
            model["supportedInputStorageFormats"] = ["jsonl", "csv", "bigquery"]
            model["supportedOutputStorageFormats"] = ["jsonl", "bigquery"]
        with self._lock:
            self.models[name] = model
            self._save(self._models_dir, name, model)
        return model

    def upload_model(self, request: GcpRequest):
        body = request.json()
        spec = body.get("model")
        if not isinstance(spec, dict) or not spec.get("displayName"):
            raise GoogleError(400, "Model display name is required (model.displayName).")
        if not (spec.get("containerSpec") or {}).get("imageUri"):
            raise GoogleError(400, "Model container spec image URI is required (model.containerSpec.imageUri).")
        artifact = spec.get("artifactUri")
        if artifact and not artifact.startswith("gs://"):
            raise GoogleError(400, f"Model artifactUri must be a Cloud Storage URI (gs://...): {artifact!r}.")
        name = resource_name(request, "models", body.get("modelId") or new_id())
        if name in self.models:
            raise GoogleError(409, f"Model `{name}` already exists.")
        self.add_model(name, spec)
        operation = self.operations.start(name, "UploadModelOperationMetadata")
        return json_response(
            self.operations.finish(operation["name"], "UploadModelResponse", {"model": name, "modelVersionId": "1"})
        )

    def get_model(self, request: GcpRequest):
        return json_response(self._model(resource_name(request, "models", _strip_version(request.params["id"]))))

    def list_models(self, request: GcpRequest):
        return json_response({"models": self._list(request, "models", self.models)})

    def delete_model(self, request: GcpRequest):
        name = resource_name(request, "models", _strip_version(request.params["id"]))
        with self._lock:
            model = self._model(name)
            if model.get("deployedModels"):
                endpoints = sorted({d["endpoint"] for d in model["deployedModels"]})
                raise failed_precondition(
                    f"The model `{name}` is deployed or being deployed at the following endpoints: {endpoints}. "
                    "Undeploy it first."
                )
            del self.models[name]
            self._delete_record(self._models_dir, name)
        operation = self.operations.start(name, "DeleteOperationMetadata")
        return json_response(self.operations.finish(operation["name"], "Empty"))

    def _model(self, name: str) -> dict:
        model = self.models.get(name)
        if model is None:
            raise not_found("Model", name)
        return model

    # ---- endpoints

    def create_endpoint(self, request: GcpRequest):
        body = request.json()
        if not body.get("displayName"):
            raise GoogleError(400, "Endpoint display name is required (displayName).")
        name = resource_name(request, "endpoints", request.query.get("endpointId") or new_id())
        at = now_rfc3339()
        endpoint = {**body, "name": name, "createTime": at, "updateTime": at, "etag": new_id()}
        endpoint.pop("deployedModels", None)
        endpoint.pop("trafficSplit", None)
        with self._lock:
            if name in self.endpoints:
                raise GoogleError(409, f"Endpoint `{name}` already exists.")
            self.endpoints[name] = endpoint
            self._save(self._endpoints_dir, name, endpoint)
        operation = self.operations.start(name, "CreateEndpointOperationMetadata")
        return json_response(self.operations.finish(operation["name"], "Endpoint", endpoint))

    def get_endpoint(self, request: GcpRequest):
        return json_response(self._endpoint(resource_name(request, "endpoints", request.params["id"])))

    def list_endpoints(self, request: GcpRequest):
        return json_response({"endpoints": self._list(request, "endpoints", self.endpoints)})

    def update_endpoint(self, request: GcpRequest):
        """PATCH with an updateMask: display name, description, labels and the traffic split."""
        name = resource_name(request, "endpoints", request.params["id"])
        body = request.json()
        fields = [f.strip() for f in (request.query.get("updateMask") or "").split(",") if f.strip()]
        if not fields:
            raise GoogleError(400, "updateMask is required.")
        unknown = [f for f in fields if _camel(f) not in UPDATABLE_ENDPOINT_FIELDS]
        if unknown:
            raise GoogleError(400, f"These endpoint fields cannot be updated: {unknown}.")
        with self._lock:
            endpoint = self._endpoint(name)
            for field_name in map(_camel, fields):
                if field_name == "trafficSplit":
                    endpoint["trafficSplit"] = _check_split_targets(endpoint, body.get("trafficSplit") or {})
                elif field_name in body:
                    endpoint[field_name] = body[field_name]
                else:
                    endpoint.pop(field_name, None)
            self._touch(endpoint)
            return json_response(endpoint)

    def delete_endpoint(self, request: GcpRequest):
        name = resource_name(request, "endpoints", request.params["id"])
        with self._lock:
            endpoint = self._endpoint(name)
            if endpoint.get("deployedModels"):
                raise failed_precondition(
                    f"Endpoint `{name}` has deployed models: undeploy them first (or delete with force=True)."
                )
            del self.endpoints[name]
            self._delete_record(self._endpoints_dir, name)
        operation = self.operations.start(name, "DeleteOperationMetadata")
        return json_response(self.operations.finish(operation["name"], "Empty"))

    def _endpoint(self, name: str) -> dict:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise not_found("Endpoint", name)
        return endpoint

    # ---- deploy and undeploy

    def deploy_model(self, request: GcpRequest):
        name = resource_name(request, "endpoints", request.params["id"])
        body = request.json()
        self._endpoint(name)
        deployed = _check_deployed_model(body.get("deployedModel"))
        model = self._model(_strip_version(deployed["model"]))
        split = _check_traffic_split(body.get("trafficSplit"))
        deployed.update(
            id=new_id(),
            model=model["name"],
            modelVersionId=model.get("versionId", "1"),
            createTime=now_rfc3339(),
            displayName=deployed.get("displayName") or model.get("displayName", ""),
        )
        operation = self.operations.start(name, "DeployModelOperationMetadata")
        self.context.in_background(self._deploy, f"deploy {deployed['id']}", name, model, deployed, split, operation)
        return json_response(operation)

    def _deploy(self, endpoint_name: str, model: dict, deployed: dict, split: dict | None, operation: dict) -> None:
        try:
            serving = self._start_serving(model, deployed)
        except DeploymentFailed as failure:
            self.operations.fail(operation["name"], 9, str(failure))
            return
        with self._lock:
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:  # deleted while the model was starting
                self._stop_serving(deployed["id"], serving, endpoint_name)
                self.operations.fail(operation["name"], 5, f"Endpoint `{endpoint_name}` was deleted.")
                return
            self.serving[deployed["id"]] = serving
            endpoint.setdefault("deployedModels", []).append(deployed)
            endpoint["trafficSplit"] = _new_split(endpoint.get("trafficSplit") or {}, split, deployed["id"])
            self._touch(endpoint)
            model.setdefault("deployedModels", []).append(
                {"endpoint": endpoint_name, "deployedModelId": deployed["id"]}
            )
            self._save(self._models_dir, model["name"], model)
        self.operations.finish(operation["name"], "DeployModelResponse", {"deployedModel": deployed})

    def undeploy_model(self, request: GcpRequest):
        name = resource_name(request, "endpoints", request.params["id"])
        body = request.json()
        deployed_id = str(body.get("deployedModelId") or "")
        with self._lock:
            endpoint = self._endpoint(name)
            deployed = next((d for d in endpoint.get("deployedModels", []) if d["id"] == deployed_id), None)
            if deployed is None:
                raise GoogleError(400, f"Endpoint `{name}` has no deployed model with id `{deployed_id}`.")
            endpoint["deployedModels"].remove(deployed)
            split = {k: v for k, v in (endpoint.get("trafficSplit") or {}).items() if k != deployed_id}
            asked = _check_traffic_split(body.get("trafficSplit"))
            endpoint["trafficSplit"] = asked if asked is not None else _renormalised(split)
            self._touch(endpoint)
            model = self.models.get(deployed["model"])
            if model is not None:
                model["deployedModels"] = [
                    d for d in model.get("deployedModels", []) if d["deployedModelId"] != deployed_id
                ]
                self._save(self._models_dir, model["name"], model)
            serving = self.serving.pop(deployed_id, None)
        if serving is not None:
            self._stop_serving(deployed_id, serving, name, deployed)
        operation = self.operations.start(name, "UndeployModelOperationMetadata")
        return json_response(self.operations.finish(operation["name"], "UndeployModelResponse"))

    def _start_serving(self, model: dict, deployed: dict) -> Serving:
        folder = self._servers_dir / deployed["id"]
        artifact_dir = folder / "artifact"
        self._download_artifact(model.get("artifactUri"), artifact_dir)
        count = min(_replica_count(deployed), MAX_LOCAL_REPLICAS)
        replicas = [self._spawn(model, deployed, folder, i) for i in range(count)]
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            for replica in replicas:
                self._wait_healthy(replica, deadline)
        except DeploymentFailed:
            for replica in replicas:
                self.context.children.stop(replica.process)
            raise
        return Serving(replicas)

    def _download_artifact(self, artifact_uri: str | None, into: Path) -> None:
        """The model's artifactUri (a gs:// folder) copied from the local Cloud Storage into `into`."""
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        if not artifact_uri:
            raise DeploymentFailed("The model has no artifactUri: the prebuilt containers have nothing to load.")
        bucket, prefix = storage_store.parse_gs_url(artifact_uri.rstrip("/") + "/")
        try:
            objects, _ = self.store.list_objects(bucket, prefix)
        except GoogleError as error:
            raise DeploymentFailed(f"Cannot read the model's artifactUri {artifact_uri}: {error.message}") from None
        for obj in objects:
            relative = obj["name"][len(prefix) :]
            if not relative or relative.endswith("/"):
                continue
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.store.object_path(bucket, obj["name"]), target)

    def _spawn(self, model: dict, deployed: dict, folder: Path, index: int) -> Replica:
        port_file = folder / f"replica-{index}.port"
        port_file.unlink(missing_ok=True)
        container = model.get("containerSpec") or {}
        environment = {
            **_inherited_environment(),
            **{e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "name" in e},
            "AIP_STORAGE_URI": model.get("artifactUri", ""),
            # the prebuilt containers' own routes (a custom container's predictRoute is not served here)
            "AIP_PREDICT_ROUTE": vertex_model_server.DEFAULT_PREDICT_ROUTE,
            "AIP_HEALTH_ROUTE": vertex_model_server.DEFAULT_HEALTH_ROUTE,
            "AIP_DEPLOYED_MODEL_ID": deployed["id"],
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable,
            vertex_model_server.__file__,  # as a file: `-m labcloud...` would import the whole local cloud first
            *("--artifact-dir", str(folder / "artifact"), "--port", "0", "--port-file", str(port_file)),
            *("--deployed-model-id", deployed["id"]),
        ]
        process = self.context.children.spawn(
            command,
            cwd=folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        replica = Replica(process, port_file)
        replica.reader = threading.Thread(target=replica.follow_output, daemon=True)
        replica.reader.start()
        return replica

    def _wait_healthy(self, replica: Replica, deadline: float) -> None:
        while not replica.healthy():
            exit_code = replica.process.poll()
            if exit_code is not None:
                raise DeploymentFailed(
                    f"Model server never became ready: it exited with code {exit_code}. Its log ends:\n"
                    + replica.log_tail()
                )
            if time.monotonic() > deadline:
                raise DeploymentFailed(
                    f"Model server did not answer its health check within {STARTUP_TIMEOUT_S:.0f} s."
                )
            time.sleep(0.02)

    def _stop_serving(self, deployed_id: str, serving: Serving, endpoint_name: str, deployed: dict | None = None):
        for replica in serving.replicas:
            self.context.children.stop(replica.process)
        if deployed is not None:
            self._meter(endpoint_name, deployed, serving)
        shutil.rmtree(self._servers_dir / deployed_id, ignore_errors=True)

    # ---- predict

    def predict(self, request: GcpRequest):
        name = resource_name(request, "endpoints", request.params["id"])
        self._endpoint(name)  # an unknown endpoint is NOT_FOUND whatever the body
        body = request.json()
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise GoogleError(400, 'Invalid request: "instances" must be a non-empty list.')
        with self._lock:
            deployed = _route(self._endpoint(name))
            serving = self.serving.get(deployed["id"])
            model = self.models.get(deployed["model"], {})
        if serving is None:
            raise GoogleError(503, f"The deployed model `{deployed['id']}` is starting again; retry.", "unavailable")
        predictions = _forward(serving.next_replica(), instances, body.get("parameters"))
        return json_response(
            {
                "predictions": predictions,
                "deployedModelId": deployed["id"],
                "model": deployed["model"],
                "modelDisplayName": model.get("displayName", ""),
                "modelVersionId": deployed.get("modelVersionId", "1"),
            }
        )

    # ---- metering

    def _meter(self, endpoint_name: str, deployed: dict, serving: Serving, until: float | None = None) -> None:
        resources = deployed.get("dedicatedResources") or {}
        machine = resources.get("machineSpec") or {}
        machine_type = machine.get("machineType", "n1-standard-2")
        accelerator = accelerator_name(machine)
        replicas = _replica_count(deployed)
        hours = max(0.0, (until or time.time()) - serving.started_at) / 3600 * replicas
        instance = find_vertex_instance(self.context.catalog, "vertex-prediction", machine_type, accelerator)
        shape = machine_type + (f" + {machine.get('acceleratorCount', 1)} x {accelerator}" if accelerator else "")
        if instance is None:
            log.warning("Vertex prediction on %s is not in the price catalog: not metered", shape)
        self.context.meter(
            service="vertex-ai",
            action="online-prediction",
            resource=f"{endpoint_name.rsplit('/', 1)[-1]}/{deployed['id']} ({shape})",
            quantity=hours,
            unit="node-hours",
            usd=hours * instance.on_demand_usd_per_hour if instance else 0.0,
            price_key=instance.id if instance else "",
        )

    # ---- restart and shutdown

    def _restart_deployed_models(self) -> None:
        for endpoint in list(self.endpoints.values()):
            for deployed in endpoint.get("deployedModels", []):
                model = self.models.get(deployed["model"])
                if model is not None:
                    self.context.in_background(self._restart, f"restart {deployed['id']}", model, deployed)

    def _restart(self, model: dict, deployed: dict) -> None:
        try:
            serving = self._start_serving(model, deployed)
        except DeploymentFailed as failure:
            log.warning("deployed model %s did not start again: %s", deployed["id"], failure)
            return
        with self._lock:
            self.serving[deployed["id"]] = serving

    def _shutdown(self) -> None:
        with self._lock:
            for endpoint in self.endpoints.values():
                for deployed in endpoint.get("deployedModels", []):
                    serving = self.serving.pop(deployed["id"], None)
                    if serving is not None:
                        self._meter(endpoint["name"], deployed, serving)

    # ---- records

    def _list(self, request: GcpRequest, kind: str, resources: dict) -> list[dict]:
        parent = resource_name(request, kind, "")
        keep = display_name_filter(request)
        with self._lock:
            return [r for name, r in sorted(resources.items()) if name.startswith(parent) and keep(r)]

    def _touch(self, endpoint: dict) -> None:
        endpoint["updateTime"], endpoint["etag"] = now_rfc3339(), new_id()
        self._save(self._endpoints_dir, endpoint["name"], endpoint)

    @staticmethod
    def _save(folder: Path, name: str, resource: dict) -> None:
        path = folder / (name.replace("/", "~") + ".json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(resource, indent=1))
        tmp.replace(path)

    @staticmethod
    def _delete_record(folder: Path, name: str) -> None:
        (folder / (name.replace("/", "~") + ".json")).unlink(missing_ok=True)


def _load_records(folder: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(folder.glob("*.json")):
        resource = json.loads(path.read_text())
        records[resource["name"]] = resource
    return records


def _inherited_environment() -> dict[str, str]:
    return dict(os.environ)


def _strip_version(model_id: str) -> str:
    """`projects/.../models/123@1` or `123@default` -> the model without its version."""
    return model_id.split("@", 1)[0]


def _replica_count(deployed: dict) -> int:
    resources = deployed.get("dedicatedResources") or deployed.get("automaticResources") or {}
    return max(1, int(resources.get("minReplicaCount") or 1))


# google.cloud.aiplatform.v1.AcceleratorType: the SDK's REST transport sends enums as their numbers.
ACCELERATOR_TYPES = {
    1: "NVIDIA_TESLA_K80",
    2: "NVIDIA_TESLA_P100",
    3: "NVIDIA_TESLA_V100",
    4: "NVIDIA_TESLA_P4",
    5: "NVIDIA_TESLA_T4",
    6: "TPU_V2",
    7: "TPU_V3",
    8: "NVIDIA_TESLA_A100",
    9: "NVIDIA_A100_80GB",
    10: "TPU_V4_POD",
    11: "NVIDIA_L4",
    12: "TPU_V5_LITEPOD",
    13: "NVIDIA_H100_80GB",
    14: "NVIDIA_H100_MEGA_80GB",
    15: "NVIDIA_H200_141GB",
    16: "NVIDIA_B200",
    17: "NVIDIA_GB200",
    18: "NVIDIA_RTX_PRO_6000",
}


def accelerator_name(machine: dict) -> str | None:
    """The machine spec's accelerator by name (None without one), whether it came as a name or a number (REST
    messages say `acceleratorType`, the training task's struct `accelerator_type`)."""
    accelerator = machine.get("acceleratorType", machine.get("accelerator_type"))
    if isinstance(accelerator, int) or (isinstance(accelerator, str) and accelerator.isdigit()):
        accelerator = ACCELERATOR_TYPES.get(int(accelerator))
    return None if accelerator in (None, "", "ACCELERATOR_TYPE_UNSPECIFIED") else accelerator


def find_vertex_instance(catalog, service: str, machine_type: str, accelerator: str | None):
    """The catalog row for exactly this machine + accelerator on a Vertex service (None when unpriced)."""
    for instance in catalog.instances:
        if (instance.service, instance.machine_type, instance.accelerator_type) == (service, machine_type, accelerator):
            return instance
    return None


def _check_deployed_model(deployed) -> dict:
    if not isinstance(deployed, dict) or not deployed.get("model"):
        raise GoogleError(400, "deployedModel.model is required.")
    resources = deployed.get("dedicatedResources")
    if resources is not None:
        if not (resources.get("machineSpec") or {}).get("machineType"):
            raise GoogleError(400, "deployedModel.dedicatedResources.machineSpec.machineType is required.")
        low, high = int(resources.get("minReplicaCount") or 0), int(resources.get("maxReplicaCount") or 0)
        if low < 1:
            raise GoogleError(400, "deployedModel.dedicatedResources.minReplicaCount must be at least 1.")
        if high and high < low:
            raise GoogleError(400, "maxReplicaCount must not be smaller than minReplicaCount.")
    return dict(deployed)


def _check_traffic_split(split) -> dict[str, int] | None:
    if not split:
        return None
    if not isinstance(split, dict):
        raise GoogleError(400, "trafficSplit must map deployed model ids to percentages.")
    try:
        split = {str(k): int(v) for k, v in split.items()}
    except (TypeError, ValueError):
        raise GoogleError(400, "trafficSplit percentages must be integers.") from None
    if any(v < 0 for v in split.values()) or sum(split.values()) != 100:
        raise GoogleError(400, f"trafficSplit percentages must be non-negative and sum to 100: {split}.")
    return split


UPDATABLE_ENDPOINT_FIELDS = ("displayName", "description", "labels", "trafficSplit")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _check_split_targets(endpoint: dict, split: dict) -> dict[str, int]:
    """A new traffic split: valid percentages, only for models deployed on this endpoint."""
    split = _check_traffic_split(split) or {}
    deployed = {d["id"] for d in endpoint.get("deployedModels", [])}
    strangers = sorted(set(split) - deployed)
    if strangers:
        raise GoogleError(400, f"trafficSplit names models not deployed on this endpoint: {strangers}.")
    return split


def _new_split(current: dict, asked: dict | None, new_id_: str) -> dict[str, int]:
    """The endpoint's split after a deploy: the asked one ("0" names the new model), else all to the first model."""
    if asked is None:
        return {**current, new_id_: 0} if current else {new_id_: 100}
    split = {(new_id_ if k == "0" else k): v for k, v in asked.items()}
    return {k: v for k, v in split.items() if v or k == new_id_}


def _renormalised(split: dict[str, int]) -> dict[str, int]:
    """What is left of a split once a model is gone, scaled back to 100 (Vertex keeps the proportions)."""
    total = sum(split.values())
    if not split:
        return {}
    if total == 0:
        first = sorted(split)[0]
        return {k: (100 if k == first else 0) for k in split}
    scaled = {k: v * 100 // total for k, v in split.items()}
    largest = max(scaled, key=lambda k: (split[k], k))
    scaled[largest] += 100 - sum(scaled.values())
    return scaled


def _route(endpoint: dict) -> dict:
    """The deployed model that takes this request, by the endpoint's traffic split."""
    deployed = {d["id"]: d for d in endpoint.get("deployedModels", [])}
    if not deployed:
        raise failed_precondition(f"Endpoint `{endpoint['name']}` does not have any deployed model.")
    split = {k: v for k, v in (endpoint.get("trafficSplit") or {}).items() if v > 0 and k in deployed}
    if not split:
        raise failed_precondition(f"Endpoint `{endpoint['name']}` sends no traffic to any deployed model.")
    ids = sorted(split)
    return deployed[random.choices(ids, weights=[split[i] for i in ids])[0]]


def _forward(replica: Replica, instances: list, parameters) -> list:
    """The replica's predictions; its 400 (the model refused the input) answered as Vertex's INVALID_ARGUMENT."""
    body = json.dumps({"instances": instances, **({"parameters": parameters} if parameters else {})}).encode()
    route = vertex_model_server.DEFAULT_PREDICT_ROUTE
    try:
        response = replica.pool.urlopen("POST", route, body=body, headers={"Content-Type": "application/json"})
    except urllib3.exceptions.HTTPError as exc:
        raise GoogleError(503, f"The model server did not answer: {exc}", "unavailable") from None
    data = json.loads(response.data or b"{}")
    if response.status != 200:
        raise GoogleError(400, data.get("error") or f"The model server answered {response.status}.")
    return data["predictions"]


_services: dict[int, VertexAi] = {}
_services_lock = threading.Lock()


def for_context(context) -> VertexAi:
    """The one VertexAi of a local cloud (training registers its models here)."""
    with _services_lock:
        service = _services.get(id(context))
        if service is None or service.context is not context:
            service = _services[id(context)] = VertexAi(context)
        return service


def register(gateway, context) -> None:
    for_context(context).register(gateway)
