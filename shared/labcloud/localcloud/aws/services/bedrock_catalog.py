"""The Bedrock model catalogue, and the control-plane calls that read it: ListFoundationModels, GetFoundationModel.

The catalogue is data (`bedrock_models.yaml` beside this module): each model's id as Bedrock names it, its
provider, the request body it takes, its output-token limit, whether it can be invoked on demand or only through a
cross-region inference profile, and the prefix of its token prices in pricing/services.yaml. bedrock-runtime
(`bedrock.py`) resolves model ids here, and the control plane answers from the same entries, so a model that
`list_foundation_models()` shows is one that `invoke_model` serves, and the other way round.

moto 5.2 has no ListFoundationModels or GetFoundationModel (its Bedrock covers custom models and customization
jobs), so both are served here in Bedrock's shape (FoundationModelSummary / FoundationModelDetails) with
Bedrock's validation of the filters. Simulated: the catalogue is one list for every Region (real availability
differs by Region), and every model in it is answered by the local stand-in model, not by the model it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs

import yaml

from ..context import AwsContext, json_response
from ..errors import Response, aws_error
from ..requests import AwsRequest

CATALOGUE_FILE = Path(__file__).with_name("bedrock_models.yaml")
INVALID_MODEL = "The provided model identifier is invalid."
_FILTERS = {  # ListFoundationModels query parameter -> the values Bedrock accepts
    "byOutputModality": ("TEXT", "IMAGE", "EMBEDDING"),
    "byInferenceType": ("ON_DEMAND", "PROVISIONED"),
    "byCustomizationType": ("FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"),
}


class BedrockValidation(Exception):
    """A request Bedrock answers with ValidationException (400)."""


@dataclass(frozen=True)
class FoundationModel:
    id: str
    name: str
    provider: str
    body: str  # the InvokeModel body format: anthropic | titan-text | titan-embed | llama | mistral
    price: str  # prefix of its token-price keys in pricing/services.yaml
    max_output_tokens: int
    response_model: str = ""  # the `model` an Anthropic Messages response carries
    on_demand: bool = True  # False: Bedrock serves it only through a cross-region inference profile
    profiles: tuple[str, ...] = ()  # geography prefixes of its inference profiles: "us" -> us.<id>
    lifecycle: str = "ACTIVE"
    input: tuple[str, ...] = ("TEXT",)
    output: tuple[str, ...] = ("TEXT",)
    streaming: bool = True
    customizations: tuple[str, ...] = ()

    @property
    def embeds(self) -> bool:
        return "EMBEDDING" in self.output

    @property
    def inference_types(self) -> list[str]:
        # Bedrock lists profile-only models as INFERENCE_PROFILE, a value outside its own API model's enum.
        return ["ON_DEMAND"] if self.on_demand else ["INFERENCE_PROFILE"]

    def arn(self, region: str) -> str:
        return f"arn:aws:bedrock:{region}::foundation-model/{self.id}"

    def summary(self, region: str) -> dict:
        """The model as ListFoundationModels and GetFoundationModel describe it."""
        return {
            "modelArn": self.arn(region),
            "modelId": self.id,
            "modelName": self.name,
            "providerName": self.provider,
            "inputModalities": list(self.input),
            "outputModalities": list(self.output),
            "responseStreamingSupported": self.streaming,
            "customizationsSupported": list(self.customizations),
            "inferenceTypesSupported": self.inference_types,
            "modelLifecycle": {"status": self.lifecycle},
        }

    def matches(self, filters: dict[str, str]) -> bool:
        provider = filters.get("byProvider")
        # The CLI's own example filters with `--by-provider anthropic`: the match ignores case, and the id's
        # provider prefix ("mistral") works as well as the provider name ("Mistral AI").
        if provider and provider.lower() not in (self.provider.lower(), self.id.split(".", 1)[0]):
            return False
        wanted = {
            "byOutputModality": self.output,
            "byInferenceType": self.inference_types,
            "byCustomizationType": self.customizations,
        }
        return all(filters[key] in values for key, values in wanted.items() if filters.get(key))


def _entry(row: dict) -> FoundationModel:
    lists = {key: tuple(row[key]) for key in ("profiles", "input", "output", "customizations") if key in row}
    return FoundationModel(**{**row, **lists})


@cache
def models() -> dict[str, FoundationModel]:
    """Every model of the catalogue, by id."""
    rows = yaml.safe_load(CATALOGUE_FILE.read_text())["models"]
    return {row["id"]: _entry(row) for row in rows}


def resolve(model_id: str) -> tuple[str, FoundationModel]:
    """The catalogue entry for a model id, a cross-region inference profile id, or either one's ARN.

    Returns the id as called (the profile id for a profile) and the model; BedrockValidation as Bedrock words it
    for an unknown id, and for the bare id of a model that only an inference profile serves.
    """
    if model_id.startswith("arn:aws:bedrock:") and "/" in model_id:
        model_id = model_id.split("/", 1)[1]
    catalogue = models()
    prefix, _, rest = model_id.partition(".")
    if rest in catalogue and prefix in catalogue[rest].profiles:
        return model_id, catalogue[rest]
    model = catalogue.get(model_id)
    if model is None:
        raise BedrockValidation(INVALID_MODEL)
    if not model.on_demand:
        raise BedrockValidation(
            f"Invocation of model ID {model_id} with on-demand throughput isn't supported. Retry your request "
            "with the ID or ARN of an inference profile that contains this model."
        )
    return model_id, model


# ---- control plane ---------------------------------------------------------------------------------------------


def list_foundation_models(filters: dict[str, str], region: str) -> dict:
    for key, allowed in _FILTERS.items():
        if filters.get(key) and filters[key] not in allowed:
            raise BedrockValidation(
                f"1 validation error detected: Value '{filters[key]}' at '{key}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(allowed)}]"
            )
    summaries = [model.summary(region) for model in models().values() if model.matches(filters)]
    return {"modelSummaries": summaries}


def get_foundation_model(identifier: str, region: str) -> dict:
    if identifier.startswith("arn:aws:bedrock:") and ":foundation-model/" in identifier:
        identifier = identifier.split(":foundation-model/", 1)[1]
    model = models().get(identifier)
    if model is None:
        raise BedrockValidation(INVALID_MODEL)
    return {"modelDetails": model.summary(region)}


def _query(environ: dict) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}


def register(gateway, context: AwsContext) -> None:
    def answer(request: AwsRequest, call) -> Response:
        try:
            return json_response(call(), content_type="application/json")
        except BedrockValidation as invalid:
            return aws_error(request.protocol, 400, "ValidationException", str(invalid))

    gateway.intercept(
        "bedrock",
        "ListFoundationModels",
        lambda request, environ: answer(request, lambda: list_foundation_models(_query(environ), request.region)),
    )
    gateway.intercept(
        "bedrock",
        "GetFoundationModel",
        lambda request, environ: answer(
            request, lambda: get_foundation_model(request.path_params["modelIdentifier"], request.region)
        ),
    )
