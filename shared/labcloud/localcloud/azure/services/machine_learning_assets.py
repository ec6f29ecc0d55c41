"""Azure Machine Learning datastores, data assets, models and `jobs.download` on the local cloud.

Datastores. Every datastore is an Azurite (Blob storage) container of the same name: `workspaceblobstore` (the
default, where uploads and job outputs go), `workspaceartifactstore` (job logs) and any container a learner made.
The SDK never takes a datastore's endpoint or protocol at its word: it builds the account URL itself as
`https://{accountName}.blob.{cloud storage suffix}` (`STORAGE_ACCOUNT_URLS`), always https, always
`*.core.windows.net`. The trick: the datastore's `accountName` is `127.0.0.1:<https port>/devstoreaccount1#`, so
that URL becomes `https://127.0.0.1:<https port>/devstoreaccount1#.blob.core.windows.net`; the fragment is never
sent, and `azure-storage-blob` sees an IP-style (emulator) URL whose account is `devstoreaccount1`. The local cloud's
HTTPS listener (trusted through connect()'s CA bundle) passes every `/devstoreaccount1/...` request on to Azurite's
plain-http loopback port unchanged, with the SAS token `listSecrets` returns (see there why not the account key).

Data assets and models: versions registered by PUT (the SDK uploads a local folder to `workspaceblobstore` under
`LocalUpload/<hash>/` first), read, listed, and their containers' `latestVersion` for `<name>@latest`. A job input
`azureml:<name>:<version>` reaches `machine_learning_jobs._bind` as the version's ARM id and is resolved here to the
datastore path it was uploaded to; `azureml://jobs/<job>/outputs/<name>` (a model from a job's output) resolves to
where the job uploaded that output.

`jobs.download`: the run's data (`/history/v1.0/.../rundata`) lists the job's named outputs as data assets, which
`batchGetResolvedUris` maps to their datastore paths; the logs are published to `workspaceartifactstore` under
`ExperimentRun/dcid.<job>/` the first time a finished job's run data is read (where the SDK looks for them).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from pathlib import Path

from ...http import header_name
from ..gateway import AzureError, AzureRequest, json_response
from . import blob
from .blob import ACCOUNT, ACCOUNT_KEY
from .machine_learning import MFE, WORKSPACE_PATH, _arm_id, _authorized, _json_body, _workspace_key, load_json, utc
from .machine_learning_jobs import FINISHED, LOG_NAME

_WORKSPACE = WORKSPACE_PATH
_DATASTORES = MFE + _WORKSPACE + "/datastores"
_ASSETS = MFE + _WORKSPACE + r"/(?P<kind>data|models)"
_ASSET = _ASSETS + r"/(?P<name>[^/]+)"
_VERSION = _ASSET + r"/versions/(?P<version>[^/]+)"
_RUN_DATA = r"/history/v1\.0" + _WORKSPACE + "/rundata"
_RESOLVE_URIS = r"/data/v1\.0" + _WORKSPACE + r"/dataversion/batchGetResolvedUris"
_BLOB_PROXY = rf"/{ACCOUNT}(?:/.*)?"
DEFAULT_DATASTORE = "workspaceblobstore"
ARTIFACT_DATASTORE = "workspaceartifactstore"
BUILT_IN_DATASTORES = (DEFAULT_DATASTORE, ARTIFACT_DATASTORE)
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
# `azureml://subscriptions/../workspaces/<ws>/datastores/<name>/paths/<path>`, the long form the SDK registers
_LONG_DATASTORE_URI = re.compile(r"^azureml://subscriptions/.+/datastores/(?P<datastore>[^/]+)/paths/(?P<path>.*)$")
_ASSET_ID = re.compile(
    r"^(?:azureml:)?/?subscriptions/.+/workspaces/[^/]+/(?P<kind>data|models)/(?:azureml:)?(?P<name>[^/]+)"
    r"/versions/(?P<version>[^/]+)$",
    re.IGNORECASE,
)
# a job's named output, or a path inside it: `azureml://jobs/<job>/outputs/<output>[/paths/<path>]`
_JOB_OUTPUT_URI = re.compile(r"^azureml://jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)(?:/paths/(?P<path>.*)|/?)$")
_OUTPUT_ASSET_ID = re.compile(r"^azureml://labcloud/jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)$")
_KIND_TYPE = {
    "data": "Microsoft.MachineLearningServices/workspaces/data",
    "models": "Microsoft.MachineLearningServices/workspaces/models",
}
_KIND_WORD = {"data": "Data asset", "models": "Model"}
_URI_PROPERTY = {"data": "dataUri", "models": "modelUri"}
_COMMON_DEFAULTS = {"isAnonymous": False, "isArchived": False, "tags": {}, "properties": {}}
_VERSION_DEFAULTS = {"data": _COMMON_DEFAULTS, "models": {**_COMMON_DEFAULTS, "flavors": {}}}  # the SDK reads these
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
PROXY_TIMEOUT_S = 60
SAS_LIFETIME_S = 8 * 3600


def register_assets(gateway, context, workspaces) -> None:
    """Called by machine_learning.register after the jobs: `workspaces.jobs` is the jobs API."""
    api = AssetsApi(context, workspaces)
    workspaces.assets = api  # machine_learning_jobs._bind resolves data asset inputs through it
    for method, pattern, handler in (
        ("GET", _DATASTORES, api.list_datastores),
        ("GET", _DATASTORES + r"/(?P<datastore>[^/]+)", api.get_datastore),
        ("POST", _DATASTORES + r"/(?P<datastore>[^/]+)/listSecrets", api.list_secrets),
        ("GET", _ASSETS, api.list_containers),
        ("GET", _ASSET, api.get_container),
        ("GET", _ASSET + "/versions", api.list_versions),
        ("GET", _VERSION, api.get_version),
        ("PUT", _VERSION, api.put_version),
        ("POST", _RUN_DATA, api.run_data),
        ("POST", _RESOLVE_URIS, api.resolve_uris),
    ):
        gateway.route(method, pattern, _authorized(handler))
    # Azurite checks its own Shared Key and SAS signatures: the proxy adds no check of its own
    for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"):
        gateway.route(method, _BLOB_PROXY, api.blob_proxy)


class AssetsApi:
    def __init__(self, context, workspaces):
        self.context, self.workspaces = context, workspaces
        self.file = Path(context.records("machine-learning-assets")) / "assets.json"
        self.lock = threading.Lock()
        # workspace key -> kind (data | models) -> asset name -> version -> the version's REST resource
        self.assets: dict[str, dict[str, dict[str, dict[str, dict]]]] = load_json(self.file)

    # datastores ----------------------------------------------------------------------------------------------
    def list_datastores(self, request: AzureRequest):
        containers = self._containers()
        names = [DEFAULT_DATASTORE] + [c for c in containers if c != DEFAULT_DATASTORE and not c.startswith("code-")]
        if request.query.get("isDefault", "").lower() == "true":
            names = [DEFAULT_DATASTORE]
        return json_response({"value": [self._datastore(request, name) for name in names]})

    def get_datastore(self, request: AzureRequest):
        name = request.params["datastore"]
        if name not in self._containers():
            raise AzureError(
                404,
                "UserError",
                f"Datastore {name} was not found in workspace {request.params['workspace']}: on the local cloud a "
                "datastore is the Blob storage container of the same name (create it with azure-storage-blob).",
            )
        return json_response(self._datastore(request, name))

    def list_secrets(self, request: AzureRequest):
        """A SAS token, not the account key: a Shared Key signature covers the request's header names exactly, so
        it holds only while every hop keeps them as sent (`http.header_name`); a SAS covers no header."""
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        self.get_datastore(request)
        token = generate_account_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
            expiry=utc(time.time() + SAS_LIFETIME_S),
        )
        return json_response({"secretsType": "Sas", "sasToken": token})

    def _datastore(self, request: AzureRequest, name: str) -> dict:
        host = request.environ.get("HTTP_HOST", "127.0.0.1")
        return {
            "id": f"{_arm_id(request.params)}/datastores/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                # the SDK makes https://{accountName}.blob.core.windows.net of this: see the module docstring
                "accountName": f"{host}/{ACCOUNT}#",
                "containerName": name,
                "endpoint": "core.windows.net",
                "protocol": "http",  # what Azurite speaks behind the HTTPS listener; the SDK itself ignores it
                "credentials": {"credentialsType": "Sas", "secrets": {"secretsType": "Sas"}},
                "isDefault": name == DEFAULT_DATASTORE,
                "serviceDataAccessAuthIdentity": "None",
                "description": "An Azurite (Blob storage) container of the local cloud",
                "tags": {},
                "properties": {},
            },
        }

    def _containers(self) -> list[str]:
        """The Azurite containers, the workspace's own datastores made on first look (Azure makes them with it)."""
        from azure.core.exceptions import ResourceExistsError

        service = blob.service_client(self.context.state_dir)
        names = [container.name for container in service.list_containers()]
        for name in BUILT_IN_DATASTORES:
            if name not in names:
                with contextlib.suppress(ResourceExistsError):  # made by a concurrent request
                    service.create_container(name)
                names.append(name)
        return names

    def blob_proxy(self, request: AzureRequest):
        """The request, unchanged, to Azurite's loopback port; Azurite's answer, unchanged, back."""
        status = blob.ready(self.context.state_dir)
        # by the names the SDK sent: its upload confirmation is metadata `upload_status`, which WSGI writes as
        # HTTP_X_MS_META_UPLOAD_STATUS; forwarded as `upload-status` the SDK would upload the folder again each time
        headers = {header_name(request.environ, key): v for key, v in request.environ.items() if _is_header(key)}
        query = request.environ.get("QUERY_STRING", "")
        target = (
            request.environ.get("REQUEST_URI")
            or request.environ.get("RAW_URI")
            or request.path + (f"?{query}" if query else "")
        )
        connection = http.client.HTTPConnection("127.0.0.1", status.port, timeout=PROXY_TIMEOUT_S)
        try:
            connection.request(request.method, target, body=request.body() or None, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
        except OSError as error:
            raise AzureError(502, "BadGateway", f"Blob storage (Azurite) did not answer: {error}") from None
        finally:
            connection.close()
        kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
        return answer.status, kept, body

    # data assets and models ----------------------------------------------------------------------------------
    def list_containers(self, request: AzureRequest):
        kind = request.params["kind"]
        assets = self._assets(request.params, kind)
        return json_response({"value": [self._container(request.params, kind, n) for n in sorted(assets)]})

    def get_container(self, request: AzureRequest):
        kind, name = request.params["kind"], _asset_name(request.params)
        if name not in self._assets(request.params, kind):
            raise _not_found(kind, name)
        return json_response(self._container(request.params, kind, name))

    def list_versions(self, request: AzureRequest):
        kind, name = request.params["kind"], _asset_name(request.params)
        versions = list(self._assets(request.params, kind).get(name, {}).values())
        order = request.query.get("$orderBy", request.query.get("$orderby", "")).lower()
        versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse="desc" in order)
        if (top := request.query.get("$top", "")).isdigit():
            versions = versions[: int(top)]
        return json_response({"value": versions})

    def get_version(self, request: AzureRequest):
        p = request.params
        return json_response(self._version(p, p["kind"], _asset_name(p), p["version"]))

    def put_version(self, request: AzureRequest):
        p, body = request.params, _json_body(request)
        kind, name, version = p["kind"], p["name"], p["version"]
        if not _ASSET_NAME.match(name):
            raise AzureError(400, "UserError", f"{_KIND_WORD[kind]} name '{name}' is invalid.")
        properties = body.get("properties") or {}
        uri = properties.get(_URI_PROPERTY[kind])
        if not isinstance(uri, str) or not uri:
            raise AzureError(400, "UserError", f"{_KIND_WORD[kind]} {name}:{version} needs a {_URI_PROPERTY[kind]}.")
        now = utc(time.time()).isoformat()  # microseconds: `@latest` tells apart versions made in one second
        resource = {
            "id": f"{_arm_id(p)}/{kind}/{name}/versions/{version}",
            "name": version,
            "type": f"{_KIND_TYPE[kind]}/versions",
            "properties": {**_VERSION_DEFAULTS[kind], **properties},
            "systemData": {"createdAt": now, "createdBy": "local cloud", "lastModifiedAt": now},
        }
        with self.lock:
            self._assets(p, kind, create=True).setdefault(name, {})[version] = resource
            self._save()
        return json_response(resource)

    def _version(self, params: dict, kind: str, name: str, version: str) -> dict:
        versions = self._assets(params, kind).get(name)
        if not versions:
            raise _not_found(kind, name)
        if version not in versions:
            raise _not_found(kind, f"{name}:{version}")
        return versions[version]

    def _container(self, params: dict, kind: str, name: str) -> dict:
        versions = self._assets(params, kind)[name]
        latest = max(versions.values(), key=lambda v: v["systemData"]["createdAt"])
        return {
            "id": f"{_arm_id(params)}/{kind}/{name}",
            "name": name,
            "type": _KIND_TYPE[kind],
            "properties": {
                "latestVersion": latest["name"],
                "nextVersion": _next_version(versions),
                "isArchived": False,
                "tags": {},
                "properties": {},
            },
            "systemData": latest["systemData"],
        }

    def _assets(self, params: dict, kind: str, create: bool = False) -> dict[str, dict[str, dict]]:
        key = _workspace_key(params)
        if create:
            return self.assets.setdefault(key, {}).setdefault(kind, {})
        return self.assets.get(key, {}).get(kind, {})

    # job inputs ----------------------------------------------------------------------------------------------
    def resolve_input(self, job_id: str, uri: str) -> str:
        """The `azureml://datastores/<name>/paths/<path>` a job input stands for: a data asset's or model's version
        (its ARM id), a job's output, a long-form datastore URI; anything else unchanged."""
        if match := _LONG_DATASTORE_URI.match(uri):
            return f"azureml://datastores/{match['datastore']}/paths/{match['path']}"
        if match := _JOB_OUTPUT_URI.match(uri):  # where machine_learning_jobs uploads a finished job's outputs
            output = f"azureml/{match['job']}/{match['output']}/{match['path'] or ''}"
            return f"azureml://datastores/{DEFAULT_DATASTORE}/paths/{output}"
        if match := _ASSET_ID.match(uri):
            params = _workspace_params(job_id)
            kind = match["kind"].lower()
            version = self._version(params, kind, match["name"], match["version"])
            registered = version["properties"][_URI_PROPERTY[kind]]
            if _ASSET_ID.match(registered):  # an asset registered as another asset: refused, so no loop is followed
                raise AzureError(400, "UserError", f"{uri} points at another asset ({registered}).")
            return self.resolve_input(job_id, registered)
        return uri

    # jobs.download -------------------------------------------------------------------------------------------
    def run_data(self, request: AzureRequest):
        """The run's metadata `jobs.download` reads: its named outputs, as data assets `resolve_uris` maps."""
        body = _json_body(request)
        job = self._job(str(body.get("runId", "")))
        self._publish_logs(job)
        outputs = {
            name: {"assetId": _output_asset_id(job["name"], name), "type": "uri_folder"}
            for name in job["properties"].get("outputs") or {}
        }
        metadata = {"runId": job["name"], "status": job["properties"]["status"], "outputs": outputs}
        return json_response({"runMetadata": metadata, "runDefinition": None, "jobSpecification": None})

    def resolve_uris(self, request: AzureRequest):
        body = _json_body(request)
        resolved = {}
        for asset_id in body.get("values") or []:
            if match := _OUTPUT_ASSET_ID.match(str(asset_id)):
                job, output = match["job"], match["output"]
                uri = f"azureml://datastores/{DEFAULT_DATASTORE}/paths/azureml/{job}/{output}/"
                resolved[asset_id] = {"uri": uri, "type": "UriFolder"}
        return json_response({"values": resolved})

    def _job(self, name: str) -> dict:
        jobs = getattr(self.workspaces, "jobs", None)
        job = jobs.jobs.get(name) if jobs is not None else None
        if job is None:
            raise AzureError(404, "UserError", f"The run {name} was not found.")
        return job

    def _publish_logs(self, job: dict) -> None:
        """A finished job's log, to where `jobs.download` looks for logs (the artifact store); uploaded again at
        each download rather than tracked, as it is small and the job may have been run again under its name."""
        if job["properties"]["status"] not in FINISHED:
            return
        log_path = self.workspaces.jobs.folder / job["name"] / LOG_NAME
        if not log_path.exists():
            return
        container = blob.container_client(self.context.state_dir, ARTIFACT_DATASTORE, create=True)
        name = f"ExperimentRun/dcid.{job['name']}/{LOG_NAME}"
        container.upload_blob(name, log_path.read_bytes(), overwrite=True)

    def _save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.assets, indent=1))
        tmp.replace(self.file)


def _asset_name(params: dict) -> str:
    """The asset's name: `Input(path="azureml:<name>@latest")` makes the SDK look up `azureml:<name>`, which Azure
    reads as `<name>`."""
    return params["name"].removeprefix("azureml:")


def _not_found(kind: str, what: str) -> AzureError:
    return AzureError(404, "UserError", f"{_KIND_WORD[kind]} {what} was not found.")


def _next_version(versions: dict) -> str:
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _output_asset_id(job: str, output: str) -> str:
    """An id for a job's output as a data asset; only `resolve_uris` needs to understand it (`_OUTPUT_ASSET_ID`)."""
    return f"azureml://labcloud/jobs/{job}/outputs/{output}"


def _workspace_params(job_id: str) -> dict:
    match = re.match(_WORKSPACE, job_id)
    if not match:
        raise AzureError(400, "UserError", f"{job_id} is not a workspace resource.")
    return match.groupdict()


def _is_header(key: str) -> bool:
    """A request header the proxy forwards: all but Host, which http.client sets for Azurite's own address."""
    return (key.startswith("HTTP_") and key != "HTTP_HOST") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
