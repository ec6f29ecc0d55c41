"""What a model call may cost before it is sent: its input tokens estimated from the request's text, plus the most
output it allows, at the model's token prices (services.yaml, through ServicePrices.token_cost).

- Input: CHARS_PER_TOKEN characters of the request's text per token (a common rule of thumb for English; real
  tokenizers differ by model and language, so this is an estimate, not a count). Only text fields are read, never
  images or other binary parts.
- Output: the request's own maximum (max_tokens, maxTokens, maxOutputTokens, ...) times the number of choices it
  asks for; a request that names none is budgeted at DEFAULT_MAX_OUTPUT_TOKENS (the models allow more: name a
  maximum for a true worst case).
- The model: the priced model whose name is the longest one contained in the request's model id
  (`anthropic.claude-3-haiku-20240307-v1:0` -> claude-3-haiku); an id that contains none is not priced.
"""

from __future__ import annotations

import math

from .budget import CostGuard, Estimate, UnknownModel

CHARS_PER_TOKEN = 4
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# The keys under which the request formats (Anthropic Messages, Converse, chat completions, generateContent, Titan)
# carry text a model reads; everything else (roles, settings, images) is not counted.
TEXT_KEYS = frozenset(
    {"messages", "content", "text", "system", "systemInstruction", "contents", "parts", "inputText", "prompt", "input"}
)


def text_chars(node) -> int:
    """Characters of text in a request body (or a part of one)."""
    if isinstance(node, str):
        return len(node)
    if isinstance(node, list):
        return sum(text_chars(item) for item in node)
    if isinstance(node, dict):
        return sum(text_chars(value) for key, value in node.items() if key in TEXT_KEYS)
    return 0


def input_tokens(body: dict) -> int:
    return math.ceil(text_chars(body) / CHARS_PER_TOKEN)


def first_number(*values, default: int) -> int:
    """The first of `values` that is set (a request's own maximum, where its format keeps it)."""
    for value in values:
        if value not in (None, ""):
            return int(value)
    return default


def priced_models(guard: CostGuard, prefix: str) -> list[str]:
    """The model names with token prices under `prefix` (e.g. "aws.bedrock."), longest first."""
    names = {
        key[len(prefix) :].rsplit(".", 1)[0]
        for key in guard.prices
        if key.startswith(prefix) and "_tokens" in key.rsplit(".", 1)[-1]
    }
    return sorted(names, key=len, reverse=True)


def model_prefix(guard: CostGuard, prefix: str, model_id: str) -> str:
    """The price-key prefix of the priced model named in `model_id` (UnknownModel if there is none)."""
    name = next((n for n in priced_models(guard, prefix) if n in model_id), None)
    if name is None:
        raise UnknownModel(f"model {model_id!r} has no token price in the course's price table")
    return prefix + name


def token_estimate(guard: CostGuard, action: str, price_prefix: str, per: str, inputs: int, outputs: int) -> Estimate:
    usd, _ = guard.prices.token_cost(price_prefix, per, inputs, outputs)
    model = price_prefix.split(".", 2)[2]  # cloud.service.model, where a model name may hold dots
    detail = f"{model}: about {inputs:,} input tokens + up to {outputs:,} output tokens"
    return Estimate(action, usd, detail)
