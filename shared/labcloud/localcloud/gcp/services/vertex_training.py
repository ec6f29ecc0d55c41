"""Vertex AI custom training on the local cloud: training pipelines that really run the learner's script.

- `trainingPipelines` create, get, list, `:cancel`, delete (REST v1). A custom-task pipeline (the SDK's
  `CustomTrainingJob`, `CustomPythonPackageTrainingJob`) runs in the background through
  `labcloud.runtime.vertex_training` (which documents the container contract, the requirements check and what is
  simulated); its state goes PIPELINE_STATE_QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, a failure with
  `error: {code, message}` holding the replica's exit status and the tail of the job log, so `job.run()` raises
  the SDK's RuntimeError with it.
- On success, a pipeline with `modelToUpload` registers the model (Vertex AI's model registry in
  `vertex_endpoints`) with `artifactUri` = AIP_MODEL_DIR; a job that wrote nothing there fails as Vertex does.
- Machine types and accelerators are simulated; the meter charges replica-hours at the catalog's
  `vertex-training` price for the worker pool's machine + accelerator when the job ends (an unpriced shape is
  noted in the job log and metered at 0).
- Delete is a long-running operation (`DeleteOperationMetadata`, polled like Vertex's other deletes in
  `vertex_endpoints`); it removes the pipeline's record, its folder and log, and keeps the model it uploaded, as
  Vertex does. A pipeline that has not ended is refused with FAILED_PRECONDITION: cancel it first.
- Records are JSON under the state folder (`vertex-training/<id>/record.json`, beside the job's folder and
  `job.log`); a job that was running when the local cloud stopped (`labcloud down`, or a crash) is FAILED at the
  next start, with "The local cloud stopped while the job ran." (`CloudContext.on_interrupted`).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from ....runtime.vertex_training import JobCancelled, JobFailed, TrainingRun, TrainingSpec, snake
from ...context import LOCAL_CLOUD_STOPPED
from .. import storage_store
from ..gateway import GcpRequest, GoogleError, json_response
from . import vertex_endpoints
from .vertex_endpoints import (
    LOCATION,
    accelerator_name,
    failed_precondition,
    find_vertex_instance,
    new_id,
    not_found,
    resource_name,
)

log = logging.getLogger(__name__)

CUSTOM_TASK = "custom_task_1.0.0.yaml"
FINAL_STATES = ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")
SHUTDOWN_MESSAGE = f"{LOCAL_CLOUD_STOPPED.capitalize()} while the job ran."
_CODES = {"failed": 9, "cancelled": 1}  # google.rpc.Code: FAILED_PRECONDITION, CANCELLED


def _now() -> str:
    return storage_store.rfc3339(time.time())


class TrainingPipelines:
    def __init__(self, context):
        self.context = context
        self.store = storage_store.for_context(context)
        self.folder = context.records("vertex-training")
        self._lock = threading.Lock()
        self.pipelines: dict[str, dict] = self._load()
        self.runs: dict[str, TrainingRun] = {}
        self._stopping = threading.Event()
        context.on_shutdown(self._shutdown)
        context.on_interrupted("Vertex AI training pipelines", self._end_interrupted)

    def register(self, gateway) -> None:
        gateway.route("POST", LOCATION + r"/trainingPipelines", self.create)
        gateway.route("GET", LOCATION + r"/trainingPipelines", self.list)
        gateway.route("GET", LOCATION + r"/trainingPipelines/(?P<id>[^/:]+)", self.get)
        gateway.route("DELETE", LOCATION + r"/trainingPipelines/(?P<id>[^/:]+)", self.delete)
        gateway.route("POST", LOCATION + r"/trainingPipelines/(?P<id>[^/:]+):cancel", self.cancel)

    # ---- handlers

    def create(self, request: GcpRequest):
        body = request.json()
        spec = self._spec(request, body)
        at = _now()
        pipeline = {
            **{k: v for k, v in body.items() if k not in ("name", "state", "error")},
            "name": resource_name(request, "trainingPipelines", spec.job_id),
            "state": "PIPELINE_STATE_QUEUED",
            "createTime": at,
            "updateTime": at,
        }
        with self._lock:
            self.pipelines[pipeline["name"]] = pipeline
            self._save(pipeline)
        self.context.in_background(self._run, f"training {spec.job_id}", pipeline["name"], spec)
        return json_response(pipeline)

    def get(self, request: GcpRequest):
        name = resource_name(request, "trainingPipelines", request.params["id"])
        with self._lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                raise not_found("TrainingPipeline", name)
            return json_response(pipeline)

    def list(self, request: GcpRequest):
        parent = resource_name(request, "trainingPipelines", "")
        keep = vertex_endpoints.display_name_filter(request)
        with self._lock:
            found = [p for n, p in sorted(self.pipelines.items()) if n.startswith(parent) and keep(p)]
        return json_response({"trainingPipelines": found})

    def cancel(self, request: GcpRequest):
        name = resource_name(request, "trainingPipelines", request.params["id"])
        with self._lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                raise not_found("TrainingPipeline", name)
            run = self.runs.get(name)
            if pipeline["state"] not in FINAL_STATES:
                self._update(pipeline, state="PIPELINE_STATE_CANCELLING")
        if run is not None:
            run.cancel()
        return json_response({})

    def delete(self, request: GcpRequest):
        name = resource_name(request, "trainingPipelines", request.params["id"])
        with self._lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                raise not_found("TrainingPipeline", name)
            if pipeline["state"] not in FINAL_STATES:
                raise failed_precondition(
                    f"TrainingPipeline `{name}` is in state {pipeline['state']} and cannot be deleted: cancel it "
                    "first, or wait until it ends."
                )
            del self.pipelines[name]
            shutil.rmtree(self.folder / name.rsplit("/", 1)[-1], ignore_errors=True)
        operations = vertex_endpoints.for_context(self.context).operations
        operation = operations.start(name, "DeleteOperationMetadata")
        return json_response(operations.finish(operation["name"], "Empty"))

    # ---- the run

    def _spec(self, request: GcpRequest, body: dict) -> TrainingSpec:
        if not body.get("displayName"):
            raise GoogleError(400, "TrainingPipeline display name is required (displayName).")
        if not str(body.get("trainingTaskDefinition", "")).endswith(CUSTOM_TASK):
            raise GoogleError(
                400,
                f"Only custom training runs on the local cloud (trainingTaskDefinition ending {CUSTOM_TASK}); "
                f"got {body.get('trainingTaskDefinition')!r}.",
            )
        inputs = snake(body.get("trainingTaskInputs") or {})
        pools = inputs.get("worker_pool_specs")
        if not isinstance(pools, list) or not pools or not pools[0]:
            raise GoogleError(400, "trainingTaskInputs.workerPoolSpecs must name at least one worker pool.")
        output = (inputs.get("base_output_directory") or {}).get("output_uri_prefix")
        if not output or not str(output).startswith("gs://"):
            raise GoogleError(400, "trainingTaskInputs.baseOutputDirectory.outputUriPrefix must be a gs:// URI.")
        timeout = str((inputs.get("scheduling") or {}).get("timeout") or "").rstrip("s")
        return TrainingSpec(
            job_id=new_id(),
            project=request.params["project"],
            location=request.params["location"],
            worker_pools=pools,
            base_output_dir=output,
            timeout_s=float(timeout) if timeout else None,
        )

    def _run(self, name: str, spec: TrainingSpec) -> None:
        run = TrainingRun(
            spec=spec,
            folder=self.folder / spec.job_id,
            local_url=self.context.url,
            read_object=self.store.object_path,
            spawn=self.context.children.spawn,
            stop=self.context.children.stop,
        )
        with self._lock:
            pipeline = self.pipelines[name]
            if pipeline["state"] == "PIPELINE_STATE_CANCELLING":
                self._end(pipeline, "PIPELINE_STATE_CANCELLED", _error("cancelled", "The job was cancelled."))
                return
            self.runs[name] = run
            self._update(pipeline, state="PIPELINE_STATE_RUNNING", startTime=_now())
        started = time.time()
        self._note_unpriced(run, spec)
        try:
            run.run()
            outcome = ("PIPELINE_STATE_SUCCEEDED", None)
        except JobCancelled:
            outcome = (
                ("PIPELINE_STATE_FAILED", _error("failed", SHUTDOWN_MESSAGE))
                if self._stopping.is_set()
                else ("PIPELINE_STATE_CANCELLED", _error("cancelled", "The job was cancelled."))
            )
        except JobFailed as failure:
            outcome = ("PIPELINE_STATE_FAILED", _error("failed", str(failure)))
        except Exception as exc:  # a bug of ours must still end the job, not leave it RUNNING forever
            log.exception("training pipeline %s", name)
            outcome = ("PIPELINE_STATE_FAILED", _error("failed", f"The local cloud could not run the job: {exc}"))
        self._bill(name, spec, time.time() - started)
        state, error = outcome
        if state == "PIPELINE_STATE_SUCCEEDED" and self.pipelines[name].get("modelToUpload"):
            state, error = self._upload_model(name, spec)
        with self._lock:
            self.runs.pop(name, None)
            self._end(self.pipelines[name], state, error)

    def _upload_model(self, name: str, spec: TrainingSpec) -> tuple[str, dict | None]:
        """Register the model from AIP_MODEL_DIR, as the pipeline's upload step does on Vertex."""
        bucket, prefix = storage_store.parse_gs_url(spec.model_dir)
        try:
            objects, _ = self.store.list_objects(bucket, prefix)
        except GoogleError as error:
            objects, reason = [], error.message
        else:
            reason = "the training script wrote nothing there"
        if not objects:
            message = (
                f"Model upload failed: there are no files under {spec.model_dir} to copy ({reason}). Save the "
                "model to os.environ['AIP_MODEL_DIR'] (e.g. with google-cloud-storage)."
            )
            return "PIPELINE_STATE_FAILED", _error("failed", message)
        pipeline = self.pipelines[name]
        model_name = f"projects/{spec.project}/locations/{spec.location}/models/{pipeline.get('modelId') or new_id()}"
        wanted = {**pipeline["modelToUpload"], "artifactUri": spec.model_dir}
        wanted.setdefault("displayName", pipeline["displayName"] + "-model")
        model = vertex_endpoints.for_context(self.context).add_model(model_name, wanted)
        with self._lock:
            pipeline["modelToUpload"] = {**pipeline["modelToUpload"], "name": model_name, "versionId": "1"}
            pipeline["modelToUpload"]["artifactUri"] = model["artifactUri"]
        return "PIPELINE_STATE_SUCCEEDED", None

    # ---- metering

    def _bill(self, name: str, spec: TrainingSpec, seconds: float) -> None:
        for pool, worker_pool in enumerate(spec.worker_pools):
            if not worker_pool:
                continue
            machine = worker_pool.get("machine_spec") or {}
            machine_type, accelerator = machine.get("machine_type", "n1-standard-4"), accelerator_name(machine)
            replicas = int(worker_pool.get("replica_count") or 1)
            hours = seconds / 3600 * replicas
            instance = find_vertex_instance(self.context.catalog, "vertex-training", machine_type, accelerator)
            shape = machine_type + (f" + {machine.get('accelerator_count', 1)} x {accelerator}" if accelerator else "")
            self.context.meter(
                service="vertex-ai",
                action="custom-training",
                resource=f"{self.pipelines[name]['displayName']}/{spec.job_id} workerpool{pool} ({shape})",
                quantity=hours,
                unit="replica-hours",
                usd=hours * instance.on_demand_usd_per_hour if instance else 0.0,
                price_key=instance.id if instance else "",
            )

    def _note_unpriced(self, run: TrainingRun, spec: TrainingSpec) -> None:
        for worker_pool in spec.worker_pools:
            machine = (worker_pool or {}).get("machine_spec") or {}
            machine_type, accelerator = machine.get("machine_type", "n1-standard-4"), accelerator_name(machine)
            if worker_pool and not find_vertex_instance(
                self.context.catalog, "vertex-training", machine_type, accelerator
            ):
                run.log(
                    f"[labcloud] {machine_type} + {accelerator or 'no accelerator'} has no Vertex training price in "
                    "the course's catalog: this job is not metered."
                )

    # ---- records

    def _update(self, pipeline: dict, **changes) -> None:
        pipeline.update(changes, updateTime=_now())
        self._save(pipeline)

    def _end(self, pipeline: dict, state: str, error: dict | None) -> None:
        self._update(pipeline, state=state, endTime=_now(), **({"error": error} if error else {}))

    def _save(self, pipeline: dict) -> None:
        folder = self.folder / pipeline["name"].rsplit("/", 1)[-1]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "record.json.tmp"
        tmp.write_text(json.dumps(pipeline, indent=1))
        tmp.replace(folder / "record.json")

    def _load(self) -> dict[str, dict]:
        pipelines = {}
        for path in sorted(Path(self.folder).glob("*/record.json")):
            pipeline = json.loads(path.read_text())
            pipelines[pipeline["name"]] = pipeline
        return pipelines

    def _end_interrupted(self, reason: str) -> list[str]:
        """FAILED: the pipelines that ran when the local cloud stopped (at start, before any runs); their names."""
        message = f"{reason.capitalize()} while the job ran."
        with self._lock:
            unfinished = [p for p in self.pipelines.values() if p["state"] not in FINAL_STATES]
            for pipeline in unfinished:
                self._end(pipeline, "PIPELINE_STATE_FAILED", _error("failed", message))
        return [p["name"] for p in unfinished]

    def _shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            running = list(self.runs.values())
        for run in running:
            run.cancel()


def _error(kind: str, message: str) -> dict:
    return {"code": _CODES[kind], "message": message}


def register(gateway, context) -> None:
    TrainingPipelines(context).register(gateway)
