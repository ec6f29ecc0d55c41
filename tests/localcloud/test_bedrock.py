"""Bedrock runtime through the real boto3: InvokeModel (Anthropic Messages, Titan embeddings) and Converse, answered by
the deterministic local stand-in, with Bedrock's shapes, token counts, stop reasons, errors and prices."""

from __future__ import annotations

import json
import math
import re

import pytest
from aws_clients import clients
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
    (client,) = clients(cloud, "bedrock-runtime")
    return client


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


# ---- the model catalogue, shared by bedrock-runtime and the bedrock control plane ---------------------------------

SONNET_V2 = "anthropic.claude-3-5-sonnet-20241022-v2:0"


@pytest.fixture(scope="module")
def control_plane(cloud):
    (client,) = clients(cloud, "bedrock")
    return client


@pytest.fixture(scope="module")
def catalogue(control_plane) -> dict[str, dict]:
    return {m["modelId"]: m for m in control_plane.list_foundation_models()["modelSummaries"]}


def test_the_courses_claude_3_5_sonnet_v2_call_is_answered(bedrock):
    answer, headers = invoke(bedrock, messages_body(QUESTION, max_tokens=1024), model=SONNET_V2)
    assert answer["model"] == "claude-3-5-sonnet-20241022" and answer["stop_reason"] == "end_turn"
    assert "checkpoint" in answer["content"][0]["text"].lower()
    assert headers["x-amzn-bedrock-input-token-count"] == "9"


def test_list_foundation_models_names_the_current_claude_models_in_bedrocks_shape(catalogue, cloud):
    for model_id in (
        SONNET_V2,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-opus-4-20250514-v1:0",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "amazon.titan-embed-text-v2:0",
        "meta.llama3-1-8b-instruct-v1:0",
        "mistral.mistral-7b-instruct-v0:2",
    ):
        assert model_id in catalogue, model_id
    v2 = catalogue[SONNET_V2]
    assert v2["modelArn"] == f"arn:aws:bedrock:{cloud_region(cloud)}::foundation-model/{SONNET_V2}"
    assert (v2["modelName"], v2["providerName"]) == ("Claude 3.5 Sonnet v2", "Anthropic")
    assert v2["outputModalities"] == ["TEXT"] and v2["inferenceTypesSupported"] == ["ON_DEMAND"]
    assert v2["modelLifecycle"]["status"] in ("ACTIVE", "LEGACY")
    assert catalogue["anthropic.claude-3-7-sonnet-20250219-v1:0"]["inferenceTypesSupported"] == ["INFERENCE_PROFILE"]
    assert catalogue["amazon.titan-embed-text-v2:0"]["outputModalities"] == ["EMBEDDING"]


def cloud_region(cloud) -> str:
    return local_environment(cloud)["AWS_DEFAULT_REGION"]


def test_list_foundation_models_filters_and_get_foundation_model_agree(control_plane, catalogue, cloud):
    anthropic = control_plane.list_foundation_models(byProvider="anthropic")["modelSummaries"]
    assert anthropic and {m["providerName"] for m in anthropic} == {"Anthropic"}
    assert {m["modelId"] for m in anthropic} == {i for i, m in catalogue.items() if m["providerName"] == "Anthropic"}
    embeddings = control_plane.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    assert [m["modelId"] for m in embeddings] == ["amazon.titan-embed-text-v2:0"]
    on_demand = control_plane.list_foundation_models(byInferenceType="ON_DEMAND")["modelSummaries"]
    assert SONNET_V2 in {m["modelId"] for m in on_demand}
    assert "anthropic.claude-sonnet-4-20250514-v1:0" not in {m["modelId"] for m in on_demand}

    details = control_plane.get_foundation_model(modelIdentifier=SONNET_V2)["modelDetails"]
    assert details == catalogue[SONNET_V2]
    by_arn = control_plane.get_foundation_model(modelIdentifier=details["modelArn"])["modelDetails"]
    assert by_arn == details

    for call, kwargs, message in [
        (control_plane.get_foundation_model, {"modelIdentifier": "anthropic.claude-9-v1:0"}, "identifier is invalid"),
        (control_plane.list_foundation_models, {"byOutputModality": "AUDIO"}, "Member must satisfy enum value set"),
        (control_plane.list_foundation_models, {"byInferenceType": "SPOT"}, "at 'byInferenceType' failed"),
    ]:
        with pytest.raises(ClientError) as error:
            call(**kwargs)
        assert error.value.response["Error"]["Code"] == "ValidationException"
        assert message in error.value.response["Error"]["Message"]
    assert control.health(cloud)["status"] == "ok"


def test_every_listed_text_model_answers_converse_and_is_metered_at_its_own_price(bedrock, catalogue, cloud):
    """Each model the control plane lists is served by the runtime, on demand or through its profile."""
    for model_id, summary in catalogue.items():
        if summary["outputModalities"] != ["TEXT"]:
            continue
        called = model_id if summary["inferenceTypesSupported"] == ["ON_DEMAND"] else f"us.{model_id}"
        reply = bedrock.converse(
            modelId=called,
            messages=[{"role": "user", "content": [{"text": QUESTION}]}],
            inferenceConfig={"maxTokens": 50},
        )
        assert reply["output"]["message"]["content"][0]["text"].startswith("[local stand-in model]"), called
        line = costs(cloud)[("Converse", called)]
        assert line["usd"] > 0 and line["price_key"].count("aws.bedrock.") == 2, (called, line)


def test_inference_profile_ids_and_arns_resolve_to_their_base_model(bedrock):
    base = "anthropic.claude-sonnet-4-20250514-v1:0"
    for called in (f"us.{base}", f"eu.{base}", f"apac.{base}", f"global.{base}"):
        answer, _ = invoke(bedrock, messages_body(QUESTION), model=called)
        assert answer["model"] == "claude-sonnet-4-20250514", called
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{base}"
    assert invoke(bedrock, messages_body(QUESTION), model=arn)[0]["model"] == "claude-sonnet-4-20250514"
    foundation_arn = f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_V2}"
    assert invoke(bedrock, messages_body(QUESTION), model=foundation_arn)[0]["model"] == "claude-3-5-sonnet-20241022"

    for refused, message in [
        (base, "with on-demand throughput isn't supported"),  # Sonnet 4 only through a profile
        ("anthropic.claude-3-7-sonnet-20250219-v1:0", "with on-demand throughput isn't supported"),
        ("global.anthropic.claude-3-5-haiku-20241022-v1:0", "The provided model identifier is invalid."),
        ("us.mistral.mistral-7b-instruct-v0:2", "The provided model identifier is invalid."),
    ]:
        with pytest.raises(ClientError) as error:
            invoke(bedrock, messages_body("hi"), model=refused)
        assert error.value.response["Error"]["Code"] == "ValidationException"
        assert message in error.value.response["Error"]["Message"], refused


LLAMA_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer briefly.<|eot_id|>"
    f"<|start_header_id|>user<|end_header_id|>\n\n{QUESTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_llama_mistral_and_titan_text_answer_in_their_own_body_shapes(bedrock):
    llama, headers = invoke(
        bedrock, json.dumps({"prompt": LLAMA_PROMPT, "max_gen_len": 300}), "meta.llama3-1-8b-instruct-v1:0"
    )
    assert set(llama) == {"generation", "prompt_token_count", "generation_token_count", "stop_reason"}
    assert llama["generation"].startswith("[local stand-in model]") and "checkpoint" in llama["generation"].lower()
    assert llama["stop_reason"] == "stop"
    assert (
        llama["prompt_token_count"]
        == len(TOKENS.findall(LLAMA_PROMPT))
        == int(headers["x-amzn-bedrock-input-token-count"])
    )
    assert llama["generation_token_count"] == len(TOKENS.findall(llama["generation"]))
    short = invoke(bedrock, json.dumps({"prompt": LLAMA_PROMPT, "max_gen_len": 4}), "meta.llama3-1-8b-instruct-v1:0")[0]
    assert (short["stop_reason"], short["generation_token_count"]) == ("length", 4)

    mistral_prompt = f"<s>[INST] {QUESTION} [/INST]"
    mistral = invoke(
        bedrock, json.dumps({"prompt": mistral_prompt, "stop": ["notes"]}), "mistral.mistral-7b-instruct-v0:2"
    )
    [output] = mistral[0]["outputs"]
    assert (
        output["stop_reason"] == "stop" and output["text"] == llama["generation"][: llama["generation"].index("notes")]
    )

    titan = invoke(
        bedrock,
        json.dumps({"inputText": f"User: {QUESTION}\nBot:", "textGenerationConfig": {"maxTokenCount": 6}}),
        "amazon.titan-text-express-v1",
    )[0]
    [result] = titan["results"]
    assert (result["completionReason"], result["tokenCount"]) == ("LENGTH", 6)
    assert titan["inputTextTokenCount"] == len(TOKENS.findall(f"User: {QUESTION}\nBot:"))
    assert llama["generation"].startswith(result["outputText"])


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("meta.llama3-1-8b-instruct-v1:0", {"max_gen_len": 10}, "required key [prompt] not found"),
        ("meta.llama3-1-8b-instruct-v1:0", {"prompt": "hi", "max_gen_len": 4096}, "4096 is not less or equal to 2048"),
        ("mistral.mistral-7b-instruct-v0:2", {"prompt": "hi", "max_gen_len": 5}, "extraneous key [max_gen_len]"),
        ("mistral.mistral-7b-instruct-v0:2", {"prompt": "hi", "temperature": 2}, "2 is not less or equal to 1"),
        ("amazon.titan-text-express-v1", {"inputText": 3}, "#/inputText: expected type: String"),
        (
            "amazon.titan-text-express-v1",
            {"inputText": "hi", "textGenerationConfig": {"maxTokens": 5}},
            "extraneous key [maxTokens] is not permitted",
        ),
    ],
)
def test_bad_raw_prompt_bodies_are_validation_exceptions(bedrock, model, body, message):
    with pytest.raises(ClientError) as error:
        bedrock.invoke_model(modelId=model, body=json.dumps(body))
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert message in error.value.response["Error"]["Message"]
