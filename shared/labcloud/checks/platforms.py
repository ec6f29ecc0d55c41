"""Checks for lab 01 (platforms, GPU instances, cost)."""

from __future__ import annotations

import math

from ..pricing import models
from ..pricing.catalog import Instance, load_catalog
from . import passed, require


def a100_offers(gpu_hours: float, deadline_h: float, spot_risk: dict) -> list[dict]:
    """Every way to buy `gpu_hours` of A100 time on one instance: on-demand or spot, with its cost and hours.

    Spot is judged on expected wall-clock hours (interruptions and restarts included) under `spot_risk`,
    a dict of `models.spot_expected` keyword arguments (rate_per_hour, checkpoint_interval_h, ...).
    """
    offers = []
    for instance in load_catalog().instances:
        if not instance.gpu_model.startswith("A100"):
            continue
        hours = gpu_hours / instance.gpu_count
        offers.append(_offer(instance, "on-demand", instance.on_demand_usd_per_hour * hours, hours))
        if instance.spot_usd_per_hour is not None:
            estimate = models.spot_expected(hours, price_per_hour=instance.spot_usd_per_hour, **spot_risk)
            offers.append(_offer(instance, "spot", estimate.expected_cost, estimate.expected_hours))
    for offer in offers:
        offer["meets_deadline"] = offer["hours"] <= deadline_h
    return sorted(offers, key=lambda o: o["cost_usd"])


def _offer(instance: Instance, purchase: str, cost: float, hours: float) -> dict:
    return {"instance": instance.id, "cloud": instance.cloud, "purchase": purchase, "cost_usd": cost, "hours": hours}


def check_cheapest_plan(plan: dict, gpu_hours: float, deadline_h: float, spot_risk: dict) -> None:
    exercise = "Exercise 1 (cheapest A100 plan)"
    require(isinstance(plan, dict), exercise, "return a dict", "return one row of your offers table as a dict.")
    feasible = [o for o in a100_offers(gpu_hours, deadline_h, spot_risk) if o["meets_deadline"]]
    best = feasible[0]
    require(
        plan.get("hours", math.inf) <= deadline_h,
        exercise,
        f"your plan takes {plan.get('hours')} h, past the {deadline_h} h deadline",
        "drop the offers whose expected hours exceed the deadline before you pick the cheapest.",
    )
    require(
        (plan.get("instance"), plan.get("purchase")) == (best["instance"], best["purchase"]),
        exercise,
        f"{plan.get('instance')} ({plan.get('purchase')}) is not the cheapest plan that meets the deadline",
        "compare every A100 instance on-demand and on spot (expected cost from spot_expected), not only one cloud.",
    )
    require(
        math.isclose(plan.get("cost_usd", math.nan), best["cost_usd"], rel_tol=0.01),
        exercise,
        f"the cost ${plan.get('cost_usd')} is off (expected about ${best['cost_usd']:,.0f})",
        "instance-hours = GPU-hours / GPUs per instance; spot cost is the expected cost, restarts included.",
    )
    passed(exercise, f"{best['instance']} {best['purchase']}, about ${best['cost_usd']:,.0f}")


def check_checkpoint_interval(interval_h: float, work_hours: float, spot_risk: dict) -> None:
    exercise = "Exercise 2 (checkpoint interval)"
    require(interval_h is not None and interval_h > 0, exercise, "give a positive interval in hours", "try 0.1 to 5 h.")
    best = models.best_checkpoint_interval(work_hours, **spot_risk)
    best_hours = models.spot_expected(work_hours, checkpoint_interval_h=best, **spot_risk).expected_hours
    yours = models.spot_expected(work_hours, checkpoint_interval_h=interval_h, **spot_risk).expected_hours
    require(
        yours <= best_hours * 1.01,
        exercise,
        f"every {interval_h:.2f} h gives {yours:.2f} expected hours; the best interval gives {best_hours:.2f}",
        "checkpointing too often wastes time writing; too rarely loses work. Scan intervals or use Young's formula.",
    )
    passed(exercise, f"{interval_h:.2f} h is within 1% of the optimum")


def check_fleet_size(replicas: int, arrival_rps: float, service_rps: float, target_s: float, quantile: float) -> None:
    exercise = "Exercise 3 (fleet size for a latency target)"
    needed = models.min_replicas_for_latency(arrival_rps, service_rps, target_s, q=quantile)
    require(
        replicas >= needed,
        exercise,
        f"{replicas} replicas miss the p{quantile * 100:.0f} target of {target_s * 1000:.0f} ms",
        "queueing delay explodes as utilisation nears 100%: add replicas until the quantile meets the target.",
    )
    require(
        replicas == needed,
        exercise,
        f"{replicas} replicas meet the target, but fewer would too (you pay for idle replicas)",
        "find the smallest replica count that meets the target.",
    )
    passed(exercise, f"{needed} replicas")
