"""Vertex AI on the local cloud, through the unmodified google-cloud-aiplatform SDK: Gemini's generateContent (shape,
usage, finish reasons, the meter) and Google's errors for unknown resources and malformed requests."""

import pytest
import requests
from google.api_core import exceptions

from labcloud.localcloud.gcp.gateway import LOCAL_TOKEN


def test_gemini_generate_content_through_the_sdk(vertex):
    from vertexai.generative_models import GenerationConfig, GenerativeModel

    model = GenerativeModel("gemini-2.0-flash")
    response = model.generate_content("What is a Vertex AI endpoint?")
    assert response.candidates[0].finish_reason.name == "STOP"
    assert "stand-in" in response.text.lower() or response.text
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    again = model.generate_content("What is a Vertex AI endpoint?")
    assert again.text == response.text  # deterministic

    short = model.generate_content("Explain GPUs", generation_config=GenerationConfig(max_output_tokens=3))
    assert short.candidates[0].finish_reason.name == "MAX_TOKENS"
    assert short.usage_metadata.candidates_token_count <= 3


def test_gemini_wire_shape_and_meter(connection):
    model = "projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash"
    url = f"{connection.server.url}/v1/{model}:generateContent"
    headers = {"Authorization": f"Bearer {LOCAL_TOKEN}"}
    body = {"contents": [{"role": "user", "parts": [{"text": "What is BigQuery ML?"}]}]}
    data = requests.post(url, json=body, headers=headers, timeout=10).json()
    candidate = data["candidates"][0]
    assert candidate["content"]["parts"][0]["text"]
    assert candidate["finishReason"] == "STOP"
    assert {r["category"] for r in candidate["safetyRatings"]} >= {"HARM_CATEGORY_HATE_SPEECH"}
    usage = data["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert data["modelVersion"].startswith("gemini-2.0-flash")

    bad = requests.post(url, json={"contents": []}, headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    costs = connection.costs()
    (line,) = costs[(costs["service"] == "vertex-ai") & (costs["resource"] == "gemini-2.0-flash")].to_dict("records")
    assert line["usd"] > 0 and "gcp.gemini.gemini-2.0-flash.output_per_1m_tokens" in line["price_key"]


def test_unknown_endpoint_and_model_are_not_found(vertex):
    endpoint = vertex.Endpoint("1234567890")  # the SDK loads an endpoint lazily
    with pytest.raises(exceptions.NotFound, match="1234567890"):
        endpoint.predict(instances=[[1.0, 2.0]])
    with pytest.raises(exceptions.NotFound):
        endpoint.list_models()  # needs the resource: the SDK fetches it now
    with pytest.raises(exceptions.NotFound):
        vertex.Model("987654321")
