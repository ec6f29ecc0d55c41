"""The cost guard: on a real cloud, stop an action *before* it spends more than the notebook's budget.

Armed by `connect("aws"|"gcp"|"azure", budget_usd=...)`. For AWS it sits in front of every botocore call and
estimates the calls that start billed compute (training jobs, endpoint configs, EC2 instances) from the
instance catalog; other clouds' labs call `check()` with their own estimate before they submit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .catalog import Catalog, UnknownInstanceType, load_catalog

log = logging.getLogger(__name__)

DEFAULT_SERVING_HOURS = 24.0  # an endpoint bills until it is deleted: budget for a day unless told otherwise
DEFAULT_MAX_RUNTIME_S = 86400  # SageMaker's default MaxRuntimeInSeconds


class BudgetExceeded(RuntimeError):
    def __init__(self, action: str, estimate_usd: float, spent_usd: float, budget_usd: float):
        self.action, self.estimate_usd, self.spent_usd, self.budget_usd = (
            action,
            estimate_usd,
            spent_usd,
            budget_usd,
        )
        super().__init__(
            f"Cost guard stopped {action}: it would cost about ${estimate_usd:,.2f}, and with ${spent_usd:,.2f} "
            f"already estimated this session that exceeds the budget of ${budget_usd:,.2f}. Use a smaller or "
            "cheaper instance, a shorter limit, or raise budget_usd if you mean it."
        )


@dataclass(frozen=True)
class Estimate:
    action: str
    usd: float
    detail: str


class CostGuard:
    def __init__(self, budget_usd: float, catalog: Catalog | None = None, serving_hours: float = DEFAULT_SERVING_HOURS):
        self.budget_usd = float(budget_usd)
        self.catalog = catalog or load_catalog()
        self.serving_hours = serving_hours
        self.allowed: list[Estimate] = []

    @property
    def spent_usd(self) -> float:
        return sum(e.usd for e in self.allowed)

    def check(self, estimate: Estimate) -> None:
        """Raise BudgetExceeded if `estimate` would take the session over budget; otherwise count it."""
        if self.spent_usd + estimate.usd > self.budget_usd:
            raise BudgetExceeded(estimate.action, estimate.usd, self.spent_usd, self.budget_usd)
        self.allowed.append(estimate)

    def forget(self, estimate: Estimate) -> None:
        """Take back an estimate whose call failed, so it no longer counts against the budget."""
        if estimate in self.allowed:
            self.allowed.remove(estimate)

    # --- AWS -----------------------------------------------------------------------------------------------

    def estimate_aws(self, operation: str, params: dict) -> Estimate | None:
        estimator = _AWS_ESTIMATORS.get(operation)
        if estimator is None:
            return None
        try:
            return estimator(self, params)
        except UnknownInstanceType as exc:
            log.warning("cost guard: %s; %s is not estimated", exc, operation)
            return None
        except (KeyError, TypeError, ValueError) as exc:
            # A shape the estimator does not read (e.g. RunInstances from a launch template): let the call through.
            log.warning("cost guard: cannot read the instance type of %s (%r); it is not estimated", operation, exc)
            return None

    def _hourly(self, instance_type: str, service: str, spot: bool = False) -> float:
        return self.catalog.get(instance_type, service=service).hourly(spot=spot)

    def _training_job(self, params: dict) -> Estimate:
        resources = params.get("ResourceConfig", {})
        # A heterogeneous cluster lists InstanceGroups instead of one InstanceType/InstanceCount.
        groups = resources.get("InstanceGroups") or [resources]
        hours = params.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S) / 3600
        spot = bool(params.get("EnableManagedSpotTraining"))
        usd, parts = 0.0, []
        for group in groups:
            count = int(group.get("InstanceCount", 1))
            usd += self._hourly(group["InstanceType"], "sagemaker-training", spot) * count * hours
            parts.append(f"{count} x {group['InstanceType']}")
        detail = f"{' + '.join(parts)} for up to {hours:g} h{' (spot)' if spot else ''}"
        return Estimate("sagemaker:CreateTrainingJob", usd, detail)

    def _endpoint_config(self, params: dict) -> Estimate:
        usd, parts = 0.0, []
        for variant in params.get("ProductionVariants", []):
            if "InstanceType" not in variant:  # serverless variants bill per request
                continue
            count = int(variant.get("InitialInstanceCount", 1))
            usd += self._hourly(variant["InstanceType"], "sagemaker-inference") * count * self.serving_hours
            parts.append(f"{count} x {variant['InstanceType']}")
        detail = f"{' + '.join(parts)} for {self.serving_hours:g} h"
        return Estimate("sagemaker:CreateEndpointConfig", usd, detail)

    def _run_instances(self, params: dict) -> Estimate:
        count = int(params.get("MaxCount", 1))
        usd = self._hourly(params["InstanceType"], "ec2") * count * self.serving_hours
        return Estimate("ec2:RunInstances", usd, f"{count} x {params['InstanceType']} for {self.serving_hours:g} h")


_AWS_ESTIMATORS: dict[str, Callable[[CostGuard, dict], Estimate]] = {
    "CreateTrainingJob": CostGuard._training_job,
    "CreateEndpointConfig": CostGuard._endpoint_config,
    "RunInstances": CostGuard._run_instances,
}

_active_guard: CostGuard | None = None
_original_make_api_call = None


def arm_aws(guard: CostGuard | None) -> None:
    """Put `guard` in front of every botocore client call in this process (None disarms it)."""
    global _active_guard, _original_make_api_call
    from botocore.client import BaseClient

    _active_guard = guard
    if _original_make_api_call is None:
        _original_make_api_call = BaseClient._make_api_call

        def guarded(client, operation_name, api_params):
            if _active_guard is not None:
                estimate = _active_guard.estimate_aws(operation_name, api_params)
                if estimate is not None:
                    guard = _active_guard
                    guard.check(estimate)
                    try:
                        return _original_make_api_call(client, operation_name, api_params)
                    except Exception:
                        guard.forget(estimate)  # a rejected request spends nothing
                        raise
            return _original_make_api_call(client, operation_name, api_params)

        BaseClient._make_api_call = guarded
