"""The budget itself: estimates, the check that stops an action, and which guard watches which cloud.

Every SDK hook (aws.py, gcp.py, azure.py) turns the request it sees into a `Call`, asks the armed guard's estimator
for that operation, and sends it through `guarded_send`: over budget, the request is never sent; sent and failed,
its estimate is given back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..catalog import Catalog, Instance, ServicePrices, UnknownInstanceType, load_catalog, load_service_prices

log = logging.getLogger("labcloud.pricing.guard")

CLOUDS = ("aws", "gcp", "azure")
DEFAULT_SERVING_HOURS = 24.0  # an endpoint or an always-on node bills until it is deleted: a day unless told otherwise
# A training job that names no time limit is budgeted for this long. It is SageMaker's default MaxRuntimeInSeconds;
# Vertex's own default timeout is 7 days and Azure ML sets none, so there the estimate is the guard's assumption,
# not a bound the cloud enforces: give the job a timeout for a true worst case.
DEFAULT_MAX_RUNTIME_S = 86400


class BudgetExceeded(RuntimeError):
    def __init__(self, action: str, estimate_usd: float, spent_usd: float, budget_usd: float):
        self.action, self.estimate_usd, self.spent_usd, self.budget_usd = action, estimate_usd, spent_usd, budget_usd
        super().__init__(
            f"Cost guard stopped {action}: it would cost about ${estimate_usd:,.2f}, and with ${spent_usd:,.2f} "
            f"already estimated this session that exceeds the budget of ${budget_usd:,.2f}. Use a smaller or "
            "cheaper instance, a shorter limit, or raise budget_usd if you mean it."
        )


class UnknownModel(KeyError):
    """A model with no token price in services.yaml."""


@dataclass(frozen=True)
class Estimate:
    action: str
    usd: float
    detail: str


@dataclass(frozen=True)
class Call:
    """One request as a hook saw it: the operation, the resource it names (a URL path, a model id) and its body.
    `read` sends a free read to the same service with the caller's credentials (BigQuery's dry run, the Azure ML
    compute a job runs on): read(method, url, body) -> (status, JSON body)."""

    operation: str
    body: dict = field(default_factory=dict)
    target: str = ""
    url: str = ""
    read: Callable[[str, str, dict | None], tuple[int, dict]] | None = None


Estimator = Callable[["CostGuard", Call], "Estimate | None"]


class CostGuard:
    def __init__(self, budget_usd: float, catalog: Catalog | None = None, serving_hours: float = DEFAULT_SERVING_HOURS):
        self.budget_usd = float(budget_usd)
        self.catalog = catalog or load_catalog()
        self.serving_hours = serving_hours
        self.prices: ServicePrices = load_service_prices()
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

    def estimate(self, call: Call, estimator: Estimator | None) -> Estimate | None:
        """The estimator's answer; None (the call goes through unpriced, with a warning) when the call names an
        instance or model the price tables lack, or has a shape the estimator does not read."""
        if estimator is None:
            return None
        try:
            return estimator(self, call)
        except (UnknownInstanceType, UnknownModel) as exc:
            log.warning("cost guard: %s; %s is not estimated", exc.args[0] if exc.args else exc, call.operation)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # e.g. RunInstances from a launch template: the instance type is not in the request
            log.warning("cost guard: cannot read the resources of %s (%r); it is not estimated", call.operation, exc)
        return None

    def instance(self, name: str, service: str) -> Instance:
        return self.catalog.get(name, service=service)


# --- which guard watches which cloud ----------------------------------------------------------------------------

_armed: dict[str, CostGuard] = {}


def arm(guard: CostGuard | None, clouds=CLOUDS) -> None:
    """Let `guard` watch the SDK calls to `clouds` in this process, and no guard the others (None disarms all)."""
    from . import aws, azure, gcp

    _armed.clear()
    if guard is None:
        return
    installers = {"aws": aws.install, "gcp": gcp.install, "azure": azure.install}
    for cloud in clouds:
        _armed[cloud] = guard
        installers[cloud]()


def armed(cloud: str) -> CostGuard | None:
    """The guard watching `cloud`'s SDK calls now, if any."""
    return _armed.get(cloud)


def guarded_send(cloud: str, call: Call | None, estimators: dict[str, Estimator], send: Callable, failed: Callable):
    """send() unless the armed guard's estimate of `call` is over budget; `failed(result)` tells whether a result
    that came back is an error (an HTTP status >= 400), whose estimate is then given back, as for an exception."""
    guard = armed(cloud)
    estimate = guard.estimate(call, estimators.get(call.operation)) if guard and call else None
    if estimate is None:
        return send()
    guard.check(estimate)
    try:
        result = send()
    except BaseException:
        guard.forget(estimate)
        raise
    if failed(result):
        guard.forget(estimate)
    return result
