"""Azure OpenAI on the local cloud, through the unmodified `openai` client (`AzureOpenAI`): Azure's reply shape and
usage, determinism, max_tokens, the errors (401, 404, 400), the quota (429 with retry-after, then success), the
meter, and the wiring `connect("local")` sets and forgets."""

import base64
import os
import struct
import time
import uuid

import openai
import pytest
import requests
from openai import AzureOpenAI

import labcloud
from labcloud.connect import CredentialsMissing
from labcloud.localcloud import control
from labcloud.runtime import standin_llm
from labcloud.wiring.azure import set_openai_deployment

API_VERSION = "2024-02-01"
QUESTION = [{"role": "user", "content": "How are Azure OpenAI quotas set?"}]


def _client(**options) -> AzureOpenAI:
    """The client exactly as a notebook builds it for the real service."""
    return AzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
        api_key=os.environ["AZURE_OPENAI_API_KEY"],
        api_version=API_VERSION,
        **options,
    )


def _url(connection, deployment: str, operation: str = "chat/completions") -> str:
    return f"{connection.server.url}/openai/deployments/{deployment}/{operation}?api-version={API_VERSION}"


def _headers() -> dict:
    return {"api-key": os.environ["AZURE_OPENAI_API_KEY"]}


def _own_deployment(prefix: str, model: str = "gpt-4o", **quota) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    set_openai_deployment(name, model, **quota)
    return name


def test_connect_wires_the_endpoint_and_a_local_key(connection):
    assert os.environ["AZURE_OPENAI_ENDPOINT"] == connection.server.url
    assert os.environ["AZURE_OPENAI_API_KEY"] == connection.env["AZURE_OPENAI_API_KEY"]
    assert "OPENAI_API_VERSION" not in connection.env  # the notebook names its api-version, as on Azure


def test_chat_completion_has_azures_shape_and_usage(connection):
    reply = _client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    data = reply.model_dump()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert abs(data["created"] - time.time()) < 60
    assert data["model"].startswith("gpt-4o-") and data["system_fingerprint"]
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith(standin_llm.PREFIX)
    assert "tokens per minute" in choice["message"]["content"]  # the stand-in found the note on Azure OpenAI
    safe = {"filtered": False, "severity": "safe"}
    assert choice["content_filter_results"] == {c: safe for c in ("hate", "self_harm", "sexual", "violence")}
    (prompt_filter,) = data["prompt_filter_results"]
    assert prompt_filter["prompt_index"] == 0 and prompt_filter["content_filter_results"]["violence"] == safe
    usage = reply.usage
    assert usage.completion_tokens == standin_llm.count_tokens(reply.choices[0].message.content)
    assert usage.prompt_tokens > standin_llm.count_tokens(QUESTION[0]["content"])  # plus the chat format's overhead
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_replies_are_deterministic_and_the_system_prompt_is_read(connection):
    client = _client()
    first = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    again = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert again.choices[0].message.content == first.choices[0].message.content
    system = {"role": "system", "content": "You are a cloud tutor who answers in two sentences."}
    with_system = client.chat.completions.create(model="gpt-4o", messages=[system, *QUESTION])
    extra = with_system.usage.prompt_tokens - first.usage.prompt_tokens
    assert extra == standin_llm.count_tokens(system["content"]) + 3  # its text and the message's overhead
    assert with_system.choices[0].message.content == first.choices[0].message.content


def test_max_tokens_cuts_the_reply_with_finish_reason_length(connection):
    client = _client()
    full = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices[0].message.content
    short = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 5
    assert full.startswith(short.choices[0].message.content) and len(short.choices[0].message.content) < len(full)
    roomy = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_completion_tokens=1000)
    assert roomy.choices[0].finish_reason == "stop" and roomy.choices[0].message.content == full


def test_streaming_gives_the_same_text_in_pieces(connection):
    client = _client()
    whole = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == whole.choices[0].message.content
    assert finish == "stop" and usage.total_tokens == whole.usage.total_tokens


def test_embeddings_are_deterministic_vectors(connection):
    client = _client()
    texts = ["spot instances are cheap", "spot instances cost less", "the HPA scales pods"]
    data = client.embeddings.create(model="text-embedding-3-small", input=texts).data  # base64 on the wire
    vectors = [d.embedding for d in data]
    assert [d.index for d in data] == [0, 1, 2] and all(len(v) == 1536 for v in vectors)
    assert vectors[0] == pytest.approx(standin_llm.embed(texts[0], 1536), abs=1e-6)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])  # shared words, closer vectors
    short = client.embeddings.create(model="text-embedding-3-small", input=texts[0], dimensions=256)
    assert len(short.data[0].embedding) == 256 and short.usage.prompt_tokens == standin_llm.count_tokens(texts[0])

    raw = requests.post(
        _url(connection, "text-embedding-3-small", "embeddings"),
        json={"input": texts[0], "encoding_format": "base64"},
        headers=_headers(),
        timeout=10,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(vectors[0], abs=1e-6)


def test_wrong_key_is_401_and_unknown_deployment_is_404(connection):
    wrong = AzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"], api_key="not-the-key", api_version=API_VERSION
    )
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert denied.value.status_code == 401
    assert denied.value.body["code"] == "401"
    assert denied.value.body["message"].startswith(
        "Access denied due to invalid subscription key or wrong API endpoint"
    )

    with pytest.raises(openai.NotFoundError) as missing:
        _client().chat.completions.create(model="no-such-deployment", messages=QUESTION)
    assert missing.value.body["code"] == "DeploymentNotFound"

    no_version = requests.post(_url(connection, "gpt-4o").split("?")[0], json={}, headers=_headers(), timeout=10)
    assert no_version.status_code == 404 and no_version.json()["error"]["message"] == "Resource not found"
    no_key = requests.post(_url(connection, "gpt-4o"), json={"messages": QUESTION}, timeout=10)
    assert no_key.status_code == 401 and "missing subscription key" in no_key.json()["error"]["message"]


def test_malformed_requests_are_400_and_the_cloud_stays_up(connection):
    url = _url(connection, "gpt-4o")
    for body in (b"{not json", b"[1, 2]", b""):
        answer = requests.post(url, data=body, headers={**_headers(), "Content-Type": "application/json"}, timeout=10)
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "invalid_request_error"
    client = _client()
    bad_requests = [
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ({"messages": QUESTION, "max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"messages": QUESTION, "temperature": 3}, "temperature", "decimal_out_of_range"),
        ({"messages": QUESTION, "max_tokens": 100_000}, "max_tokens", "invalid_value"),  # gpt-4o stops at 16,384
        ({"messages": QUESTION, "stream": True, "stream_options": [True]}, "stream_options", None),
    ]
    for arguments, param, code in bad_requests:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="gpt-4o", **arguments)
        assert (error.value.param, error.value.code) == (param, code)
    with pytest.raises(openai.BadRequestError) as wrong_operation:
        client.embeddings.create(model="gpt-4o", input="hello")
    assert wrong_operation.value.body["code"] == "OperationNotSupported"
    assert control.health(connection.server)["status"] == "ok"
    assert client.chat.completions.create(model="gpt-4o", messages=QUESTION).choices[0].finish_reason == "stop"


def test_over_the_token_quota_is_429_with_retry_after_then_success(connection):
    deployment = _own_deployment("tiny-quota", tokens_per_minute=100, requests_per_minute=100, window_seconds=1)
    client = _client(max_retries=0)
    tokens_per_call = client.chat.completions.create(model=deployment, messages=QUESTION).usage.total_tokens
    assert tokens_per_call <= 100 < 2 * tokens_per_call  # the second call in the same window cannot fit
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=deployment, messages=QUESTION)
    error = limited.value
    assert error.status_code == 429 and error.body["code"] == "429"
    assert "exceeded token rate limit" in error.body["message"]
    assert error.response.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert 0 < int(error.response.headers["retry-after-ms"]) <= 1000
    assert int(error.response.headers["x-ratelimit-remaining-tokens"]) < tokens_per_call
    assert "x-ratelimit-remaining-requests" in error.response.headers

    # The backoff loop a notebook writes: wait as long as the service says, then try again.
    started, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        try:
            reply = client.chat.completions.create(model=deployment, messages=QUESTION)
            break
        except openai.RateLimitError as again:
            assert attempts < 5, "the quota never refilled"
            time.sleep(int(again.response.headers["retry-after-ms"]) / 1000)
    assert reply.choices[0].finish_reason == "stop" and time.monotonic() - started < 3
    # The client's own retries honour retry-after too: with them, a rate limit is only a delay.
    assert _client(max_retries=3).chat.completions.create(model=deployment, messages=QUESTION).usage.total_tokens


def test_max_tokens_counts_against_the_quota_and_so_does_the_request_rate(connection):
    client = _client(max_retries=0)
    small = _own_deployment("estimate", tokens_per_minute=200, window_seconds=60)
    with pytest.raises(openai.RateLimitError) as too_big:  # counted at prompt + max_tokens, whatever the reply
        client.chat.completions.create(model=small, messages=QUESTION, max_tokens=500)
    assert int(too_big.value.response.headers["retry-after"]) == 60
    assert client.chat.completions.create(model=small, messages=QUESTION, max_tokens=50).choices

    few_calls = _own_deployment("rpm", tokens_per_minute=100_000, requests_per_minute=2, window_seconds=30)
    for _ in range(2):
        client.chat.completions.create(model=few_calls, messages=QUESTION, max_tokens=3)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=few_calls, messages=QUESTION, max_tokens=3)
    assert "exceeded call rate limit" in limited.value.body["message"]
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_success_reports_the_remaining_quota(connection):
    deployment = _own_deployment("headers", tokens_per_minute=1000)
    answer = requests.post(_url(connection, deployment), json={"messages": QUESTION}, headers=_headers(), timeout=10)
    used = answer.json()["usage"]["total_tokens"]
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) == 1000 - used
    assert int(answer.headers["x-ratelimit-remaining-requests"]) == 6 - 1  # Azure's 6 RPM per 1,000 TPM
    assert answer.headers["apim-request-id"]


def test_calls_are_metered_at_the_models_list_price(connection):
    deployment = _own_deployment("metered", model="gpt-4o-mini")
    client = _client()
    usages = [client.chat.completions.create(model=deployment, messages=QUESTION).usage for _ in range(2)]
    costs = connection.costs()
    (line,) = costs[(costs["cloud"] == "azure") & (costs["resource"] == deployment)].to_dict("records")
    prompt, completion = sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages)
    assert line["service"] == "openai" and line["action"] == "ChatCompletions_Create"
    assert line["quantity"] == pytest.approx((prompt + completion) / 1000)
    assert line["usd"] == pytest.approx(prompt * 0.15 / 1e6 + completion * 0.60 / 1e6)
    assert "azure.openai.gpt-4o-mini.output_per_1m_tokens" in line["price_key"]


def test_rejected_calls_are_not_metered(connection):
    deployment = _own_deployment("refused", tokens_per_minute=10)
    with pytest.raises(openai.RateLimitError):
        _client(max_retries=0).chat.completions.create(model=deployment, messages=QUESTION)
    costs = connection.costs()
    assert costs[costs["resource"] == deployment].empty


def test_deployments_are_managed_by_the_local_admin_call(connection):
    base = f"{connection.server.url}/_labcloud/azure/openai/deployments"
    names = {d["name"] for d in requests.get(base, timeout=10).json()["value"]}
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"} <= names
    bad = requests.put(f"{base}/nope", json={"model": "gpt-9"}, timeout=10)
    assert bad.status_code == 400 and "model" in bad.json()["error"]["message"]
    name = _own_deployment("temporary")
    assert requests.delete(f"{base}/{name}", timeout=10).status_code == 204
    with pytest.raises(openai.NotFoundError):
        _client().chat.completions.create(model=name, messages=QUESTION)


def test_connect_to_azure_forgets_the_local_wiring(connection, monkeypatch):
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "IDENTITY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no `az` CLI either
    with pytest.raises(CredentialsMissing, match="AZURE_SUBSCRIPTION_ID"):
        labcloud.connect("azure")
    for name in ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        assert name not in os.environ, name
