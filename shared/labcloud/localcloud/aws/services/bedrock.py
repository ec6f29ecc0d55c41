"""Bedrock runtime: InvokeModel and Converse with Bedrock's request and response shapes, answered by a stand-in.

No model weights can be downloaded, so every text model here is the transparent, deterministic stand-in of
`labcloud.runtime.standin_llm` (its replies begin with "[local stand-in model]"); the embedding model is a
hashing embedding. What is real: the model catalogue and its ids (`bedrock_catalog`, shared with the control
plane's ListFoundationModels; cross-region inference profile ids such as `us.anthropic...` resolve to their base
model, and a bare id that only works through an inference profile is refused as on Bedrock), the request
validation and its messages, each provider's own InvokeModel body (Anthropic's Messages API, Amazon Titan Text
and Titan Text Embeddings V2, Meta Llama, Mistral) and Converse for every text model, the token-count and latency
headers, stop reasons, and the cost of each call at Bedrock's list price (services.yaml). A raw prompt (Llama,
Mistral, Titan Text) is answered on its last user turn, and its tokens are counted by the stand-in's tokenizer
over the whole prompt, template markers included. Not served: streaming (InvokeModelWithResponseStream,
ConverseStream), tools, images, and throttling.
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
from .bedrock_catalog import BedrockValidation, FoundationModel, resolve

ANTHROPIC_VERSION = "bedrock-2023-05-31"
DEFAULT_MAX_TOKENS = 512  # Titan Text, Llama and Mistral's default output length when the body names none

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
                model_id, model = resolve(request.path_params.get("modelId", ""))
                answer = answer_for(model, read_body(environ))
            except BedrockValidation as invalid:
                return aws_error(request.protocol, 400, "ValidationException", str(invalid))
            latency_ms = max(1, round((time.perf_counter() - started) * 1000))
            context.ledger.add(_cost_line(request.action, model_id, model, answer, prices))
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


def invoke_model(model: FoundationModel, raw_body: bytes) -> Answer:
    try:
        body = json.loads(raw_body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _malformed(["#: expected type: JSONObject"])
    return _INVOKE_BODIES[model.body](model, body)


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


def _anthropic_messages(model: FoundationModel, body: dict) -> Answer:
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
    if max_tokens > model.max_output_tokens:
        raise BedrockValidation(
            f"max_tokens: {max_tokens} > {model.max_output_tokens}, which is the maximum allowed number of output "
            f"tokens for {model.response_model}"
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
        "model": model.response_model,
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


def _titan_embedding(model: FoundationModel, body: dict) -> Answer:
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


# ---- raw-prompt text models: Amazon Titan Text, Meta Llama, Mistral (InvokeModel) ------------------------------


def _number_problems(body: dict, key: str, where: str, low: float, high: float, integer: bool = False) -> list[str]:
    """Bedrock's JSON-schema complaints about an optional number outside [low, high], in its words."""
    if key not in body:
        return []
    value = body[key]
    if isinstance(value, bool) or not (_is_int(value) if integer else isinstance(value, (int, float))):
        return [f"{where}: expected type: {'Integer' if integer else 'Number'}, found: {type(value).__name__}"]
    if value < low:
        return [f"{where}: {value} is not greater or equal to {low}"]
    if value > high:
        return [f"{where}: {value} is not less or equal to {high}"]
    return []


def _prompt_problems(body: dict, key: str, allowed: set[str]) -> list[str]:
    problems = _schema_problems(body, (key,), allowed)
    if key in body and not isinstance(body[key], str):
        problems.append(f"#/{key}: expected type: String, found: {type(body[key]).__name__}")
    return problems


def _stop_list_problems(stops, where: str) -> list[str]:
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return [f"{where}: expected type: JSONArray of String"]
    return []


def _complete_prompt(prompt: str, max_tokens: int, stops: list[str]) -> standin_llm.Completion:
    return standin_llm.complete(standin_llm.question_in_prompt(prompt), [prompt], max_tokens, stops)


_TITAN_TEXT_KEYS = {"inputText", "textGenerationConfig"}
_TITAN_CONFIG_KEYS = {"maxTokenCount", "temperature", "topP", "stopSequences"}
_TITAN_REASONS = {"end_turn": "FINISH", "max_tokens": "LENGTH", "stop_sequence": "STOP_CRITERIA_MET"}


def _titan_text(model: FoundationModel, body: dict) -> Answer:
    problems = _prompt_problems(body, "inputText", _TITAN_TEXT_KEYS)
    config = body.get("textGenerationConfig", {})
    if not isinstance(config, dict):
        problems.append("#/textGenerationConfig: expected type: JSONObject")
        config = {}
    where = "#/textGenerationConfig"
    problems += [f"{where}: extraneous key [{key}] is not permitted" for key in config if key not in _TITAN_CONFIG_KEYS]
    problems += _number_problems(config, "maxTokenCount", f"{where}/maxTokenCount", 0, model.max_output_tokens, True)
    problems += _number_problems(config, "temperature", f"{where}/temperature", 0, 1)
    problems += _number_problems(config, "topP", f"{where}/topP", 0, 1)
    problems += _stop_list_problems(config.get("stopSequences", []), f"{where}/stopSequences")
    if problems:
        raise _malformed(problems)
    completion = _complete_prompt(
        body["inputText"], config.get("maxTokenCount", DEFAULT_MAX_TOKENS), config.get("stopSequences", [])
    )
    result = {
        "tokenCount": completion.output_tokens,
        "outputText": completion.text,
        "completionReason": _TITAN_REASONS[completion.stop_reason],
    }
    return Answer(
        {"inputTextTokenCount": completion.input_tokens, "results": [result]},
        completion.input_tokens,
        completion.output_tokens,
    )


_LLAMA_KEYS = {"prompt", "temperature", "top_p", "max_gen_len", "images"}


def _llama(model: FoundationModel, body: dict) -> Answer:
    problems = _prompt_problems(body, "prompt", _LLAMA_KEYS)
    problems += _number_problems(body, "max_gen_len", "#/max_gen_len", 1, model.max_output_tokens, True)
    problems += _number_problems(body, "temperature", "#/temperature", 0, 1)
    problems += _number_problems(body, "top_p", "#/top_p", 0, 1)
    if problems:
        raise _malformed(problems)
    if "images" in body:
        raise BedrockValidation("The local stand-in model reads text only: it does not support images.")
    completion = _complete_prompt(body["prompt"], body.get("max_gen_len", DEFAULT_MAX_TOKENS), [])
    reply = {
        "generation": completion.text,
        "prompt_token_count": completion.input_tokens,
        "generation_token_count": completion.output_tokens,
        "stop_reason": "length" if completion.stop_reason == "max_tokens" else "stop",
    }
    return Answer(reply, completion.input_tokens, completion.output_tokens)


_MISTRAL_KEYS = {"prompt", "max_tokens", "stop", "temperature", "top_p", "top_k"}


def _mistral(model: FoundationModel, body: dict) -> Answer:
    problems = _prompt_problems(body, "prompt", _MISTRAL_KEYS)
    problems += _number_problems(body, "max_tokens", "#/max_tokens", 1, model.max_output_tokens, True)
    problems += _number_problems(body, "temperature", "#/temperature", 0, 1)
    problems += _number_problems(body, "top_p", "#/top_p", 0, 1)
    problems += _number_problems(body, "top_k", "#/top_k", 1, 200, True)
    problems += _stop_list_problems(body.get("stop", []), "#/stop")
    if problems:
        raise _malformed(problems)
    completion = _complete_prompt(body["prompt"], body.get("max_tokens", DEFAULT_MAX_TOKENS), body.get("stop", []))
    reason = "length" if completion.stop_reason == "max_tokens" else "stop"
    return Answer(
        {"outputs": [{"text": completion.text, "stop_reason": reason}]},
        completion.input_tokens,
        completion.output_tokens,
    )


_INVOKE_BODIES = {
    "anthropic": _anthropic_messages,
    "titan-embed": _titan_embedding,
    "titan-text": _titan_text,
    "llama": _llama,
    "mistral": _mistral,
}


# ---- Converse --------------------------------------------------------------------------------------------------


def converse(model: FoundationModel, raw_body: bytes) -> Answer:
    if model.embeds:
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
    max_tokens = config.get("maxTokens", model.max_output_tokens)
    if not _is_int(max_tokens) or max_tokens < 1:
        raise BedrockValidation(
            f"1 validation error detected: Value '{max_tokens}' at 'inferenceConfig.maxTokens' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"
        )
    if max_tokens > model.max_output_tokens:
        raise BedrockValidation(
            f"The maximum tokens you requested exceeds the model limit of {model.max_output_tokens}. Try again with a "
            f"maximum tokens value that is lower than {model.max_output_tokens}."
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


def _cost_line(action: str, model_id: str, model: FoundationModel, answer: Answer, prices) -> CostLine:
    """One call's tokens at the model's list price (input and output priced apart, shown as one line)."""
    usd, price_key = prices.token_cost(model.price, "1k", answer.input_tokens, answer.output_tokens)
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
