"""The cost guard on Azure: every azure-core client (azure-ai-ml, azure-identity, azure-storage-blob, ...) sends
each request through `azure.core.pipeline.Pipeline.run`, before its policies (auth, retries) and its transport;
the `openai` client (Azure OpenAI) sends through httpx (`httpx2.Client.send`, or `httpx.Client.send` when a
notebook hands it a legacy httpx client). The guard sits at those two points.

Estimated (the rest goes straight through):
- Azure ML command jobs (PUT .../jobs/{name}, jobType Command): the VM size of the job's compute x
  resources.instanceCount x limits.timeout (DEFAULT_MAX_RUNTIME_S when the job sets none: Azure ML has no default
  limit). The VM size is read from the compute first (a free GET with the caller's credentials), or from
  resources.instanceType for serverless compute.
- Azure ML compute (PUT .../computes/{name}): an AmlCompute cluster's minNodeCount nodes, or a ComputeInstance's one
  node, bill all the time: the VM size x nodes x the serving hours. A cluster that scales to zero costs nothing
  until a job runs, so it is not estimated. Updating an existing compute is estimated again, as a new one.
- Azure OpenAI chat completions: tokens at the deployment's model price (llm.py). A deployment is named by the
  notebook, not by the model it serves: a name that contains a priced model's name is priced as that model, any
  other as the dearest chat model in the price table (the guard cannot see which model a deployment serves).
Limits: async clients (azure.core's AsyncPipeline, httpx.AsyncClient) are not watched.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from ...wiring.on_import import after_import
from .budget import DEFAULT_MAX_RUNTIME_S, Call, CostGuard, Estimate, Estimator, UnknownModel, guarded_send
from .llm import DEFAULT_MAX_OUTPUT_TOKENS, first_number, input_tokens, model_prefix, priced_models, token_estimate

OPENAI_PRICES = "azure.openai."
_WORKSPACE = r"/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+"


def _vm_hourly(guard: CostGuard, vm_size: str) -> float:
    return guard.instance(vm_size, "azure-vm").hourly()


def _iso_seconds(duration: str | None) -> float:
    if not duration:
        return DEFAULT_MAX_RUNTIME_S
    import isodate  # azure-ai-ml's own dependency, there whenever its requests are

    return isodate.parse_duration(duration).total_seconds()


def _compute_vm_size(call: Call, compute_id: str) -> str | None:
    """The VM size of the compute a job names, read from Azure ML (None when it cannot be read: the job will fail
    to find it too)."""
    path, _, query = call.url.partition("?")
    name = compute_id.rstrip("/").rsplit("/", 1)[-1]
    workspace = path[: path.lower().rindex("/jobs/")]
    status, compute = call.read("GET", f"{workspace}/computes/{name}" + (f"?{query}" if query else ""), None)
    if status >= 400:
        return None
    return ((compute.get("properties") or {}).get("properties") or {}).get("vmSize")


def _command_job(guard: CostGuard, call: Call) -> Estimate | None:
    properties = call.body.get("properties") or {}
    if properties.get("jobType") != "Command":
        return None
    resources = properties.get("resources") or {}
    vm_size = resources.get("instanceType") or _compute_vm_size(call, properties["computeId"])
    if not vm_size:
        return None
    count = int(resources.get("instanceCount") or 1)
    hours = _iso_seconds((properties.get("limits") or {}).get("timeout")) / 3600
    usd = _vm_hourly(guard, vm_size) * count * hours
    return Estimate("azureml:jobs.create", usd, f"{count} x {vm_size} for up to {hours:g} h")


def _compute(guard: CostGuard, call: Call) -> Estimate | None:
    properties = call.body.get("properties") or {}
    settings = properties.get("properties") or {}
    kind = properties.get("computeType")
    if kind == "AmlCompute":
        nodes = int((settings.get("scaleSettings") or {}).get("minNodeCount") or 0)
    elif kind == "ComputeInstance":
        nodes = 1
    else:
        return None
    if nodes == 0:
        return None
    vm_size = settings["vmSize"]
    usd = _vm_hourly(guard, vm_size) * nodes * guard.serving_hours
    detail = f"{nodes} x {vm_size} always on for {guard.serving_hours:g} h"
    return Estimate("azureml:computes.create", usd, detail)


def _chat_model_prefix(guard: CostGuard, deployment: str) -> str:
    """The price prefix of the model a deployment serves: the one its name names, else the dearest chat model."""
    try:
        return model_prefix(guard, OPENAI_PRICES, deployment)
    except UnknownModel:
        output_prices = {
            prefix: guard.prices[f"{prefix}.output_per_1m_tokens"].usd
            for prefix in (OPENAI_PRICES + name for name in priced_models(guard, OPENAI_PRICES))
            if f"{prefix}.output_per_1m_tokens" in guard.prices  # embedding models have no output price
        }
        return max(output_prices, key=output_prices.get)


def _chat_completion(guard: CostGuard, call: Call) -> Estimate:
    body = call.body
    outputs = first_number(body.get("max_completion_tokens"), body.get("max_tokens"), default=DEFAULT_MAX_OUTPUT_TOKENS)
    outputs *= first_number(body.get("n"), default=1)
    deployment = call.target or str(body.get("model", ""))
    prefix = _chat_model_prefix(guard, deployment)
    estimate = token_estimate(guard, "openai:chat.completions", prefix, "1m", input_tokens(body), outputs)
    return Estimate(estimate.action, estimate.usd, f"deployment {deployment!r}, priced as {estimate.detail}")


ESTIMATORS: dict[str, Estimator] = {
    "azureml:jobs.create": _command_job,
    "azureml:computes.create": _compute,
    "openai:chat.completions": _chat_completion,
}
ROUTES = [
    ("PUT", re.compile(_WORKSPACE + r"/jobs/[^/]+", re.IGNORECASE), "azureml:jobs.create"),
    ("PUT", re.compile(_WORKSPACE + r"/computes/[^/]+", re.IGNORECASE), "azureml:computes.create"),
    ("POST", re.compile(r"/openai/deployments/(?P<target>[^/]+)/chat/completions"), "openai:chat.completions"),
    ("POST", re.compile(r"/openai/v1/chat/completions"), "openai:chat.completions"),
]


def _route(method: str, path: str) -> tuple[re.Match | None, str]:
    """The route a request takes: its pattern must match the end of the path (the base differs by cloud)."""
    for route_method, pattern, operation in ROUTES:
        match = pattern.search(path) if method.upper() == route_method else None
        if match and path.endswith(match.group(0)):
            return match, operation
    return None, ""


def _call(method: str, url: str, content, read=None) -> Call | None:
    """The Call for a priced request (None for any other); `content` is its body as bytes, text or a dict."""
    path = urlsplit(url).path
    match, operation = _route(method, path)
    if match is None:
        return None
    try:
        body = content if isinstance(content, dict) else json.loads(content or "{}")
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    return Call(operation, body, match.groupdict().get("target") or "", url, read)


# --- azure-core ------------------------------------------------------------------------------------------------


def _request_content(request):
    """The body of an azure-core request, old-style (pipeline.transport) or new-style (azure.core.rest)."""
    for name in ("content", "body", "data"):
        value = getattr(request, name, None)
        if value is not None:
            return value
    return None


def _response_json(response) -> dict:
    try:
        answer = json.loads(response.text() or "{}")
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _guard_pipeline(module) -> None:
    pipeline_class = module.Pipeline
    if getattr(pipeline_class, "labcloud_guarded", False):
        return
    original = pipeline_class.run

    def run(self, request, **kwargs):
        def read(method, url, _body):
            response = original(self, type(request)(method, url)).http_response
            return response.status_code, _response_json(response)

        call = _call(request.method, str(request.url), _request_content(request), read)
        return guarded_send(
            "azure",
            call,
            ESTIMATORS,
            lambda: original(self, request, **kwargs),
            lambda result: result.http_response.status_code >= 400,
        )

    pipeline_class.run = run
    pipeline_class.labcloud_guarded = True


# --- httpx (the openai client) -----------------------------------------------------------------------------------


def _guard_httpx(module) -> None:
    client_class = module.Client
    if getattr(client_class, "labcloud_guarded", False):
        return
    original = client_class.send

    def send(self, request, **kwargs):
        try:
            content = request.content
        except module.RequestNotRead:  # a streamed upload: nothing the guard prices
            content = None
        call = _call(request.method, str(request.url), content) if content is not None else None
        return guarded_send(
            "azure", call, ESTIMATORS, lambda: original(self, request, **kwargs), lambda r: r.status_code >= 400
        )

    client_class.send = send
    client_class.labcloud_guarded = True


def install() -> None:
    """Watch azure-core pipelines and httpx clients (now, or when their modules are imported)."""
    after_import("azure.core.pipeline._base", _guard_pipeline)
    after_import("httpx2", _guard_httpx)
    after_import("httpx", _guard_httpx)
