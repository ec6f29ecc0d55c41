"""Bedrock runtime: InvokeModel and Converse with Bedrock's request and response shapes, answered by a stand-in.

No model weights can be downloaded, so every text model here is the transparent, deterministic stand-in of
`labcloud.runtime.standin_llm` (its replies begin with "[local stand-in model]"); the embedding model is a
hashing embedding. What is real: the model catalogue and its ids (a bare id that only works through an
inference profile is refused as on Bedrock), the request validation and its messages, the response bodies
(Anthropic's Messages API, Titan Text Embeddings V2, Converse), the token-count and latency headers, stop
reasons, and the cost of each call at Bedrock's list price (services.yaml). Not served: streaming
(InvokeModelWithResponseStream, ConverseStream), tools, images, and throttling.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from ....pricing.catalog import load_service_prices
from ....pricing.ledger import CostLine
from ....runtime import standin_llm
from ..context import AwsContext
from ..errors import Response, aws_error
from ..requests import AwsRequest, read_body

ANTHROPIC_VERSION = "bedrock-2023-05-31"
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.")  # cross-region inference profiles: <prefix><model id>


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "anthropic" (Messages API body) | "titan-embed" (Titan Text Embeddings body)
    price: str  # prefix of its keys in pricing/services.yaml
    name: str = ""  # the model name an Anthropic response carries
    max_output_tokens: int = 0
    on_demand: bool = True  # False: Bedrock serves it only through an inference profile (us./eu./global.)


MODELS: dict[str, ModelSpec] = {
    "anthropic.claude-3-haiku-20240307-v1:0": ModelSpec(
        "anthropic", "aws.bedrock.claude-3-haiku", "claude-3-haiku-20240307", 4096
    ),
    "anthropic.claude-3-sonnet-20240229-v1:0": ModelSpec(
        "anthropic", "aws.bedrock.claude-3-sonnet", "claude-3-sonnet-20240229", 4096
    ),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": ModelSpec(
        "anthropic", "aws.bedrock.claude-3-5-sonnet", "claude-3-5-sonnet-20240620", 8192
    ),
    "anthropic.claude-haiku-4-5-20251001-v1:0": ModelSpec(
        "anthropic", "aws.bedrock.claude-haiku-4-5", "claude-haiku-4-5-20251001", 64000, on_demand=False
    ),
    "amazon.titan-embed-text-v2:0": ModelSpec("titan-embed", "aws.bedrock.titan-embed-text-v2"),
}

_ANTHROPIC_KEYS = {
    "anthropic_version",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "anthropic_beta",
}
_ANTHROPIC_UNSERVED = ("tools", "tool_choice", "thinking")  # real Messages API keys the stand-in cannot honour
_TITAN_EMBED_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
_TITAN_EMBED_MAX_TOKENS = 8192
_START_WITH_USER = (
    "A conversation must start with a user message. Try again with a conversation that starts with a user message."
)


class BedrockValidation(Exception):
    """A request Bedrock answers with ValidationException (400)."""


@dataclass(frozen=True)
class Answer:
    body: dict
    input_tokens: int
    output_tokens: int


def register(gateway, context: AwsContext) -> None:
    prices = load_service_prices()

    def handle(answer_for):
        def handler(request: AwsRequest, environ: dict) -> Response:
            started = time.perf_counter()
            try:
                model_id, spec = resolve_model(request.path_params.get("modelId", ""))
                answer = answer_for(spec, read_body(environ))
            except BedrockValidation as invalid:
                return aws_error(request.protocol, 400, "ValidationException", str(invalid))
            latency_ms = max(1, round((time.perf_counter() - started) * 1000))
            context.ledger.add(_cost_line(request.action, model_id, spec, answer, prices))
            if "metrics" in answer.body:
                answer.body["metrics"]["latencyMs"] = latency_ms
            headers = [
                ("Content-Type", "application/json"),
                ("x-amzn-RequestId", str(uuid.uuid4())),
                ("x-amzn-bedrock-input-token-count", str(answer.input_tokens)),
                ("x-amzn-bedrock-output-token-count", str(answer.output_tokens)),
                ("x-amzn-bedrock-invocation-latency", str(latency_ms)),
            ]
            return 200, headers, json.dumps(answer.body).encode()

        return handler

    gateway.intercept("bedrock", "InvokeModel", handle(invoke_model))
    gateway.intercept("bedrock", "Converse", handle(converse))


def resolve_model(model_id: str) -> tuple[str, ModelSpec]:
    """The catalogue entry for a model id, a cross-region inference profile id, or either one's ARN."""
    if model_id.startswith("arn:aws:bedrock:") and "/" in model_id:
        model_id = model_id.split("/", 1)[1]
    base = next((model_id[len(p) :] for p in PROFILE_PREFIXES if model_id.startswith(p)), None)
    if base is not None and base in MODELS and MODELS[base].kind == "anthropic":
        return model_id, MODELS[base]
    spec = MODELS.get(model_id)
    if spec is None:
        raise BedrockValidation("The provided model identifier is invalid.")
    if not spec.on_demand:
        raise BedrockValidation(
            f"Invocation of model ID {model_id} with on-demand throughput isn't supported. Retry your request "
            "with the ID or ARN of an inference profile that contains this model."
        )
    return model_id, spec


def invoke_model(spec: ModelSpec, raw_body: bytes) -> Answer:
    try:
        body = json.loads(raw_body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _malformed(["#: expected type: JSONObject"])
    if spec.kind == "titan-embed":
        return _titan_embedding(body)
    return _anthropic_messages(spec, body)


# ---- Anthropic Messages API (InvokeModel) ---------------------------------------------------------------------


def _schema_problems(body: dict, required: tuple[str, ...], allowed: set[str]) -> list[str]:
    """Bedrock's JSON-schema complaints about missing and unknown keys, in its words."""
    problems = [f"#: required key [{key}] not found" for key in required if key not in body]
    problems += [f"#: extraneous key [{key}] is not permitted" for key in body if key not in allowed]
    return problems


def _malformed(problems: list[str]) -> BedrockValidation:
    return BedrockValidation(f"Malformed input request: {''.join(problems)}, please reformat your input and try again.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _anthropic_text(content, where: str) -> list[str]:
    """The texts of a message's content: a string, or a list of {"type": "text", "text": ...} blocks."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _malformed([f"{where}: expected type: String or JSONArray"])
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise BedrockValidation(
                f"{where}/{j}: the local stand-in model reads text blocks only "
                f'({{"type": "text", "text": ...}}), not {kind!r}.'
            )
        texts.append(block["text"])
    return texts


def _anthropic_messages(spec: ModelSpec, body: dict) -> Answer:
    if unserved := [key for key in _ANTHROPIC_UNSERVED if key in body]:
        names = ", ".join(unserved)
        raise BedrockValidation(f"The local stand-in model does not support {names}: it only answers with text.")
    problems = _schema_problems(body, ("anthropic_version", "max_tokens", "messages"), _ANTHROPIC_KEYS)
    max_tokens, messages = body.get("max_tokens"), body.get("messages")
    if "max_tokens" in body and not _is_int(max_tokens):
        problems.append(f"#/max_tokens: expected type: Integer, found: {type(max_tokens).__name__}")
    elif _is_int(max_tokens) and max_tokens < 1:
        problems.append(f"#/max_tokens: {max_tokens} is not greater or equal to 1")
    temperature = body.get("temperature", 1)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        problems.append(f"#/temperature: expected type: Number, found: {type(temperature).__name__}")
    elif temperature > 1:
        problems.append(f"#/temperature: {temperature} is not less or equal to 1")
    elif temperature < 0:
        problems.append(f"#/temperature: {temperature} is not greater or equal to 0")
    if "messages" in body:
        if not isinstance(messages, list):
            problems.append("#/messages: expected type: JSONArray")
        elif not messages:
            problems.append("#/messages: expected minimum item count: 1, found: 0")
        else:
            problems += _message_problems(messages)
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        problems.append("#/stop_sequences: expected type: JSONArray of String")
    if problems:
        raise _malformed(problems)
    if max_tokens > spec.max_output_tokens:
        raise BedrockValidation(
            f"max_tokens: {max_tokens} > {spec.max_output_tokens}, which is the maximum allowed number of output "
            f"tokens for {spec.name}"
        )

    system = body.get("system", "")
    inputs = _anthropic_text(system, "#/system") if system else []
    question = ""
    for i, message in enumerate(messages):
        texts = _anthropic_text(message["content"], f"#/messages/{i}/content")
        inputs += texts
        if message["role"] == "user":
            question = " ".join(texts)
    completion = standin_llm.complete(question, inputs, max_tokens, stops)
    reply = {
        "id": f"msg_bdrk_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": spec.name,
        "content": [{"type": "text", "text": completion.text}],
        "stop_reason": completion.stop_reason,
        "stop_sequence": completion.stop_sequence,
        "usage": {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens},
    }
    return Answer(reply, completion.input_tokens, completion.output_tokens)


def _message_problems(messages: list) -> list[str]:
    problems = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append(f"#/messages/{i}: expected type: JSONObject")
            continue
        problems += [f"#/messages/{i}: required key [{k}] not found" for k in ("role", "content") if k not in message]
        role = message.get("role")
        if "role" in message and role not in ("user", "assistant"):
            problems.append(f"#/messages/{i}/role: {role} is not a valid enum value")
    return problems


# ---- Titan Text Embeddings V2 (InvokeModel) -------------------------------------------------------------------


def _titan_embedding(body: dict) -> Answer:
    problems = _schema_problems(body, ("inputText",), _TITAN_EMBED_KEYS)
    text = body.get("inputText")
    if "inputText" in body and not isinstance(text, str):
        problems.append("#/inputText: expected type: String")
    elif isinstance(text, str) and not text:
        problems.append("#/inputText: expected minLength: 1, actual: 0")
    dimensions = body.get("dimensions", 1024)
    if dimensions not in (256, 512, 1024) or isinstance(dimensions, bool):
        problems.append(f"#/dimensions: {dimensions} is not a valid enum value")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        problems.append("#/normalize: expected type: Boolean")
    types = body.get("embeddingTypes", ["float"])
    if not isinstance(types, list) or not types or not set(types) <= {"float", "binary"}:
        problems.append("#/embeddingTypes: each item must be one of [float, binary]")
    if problems:
        raise _malformed(problems)
    tokens = standin_llm.count_tokens(text)
    if tokens > _TITAN_EMBED_MAX_TOKENS:
        raise BedrockValidation(
            f"400 Bad Request: Too many input tokens. Max input tokens: {_TITAN_EMBED_MAX_TOKENS}, request input "
            f"token count: {tokens}"
        )
    vector = standin_llm.embed(text, dimensions, normalize)
    reply = {"embedding": vector, "inputTextTokenCount": tokens}
    if "embeddingTypes" in body:
        by_type = {"float": vector, "binary": [int(v > 0) for v in vector]}
        reply["embeddingsByType"] = {kind: by_type[kind] for kind in types}
    return Answer(reply, tokens, 0)


# ---- Converse --------------------------------------------------------------------------------------------------


def converse(spec: ModelSpec, raw_body: bytes) -> Answer:
    if spec.kind != "anthropic":
        raise BedrockValidation(
            "This action doesn't support the model that you provided. Try again with a supported text or chat model."
        )
    try:
        body = json.loads(raw_body or b"{}")
    except ValueError as exc:
        raise BedrockValidation(f"The request body is not valid JSON: {exc}") from None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BedrockValidation(_START_WITH_USER)
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    for i, role in enumerate(roles):
        if role not in ("user", "assistant"):
            raise BedrockValidation(
                f"1 validation error detected: Value '{role}' at 'messages.{i + 1}.member.role' failed to satisfy "
                "constraint: Member must satisfy enum value set: [user, assistant]"
            )
    if roles[0] != "user":
        raise BedrockValidation(_START_WITH_USER)
    if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        raise BedrockValidation(
            "A conversation must alternate between user and assistant roles. Make sure the conversation alternates "
            "between user and assistant roles and try again."
        )

    config = body.get("inferenceConfig") or {}
    max_tokens = config.get("maxTokens", spec.max_output_tokens)
    if not _is_int(max_tokens) or max_tokens < 1:
        raise BedrockValidation(
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"
        )
    if max_tokens > spec.max_output_tokens:
        raise BedrockValidation(
            f"The maximum tokens you requested exceeds the model limit of {spec.max_output_tokens}. Try again with a "
            f"maximum tokens value that is lower than {spec.max_output_tokens}."
        )
    inputs = _converse_text(body.get("system") or [], "system")
    question = ""
    for i, message in enumerate(messages):
        texts = _converse_text(message.get("content") or [], f"messages.{i + 1}.content")
        inputs += texts
        if message["role"] == "user":
            question = " ".join(texts)
    completion = standin_llm.complete(question, inputs, max_tokens, config.get("stopSequences") or [])
    reply = {
        "output": {"message": {"role": "assistant", "content": [{"text": completion.text}]}},
        "stopReason": completion.stop_reason,
        "usage": {
            "inputTokens": completion.input_tokens,
            "outputTokens": completion.output_tokens,
            "totalTokens": completion.input_tokens + completion.output_tokens,
        },
        "metrics": {"latencyMs": 0},  # set by the handler
    }
    return Answer(reply, completion.input_tokens, completion.output_tokens)


def _converse_text(blocks: list, where: str) -> list[str]:
    texts = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            kinds = sorted(block) if isinstance(block, dict) else type(block).__name__
            raise BedrockValidation(
                f"{where}.{j + 1}: the local stand-in model reads text content blocks only ({{'text': ...}}), "
                f"not {kinds}."
            )
        texts.append(block["text"])
    return texts


# ---- metering --------------------------------------------------------------------------------------------------


def _cost_line(action: str, model_id: str, spec: ModelSpec, answer: Answer, prices) -> CostLine:
    """One call's tokens at the model's list price (input and output priced apart, shown as one line)."""
    usd, price_key = prices.token_cost(spec.price, "1k", answer.input_tokens, answer.output_tokens)
    return CostLine(
        cloud="aws",
        service="bedrock",
        action=action,
        resource=model_id,
        quantity=(answer.input_tokens + answer.output_tokens) / 1000,
        unit="1K tokens (input + output)",
        usd=usd,
        price_key=price_key,
    )
