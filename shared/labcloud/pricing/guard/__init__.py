"""The cost guard: stop a cloud action *before* it is sent when its estimated cost would take the notebook past its
budget.

Armed by `connect("aws"|"gcp"|"azure", budget_usd=...)` for that cloud (always, with a default budget), and by
`connect("local", budget_usd=...)` for all three clouds, to practise with against the local cloud. Each cloud's SDKs
are hooked once, at their transport (aws.py: botocore; gcp.py: google-auth's AuthorizedSession and gapic gRPC
channels; azure.py: azure-core's pipeline and httpx for the openai client); each hook reads the request, asks the
estimator for that operation (a table per cloud: operation -> function of the request body), and:
- over budget: raises BudgetExceeded, and the request is never sent;
- within budget: counts the estimate and sends it; if the call fails (an exception, an HTTP error status), the
  estimate is given back.

What is estimated, and how, is in each cloud's module. Estimates are worst cases from the dated price tables
(pricing/instances.yaml, services.yaml), not bills: an endpoint or an always-on node is budgeted for the serving
hours (a day by default), a job for its time limit, a model call for its input text and its maximum output. A call
that names an instance or a model the tables lack goes through unpriced, with a warning.
"""

from .aws import estimate_aws
from .budget import (
    DEFAULT_MAX_RUNTIME_S,
    DEFAULT_SERVING_HOURS,
    BudgetExceeded,
    Call,
    CostGuard,
    Estimate,
    UnknownModel,
    arm,
    armed,
)

__all__ = [
    "DEFAULT_MAX_RUNTIME_S",
    "DEFAULT_SERVING_HOURS",
    "BudgetExceeded",
    "Call",
    "CostGuard",
    "Estimate",
    "UnknownModel",
    "arm",
    "armed",
    "estimate_aws",
]
