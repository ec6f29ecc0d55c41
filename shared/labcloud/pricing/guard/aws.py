"""The cost guard on AWS: one hook in front of every botocore client call (`BaseClient._make_api_call`), which
sees each operation's parameters before botocore serializes them.

Estimated (the rest goes straight through):
- sagemaker CreateTrainingJob: instance price x count x MaxRuntimeInSeconds (SageMaker's default, a day, when
  absent); managed spot uses a spot price where the catalog has one, else the on-demand price (the worst case).
- sagemaker CreateEndpointConfig: each instance variant's price x initial count x the serving hours (serverless
  variants bill per request and are not counted).
- ec2 RunInstances: price x MaxCount x the serving hours.
- bedrock-runtime InvokeModel and Converse: tokens at the model's price (see llm.py).
"""

from __future__ import annotations

import json

from .budget import DEFAULT_MAX_RUNTIME_S, Call, CostGuard, Estimate, Estimator, guarded_send
from .llm import DEFAULT_MAX_OUTPUT_TOKENS, first_number, input_tokens, model_prefix, token_estimate

BEDROCK_PRICES = "aws.bedrock."


def _training_job(guard: CostGuard, call: Call) -> Estimate:
    params = call.body
    resources = params.get("ResourceConfig", {})
    # A heterogeneous cluster lists InstanceGroups instead of one InstanceType/InstanceCount.
    groups = resources.get("InstanceGroups") or [resources]
    hours = params.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S) / 3600
    spot = bool(params.get("EnableManagedSpotTraining"))
    usd, parts = 0.0, []
    for group in groups:
        count = int(group.get("InstanceCount", 1))
        usd += guard.instance(group["InstanceType"], "sagemaker-training").hourly(spot=spot) * count * hours
        parts.append(f"{count} x {group['InstanceType']}")
    detail = f"{' + '.join(parts)} for up to {hours:g} h{' (spot)' if spot else ''}"
    return Estimate("sagemaker:CreateTrainingJob", usd, detail)


def _endpoint_config(guard: CostGuard, call: Call) -> Estimate:
    usd, parts = 0.0, []
    for variant in call.body.get("ProductionVariants", []):
        if "InstanceType" not in variant:  # serverless variants bill per request
            continue
        count = int(variant.get("InitialInstanceCount", 1))
        usd += guard.instance(variant["InstanceType"], "sagemaker-inference").hourly() * count * guard.serving_hours
        parts.append(f"{count} x {variant['InstanceType']}")
    detail = f"{' + '.join(parts)} for {guard.serving_hours:g} h"
    return Estimate("sagemaker:CreateEndpointConfig", usd, detail)


def _run_instances(guard: CostGuard, call: Call) -> Estimate:
    count, instance_type = int(call.body.get("MaxCount", 1)), call.body["InstanceType"]
    usd = guard.instance(instance_type, "ec2").hourly() * count * guard.serving_hours
    return Estimate("ec2:RunInstances", usd, f"{count} x {instance_type} for {guard.serving_hours:g} h")


def _invoke_model(guard: CostGuard, call: Call) -> Estimate | None:
    raw = call.body.get("body")
    if not isinstance(raw, (bytes, bytearray, str)):  # a file-like body is not read here (it could not be re-read)
        return None
    body = json.loads(raw or "{}")
    text_config = body.get("textGenerationConfig") or {}
    outputs = first_number(
        body.get("max_tokens"), body.get("max_gen_len"), text_config.get("maxTokenCount"),
        default=DEFAULT_MAX_OUTPUT_TOKENS,
    )  # fmt: skip
    prefix = model_prefix(guard, BEDROCK_PRICES, call.body["modelId"])
    return token_estimate(guard, "bedrock:InvokeModel", prefix, "1k", input_tokens(body), outputs)


def _converse(guard: CostGuard, call: Call) -> Estimate:
    params = call.body
    outputs = first_number((params.get("inferenceConfig") or {}).get("maxTokens"), default=DEFAULT_MAX_OUTPUT_TOKENS)
    prefix = model_prefix(guard, BEDROCK_PRICES, params["modelId"])
    return token_estimate(guard, "bedrock:Converse", prefix, "1k", input_tokens(params), outputs)


ESTIMATORS: dict[str, Estimator] = {
    "CreateTrainingJob": _training_job,
    "CreateEndpointConfig": _endpoint_config,
    "RunInstances": _run_instances,
    "InvokeModel": _invoke_model,
    "Converse": _converse,
}


def estimate_aws(guard: CostGuard, operation: str, params: dict) -> Estimate | None:
    """The guard's estimate of one botocore operation with these parameters (None: not a billed action)."""
    return guard.estimate(Call(operation, params), ESTIMATORS.get(operation))


_original_make_api_call = None


def install() -> None:
    """Put the guard in front of every botocore client call in this process (once)."""
    global _original_make_api_call
    from botocore.client import BaseClient

    if _original_make_api_call is not None:
        return
    _original_make_api_call = original = BaseClient._make_api_call

    def guarded(client, operation_name, api_params):
        call = Call(operation_name, api_params) if operation_name in ESTIMATORS else None
        # botocore raises on every error, so an answer that comes back is never a failure
        return guarded_send(
            "aws", call, ESTIMATORS, lambda: original(client, operation_name, api_params), lambda _: False
        )

    BaseClient._make_api_call = guarded
