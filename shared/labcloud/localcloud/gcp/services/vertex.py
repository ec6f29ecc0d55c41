"""Vertex AI on the local cloud, over Vertex's REST API: Gemini's `generateContent`.

It is answered by the course's deterministic stand-in model, which announces itself. Custom training lives in
`vertex_training`, models, endpoints and online prediction in `vertex_endpoints`.
"""

from __future__ import annotations

from ....pricing.catalog import load_service_prices
from ....pricing.ledger import CostLine
from ....runtime import standin_llm
from ..gateway import GcpRequest, GoogleError, json_response

_LOCATION = r"/(?:ui/)?v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_FINISH_REASONS = {"end_turn": "STOP", "stop_sequence": "STOP", "max_tokens": "MAX_TOKENS"}
_SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)
_DEFAULT_MAX_TOKENS = 8192


def register(gateway, context) -> None:
    gateway.route(
        "POST", _LOCATION + r"/publishers/google/models/(?P<model>[^/:]+):generateContent", _generate(context)
    )


def _generate(context):
    def handler(request: GcpRequest):
        body = request.json()
        texts = _user_texts(body.get("contents"))
        config = body.get("generationConfig") or {}
        max_tokens = int(config.get("maxOutputTokens") or _DEFAULT_MAX_TOKENS)
        system = [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", [])]
        completion = standin_llm.complete(texts[-1], system + texts, max_tokens, config.get("stopSequences") or ())
        model = request.params["model"]
        context.ledger.add(_cost_line(model, completion))
        return json_response(_response(model, completion))

    return handler


def _user_texts(contents) -> list[str]:
    """Every text part of the conversation; INVALID_ARGUMENT when there is none (as Vertex answers)."""
    if not isinstance(contents, list) or not contents:
        raise GoogleError(400, "Unable to submit request because it has an empty contents field.")
    texts = [
        part["text"]
        for turn in contents
        if isinstance(turn, dict)
        for part in turn.get("parts") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    if not texts:
        raise GoogleError(400, "Unable to submit request because it has no text parts.")
    return texts


def _response(model: str, completion) -> dict:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": completion.text}]},
                "finishReason": _FINISH_REASONS[completion.stop_reason],
                "safetyRatings": [
                    {"category": c, "probability": "NEGLIGIBLE", "probabilityScore": 0.0} for c in _SAFETY_CATEGORIES
                ],
                "avgLogprobs": 0.0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": completion.input_tokens,
            "candidatesTokenCount": completion.output_tokens,
            "totalTokenCount": completion.input_tokens + completion.output_tokens,
        },
        "modelVersion": f"{model}-labcloud-standin",
    }


def _cost_line(model: str, completion) -> CostLine:
    """Tokens at Gemini's list price per 1M tokens (no price for an unlisted model: metered at 0, key left empty)."""
    tokens = (completion.input_tokens, completion.output_tokens)
    usd, price_key = load_service_prices().token_cost(f"gcp.gemini.{model}", "1m", *tokens)
    return CostLine(
        cloud="gcp",
        service="vertex-ai",
        action="generateContent",
        resource=model,
        quantity=(completion.input_tokens + completion.output_tokens) / 1000,
        unit="1K tokens (input + output)",
        usd=usd,
        price_key=price_key,
    )
