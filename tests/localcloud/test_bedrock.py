"""Bedrock runtime through the real boto3: InvokeModel (Anthropic Messages, Titan embeddings) and Converse, answered by
the deterministic local stand-in, with Bedrock's shapes, token counts, stop reasons, errors and prices."""

from __future__ import annotations

import json
import math
import re

import boto3
import pytest
from botocore.exceptions import ClientError

from labcloud.connect import local_environment
from labcloud.localcloud import control

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
QUESTION = "Why should a spot training job save checkpoints?"  # 8 words and "?": 9 tokens
TOKENS = re.compile(r"\w+|[^\w\s]")  # the stand-in's documented tokenizer


@pytest.fixture(scope="module")
def cloud():
    info = control.status()
    assert info is not None, "the session's local cloud is not running"
    return info


@pytest.fixture(scope="module")
def bedrock(cloud):
    env = local_environment(cloud)
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def messages_body(content, max_tokens=200, **extra) -> str:
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}],
            **extra,
        }
    )


def invoke(bedrock, body: str, model: str = HAIKU) -> tuple[dict, dict]:
    response = bedrock.invoke_model(modelId=model, body=body)
    return json.loads(response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


def costs(cloud) -> dict[tuple[str, str], dict]:
    with control._opener.open(cloud.url + "/_labcloud/costs", timeout=5) as response:
        lines = json.load(response)["lines"]
    return {(line["action"], line["resource"]): line for line in lines if line["service"] == "bedrock"}


def test_invoke_model_answers_in_the_anthropic_messages_shape(bedrock):
    answer, headers = invoke(bedrock, messages_body(QUESTION))

    assert set(answer) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert answer["id"].startswith("msg_")
    assert (answer["type"], answer["role"], answer["model"]) == ("message", "assistant", "claude-3-haiku-20240307")
    assert answer["stop_reason"] == "end_turn" and answer["stop_sequence"] is None
    [block] = answer["content"]
    assert block["type"] == "text"
    text = block["text"]
    assert text.startswith("[local stand-in model]")  # the lab names it for what it is
    assert "checkpoint" in text.lower()  # it retrieved the course note that answers the question
    assert answer["usage"] == {"input_tokens": 9, "output_tokens": len(TOKENS.findall(text))}
    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-bedrock-input-token-count"] == "9"
    assert headers["x-amzn-bedrock-output-token-count"] == str(answer["usage"]["output_tokens"])
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 1


def test_block_content_and_system_prompt_count_as_input_and_the_answer_is_deterministic(bedrock):
    plain, _ = invoke(bedrock, messages_body(QUESTION))
    again, _ = invoke(bedrock, messages_body(QUESTION))
    blocks, _ = invoke(
        bedrock,
        messages_body(
            [{"type": "text", "text": "Why should a spot training job"}, {"type": "text", "text": "save checkpoints?"}],
            system="Answer briefly.",  # 3 tokens
            temperature=0.7,
        ),
    )
    assert again["content"] == plain["content"] and again["id"] != plain["id"]
    assert blocks["content"] == plain["content"]
    assert blocks["usage"]["input_tokens"] == 9 + 3


def test_max_tokens_truncates_and_stop_sequences_stop(bedrock):
    full = invoke(bedrock, messages_body(QUESTION))[0]["content"][0]["text"]

    cut, headers = invoke(bedrock, messages_body(QUESTION, max_tokens=5))
    assert cut["stop_reason"] == "max_tokens"
    assert cut["usage"]["output_tokens"] == 5 == int(headers["x-amzn-bedrock-output-token-count"])
    assert full.startswith(cut["content"][0]["text"]) and len(TOKENS.findall(cut["content"][0]["text"])) == 5

    stopped, _ = invoke(bedrock, messages_body(QUESTION, stop_sequences=["notes"]))
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "notes")
    assert stopped["content"][0]["text"] == full[: full.index("notes")]


def test_titan_embeddings_are_normalised_deterministic_and_closer_for_related_texts(bedrock):
    def embed(text: str, **options) -> dict:
        body = json.dumps({"inputText": text, **options})
        return invoke(bedrock, body, model="amazon.titan-embed-text-v2:0")[0]

    first = embed("spot instances can be interrupted")
    assert set(first) == {"embedding", "inputTextTokenCount"}
    assert len(first["embedding"]) == 1024 and first["inputTextTokenCount"] == 5
    assert math.isclose(sum(v * v for v in first["embedding"]), 1.0, rel_tol=1e-4)
    assert embed("spot instances can be interrupted") == first

    small = embed("spot instances can be interrupted", dimensions=256, embeddingTypes=["float", "binary"])
    assert len(small["embedding"]) == 256 and small["embeddingsByType"]["float"] == small["embedding"]
    assert small["embeddingsByType"]["binary"] == [int(v > 0) for v in small["embedding"]]

    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embed(a)["embedding"], embed(b)["embedding"], strict=True))

    related = cosine("spot instances can be interrupted", "interrupted spot instances lose memory")
    unrelated = cosine("spot instances can be interrupted", "MLflow tracks experiment metrics")
    assert related > unrelated + 0.2


def test_converse_answers_in_its_own_shape_with_usage_and_truncation(bedrock):
    def converse(text: str, **config):
        return bedrock.converse(
            modelId="us.anthropic.claude-haiku-4-5-20251001-v1:0",  # Haiku 4.5 only through an inference profile
            system=[{"text": "Answer briefly."}],
            messages=[{"role": "user", "content": [{"text": text}]}],
            inferenceConfig=config,
        )

    full = converse(QUESTION, maxTokens=300)
    assert full["stopReason"] == "end_turn"
    [block] = full["output"]["message"]["content"]
    assert full["output"]["message"]["role"] == "assistant" and block["text"].startswith("[local stand-in model]")
    usage = full["usage"]
    assert usage["inputTokens"] == 9 + 3 and usage["outputTokens"] == len(TOKENS.findall(block["text"]))
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert full["metrics"]["latencyMs"] >= 1

    cut = converse(QUESTION, maxTokens=7)
    assert cut["stopReason"] == "max_tokens" and cut["usage"]["outputTokens"] == 7
    assert block["text"].startswith(cut["output"]["message"]["content"][0]["text"])


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("anthropic.claude-9-nonexistent-v1:0", messages_body("hi"), "The provided model identifier is invalid."),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", messages_body("hi"), "with on-demand throughput isn't supported"),
        (HAIKU, "this is not JSON", "Malformed input request: #: expected type: JSONObject"),
        (HAIKU, json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10}), "key [messages] not found"),
        (HAIKU, json.dumps({"max_tokens": 10, "messages": []}), "required key [anthropic_version] not found"),
        (HAIKU, json.dumps({"anthropic_version": "bedrock-2023-05-31", "messages": []}), "key [max_tokens] not found"),
        (HAIKU, messages_body("hi", top_n=1), "extraneous key [top_n] is not permitted"),
        (HAIKU, messages_body("hi", max_tokens=5000), "maximum allowed number of output tokens"),
        (
            HAIKU,
            json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "system"}]}),
            "#/messages/0/role: system is not a valid enum value",
        ),
        ("amazon.titan-embed-text-v2:0", json.dumps({"inputText": "x", "dimensions": 300}), "300 is not a valid enum"),
    ],
)
def test_bad_invocations_are_validation_exceptions(bedrock, model, body, message):
    with pytest.raises(ClientError) as error:
        bedrock.invoke_model(modelId=model, body=body)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in error.value.response["Error"]["Message"]


def test_bad_conversations_are_validation_exceptions_and_the_cloud_stays_up(bedrock, cloud):
    cases = [
        ("amazon.titan-embed-text-v2:0", [{"role": "user", "content": [{"text": "hi"}]}], "doesn't support the model"),
        (HAIKU, [{"role": "system", "content": [{"text": "hi"}]}], "Member must satisfy enum value set"),
        (HAIKU, [{"role": "assistant", "content": [{"text": "hi"}]}], "must start with a user message"),
        (HAIKU, [{"role": "user", "content": [{"text": "a"}]}] * 2, "must alternate between user and assistant"),
    ]
    for model, messages, message in cases:
        with pytest.raises(ClientError) as error:
            bedrock.converse(modelId=model, messages=messages)
        assert error.value.response["Error"]["Code"] == "ValidationException", model
        assert message in error.value.response["Error"]["Message"]
    assert control.health(cloud)["status"] == "ok"
    assert invoke(bedrock, messages_body("What is KEDA?"))[0]["stop_reason"] == "end_turn"


def test_each_call_is_metered_at_the_models_token_prices(bedrock, cloud):
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"  # 3 and 15 USD per million input and output tokens
    before = costs(cloud).get(("InvokeModel", model), {"usd": 0.0, "quantity": 0.0})
    usage = [invoke(bedrock, messages_body(q), model=model)[0]["usage"] for q in (QUESTION, "What is MLflow?")]
    after = costs(cloud)[("InvokeModel", model)]
    tokens_in = sum(u["input_tokens"] for u in usage)
    tokens_out = sum(u["output_tokens"] for u in usage)
    assert after["quantity"] - before["quantity"] == pytest.approx((tokens_in + tokens_out) / 1000)
    assert after["usd"] - before["usd"] == pytest.approx(tokens_in * 0.003 / 1000 + tokens_out * 0.015 / 1000)
    assert after["unit"].startswith("1K tokens")
