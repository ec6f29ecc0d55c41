"""Azure Machine Learning command jobs on the local cloud: code assets, jobs that really run, run history, streaming.

The flow `ml_client.jobs.create_or_update(command(code="./src", command="python train.py ...", inputs=...,
compute=..., environment=...))` drives, and what the local cloud does at each step:

1. Code assets: the SDK asks for a code version by the folder's hash (none: answered empty), calls
   `startPendingUpload`, which answers a SAS URL to a fresh container in Azurite (Blob storage), uploads the folder
   there and registers the version (its `codeUri`).
2. The job (PUT .../jobs/<name>) is answered `Queued` and run in the background: the code is fetched from Blob
   storage; each `azureml://datastores/<datastore>/paths/<path>` input is downloaded from the Azurite container named
   like the datastore into a local folder; `${{inputs.<name>}}` and `${{outputs.<name>}}` in the command become those
   folders (literal inputs become their value); the command runs with this machine's Python first on PATH
   (curated environment names such as `AzureML-pytorch-2.0-...@latest` are accepted and stand for it: simulated).
   Status goes Queued -> Preparing -> Running -> Completed, or Failed with the exit status and the log's tail.
   Outputs are uploaded to the `workspaceblobstore` container under `azureml/<job>/<output>/`.
3. `jobs.stream` polls the run history (`/history/v1.0/.../runs/<name>/details`) and downloads
   `user_logs/std_log.txt` from the URL listed there; the first poll of a job always answers Running, so a job that
   finished before anyone looked still streams its whole log.
4. `returned_job.studio_url` opens a page of the local cloud with the job's status, command and log.
Compute is simulated: a job on an ND96asr_v4 cluster runs as one process on this machine.
Jobs and code versions are JSON records under the state folder (`machine-learning-jobs/`), written before the
answer; a job that was running when the local cloud stopped (`labcloud down`, or a crash) is Failed at the next
start, with "The local cloud stopped while the job ran." (`CloudContext.on_interrupted`).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..gateway import ADMIN_PREFIX, AzureError, AzureRequest, json_response
from . import blob
from .blob import ACCOUNT, ACCOUNT_KEY
from .machine_learning import MFE, WORKSPACE_PATH, _authorized, _json_body, _workspace_key, load_json, utc

_WORKSPACE = WORKSPACE_PATH
_CODE = MFE + _WORKSPACE + r"/codes/(?P<code>[^/]+)"
_JOB = MFE + _WORKSPACE + r"/jobs/(?P<job>[^/]+)"
_RUN = r"/history/v1\.0" + _WORKSPACE + r"/(?:experiments/[^/]+/)?runs/(?P<job>[^/]+)"
LOG_ROUTE = ADMIN_PREFIX + r"/ml/jobs/(?P<job>[^/]+)/logs/user_logs/std_log\.txt"
STUDIO_PATH = ADMIN_PREFIX + "/ml/studio/jobs"
STUDIO_ROUTE = STUDIO_PATH + r"/(?P<job>[^/]+)"
LOG_NAME = "user_logs/std_log.txt"
OUTPUT_DATASTORE = "workspaceblobstore"
_DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<datastore>[^/]+)/paths/(?P<path>.*)$")
_BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")
FINISHED = ("Completed", "Failed", "Canceled")
JOBS_FILE, CODES_FILE = "jobs.json", "codes.json"
LOG_TAIL_LINES = 20


def register_jobs(gateway, context, workspaces) -> None:
    """Called by machine_learning.register with its workspaces (jobs run on their compute)."""
    api = JobsApi(context, workspaces)
    workspaces.jobs = api  # machine_learning_assets reads the jobs and their logs for `jobs.download`
    for method, pattern, handler in (
        ("GET", _CODE + "/versions", api.list_code_versions),
        ("POST", _CODE + r"/versions/(?P<version>[^/]+)/startPendingUpload", api.start_pending_upload),
        ("PUT", _CODE + r"/versions/(?P<version>[^/]+)", api.put_code_version),
        ("GET", _CODE + r"/versions/(?P<version>[^/]+)", api.get_code_version),
        ("PUT", _JOB, api.put_job),
        ("GET", _JOB, api.get_job),
        ("POST", _JOB + "/cancel", api.cancel_job),
        ("GET", _RUN + "/details", api.run_details),
    ):
        gateway.route(method, pattern, _authorized(handler))
    gateway.route("GET", LOG_ROUTE, api.log_file)
    gateway.route("GET", STUDIO_ROUTE, api.studio_page)
    context.on_shutdown(api.stop_all)
    context.on_interrupted("Azure ML jobs", api.end_interrupted)


class JobsApi:
    def __init__(self, context, workspaces):
        self.context, self.workspaces = context, workspaces
        self.folder = Path(context.records("machine-learning-jobs"))
        self.lock = threading.Lock()
        self.codes: dict[str, dict] = load_json(self.folder / CODES_FILE)
        self.jobs: dict[str, dict] = load_json(self.folder / JOBS_FILE)
        self.polled: set[str] = set()
        self.processes: dict[str, subprocess.Popen] = {}

    def end_interrupted(self, reason: str) -> list[str]:
        """Fail the jobs that ran when the local cloud stopped (they cannot resume); their names."""
        unfinished = [job for job in self.jobs.values() if job["properties"]["status"] not in FINISHED]
        for job in unfinished:
            self._finish(job, "Failed", f"{reason.capitalize()} while the job ran.")
        return [job["name"] for job in unfinished]

    # code assets ---------------------------------------------------------------------------------------------
    def list_code_versions(self, request: AzureRequest):
        return json_response({"value": []})  # never a hash match: every job uploads its folder afresh

    def start_pending_upload(self, request: AzureRequest):
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        status = blob.ready(self.context.state_dir)
        container = f"code-{request.params['code'][:8]}-{int(time.time() * 1000)}"
        blob.container_client(self.context.state_dir, container, create=True)
        permission = ContainerSasPermissions(read=True, write=True, list=True, create=True, add=True)
        expiry = utc(time.time() + 3600)
        sas = generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY, permission=permission, expiry=expiry)
        uri = f"{status.endpoint}/{container}"
        return json_response(
            {
                "blobReferenceForConsumption": {
                    "blobUri": uri,
                    "storageAccountArmId": None,
                    "credential": {"credentialType": "SAS", "sasUri": f"{uri}?{sas}"},
                },
                "pendingUploadId": container,
                "pendingUploadType": "TemporaryBlobReference",
            }
        )

    def put_code_version(self, request: AzureRequest):
        body = _json_body(request)
        code_id = f"{request.path.removeprefix(MFE)}"
        resource = {**body, "id": code_id, "name": request.params["version"]}
        with self.lock:
            self.codes[code_id.lower()] = resource
            _save_json(self.folder / CODES_FILE, self.codes)
        return json_response(resource)

    def get_code_version(self, request: AzureRequest):
        code = self.codes.get(request.path.removeprefix(MFE).lower())
        if code is None:
            raise AzureError(404, "ResourceNotFound", f"Code version {request.params['code']} was not found.")
        return json_response(code)

    # jobs ----------------------------------------------------------------------------------------------------
    def put_job(self, request: AzureRequest):
        body, name = _json_body(request), request.params["job"]
        properties = body.get("properties") or {}
        if properties.get("jobType") != "Command":
            raise AzureError(400, "UserError", "Only command jobs are served by the local cloud.")
        if not properties.get("command"):
            raise AzureError(400, "UserError", "A command job needs a command.")
        code = self.codes.get(str(properties.get("codeId", "")).lower())
        if code is None:
            raise AzureError(400, "UserError", f"Code {properties.get('codeId')} was not found: upload the code first.")
        self._require_compute(request, properties.get("computeId", ""))
        base = f"https://{request.environ.get('HTTP_HOST', '127.0.0.1')}"
        job = {
            **body,
            "id": request.path.removeprefix(MFE),
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        }
        job["properties"] = {
            **properties,
            "status": "Queued",
            "services": {"Studio": {"jobServiceType": "Studio", "endpoint": f"{base}{STUDIO_PATH}/{name}"}},
        }
        job["labcloud"] = {
            "codeUri": code["properties"]["codeUri"],
            "base": base,
            "created": time.time(),
            "workspace": _workspace_key(request.params),
        }
        with self.lock:
            if name in self.jobs and self.jobs[name]["properties"]["status"] not in FINISHED:
                raise AzureError(409, "Conflict", f"Job {name} is already running.")
            self.jobs[name] = job
            self.polled.discard(name)
            self._save()
        self.context.in_background(self._run, f"azureml-job-{name}", name)
        return 201, [("Content-Type", "application/json")], json.dumps(_public(job)).encode()

    def get_job(self, request: AzureRequest):
        return json_response(_public(self._find(request.params["job"])))

    def cancel_job(self, request: AzureRequest):
        job = self._find(request.params["job"])
        process = self.processes.get(job["name"])
        if process is not None:
            self.context.children.stop(process)
        if job["properties"]["status"] not in FINISHED:
            self._finish(job, "Canceled", "Canceled by the user.")
        return 202, [("Content-Type", "application/json")], b""

    def _require_compute(self, request: AzureRequest, compute_id: str) -> None:
        name = compute_id.rsplit("/", 1)[-1]
        computes = self.workspaces.workspaces.get(_workspace_key(request.params), {}).get("computes", {})
        if name not in computes:
            raise AzureError(
                400,
                "UserError",
                f"Compute {name} was not found in workspace {request.params['workspace']}: create it first "
                "(ml_client.compute.begin_create_or_update).",
            )

    def _find(self, name: str) -> dict:
        job = self.jobs.get(name)
        if job is None:
            raise AzureError(404, "UserError", f"The job {name} was not found.")
        return job

    # running -------------------------------------------------------------------------------------------------
    def _run(self, name: str) -> None:
        job = self.jobs[name]
        folder = self.folder / name
        log_path = folder / LOG_NAME
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job["labcloud"]["prepared"] = time.time()  # the node is allocated from here on
        self._set_status(job, "Preparing")
        try:
            code_dir = self._download_code(job, folder / "code")
            bindings = self._bind(job, folder)
            command = _substitute(job["properties"]["command"], bindings)
        except (AzureError, OSError, ValueError) as error:
            message = error.message if isinstance(error, AzureError) else str(error)
            log_path.write_text(f"Preparing the job failed: {message}\n")
            self._finish(job, "Failed", message)
            return
        self._set_status(job, "Running")
        with log_path.open("ab") as log:
            process = self.context.children.spawn(
                ["/bin/sh", "-c", command],
                cwd=code_dir,
                env=self._environment(job),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.processes[name] = process
            code = process.wait()
        self.processes.pop(name, None)
        if job["properties"]["status"] == "Canceled":
            return
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            self._finish(job, "Failed", f"Execution failed. User process exited with status code {code}.\n{tail}")
            return
        self._upload_outputs(job, folder / "outputs")
        self._finish(job, "Completed", "")

    def _download_code(self, job: dict, target: Path) -> Path:
        container, prefix = _container_path(job["labcloud"]["codeUri"])
        self._download(container, prefix, target)
        return target

    def _bind(self, job: dict, folder: Path) -> dict[str, str]:
        """Local values for `${{inputs.x}}` and `${{outputs.y}}`: downloaded folders, output folders, literals."""
        bindings = {}
        for name, spec in (job["properties"].get("inputs") or {}).items():
            if spec.get("jobInputType") == "literal":
                bindings[f"inputs.{name}"] = str(spec.get("value", ""))
                continue
            match = _DATASTORE_URI.match(self._asset_path(job, spec.get("uri", "")))
            if not match:
                raise AzureError(400, "UserError", f"Input {name}: only azureml://datastores/... paths are served.")
            target = folder / "inputs" / name
            found = self._download(match["datastore"], match["path"], target)
            if not found:
                raise AzureError(
                    400,
                    "UserError",
                    f"Input {name}: nothing found at {spec['uri']} (the datastore's container in Blob storage).",
                )
            bindings[f"inputs.{name}"] = str(target if spec.get("jobInputType") != "uri_file" else found[0])
        for name in (job["properties"].get("outputs") or {}) or {}:
            target = folder / "outputs" / name
            target.mkdir(parents=True, exist_ok=True)
            bindings[f"outputs.{name}"] = str(target)
        return bindings

    def _asset_path(self, job: dict, uri: str) -> str:
        """The `azureml://datastores/...` path an input stands for: a data asset or model (`azureml:<name>:<version>`)
        is resolved to where it was uploaded, a job output to where the job put it (machine_learning_assets)."""
        assets = getattr(self.workspaces, "assets", None)  # machine_learning_assets, when registered
        return assets.resolve_input(job["id"], uri) if assets is not None else uri

    def _environment(self, job: dict) -> dict[str, str]:
        python_dir = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": python_dir + os.pathsep + os.environ.get("PATH", ""),
            "AZUREML_RUN_ID": job["name"],
            "AZUREML_EXPERIMENT_NAME": job["properties"].get("experimentName", ""),
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in (job["properties"].get("environmentVariables") or {}).items()},
        }

    def _download(self, container: str, prefix: str, target: Path) -> list[Path]:
        """Every blob under `prefix` in `container`, into `target` (relative paths kept); the files written."""
        client = blob.container_client(self.context.state_dir, container)
        if not client.exists():
            return []
        written = []
        prefix = prefix.strip("/")
        for item in client.list_blobs(name_starts_with=prefix):
            relative = item.name[len(prefix) :].lstrip("/") or Path(item.name).name
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.download_blob(item.name).readall())
            written.append(path)
        return written

    def _upload_outputs(self, job: dict, outputs: Path) -> None:
        if not outputs.exists():
            return
        client = blob.container_client(self.context.state_dir, OUTPUT_DATASTORE, create=True)
        for path in outputs.rglob("*"):
            if path.is_file():
                name = f"azureml/{job['name']}/{path.relative_to(outputs).as_posix()}"
                client.upload_blob(name, path.read_bytes(), overwrite=True)
        for name, spec in (job["properties"].get("outputs") or {}).items():
            spec.setdefault("uri", f"azureml://datastores/{OUTPUT_DATASTORE}/paths/azureml/{job['name']}/{name}/")

    def _set_status(self, job: dict, status: str) -> None:
        with self.lock:
            job["properties"]["status"] = status
            job["labcloud"].setdefault("started", time.time()) if status == "Running" else None
            self._save()

    def _finish(self, job: dict, status: str, error: str) -> None:
        with self.lock:
            job["properties"]["status"] = status
            job["labcloud"]["ended"] = time.time()
            if error:
                job["labcloud"]["error"] = error
            self._save()
        self._meter(job)

    def _meter(self, job: dict) -> None:
        """The job's nodes, from when it started preparing to its end (see MachineLearningApi.meter_job)."""
        record = job["labcloud"]
        if "workspace" not in record or "prepared" not in record:
            return
        nodes = int((job["properties"].get("resources") or {}).get("instanceCount") or 1)
        compute = job["properties"].get("computeId", "").rsplit("/", 1)[-1]
        seconds = record["ended"] - record["prepared"]
        self.workspaces.meter_job(record["workspace"], compute, job["name"], seconds, nodes)

    def stop_all(self) -> None:
        for process in list(self.processes.values()):
            self.context.children.stop(process)

    # run history and pages -----------------------------------------------------------------------------------
    def run_details(self, request: AzureRequest):
        job = self._find(request.params["job"])
        status = job["properties"]["status"]
        if status in FINISHED and job["name"] not in self.polled:
            status = "Running"  # the first look at a finished job: `jobs.stream` only prints logs while it runs
        self.polled.add(job["name"])
        details = {
            "runId": job["name"],
            "status": status,
            "target": job["properties"].get("computeId", "").rsplit("/", 1)[-1],
            "logFiles": {LOG_NAME: f"{job['labcloud']['base']}{ADMIN_PREFIX}/ml/jobs/{job['name']}/logs/{LOG_NAME}"},
            "warnings": [],
        }
        if status == "Failed":
            details["error"] = {"error": {"code": "UserError", "message": job["labcloud"].get("error", "")}}
        return json_response(details)

    def log_file(self, request: AzureRequest):
        path = self.folder / request.params["job"] / LOG_NAME
        text = path.read_bytes() if path.exists() else b""
        return 200, [("Content-Type", "text/plain; charset=utf-8")], text

    def studio_page(self, request: AzureRequest):
        job = self._find(request.params["job"])
        log_path = self.folder / job["name"] / LOG_NAME
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        properties = job["properties"]
        page = (
            f"<html><head><title>{html.escape(job['name'])}</title></head><body>"
            f"<h1>Job {html.escape(properties.get('displayName') or job['name'])}</h1>"
            f"<p>Status: <b>{html.escape(properties['status'])}</b> (the local cloud's page for Azure ML studio)</p>"
            f"<p>Command: <code>{html.escape(properties.get('command', ''))}</code></p>"
            f"<p>{html.escape(job['labcloud'].get('error', ''))}</p><h2>{LOG_NAME}</h2><pre>{html.escape(log)}</pre>"
            "</body></html>"
        )
        return 200, [("Content-Type", "text/html; charset=utf-8")], page.encode()

    def _save(self) -> None:
        _save_json(self.folder / JOBS_FILE, self.jobs)


def _save_json(path: Path, records: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    tmp.replace(path)


def _public(job: dict) -> dict:
    """The job as Azure returns it (without the local cloud's bookkeeping)."""
    return {k: v for k, v in job.items() if k != "labcloud"}


def _substitute(command: str, bindings: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        key = f"{match.group(1)}.{match.group(2)}"
        if key not in bindings:
            raise AzureError(400, "UserError", f"The command uses ${{{{{key}}}}}, which the job does not define.")
        return bindings[key]

    return _BINDING.sub(value, command)


def _container_path(uri: str) -> tuple[str, str]:
    """(container, path) of a blob URL http://host:port/<account>/<container>/<path>."""
    parts = uri.split("://", 1)[-1].split("/", 3)
    return parts[2], parts[3] if len(parts) > 3 else ""
