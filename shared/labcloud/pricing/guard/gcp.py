"""The cost guard on Google Cloud: every Google client's REST request goes through google-auth's
`AuthorizedSession.request` (BigQuery, Cloud Storage, and Vertex AI with `api_transport="rest"`, as on the local
cloud), and every gapic gRPC client builds its channel with `google.api_core.grpc_helpers.create_channel`, where the
guard adds an interceptor: `aiplatform` uses gRPC by default on the real cloud, so both transports are watched.

Estimated (the rest goes straight through):
- Vertex training (trainingPipelines, customJobs, hyperparameterTuningJobs): each worker pool's machine (+ its
  accelerators) x replicas x the job's `scheduling.timeout` (DEFAULT_MAX_RUNTIME_S when it has none; Vertex's own
  default is 7 days), times maxTrialCount for a tuning job, at the catalog's `vertex-training` price.
- Vertex `deployModel`: the machine x minReplicaCount x the serving hours at the `vertex-prediction` price
  (automatic resources, for AutoML models, are not estimated).
- Gemini `generateContent` / `streamGenerateContent`: tokens at the model's price (llm.py).
- BigQuery queries (jobs.insert with a query, and jobs.query): the guard first sends the same query as a dry run
  (free on BigQuery, and it creates no job), then prices the bytes it reports at the on-demand rate, or a CREATE
  MODEL statement at BigQuery ML's rate. The free tier and the 10 MB minimum per table are not applied.
Limits: a gRPC channel made before the guard was first armed is not watched (aiplatform makes its clients per call,
so this only concerns clients a notebook built itself before `connect`); async clients are not watched.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from ...wiring.on_import import after_import
from .budget import DEFAULT_MAX_RUNTIME_S, Call, CostGuard, Estimate, Estimator, guarded_send
from .llm import DEFAULT_MAX_OUTPUT_TOKENS, first_number, input_tokens, model_prefix, token_estimate

TIB = 2**40
GEMINI_PRICES = "gcp.gemini."
QUERY_PRICE = "gcp.bigquery.on_demand_per_tib"
CREATE_MODEL_PRICE = "gcp.bigquery_ml.create_model_per_tib"


# --- reading Vertex's request bodies ---------------------------------------------------------------------------


def _field(message: dict, camel: str):
    """A field by its JSON name or its proto name: the SDK writes `trainingTaskInputs` (a Struct) in snake_case."""
    if camel in message:
        return message[camel]
    return message.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


def _accelerator_name(value) -> str | None:
    """The accelerator's enum name; REST bodies carry the enum's number (the SDK sends enum-encoding=int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        from google.cloud.aiplatform_v1.types import AcceleratorType

        value = AcceleratorType(value).name
    return None if value in (None, "", "ACCELERATOR_TYPE_UNSPECIFIED") else value


def _machine(guard: CostGuard, service: str, spec: dict) -> tuple[float, str]:
    """(price per hour, a label) of one replica of a machineSpec. A spec with more accelerators than the catalog's
    shape has is priced in proportion to its GPUs (an upper bound: the machine's own share is counted again)."""
    machine, accelerator = _field(spec, "machineType"), _accelerator_name(_field(spec, "acceleratorType"))
    count = int(float(_field(spec, "acceleratorCount") or 0))
    instance = guard.catalog.find(service, machine, accelerator)
    hourly = instance.hourly()
    if accelerator and instance.gpu_count and count > instance.gpu_count:
        hourly *= count / instance.gpu_count
    return hourly, machine + (f" + {max(count, 1)} x {accelerator}" if accelerator else "")


def _timeout_s(scheduling: dict | None) -> float:
    timeout = _field(scheduling or {}, "timeout")
    return float(str(timeout).removesuffix("s")) if timeout else DEFAULT_MAX_RUNTIME_S


def _worker_pools(guard: CostGuard, action: str, pools: list, seconds: float, trials: int = 1) -> Estimate:
    hours, usd, parts = seconds / 3600, 0.0, []
    for pool in pools:
        if not pool:  # an empty spec holds a pool's place (e.g. no parameter servers)
            continue
        replicas = int(float(_field(pool, "replicaCount") or 1))
        hourly, label = _machine(guard, "vertex-training", _field(pool, "machineSpec"))
        usd += hourly * replicas * hours * trials
        parts.append(f"{replicas} x {label}")
    per_trial = f", {trials} trials" if trials > 1 else ""
    return Estimate(action, usd, f"{' + '.join(parts)} for up to {hours:g} h{per_trial}")


def _training_pipeline(guard: CostGuard, call: Call) -> Estimate | None:
    inputs = call.body.get("trainingTaskInputs") or {}
    pools = _field(inputs, "workerPoolSpecs")
    if not pools:  # AutoML pipelines bill node hours of their own: not estimated
        return None
    return _worker_pools(guard, "vertex:CreateTrainingPipeline", pools, _timeout_s(_field(inputs, "scheduling")))


def _custom_job(guard: CostGuard, call: Call) -> Estimate:
    spec = call.body["jobSpec"]
    return _worker_pools(guard, "vertex:CreateCustomJob", spec["workerPoolSpecs"], _timeout_s(spec.get("scheduling")))


def _tuning_job(guard: CostGuard, call: Call) -> Estimate:
    spec, trials = call.body["trialJobSpec"], int(call.body.get("maxTrialCount") or 1)
    seconds = _timeout_s(spec.get("scheduling"))
    return _worker_pools(guard, "vertex:CreateHyperparameterTuningJob", spec["workerPoolSpecs"], seconds, trials)


def _deploy_model(guard: CostGuard, call: Call) -> Estimate | None:
    resources = call.body["deployedModel"].get("dedicatedResources")
    if not resources:  # automatic resources (AutoML models): not estimated
        return None
    replicas = int(resources.get("minReplicaCount") or 1)
    hourly, label = _machine(guard, "vertex-prediction", resources["machineSpec"])
    usd = hourly * replicas * guard.serving_hours
    return Estimate("vertex:DeployModel", usd, f"{replicas} x {label} for {guard.serving_hours:g} h")


def _generate_content(guard: CostGuard, call: Call) -> Estimate:
    config = call.body.get("generationConfig") or {}
    outputs = first_number(config.get("maxOutputTokens"), default=DEFAULT_MAX_OUTPUT_TOKENS)
    outputs *= first_number(config.get("candidateCount"), default=1)
    prefix = model_prefix(guard, GEMINI_PRICES, call.target)
    return token_estimate(guard, "vertex:GenerateContent", prefix, "1m", input_tokens(call.body), outputs)


# --- BigQuery: a dry run first ---------------------------------------------------------------------------------

# jobs.query fields that are a query job's configuration.query
_QUERY_FIELDS = (
    "query",
    "useLegacySql",
    "defaultDataset",
    "queryParameters",
    "parameterMode",
    "useQueryCache",
    "connectionProperties",
    "maximumBytesBilled",
)


def _dry_run_job(call: Call) -> dict | None:
    """The jobs.insert body of a dry run of the query this call would run (None: not a query, or a dry run already)."""
    body = call.body
    if urlsplit(call.url).path.endswith("/queries"):
        if body.get("dryRun"):
            return None
        reference = {"location": body["location"]} if body.get("location") else {}
        query = {name: body[name] for name in _QUERY_FIELDS if name in body}
        return {"configuration": {"query": query, "dryRun": True}, "jobReference": reference}
    config = body.get("configuration") or {}
    if "query" not in config or config.get("dryRun"):
        return None
    reference = {k: v for k, v in (body.get("jobReference") or {}).items() if k != "jobId"}
    return {"configuration": {**config, "dryRun": True}, "jobReference": reference}


def _bigquery_query(guard: CostGuard, call: Call) -> Estimate | None:
    job = _dry_run_job(call)
    if job is None or call.read is None:
        return None
    jobs_url = re.sub(r"/queries(\?|$)", r"/jobs\1", call.url)
    status, answer = call.read("POST", jobs_url, job)
    if status >= 400:  # the query itself fails the same way, and costs nothing
        return None
    statistics = answer.get("statistics") or {}
    scanned = int(statistics.get("totalBytesProcessed") or 0)
    statement = (statistics.get("query") or {}).get("statementType")
    training = statement == "CREATE_MODEL" and CREATE_MODEL_PRICE in guard.prices
    price = guard.prices[CREATE_MODEL_PRICE if training else QUERY_PRICE].usd
    action = "bigquery:CREATE MODEL" if training else "bigquery:query"
    return Estimate(action, scanned / TIB * price, f"{scanned:,} bytes (dry run) at ${price:g} per TiB")


ESTIMATORS: dict[str, Estimator] = {
    "vertex:CreateTrainingPipeline": _training_pipeline,
    "vertex:CreateCustomJob": _custom_job,
    "vertex:CreateHyperparameterTuningJob": _tuning_job,
    "vertex:DeployModel": _deploy_model,
    "vertex:GenerateContent": _generate_content,
    "bigquery:query": _bigquery_query,
}

_LOCATION = r"/v1(?:beta1)?/projects/[^/]+/locations/[^/]+"
_MODEL = _LOCATION + r"/(?:publishers/[^/]+/)?models/[^/:]+"  # a Gemini model, or a tuned model of the project's
# REST: (path pattern, operation); a `target` group names the resource the operation acts on.
REST_ROUTES = [
    (re.compile(_LOCATION + r"/trainingPipelines"), "vertex:CreateTrainingPipeline"),
    (re.compile(_LOCATION + r"/customJobs"), "vertex:CreateCustomJob"),
    (re.compile(_LOCATION + r"/hyperparameterTuningJobs"), "vertex:CreateHyperparameterTuningJob"),
    (re.compile(r"(?P<target>" + _LOCATION + r"/endpoints/[^/:]+):deployModel"), "vertex:DeployModel"),
    (
        re.compile(r"(?P<target>" + _LOCATION + r"/.*models/[^/:]+):(?:stream)?generateContent"),
        "vertex:GenerateContent",
    ),
    (re.compile(r"/bigquery/v2/projects/[^/]+/(?:jobs|queries)"), "bigquery:query"),
]
# gRPC: method -> (operation, the request field that holds the resource; None: the request is the body)
GRPC_METHODS = {
    "CreateTrainingPipeline": ("vertex:CreateTrainingPipeline", "trainingPipeline"),
    "CreateCustomJob": ("vertex:CreateCustomJob", "customJob"),
    "CreateHyperparameterTuningJob": ("vertex:CreateHyperparameterTuningJob", "hyperparameterTuningJob"),
    "DeployModel": ("vertex:DeployModel", None),
    "GenerateContent": ("vertex:GenerateContent", None),
    "StreamGenerateContent": ("vertex:GenerateContent", None),
}


# --- the hooks -------------------------------------------------------------------------------------------------


def _json(data) -> dict | None:
    if isinstance(data, dict):
        return data
    try:
        body = json.loads(data or "{}")
    except (TypeError, ValueError):  # not JSON (an upload): nothing the guard prices
        return None
    return body if isinstance(body, dict) else None


def _route(path: str) -> tuple[re.Match | None, str]:
    for pattern, operation in REST_ROUTES:
        if match := pattern.fullmatch(path):
            return match, operation
    return None, ""


def _rest_call(send, method: str, url: str, data) -> Call | None:
    """The Call for a priced REST request (None for any other). `send` reaches the service unguarded, for reads."""
    if method.upper() != "POST":
        return None
    path = urlsplit(str(url)).path
    match, operation = _route(path)
    body = _json(data) if match else None
    if body is None:
        return None
    target = match.groupdict().get("target") or path

    def read(read_method: str, read_url: str, read_body: dict | None) -> tuple[int, dict]:
        response = send(read_method, read_url, json.dumps(read_body), {"Content-Type": "application/json"})
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {}

    return Call(operation, body, target, str(url), read)


def _guard_authorized_session(module) -> None:
    session_class = module.AuthorizedSession
    if getattr(session_class, "labcloud_guarded", False):
        return
    original = session_class.request

    def request(self, method, url, data=None, headers=None, **kwargs):
        def send(read_method, read_url, read_data, read_headers):
            return original(self, read_method, read_url, data=read_data, headers=read_headers)

        call = _rest_call(send, method, url, data if data is not None else kwargs.get("json"))
        return guarded_send(
            "gcp",
            call,
            ESTIMATORS,
            lambda: original(self, method, url, data=data, headers=headers, **kwargs),
            lambda response: getattr(response, "status_code", 200) >= 400,
        )

    session_class.request = request
    session_class.labcloud_guarded = True


def _grpc_call(method, request) -> Call | None:
    service, _, name = (method.decode() if isinstance(method, bytes) else str(method)).rpartition("/")
    if ".aiplatform." not in service or name not in GRPC_METHODS:
        return None
    from google.protobuf import json_format

    operation, field = GRPC_METHODS[name]
    message = json_format.MessageToDict(getattr(request, "_pb", request))  # proto-plus wraps the protobuf message
    target = message.get("model") or message.get("endpoint") or message.get("parent", "")
    body = (message.get(field) or {}) if field else message
    return Call(operation, body, target)


def _interceptor():
    import grpc

    class VertexCostGuard(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        """Estimates Vertex's billed RPCs before they are sent; a unary call that fails gives its estimate back."""

        def intercept_unary_unary(self, continuation, details, request):
            return guarded_send(
                "gcp",
                _grpc_call(details.method, request),
                ESTIMATORS,
                lambda: continuation(details, request),
                lambda outcome: outcome.done() and outcome.exception() is not None,
            )

        def intercept_unary_stream(self, continuation, details, request):
            call = _grpc_call(details.method, request)
            return guarded_send("gcp", call, ESTIMATORS, lambda: continuation(details, request), lambda _: False)

    return VertexCostGuard()


def _guard_grpc_channels(module) -> None:
    original = module.create_channel
    if getattr(original, "labcloud_guarded", False):
        return

    def create_channel(*args, **kwargs):
        import grpc

        return grpc.intercept_channel(original(*args, **kwargs), _interceptor())

    create_channel.labcloud_guarded = True
    module.create_channel = create_channel


def install() -> None:
    """Watch Google clients' REST requests and gapic gRPC channels (now, or when their modules are imported)."""
    after_import("google.auth.transport.requests", _guard_authorized_session)
    after_import("google.api_core.grpc_helpers", _guard_grpc_channels)
