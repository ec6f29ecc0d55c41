"""Azure OpenAI on the local cloud: chat completions and embeddings of a resource's model deployments.

The unmodified `openai` client (`AzureOpenAI(azure_endpoint=..., api_key=..., api_version=...)`) posts to
`/openai/deployments/<deployment>/chat/completions?api-version=...` (and `/embeddings`) with an `api-key` header.
Replies have Azure's shapes (content filter results, usage, rate-limit headers) and come from the course's
deterministic stand-in model (`runtime/standin_llm.py`, the same one Bedrock and Gemini answer from), which says
what it is in every reply.

Deployments and quotas. On Azure a model is called through a *deployment* you create, with a quota in tokens per
minute (TPM) and requests per minute (RPM, 6 per 1,000 TPM for these models). The local resource starts with one
deployment per model name below at 10,000 TPM. Create or change one with the local admin call

    PUT /_labcloud/azure/openai/deployments/<name>   {"model": "gpt-4o", "tokens_per_minute": 300,
                                                       "requests_per_minute": 10, "window_seconds": 60}

(or `labcloud.wiring.azure.set_openai_deployment(...)`); `window_seconds` is how long the local cloud's rate-limit
"minute" lasts (60 s, as on Azure; shorten it to watch a quota refill in seconds). Like Azure, a request is counted
when it arrives, at its prompt tokens plus `max_tokens` when it sets one (otherwise the reply's tokens): a high
`max_tokens` uses up quota even for a short reply. Over the limit the answer is 429 with `retry-after`.
Deployments are kept in the state folder; usage windows start empty at each start.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ....pricing.catalog import load_service_prices
from ....runtime import standin_llm
from ..gateway import ADMIN_PREFIX, AzureError, AzureRequest, InvalidRequest, json_response

LOCAL_API_KEY = "labcloud-local-azure-openai-key"  # a placeholder only the local cloud takes (loopback only)
DEFAULT_TOKENS_PER_MINUTE = 10_000
REQUESTS_PER_1000_TOKENS = 6  # Azure's RPM per 1,000 TPM for GPT-4o and the embedding models
DEFAULT_MAX_TOKENS = 4096
MESSAGE_OVERHEAD_TOKENS = 3  # each message's role and separators cost a few tokens, as in OpenAI's chat format
REPLY_PRIMING_TOKENS = 3
MAX_EMBEDDING_INPUTS = 2048
SYSTEM_FINGERPRINT = "fp_labcloud_standin"
DEPLOYMENTS_FILE = "openai-deployments.json"

log = logging.getLogger(__name__)

_DEPLOYMENT = r"/openai/deployments/(?P<deployment>[^/]+)"
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_SAFE = {"filtered": False, "severity": "safe"}
_FILTER_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
_UNSERVED = ("tools", "tool_choice", "functions", "function_call")  # the stand-in only answers with text
_MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to "
    "an API."
)
_WRONG_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # chat | embeddings
    version: str  # what Azure reports as the reply's model
    max_output_tokens: int = 0  # chat: the most a reply may have
    dimensions: int = 0  # embeddings: the native vector size
    custom_dimensions: bool = False  # embeddings: whether `dimensions` may shorten the vector


MODELS = {
    "gpt-4o": ModelSpec("chat", "gpt-4o-2024-08-06", max_output_tokens=16_384),
    "gpt-4o-mini": ModelSpec("chat", "gpt-4o-mini-2024-07-18", max_output_tokens=16_384),
    "gpt-4.1": ModelSpec("chat", "gpt-4.1-2025-04-14", max_output_tokens=32_768),
    "gpt-35-turbo": ModelSpec("chat", "gpt-35-turbo-0125", max_output_tokens=4_096),
    "text-embedding-3-small": ModelSpec(
        "embeddings", "text-embedding-3-small", dimensions=1536, custom_dimensions=True
    ),
    "text-embedding-3-large": ModelSpec(
        "embeddings", "text-embedding-3-large", dimensions=3072, custom_dimensions=True
    ),
    "text-embedding-ada-002": ModelSpec("embeddings", "text-embedding-ada-002", dimensions=1536),
}
DEFAULT_DEPLOYMENTS = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")


# ---- deployments and their quotas -----------------------------------------------------------------------------


@dataclass
class Deployment:
    name: str
    model: str
    tokens_per_minute: int = DEFAULT_TOKENS_PER_MINUTE
    requests_per_minute: int = 0  # 0: Azure's ratio to the token quota
    window_seconds: float = 60.0

    def __post_init__(self):
        if not self.requests_per_minute:
            self.requests_per_minute = max(1, self.tokens_per_minute * REQUESTS_PER_1000_TOKENS // 1000)

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    def describe(self) -> dict:
        return {**asdict(self), "model_version": self.spec.version, "kind": self.spec.kind}


@dataclass
class Admission:
    admitted: bool
    remaining_tokens: int
    remaining_requests: int
    retry_after_s: float = 0.0
    reason: str = ""  # token | call: which limit a rejected request hit


@dataclass
class UsageWindow:
    """The tokens and requests a deployment took in its last `window_seconds` (a sliding window)."""

    entries: deque = field(default_factory=deque)  # (arrival time, tokens counted)

    def admit(self, deployment: Deployment, tokens: int, now: float) -> Admission:
        window = deployment.window_seconds
        while self.entries and self.entries[0][0] <= now - window:
            self.entries.popleft()
        used = sum(t for _, t in self.entries)
        requests = len(self.entries)
        if requests + 1 > deployment.requests_per_minute:
            wait = self.entries[requests - deployment.requests_per_minute][0] + window - now
            return Admission(False, deployment.tokens_per_minute - used, 0, wait, "call")
        if used + tokens > deployment.tokens_per_minute:
            return Admission(
                False,
                max(0, deployment.tokens_per_minute - used),
                deployment.requests_per_minute - requests,
                self._wait_for(deployment, used, tokens, now),
                "token",
            )
        self.entries.append((now, tokens))
        return Admission(
            True, deployment.tokens_per_minute - used - tokens, deployment.requests_per_minute - requests - 1
        )

    def _wait_for(self, deployment: Deployment, used: int, tokens: int, now: float) -> float:
        """Seconds until enough of the window's tokens have aged out for `tokens` more (a full window if they never
        fit: a request larger than the whole quota is refused every time, as on Azure)."""
        if tokens > deployment.tokens_per_minute:
            return deployment.window_seconds
        for arrived, counted in self.entries:
            used -= counted
            if used + tokens <= deployment.tokens_per_minute:
                return arrived + deployment.window_seconds - now
        return deployment.window_seconds


class Deployments:
    """The local resource's deployments (kept in the state folder) and their usage windows (in memory)."""

    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        self._usage: dict[str, UsageWindow] = {}
        self._deployments = {name: Deployment(name, name) for name in DEFAULT_DEPLOYMENTS}
        try:
            saved = json.loads(path.read_text())
            self._deployments = {row["name"]: Deployment(**row) for row in saved if row.get("model") in MODELS}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # keep the defaults rather than fail to start
            log.warning("ignoring the unreadable Azure OpenAI deployments file %s: %s", path, exc)

    def get(self, name: str) -> Deployment | None:
        with self._lock:
            return self._deployments.get(name)

    def all(self) -> list[Deployment]:
        with self._lock:
            return list(self._deployments.values())

    def put(self, deployment: Deployment) -> bool:
        """Create or replace a deployment (its usage window starts empty); True when it is new."""
        with self._lock:
            created = deployment.name not in self._deployments
            self._deployments[deployment.name] = deployment
            self._usage.pop(deployment.name, None)
            self._save()
        return created

    def delete(self, name: str) -> bool:
        with self._lock:
            found = self._deployments.pop(name, None) is not None
            self._usage.pop(name, None)
            self._save()
        return found

    def admit(self, deployment: Deployment, tokens: int) -> Admission:
        with self._lock:
            window = self._usage.setdefault(deployment.name, UsageWindow())
            return window.admit(deployment, tokens, time.monotonic())

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(d) for d in self._deployments.values()], indent=1))
        tmp.replace(self._path)


# ---- registration and the request pipeline ----------------------------------------------------------------------


def register(gateway, context) -> None:
    deployments = Deployments(context.state_dir / DEPLOYMENTS_FILE)
    prices = load_service_prices()

    def serve(operation: str, kind: str, answer):
        def handler(request: AzureRequest):
            _authorize(request)
            _check_api_version(request)
            deployment = _deployment(deployments, request.params["deployment"], operation, kind)
            reply = answer(deployment, _json_body(request))
            admission = deployments.admit(deployment, reply.quota_tokens)
            if not admission.admitted:
                raise _rate_limited(operation, request.query["api-version"], admission)
            _meter(context, operation, deployment, reply, prices)
            return 200, [*reply.headers, *_rate_headers(admission), *_request_ids()], reply.body

        return handler

    gateway.route("POST", _DEPLOYMENT + "/chat/completions", serve("ChatCompletions_Create", "chat", chat_completion))
    gateway.route("POST", _DEPLOYMENT + "/embeddings", serve("Embeddings_Create", "embeddings", embeddings))
    _register_admin(gateway, deployments)


@dataclass
class Reply:
    body: bytes
    prompt_tokens: int
    completion_tokens: int
    quota_tokens: int  # what the rate limiter counts (Azure's estimate at arrival)
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "application/json")])


def _authorize(request: AzureRequest) -> None:
    """An `api-key` header with the local key, or an Entra ID bearer token (the local cloud checks none of those)."""
    key = request.header("api-key")
    if not key:
        if request.header("authorization").lower().startswith("bearer ") and len(request.header("authorization")) > 7:
            return
        raise AzureError(401, "401", _MISSING_KEY)
    if key != LOCAL_API_KEY:
        raise AzureError(401, "401", _WRONG_KEY)


def _check_api_version(request: AzureRequest) -> None:
    if not _API_VERSION.match(request.query.get("api-version", "")):
        raise AzureError(404, "404", "Resource not found")


def _deployment(deployments: Deployments, name: str, operation: str, kind: str) -> Deployment:
    deployment = deployments.get(name)
    if deployment is None:
        raise AzureError(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 "
            "minutes, please wait a moment and try again.",
        )
    if deployment.spec.kind != kind:
        action = "chatCompletion" if kind == "chat" else "embeddings"
        raise AzureError(
            400,
            "OperationNotSupported",
            f"The {action} operation does not work with the specified model, {deployment.model}. Please choose "
            "different model and try again. You can learn more about which models can be used with each operation "
            "here: https://go.microsoft.com/fwlink/?linkid=2197993.",
        )
    return deployment


def _json_body(request: AzureRequest) -> dict:
    try:
        body = json.loads(request.body() or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
        )
    return body


def _rate_limited(operation: str, api_version: str, admission: Admission) -> AzureError:
    seconds = max(1, math.ceil(admission.retry_after_s))
    limit = "token rate limit" if admission.reason == "token" else "call rate limit"
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} have exceeded {limit} "
        f"of your current OpenAI S0 pricing tier. Please retry after {seconds} second{'s' if seconds > 1 else ''}. "
        "Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate "
        "limit. (On the local cloud: PUT /_labcloud/azure/openai/deployments/<name> changes the quota.)"
    )
    headers = [
        ("retry-after", str(seconds)),
        ("retry-after-ms", str(max(1, math.ceil(admission.retry_after_s * 1000)))),
        *_rate_headers(admission),
        *_request_ids(),
    ]
    return AzureError(429, "429", message, headers)


def _rate_headers(admission: Admission) -> list[tuple[str, str]]:
    return [
        ("x-ratelimit-remaining-tokens", str(max(0, admission.remaining_tokens))),
        ("x-ratelimit-remaining-requests", str(max(0, admission.remaining_requests))),
    ]


def _request_ids() -> list[tuple[str, str]]:
    request_id = str(uuid.uuid4())
    return [("x-request-id", request_id), ("apim-request-id", request_id)]


# ---- chat completions -------------------------------------------------------------------------------------------


def chat_completion(deployment: Deployment, body: dict) -> Reply:
    messages = _messages(body.get("messages"))
    if unserved := [key for key in _UNSERVED if body.get(key)]:
        raise InvalidRequest(
            f"The local stand-in model does not support {', '.join(unserved)}: it only answers with text.",
            param=unserved[0],
        )
    max_tokens = _max_tokens(body)
    if max_tokens is not None and max_tokens > deployment.spec.max_output_tokens:
        limit = deployment.spec.max_output_tokens
        raise InvalidRequest(
            f"max_tokens is too large: {max_tokens}. This model supports at most {limit} completion tokens, whereas "
            f"you provided {max_tokens}.",
            "max_tokens",
            "invalid_value",
        )
    choices = _integer(body, "n", 1, 1, 128)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    stops = _stop_sequences(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(
            f"Invalid type for 'stream': expected a boolean, but got {_type(stream)} instead.", "stream"
        )

    texts = [text for _, text in messages]
    question = next((text for role, text in reversed(messages) if role == "user"), texts[-1])
    completion = standin_llm.complete(question, texts, max_tokens or DEFAULT_MAX_TOKENS, stops)
    prompt_tokens = completion.input_tokens + MESSAGE_OVERHEAD_TOKENS * len(messages) + REPLY_PRIMING_TOKENS
    completion_tokens = choices * completion.output_tokens
    quota = prompt_tokens + choices * (max_tokens or completion.output_tokens)
    reply = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment.spec.version,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _prompt_filter()}],
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "finish_reason": _FINISH_REASONS[completion.stop_reason],
                "logprobs": None,
                "content_filter_results": _content_filter(),
            }
            for i in range(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest(
            f"Invalid type for 'stream_options': expected an object, but got {_type(options)} instead.",
            "stream_options",
        )
    if stream:
        include_usage = bool(options.get("include_usage"))
        events = _stream_events(reply, completion.text, include_usage)
        return Reply(events, prompt_tokens, completion_tokens, quota, [("Content-Type", "text/event-stream")])
    return Reply(json.dumps(reply).encode(), prompt_tokens, completion_tokens, quota)


def _messages(messages) -> list[tuple[str, str]]:
    """(role, text) of each message; OpenAI's validation errors for anything else."""
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise InvalidRequest(
            f"Invalid type for 'messages': expected an array, but got {_type(messages)} instead.", "messages"
        )
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    result = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"Invalid type for '{where}': expected an object, but got {_type(message)} instead.", where
            )
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequest(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', "
                "and 'developer'.",
                f"{where}.role",
                "invalid_value",
            )
        result.append((role, _message_text(message.get("content"), role, where)))
    return result


def _message_text(content, role: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid type for '{where}.content': expected one of a string or array of objects, but got "
            f"{_type(content)} instead.",
            f"{where}.content",
        )
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else _type(part)
            raise InvalidRequest(
                f"The local stand-in model reads text content parts only ({{'type': 'text', 'text': ...}}), not "
                f"{kind!r}.",
                f"{where}.content[{j}]",
            )
        texts.append(part["text"])
    return " ".join(texts)


def _max_tokens(body: dict) -> int | None:
    """`max_completion_tokens` (the newer name) or `max_tokens`; None when neither is set."""
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return _integer(body, name, None, 1, None)
    return None


def _integer(body: dict, name: str, default, low: int, high: int | None):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"Invalid type for '{name}': expected an integer, but got {_type(value)} instead.", name)
    if value < low:
        raise InvalidRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise InvalidRequest(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    return value


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidRequest(f"Invalid type for '{name}': expected a decimal, but got {_type(value)} instead.", name)
    if not low <= value <= high:
        raise InvalidRequest(
            f"Invalid '{name}': decimal out of range. Expected a value between {low} and {high}, but got {value} "
            "instead.",
            name,
            "decimal_out_of_range",
        )


def _stop_sequences(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("Invalid type for 'stop': expected a string or an array of strings.", "stop")
    if len(stops) > 4:
        raise InvalidRequest(
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length "
            f"{len(stops)} instead.",
            "stop",
            "array_above_max_length",
        )
    return stops


def _type(value) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a decimal", list: "an array"}
    return names.get(type(value), "an object" if isinstance(value, dict) else "null")


def _content_filter() -> dict:
    return {category: dict(_SAFE) for category in _FILTER_CATEGORIES}


def _prompt_filter() -> dict:
    return {**_content_filter(), "jailbreak": {"filtered": False, "detected": False}}


def _stream_events(reply: dict, text: str, include_usage: bool) -> bytes:
    """The reply as server-sent events, the way Azure streams: prompt filter results first, the role, the text in
    pieces (token by token, whitespace kept), the finish reason, the usage when asked, then [DONE]."""
    head = {key: reply[key] for key in ("id", "object", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    chunks: list[dict] = [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "", **_only(reply, "prompt_filter_results")}
    ]

    def choice(index: int, delta: dict, finish=None, filters=None) -> dict:
        entry = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [{**entry, "content_filter_results": filters or {}}], "usage": None}

    ends = [m.end() for m in standin_llm.TOKEN_PATTERN.finditer(text)]
    for entry in reply["choices"]:
        i = entry["index"]
        chunks.append(choice(i, {"role": "assistant", "content": "", "refusal": None}))
        chunks += [
            choice(i, {"content": text[a:b]}, filters=_content_filter()) for a, b in zip([0, *ends], ends, strict=False)
        ]
        chunks.append(choice(i, {}, entry["finish_reason"]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": reply["usage"]})
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _only(data: dict, key: str) -> dict:
    return {key: data[key]}


# ---- embeddings ---------------------------------------------------------------------------------------------------


def embeddings(deployment: Deployment, body: dict) -> Reply:
    texts = _embedding_inputs(body.get("input"))
    spec = deployment.spec
    dimensions = spec.dimensions
    if body.get("dimensions") is not None:
        if not spec.custom_dimensions:
            raise InvalidRequest("This model does not support specifying dimensions.", "dimensions")
        dimensions = _integer(body, "dimensions", spec.dimensions, 1, spec.dimensions)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.", "encoding_format"
        )
    data = []
    for i, text in enumerate(texts):
        vector = standin_llm.embed(text, dimensions, normalize=True)
        data.append({"object": "embedding", "index": i, "embedding": _encode(vector, encoding)})
    tokens = sum(standin_llm.count_tokens(text) for text in texts)
    reply = {
        "object": "list",
        "data": data,
        "model": spec.version,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Reply(json.dumps(reply).encode(), tokens, 0, tokens)


def _embedding_inputs(value) -> list[str]:
    """Texts from a string, an array of strings, or token arrays (embedded as their numbers' text)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a non-empty string or array of strings.", "input")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [" ".join(map(str, value))]
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(
            f"Too many inputs. The max number of inputs is {MAX_EMBEDDING_INPUTS}. We hope to increase the number of "
            "inputs per request soon.",
            "input",
        )
    texts = []
    for item in value:
        if isinstance(item, list) and item and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            item = " ".join(map(str, item))
        if not isinstance(item, str) or not item:
            raise InvalidRequest(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                "input",
            )
        texts.append(item)
    return texts


def _encode(vector: list[float], encoding: str):
    """A float list, or base64 of little-endian float32s (what the `openai` client asks for and decodes)."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# ---- metering -----------------------------------------------------------------------------------------------------


def _meter(context, operation: str, deployment: Deployment, reply: Reply, prices) -> None:
    """The call's tokens at the model's list price per 1M tokens (an unpriced model is metered at 0, key empty)."""
    prefix = f"azure.openai.{deployment.model}"
    usd, price_key = prices.token_cost(prefix, "1m", reply.prompt_tokens, reply.completion_tokens)
    context.meter(
        service="openai",
        action=operation,
        resource=deployment.name,
        quantity=(reply.prompt_tokens + reply.completion_tokens) / 1000,
        unit="1K tokens (input + output)",
        usd=usd,
        price_key=price_key,
    )


# ---- local administration of deployments ----------------------------------------------------------------------


def _register_admin(gateway, deployments: Deployments) -> None:
    base = ADMIN_PREFIX + "/openai/deployments"

    def listing(request: AzureRequest):
        return json_response({"value": [d.describe() for d in deployments.all()]})

    def show(request: AzureRequest):
        deployment = deployments.get(request.params["name"])
        if deployment is None:
            raise AzureError(404, "DeploymentNotFound", f"No deployment named {request.params['name']!r}.")
        return json_response(deployment.describe())

    def put(request: AzureRequest):
        deployment = _deployment_from(request.params["name"], _json_body(request))
        created = deployments.put(deployment)
        return json_response(deployment.describe(), 201 if created else 200)

    def delete(request: AzureRequest):
        if not deployments.delete(request.params["name"]):
            raise AzureError(404, "DeploymentNotFound", f"No deployment named {request.params['name']!r}.")
        return 204, [], b""

    gateway.route("GET", base, listing)
    named = base + r"/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
    gateway.route("GET", named, show)
    gateway.route("PUT", named, put)
    gateway.route("DELETE", named, delete)


def _deployment_from(name: str, body: dict) -> Deployment:
    model = body.get("model")
    if model not in MODELS:
        raise InvalidRequest(f"'model' must be one of {', '.join(MODELS)}, not {model!r}.", "model")
    tokens = _integer(body, "tokens_per_minute", DEFAULT_TOKENS_PER_MINUTE, 1, 100_000_000)
    requests = _integer(body, "requests_per_minute", 0, 0, 10_000_000)
    window = body.get("window_seconds", 60.0)
    if not isinstance(window, (int, float)) or isinstance(window, bool) or not 0.1 <= window <= 3600:
        raise InvalidRequest("'window_seconds' must be a number from 0.1 to 3600.", "window_seconds")
    return Deployment(name, model, tokens, requests, float(window))
