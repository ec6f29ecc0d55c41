"""Azure Machine Learning on the local cloud: the REST API `azure-ai-ml`'s MLClient calls, served over HTTPS.

`connect("local")` sets `AZUREML_DEV_URL_MFE` (the SDK's own switch for its base URL) to this cloud's HTTPS port,
and `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` so that the unmodified `DefaultAzureCredential()` gets a local token from
`/_labcloud/azure/identity/token` (the managed-identity flow of App Service). The SDK refuses bearer tokens over
plain http, hence HTTPS with the local CA (`localcloud/tls.py`).

Served so far:
- Workspaces: GET (a workspace is provisioned on first use: the course assumes one exists; on Azure you create it
  once with `ml_client.workspaces.begin_create`), PUT, and the discovery document its `discoveryUrl` points to.
- Compute: AmlCompute clusters created, read, listed and deleted, with their size and scale settings kept (min/max
  nodes, idle time before scale-down). The VM size is simulated: a cluster of `Standard_ND96asr_v4` is this machine.
  An unknown VM size, min > max nodes or a malformed body get Azure's 400; an unknown compute, 404.
- The meter (node-hours at the VM size's list price, `machine-learning` in `cloud.costs()`): the `min_instances`
  nodes bill all the time the cluster exists (metered when it is changed or deleted and when the local cloud
  stops); a job's nodes above the minimum bill for the job's run time plus `idle_time_before_scale_down`, the time
  AmlCompute keeps an idle node before releasing it (as if no other job reused it).
- Command jobs, code assets and run history: `machine_learning_jobs.py`; datastores, data assets, models and what
  `jobs.download` reads: `machine_learning_assets.py`.
Not yet: an MLflow tracking URI for the workspace, pipelines, online endpoints.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

from ....pricing.catalog import UnknownInstanceType
from ..gateway import ADMIN_PREFIX, AzureError, AzureRequest, json_response

LOCAL_TOKEN = "labcloud-local-azure-token"  # accepted only by this local cloud, on loopback
LOCAL_IDENTITY_HEADER = "labcloud-local-identity"
TOKEN_PATH = ADMIN_PREFIX + "/identity/token"
DISCOVERY_PATH = ADMIN_PREFIX + "/discovery"
MFE = "/mferp/managementfrontend"
WORKSPACE_PATH = (  # the workspace part of an ARM id, under the MFE base URL and under run history's
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)"
)
_WORKSPACE = MFE + WORKSPACE_PATH
_COMPUTE = _WORKSPACE + r"/computes/(?P<compute>[^/]+)"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")  # AmlCompute names: 2-32 characters, letters first
_VM_SIZE = re.compile(r"^Standard_[A-Za-z0-9_]+$", re.IGNORECASE)  # any Azure VM size name; all are simulated
TOKEN_LIFETIME_S = 24 * 3600


def register(gateway, context) -> None:
    api = MachineLearningApi(context)
    gateway.route("GET", TOKEN_PATH, api.token)
    gateway.route("GET", DISCOVERY_PATH + r"/(?P<workspace_id>[^/]+)", api.discovery)
    for method, pattern, handler in (
        ("GET", _WORKSPACE, api.get_workspace),
        ("PUT", _WORKSPACE, api.put_workspace),
        ("GET", _WORKSPACE + "/computes", api.list_computes),
        ("GET", _COMPUTE, api.get_compute),
        ("PUT", _COMPUTE, api.put_compute),
        ("DELETE", _COMPUTE, api.delete_compute),
    ):
        gateway.route(method, pattern, _authorized(handler))
    from .machine_learning_jobs import register_jobs

    register_jobs(gateway, context, api)
    from .machine_learning_assets import register_assets  # after the jobs: assets reads api.jobs

    register_assets(gateway, context, api)
    context.on_shutdown(api.meter_all_always_on)


def _authorized(handler):
    """ARM answers 401 without a bearer token; the local cloud takes only its own."""

    def check(request: AzureRequest):
        if request.header("Authorization") != f"Bearer {LOCAL_TOKEN}":
            raise AzureError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or holds a token this local cloud "
                "did not issue: use DefaultAzureCredential() after labcloud.connect('local').",
            )
        return handler(request)

    return check


class MachineLearningApi:
    def __init__(self, context):
        self.context = context
        self.file = Path(context.records("machine-learning")) / "workspaces.json"
        self.lock = threading.Lock()
        self.workspaces: dict[str, dict] = load_json(self.file)

    # identity ------------------------------------------------------------------------------------------------
    def token(self, request: AzureRequest):
        if request.header("X-Identity-Header") != LOCAL_IDENTITY_HEADER:
            raise AzureError(401, "Unauthorized", "The X-IDENTITY-HEADER is missing or wrong.")
        return json_response(
            {
                "access_token": LOCAL_TOKEN,
                "expires_on": int(time.time()) + TOKEN_LIFETIME_S,
                "resource": request.query.get("resource", ""),
                "token_type": "Bearer",
            }
        )

    def discovery(self, request: AzureRequest):
        """The service base URLs a workspace's `discoveryUrl` lists (run history, ...): all this cloud."""
        base = _https_base(request)
        names = ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive", "labeling", "modelmanagement")
        return json_response({name: base for name in names})

    # workspaces ----------------------------------------------------------------------------------------------
    def get_workspace(self, request: AzureRequest):
        return json_response(self._workspace(request))

    def put_workspace(self, request: AzureRequest):
        body = _json_body(request)
        workspace = self._workspace(request, location=body.get("location"))
        return json_response(workspace)

    def _workspace(self, request: AzureRequest, location: str | None = None) -> dict:
        """The workspace record, provisioned on first use."""
        p = request.params
        key = _workspace_key(p)
        with self.lock:
            if key not in self.workspaces:
                self.workspaces[key] = {"location": location or "eastus", "id": str(uuid.uuid4()), "computes": {}}
                self._save()
            record = self.workspaces[key]
        arm_id = _arm_id(p)
        return {
            "id": arm_id,
            "name": p["workspace"],
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": record["location"],
            "identity": {"type": "SystemAssigned"},
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "workspaceId": record["id"],
                "friendlyName": p["workspace"],
                "provisioningState": "Succeeded",
                "discoveryUrl": f"{_https_base(request)}{DISCOVERY_PATH}/{record['id']}",
                "mlFlowTrackingUri": "",
            },
        }

    # compute -------------------------------------------------------------------------------------------------
    def list_computes(self, request: AzureRequest):
        self._workspace(request)
        computes = self.workspaces[_workspace_key(request.params)]["computes"]
        return json_response({"value": [self._compute_resource(request.params, c) for c in computes.values()]})

    def get_compute(self, request: AzureRequest):
        return json_response(self._compute_resource(request.params, self._find_compute(request)))

    def put_compute(self, request: AzureRequest):
        self._workspace(request)
        name, body = request.params["compute"], _json_body(request)
        compute = _compute_spec(name, body)
        key = _workspace_key(request.params)
        with self.lock:
            previous = self.workspaces[key]["computes"].get(name)
            if previous is not None:
                self.meter_always_on(key, previous)
            self.workspaces[key]["computes"][name] = compute
            self._save()
        return json_response(self._compute_resource(request.params, compute))

    def delete_compute(self, request: AzureRequest):
        compute = self._find_compute(request)
        self.meter_always_on(_workspace_key(request.params), compute)
        with self.lock:
            del self.workspaces[_workspace_key(request.params)]["computes"][request.params["compute"]]
            self._save()
        return 200, [("Content-Type", "application/json")], b""

    def _find_compute(self, request: AzureRequest) -> dict:
        self._workspace(request)
        computes = self.workspaces[_workspace_key(request.params)]["computes"]
        name = request.params["compute"]
        if name not in computes:
            raise AzureError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.MachineLearningServices/workspaces/{request.params['workspace']}"
                f"/computes/{name}' under resource group '{request.params['group']}' was not found.",
            )
        return computes[name]

    def _compute_resource(self, params: dict, compute: dict) -> dict:
        return {
            "id": f"{_arm_id(params)}/computes/{compute['name']}",
            "name": compute["name"],
            "type": "Microsoft.MachineLearningServices/workspaces/computes",
            "location": compute["location"],
            "properties": {
                "computeType": "AmlCompute",
                "provisioningState": "Succeeded",
                "createdOn": compute["created"],
                "properties": {
                    "vmSize": compute["vmSize"],
                    "vmPriority": compute["vmPriority"],
                    "scaleSettings": compute["scaleSettings"],
                    "currentNodeCount": 0,
                    "targetNodeCount": compute["scaleSettings"]["minNodeCount"],
                    "allocationState": "Steady",
                },
            },
        }

    # the meter ---------------------------------------------------------------------------------------------
    def meter_always_on(self, workspace_key: str, compute: dict) -> None:
        """The minimum nodes' hours since they were last metered."""
        now = time.time()
        hours = compute["scaleSettings"]["minNodeCount"] * (now - compute.get("metered_until", now)) / 3600
        compute["metered_until"] = now
        if hours > 0:
            self._meter(compute, hours, f"{workspace_key.rsplit('/', 1)[-1]}/{compute['name']} (minimum nodes)")

    def meter_all_always_on(self) -> None:
        with self.lock:
            for key, workspace in self.workspaces.items():
                for compute in workspace["computes"].values():
                    self.meter_always_on(key, compute)
            self._save()

    def meter_job(self, workspace_key: str, compute_name: str, job_name: str, seconds: float, nodes: int) -> None:
        """A job's nodes above the cluster's minimum: its run time plus the idle time before they scale down."""
        compute = self.workspaces.get(workspace_key, {}).get("computes", {}).get(compute_name)
        if compute is None:
            return
        extra = max(0, nodes - compute["scaleSettings"]["minNodeCount"])
        idle = iso_duration_seconds(compute["scaleSettings"]["nodeIdleTimeBeforeScaleDown"])
        if extra:
            self._meter(compute, extra * (seconds + idle) / 3600, f"{compute_name}/{job_name}")

    def _meter(self, compute: dict, node_hours: float, resource: str) -> None:
        try:
            instance = self.context.catalog.get(compute["vmSize"])
            usd, key = node_hours * instance.on_demand_usd_per_hour, instance.id
        except UnknownInstanceType:
            usd, key = 0.0, ""  # a size the course's catalog does not price: counted, at $0
        self.context.meter(
            service="machine-learning",
            action="AmlCompute",
            resource=resource,
            quantity=node_hours,
            unit="node-hours",
            usd=usd,
            price_key=key,
        )

    def _save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.workspaces, indent=1))
        tmp.replace(self.file)


def _compute_spec(name: str, body: dict) -> dict:
    """The kept settings of an AmlCompute PUT, or Azure's 400 for what it would refuse."""
    if not _NAME.match(name):
        raise AzureError(400, "BadRequest", f"Compute name '{name}' is invalid: 2 to 32 letters, digits or '-'.")
    properties = body.get("properties") or {}
    if properties.get("computeType") != "AmlCompute":
        raise AzureError(400, "BadRequest", "Only AmlCompute clusters are served by the local cloud.")
    settings = properties.get("properties") or {}
    size = settings.get("vmSize", "")
    if not _VM_SIZE.match(size):
        raise AzureError(400, "BadRequest", f"The VM size '{size}' is not supported in this region.")
    scale = settings.get("scaleSettings") or {}
    low, high = int(scale.get("minNodeCount", 0)), int(scale.get("maxNodeCount", 1))
    if not 0 <= low <= high:
        raise AzureError(400, "BadRequest", f"minNodeCount ({low}) must be between 0 and maxNodeCount ({high}).")
    return {
        "name": name,
        "location": body.get("location") or "eastus",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metered_until": time.time(),
        "vmSize": size,
        "vmPriority": settings.get("vmPriority", "Dedicated"),
        "scaleSettings": {
            "minNodeCount": low,
            "maxNodeCount": high,
            "nodeIdleTimeBeforeScaleDown": scale.get("nodeIdleTimeBeforeScaleDown", "PT120S"),
        },
    }


def utc(seconds: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def load_json(path: Path) -> dict:
    """A JSON record file, or {} when there is none yet (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def iso_duration_seconds(value) -> float:
    """Seconds of an ISO 8601 duration such as PT120S or PT2M (what the SDK sends for idle_time_before_scale_down)."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", str(value))
    if not match:
        return 0.0
    days, hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _json_body(request: AzureRequest) -> dict:
    try:
        body = json.loads(request.body() or b"{}")
    except ValueError:
        raise AzureError(400, "BadRequest", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise AzureError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _workspace_key(params: dict) -> str:
    return f"{params['subscription']}/{params['group']}/{params['workspace']}".lower()


def _arm_id(params: dict) -> str:
    return (
        f"/subscriptions/{params['subscription']}/resourceGroups/{params['group']}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{params['workspace']}"
    )


def _https_base(request: AzureRequest) -> str:
    environ = request.environ
    return f"https://{environ.get('HTTP_HOST', '127.0.0.1')}"
