"""Cost models for lab 01: on-demand vs spot, checkpointing, commitments, autoscaling, latency-sized fleets.

Every function here is pure: prices, rates and traffic are passed in as plain numbers or arrays (the price
catalog lives elsewhere), so each model can be checked by hand and compared with a simulation.

Units: hours for wall-clock and work, currency per hour for prices, interruptions per hour of running time
for spot interruption rates. The queueing functions are unit-agnostic (use the same time unit for the
arrival rate, the service rate and the latency target, e.g. seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import optimize

# Floating-point slack when turning a ratio into a whole count (10 / 0.1 is 100.00000000000001).
_COUNT_EPS = 1e-9
# math.expm1 overflows just above 709.78; past that the expected time is infinite for our purposes.
_EXP_LIMIT = 700.0


# ---------------------------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpotEstimate:
    """Analytic expectations for a checkpointed job on an interruptible (spot) machine."""

    expected_hours: float
    expected_cost: float
    expected_interruptions: float
    expected_lost_work_hours: float
    checkpoint_overhead_hours: float


@dataclass(frozen=True, eq=False)
class SpotSimulation:
    """Per-run Monte Carlo results (arrays of length ``runs``) of the process in :func:`spot_expected`."""

    hours: np.ndarray
    cost: np.ndarray
    interruptions: np.ndarray
    lost_work: np.ndarray

    @property
    def mean_hours(self) -> float:
        return float(np.mean(self.hours))

    @property
    def mean_cost(self) -> float:
        return float(np.mean(self.cost))

    @property
    def mean_interruptions(self) -> float:
        return float(np.mean(self.interruptions))

    @property
    def mean_lost_work(self) -> float:
        return float(np.mean(self.lost_work))


@dataclass(frozen=True)
class PurchaseOption:
    """One way to buy the compute for a job: its total cost, wall-clock hours, and a human note."""

    name: str
    cost: float
    hours: float
    note: str


@dataclass(frozen=True)
class FleetComparison:
    """A fleet sized for the peak all day vs one that follows traffic."""

    fixed_replicas: int
    fixed_cost: float
    autoscaled_cost: float
    savings_fraction: float
    overloaded_steps: int
    # Per-step replica counts of the autoscaled fleet (for plotting); not part of equality.
    autoscaled_replicas: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int), compare=False)


# ---------------------------------------------------------------------------------------------------------
# Spot instances and checkpointing
# ---------------------------------------------------------------------------------------------------------


def _check_spot_args(
    work_hours: float,
    rate_per_hour: float,
    checkpoint_interval_h: float | None,
    checkpoint_cost_h: float,
    restart_overhead_h: float,
) -> None:
    if work_hours <= 0:
        raise ValueError(f"work_hours must be > 0, got {work_hours}")
    if rate_per_hour < 0:
        raise ValueError(f"rate_per_hour must be >= 0, got {rate_per_hour}")
    if checkpoint_interval_h is not None and checkpoint_interval_h <= 0:
        raise ValueError(f"checkpoint_interval_h must be > 0 or None, got {checkpoint_interval_h}")
    if checkpoint_cost_h < 0:
        raise ValueError(f"checkpoint_cost_h must be >= 0, got {checkpoint_cost_h}")
    if restart_overhead_h < 0:
        raise ValueError(f"restart_overhead_h must be >= 0, got {restart_overhead_h}")


def _segments(
    work_hours: float, checkpoint_interval_h: float | None, checkpoint_cost_h: float
) -> list[tuple[float, int]]:
    """Split a job into segments that must each run uninterrupted: ``[(wall_length, how_many), ...]``.

    With checkpoints every tau hours of work the job has n = ceil(W / tau) segments. The first n - 1 are
    ``tau + C`` long (work, then the checkpoint write, which is lost too if interrupted); the last holds the
    remaining ``W - (n - 1) tau`` hours of work and needs no checkpoint because the job ends there.
    """
    if checkpoint_interval_h is None or checkpoint_interval_h >= work_hours:
        return [(work_hours, 1)]
    n = max(1, math.ceil(work_hours / checkpoint_interval_h - _COUNT_EPS))
    last = work_hours - (n - 1) * checkpoint_interval_h
    segments = [(last, 1)]
    if n > 1:
        segments.insert(0, (checkpoint_interval_h + checkpoint_cost_h, n - 1))
    return segments


def _expm1(x: float) -> float:
    """exp(x) - 1 without math.expm1's OverflowError: returns inf for huge x."""
    return math.inf if x > _EXP_LIMIT else math.expm1(x)


def spot_expected(
    work_hours: float,
    rate_per_hour: float,
    checkpoint_interval_h: float | None = None,
    checkpoint_cost_h: float = 0.0,
    restart_overhead_h: float = 0.0,
    price_per_hour: float = 1.0,
) -> SpotEstimate:
    """Expected wall-clock time, cost and lost work of a job on a machine interrupted at Poisson rate lambda.

    Model (the classic restart model): the job is cut into segments (see checkpoints below) that must each
    run to completion without an interruption. If an interruption arrives first, the segment's progress is
    lost, R = ``restart_overhead_h`` hours go to getting a new machine and reloading the last checkpoint, and
    the segment starts again. For one segment of wall length t:

        E[T(t)] = (1/lambda + R) * (exp(lambda t) - 1)

    Why: an attempt lasts E[min(X, t)] = (1 - e^{-lambda t}) / lambda and fails with probability
    1 - e^{-lambda t}; solving E[T] = E[min(X, t)] + (1 - e^{-lambda t}) (R + E[T]) gives the formula.
    The expected number of interruptions is the mean of a geometric count, exp(lambda t) - 1.

    Checkpoints: every tau = ``checkpoint_interval_h`` hours of work the job writes a checkpoint costing
    C = ``checkpoint_cost_h`` hours of wall time, giving n = ceil(W / tau) segments of length tau + C, the
    last one shorter and without a checkpoint. Without checkpoints (None) the job is one segment of length W,
    so the expected time grows exponentially with W. Segment expectations add up.

    Lost work = expected time - W - checkpoint time - interruptions * R, i.e. the partial segments thrown
    away (computed directly as sum(expm1(lambda t) / lambda - t) to avoid cancellation).
    With lambda = 0 nothing is ever lost: time = W + (n - 1) C. Cost = price * expected wall-clock hours,
    since a spot machine is billed while it runs, restarts included.
    """
    _check_spot_args(work_hours, rate_per_hour, checkpoint_interval_h, checkpoint_cost_h, restart_overhead_h)
    segments = _segments(work_hours, checkpoint_interval_h, checkpoint_cost_h)
    checkpoint_hours = sum(count for _, count in segments[:-1]) * checkpoint_cost_h
    lam = rate_per_hour
    if lam == 0:
        hours = work_hours + checkpoint_hours
        return SpotEstimate(hours, hours * price_per_hour, 0.0, 0.0, checkpoint_hours)

    hours = interruptions = lost = 0.0
    for length, count in segments:
        restarts = _expm1(lam * length)  # expected interruptions of this segment
        hours += count * (1.0 / lam + restart_overhead_h) * restarts
        interruptions += count * restarts
        lost += count * (restarts / lam - length)
    return SpotEstimate(hours, hours * price_per_hour, interruptions, lost, checkpoint_hours)


def simulate_spot(
    work_hours: float,
    rate_per_hour: float,
    checkpoint_interval_h: float | None = None,
    checkpoint_cost_h: float = 0.0,
    restart_overhead_h: float = 0.0,
    price_per_hour: float = 1.0,
    runs: int = 1000,
    seed: int = 0,
) -> SpotSimulation:
    """Monte Carlo of the process analysed by :func:`spot_expected`, vectorised over runs.

    For each segment every still-running run draws the time to its next interruption X ~ Exp(lambda)
    (inter-arrival times of a Poisson process are exponential). If X >= segment length the segment
    completes; otherwise the run loses X hours of progress (falls back to the last checkpoint), pays R
    hours of restart, and tries the segment again. Restarts themselves are not interrupted, matching the
    analytic model. Cost per run = price * wall-clock hours.
    """
    _check_spot_args(work_hours, rate_per_hour, checkpoint_interval_h, checkpoint_cost_h, restart_overhead_h)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    rng = np.random.default_rng(seed)
    hours = np.zeros(runs)
    interruptions = np.zeros(runs, dtype=np.int64)
    lost = np.zeros(runs)

    for length, count in _segments(work_hours, checkpoint_interval_h, checkpoint_cost_h):
        for _ in range(count):
            active = np.arange(runs)
            while active.size:
                if rate_per_hour == 0:
                    x = np.full(active.size, np.inf)
                else:
                    x = rng.exponential(1.0 / rate_per_hour, size=active.size)
                done = x >= length
                hours[active[done]] += length
                failed = active[~done]
                hours[failed] += x[~done] + restart_overhead_h
                lost[failed] += x[~done]
                interruptions[failed] += 1
                active = failed
    return SpotSimulation(hours, hours * price_per_hour, interruptions, lost)


def optimal_checkpoint_interval(
    checkpoint_cost_h: float,
    rate_per_hour: float,
    restart_overhead_h: float = 0.0,
    method: Literal["young", "daly"] = "young",
) -> float:
    """Checkpoint interval (hours of work between checkpoints) that minimises expected wall-clock time.

    Young (1974): tau* = sqrt(2 C / lambda) = sqrt(2 C M), with M = 1/lambda the mean time between
    interruptions. Why: per hour of work, checkpointing costs C / tau and an interruption loses on average
    half an interval, lambda * tau / 2; the sum is smallest where the two terms are equal. It is a first
    order approximation, good while C << M.

    Daly (2006) refines it with higher-order terms (``method="daly"``):
        tau* = sqrt(2 C M) * (1 + sqrt(C / (2 M)) / 3 + (C / (2 M)) / 9) - C   if C < 2 M,
        tau* = M                                                             otherwise.

    The restart overhead R does not move the optimum to this order (it scales the per-segment time
    (1/lambda + R)(e^{lambda (tau + C)} - 1) by a constant), so it is accepted only for a uniform call
    signature. Returns inf when lambda = 0 (never checkpoint) and 0 when C = 0.
    """
    if checkpoint_cost_h < 0 or rate_per_hour < 0 or restart_overhead_h < 0:
        raise ValueError("checkpoint_cost_h, rate_per_hour and restart_overhead_h must be >= 0")
    if rate_per_hour == 0:
        return math.inf
    mtbf = 1.0 / rate_per_hour
    young = math.sqrt(2.0 * checkpoint_cost_h * mtbf)
    if method == "young":
        return young
    if method != "daly":
        raise ValueError(f"method must be 'young' or 'daly', got {method!r}")
    if checkpoint_cost_h >= 2.0 * mtbf:
        return mtbf
    ratio = checkpoint_cost_h / (2.0 * mtbf)
    return young * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - checkpoint_cost_h


def best_checkpoint_interval(
    work_hours: float,
    rate_per_hour: float,
    checkpoint_cost_h: float,
    restart_overhead_h: float = 0.0,
    grid: np.ndarray | None = None,
) -> float:
    """Interval minimising the exact ``spot_expected(...).expected_hours``, found numerically.

    The objective is a sawtooth in tau (n = ceil(W / tau) jumps), so a bounded Brent search alone can stop
    in a local dip. Without ``grid`` we scan 400 log-spaced intervals over [max(C/10, eps), W], then refine
    with ``scipy.optimize.minimize_scalar`` between the best point's neighbours. With ``grid`` we return
    the best of the given candidates. tau >= W means "never checkpoint"; with lambda = 0 that is optimal.
    """
    _check_spot_args(work_hours, rate_per_hour, None, checkpoint_cost_h, restart_overhead_h)
    if rate_per_hour == 0:
        return float(work_hours)

    def expected_hours(tau: float) -> float:
        estimate = spot_expected(work_hours, rate_per_hour, tau, checkpoint_cost_h, restart_overhead_h)
        return estimate.expected_hours

    if grid is not None:
        candidates = np.asarray(grid, dtype=float)
        if candidates.size == 0 or np.any(candidates <= 0):
            raise ValueError("grid must be a non-empty array of positive intervals")
        return float(candidates[int(np.argmin([expected_hours(t) for t in candidates]))])

    low = max(checkpoint_cost_h / 10.0, 1e-6 * work_hours)
    scan = np.geomspace(low, work_hours, 400)
    values = np.array([expected_hours(t) for t in scan])
    i = int(np.argmin(values))
    lo, hi = scan[max(i - 1, 0)], scan[min(i + 1, scan.size - 1)]
    best_tau, best_value = float(scan[i]), float(values[i])
    if hi > lo:
        res = optimize.minimize_scalar(expected_hours, bounds=(lo, hi), method="bounded")
        if res.fun < best_value:
            best_tau = float(res.x)
    return best_tau


# ---------------------------------------------------------------------------------------------------------
# Commitments: reserved instances, committed-use discounts, savings plans
# ---------------------------------------------------------------------------------------------------------


def _check_discount(discount: float) -> None:
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")


def commitment_cost(
    on_demand_per_hour: float,
    hours_used: float,
    term_hours: float,
    discount: float,
    upfront_fraction: float = 0.0,
) -> float:
    """Total cost of a commitment (reserved instance, committed use, savings plan) over its term.

    A commitment is paid for every hour of the term whether used or not:
        cost = on_demand * (1 - discount) * term_hours
    while on-demand for the same usage costs on_demand * hours_used. Usage beyond the term's hours (e.g.
    a second machine) is not covered and is billed on demand: + on_demand * max(0, hours_used - term_hours).

    ``upfront_fraction`` (the share paid at purchase) changes when money is paid, not how much, in this
    undiscounted model; real catalogs give a larger discount for paying upfront, so pass the matching
    ``discount`` instead. It is validated so that callers get an error for nonsense values.
    """
    _check_discount(discount)
    if on_demand_per_hour < 0 or hours_used < 0 or term_hours <= 0:
        raise ValueError("prices and hours_used must be >= 0 and term_hours > 0")
    if not 0.0 <= upfront_fraction <= 1.0:
        raise ValueError(f"upfront_fraction must be in [0, 1], got {upfront_fraction}")
    committed = on_demand_per_hour * (1.0 - discount) * term_hours
    overflow = on_demand_per_hour * max(0.0, hours_used - term_hours)
    return committed + overflow


def breakeven_utilisation(discount: float) -> float:
    """Utilisation above which a commitment beats on-demand: 1 - discount.

    Why: on_demand * u * T = on_demand * (1 - d) * T  <=>  u = 1 - d. A 60% discount pays off from 40%
    utilisation; a 30% discount needs the machine busy 70% of the term.
    """
    _check_discount(discount)
    return 1.0 - discount


def compare_purchase_options(
    on_demand_per_hour: float,
    spot_per_hour: float,
    hours_needed: float,
    term_hours: float,
    discounts: dict[str, float],
    spot_rate_per_hour: float = 0.0,
    checkpoint_interval_h: float | None = None,
    checkpoint_cost_h: float = 0.0,
    restart_overhead_h: float = 0.0,
) -> list[PurchaseOption]:
    """Cost of running ``hours_needed`` of compute under each purchase option, cheapest first.

    Rows: "on-demand" (price * hours), "spot" (expected cost and wall-clock hours from :func:`spot_expected`
    with the given interruption rate and checkpointing), and one row per commitment in ``discounts``
    (name -> discount) priced with :func:`commitment_cost` over ``term_hours``. Ties keep that order.
    """
    if hours_needed <= 0:
        raise ValueError(f"hours_needed must be > 0, got {hours_needed}")
    options = [
        PurchaseOption("on-demand", on_demand_per_hour * hours_needed, hours_needed, "pay per hour, no risk"),
    ]
    spot = spot_expected(
        hours_needed,
        spot_rate_per_hour,
        checkpoint_interval_h,
        checkpoint_cost_h,
        restart_overhead_h,
        price_per_hour=spot_per_hour,
    )
    options.append(
        PurchaseOption(
            "spot",
            spot.expected_cost,
            spot.expected_hours,
            f"expected {spot.expected_interruptions:.2f} interruptions, "
            f"{spot.expected_lost_work_hours:.2f} h of lost work",
        )
    )
    utilisation = hours_needed / term_hours
    for name, discount in discounts.items():
        cost = commitment_cost(on_demand_per_hour, hours_needed, term_hours, discount)
        note = f"utilisation {utilisation:.0%} vs break-even {breakeven_utilisation(discount):.0%}"
        options.append(PurchaseOption(name, cost, hours_needed, note))
    return sorted(options, key=lambda option: option.cost)


# ---------------------------------------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------------------------------------


def daily_traffic(
    peak_rps: float, trough_rps: float, hours: int = 24, steps_per_hour: int = 4, peak_hour: float = 14
) -> np.ndarray:
    """Requests per second sampled every 1/steps_per_hour hours over ``hours`` hours: a smooth day.

        rps(t) = trough + (peak - trough) * (1 + cos(2 pi (t - peak_hour) / 24)) / 2

    The cosine has a 24 h period, peaks at ``peak_hour`` and bottoms out 12 h earlier (peak_hour - 12).
    """
    if not 0 <= trough_rps <= peak_rps:
        raise ValueError("need 0 <= trough_rps <= peak_rps")
    if hours <= 0 or steps_per_hour <= 0:
        raise ValueError("hours and steps_per_hour must be > 0")
    t = np.arange(hours * steps_per_hour) / steps_per_hour
    shape = (1.0 + np.cos(2.0 * np.pi * (t - peak_hour) / 24.0)) / 2.0
    return trough_rps + (peak_rps - trough_rps) * shape


def replicas_needed(
    rps: np.ndarray | float,
    capacity_rps_per_replica: float,
    target_utilisation: float = 0.7,
    min_replicas: int = 1,
    max_replicas: int | None = None,
) -> np.ndarray:
    """Replicas to serve ``rps`` while keeping each one at or below ``target_utilisation``.

        replicas = clip(ceil(rps / (capacity * target)), min_replicas, max_replicas)

    Targeting < 100% utilisation leaves headroom for bursts and for the minutes a new replica takes to
    start. The ceil has a tiny tolerance so that float noise (e.g. 2.1 / (3 * 0.7) = 1.0000000000000002)
    does not add a replica.
    """
    if capacity_rps_per_replica <= 0:
        raise ValueError(f"capacity_rps_per_replica must be > 0, got {capacity_rps_per_replica}")
    if not 0.0 < target_utilisation <= 1.0:
        raise ValueError(f"target_utilisation must be in (0, 1], got {target_utilisation}")
    if min_replicas < 0 or (max_replicas is not None and max_replicas < min_replicas):
        raise ValueError("need 0 <= min_replicas <= max_replicas")
    load = np.asarray(rps, dtype=float) / (capacity_rps_per_replica * target_utilisation)
    raw = np.ceil(load - _COUNT_EPS)
    return np.clip(raw, min_replicas, max_replicas).astype(int)


def fleet_cost(replicas: np.ndarray, price_per_hour: float, step_hours: float) -> float:
    """Cost of a fleet whose size is given per time step: sum(replicas) * price * step_hours."""
    return float(np.sum(replicas) * price_per_hour * step_hours)


def compare_fleets(
    traffic: np.ndarray,
    capacity_rps_per_replica: float,
    price_per_hour: float,
    step_hours: float,
    target_utilisation: float = 0.7,
    min_replicas: int = 1,
    scale_up_delay_steps: int = 0,
) -> FleetComparison:
    """Fixed fleet sized for the peak vs an autoscaled fleet that follows traffic.

    Fixed: replicas_needed(max(traffic)) all day. Autoscaled: replicas[t] = replicas_needed(traffic[t - d])
    with d = ``scale_up_delay_steps`` (a pure lag: the scaler acts on what it saw d steps ago; the first d
    steps use traffic[0]). savings_fraction = 1 - autoscaled_cost / fixed_cost. overloaded_steps counts steps
    where traffic exceeds the fleet's full capacity (rps > replicas * capacity), the price of the lag.
    """
    traffic = np.asarray(traffic, dtype=float)
    if traffic.ndim != 1 or traffic.size == 0:
        raise ValueError("traffic must be a non-empty 1-D array")
    if scale_up_delay_steps < 0:
        raise ValueError(f"scale_up_delay_steps must be >= 0, got {scale_up_delay_steps}")
    args = (capacity_rps_per_replica, target_utilisation, min_replicas)
    fixed = int(replicas_needed(traffic.max(), *args))
    fixed_cost = fleet_cost(np.full(traffic.size, fixed), price_per_hour, step_hours)

    lagged_index = np.maximum(np.arange(traffic.size) - scale_up_delay_steps, 0)
    autoscaled = replicas_needed(traffic[lagged_index], *args)
    autoscaled_cost = fleet_cost(autoscaled, price_per_hour, step_hours)
    savings = 1.0 - autoscaled_cost / fixed_cost if fixed_cost > 0 else 0.0
    overloaded = int(np.sum(traffic > autoscaled * capacity_rps_per_replica))
    return FleetComparison(fixed, fixed_cost, autoscaled_cost, savings, overloaded, autoscaled)


# ---------------------------------------------------------------------------------------------------------
# Latency-sized fleets: M/M/c queue (Erlang C)
# ---------------------------------------------------------------------------------------------------------


def _check_queue_args(arrival_rate: float, service_rate: float, servers: int) -> None:
    if arrival_rate < 0 or service_rate <= 0:
        raise ValueError("need arrival_rate >= 0 and service_rate > 0")
    if servers < 1 or int(servers) != servers:
        raise ValueError(f"servers must be a positive integer, got {servers}")


def erlang_c(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Probability that a request must wait in an M/M/c queue (Erlang C).

    Offered load a = lambda / mu. Erlang B by the stable recursion B(0) = 1,
    B(k) = a B(k-1) / (k + a B(k-1)) (no factorials or powers, so no overflow for large c), then
        C = c B / (c - a (1 - B)).
    Returns 1.0 when utilisation rho = a / c >= 1: the queue grows without bound and everyone waits.
    """
    _check_queue_args(arrival_rate, service_rate, servers)
    a = arrival_rate / service_rate
    c = int(servers)
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


def mean_response_time(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean time in system for M/M/c: C / (c mu - lambda) + 1 / mu (wait + service); inf if unstable.

    Why: a waiting request waits Exp(c mu - lambda) (all c servers busy, the queue drains at c mu - lambda),
    and it waits at all with probability C.
    """
    _check_queue_args(arrival_rate, service_rate, servers)
    drain = servers * service_rate - arrival_rate
    if drain <= 0:
        return math.inf
    return erlang_c(arrival_rate, service_rate, servers) / drain + 1.0 / service_rate


def _exp_gap_over_rate_gap(theta: float, mu: float, t: float) -> float:
    """(e^{-theta t} - e^{-mu t}) / (mu - theta), stably; its limit t e^{-mu t} when theta == mu."""
    gap = mu - theta
    if gap == 0:
        return t * math.exp(-mu * t)
    if gap > 0:  # theta < mu: factor out the slower decay e^{-theta t}
        return -math.exp(-theta * t) * math.expm1(-gap * t) / gap
    return math.exp(-mu * t) * math.expm1(gap * t) / gap  # theta > mu: factor out e^{-mu t}


def _response_tail(theta: float, mu: float, wait_prob: float, t: float) -> float:
    """P(W + S > t) = e^{-mu t} + C mu (e^{-theta t} - e^{-mu t}) / (mu - theta), theta = c mu - lambda."""
    return math.exp(-mu * t) + wait_prob * mu * _exp_gap_over_rate_gap(theta, mu, t)


def response_time_quantile(arrival_rate: float, service_rate: float, servers: int, q: float = 0.95) -> float:
    """q-quantile of the response time (wait + service) of an M/M/c FCFS queue.

    The wait W is 0 with probability 1 - C and otherwise Exp(theta), theta = c mu - lambda, so
    P(W > t) = C e^{-theta t}. The service time S ~ Exp(mu) is independent. Convolving:
        P(W + S > t) = e^{-mu t} + C * mu / (mu - theta) * (e^{-theta t} - e^{-mu t})     (theta != mu)
        P(W + S > t) = e^{-mu t} * (1 + C mu t)                                           (theta == mu)
    The tail falls from 1 at t = 0 to 0, so brentq finds the t with tail = 1 - q after bracketing by
    doubling. Returns inf if the queue is unstable (lambda >= c mu).
    """
    _check_queue_args(arrival_rate, service_rate, servers)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    theta = servers * service_rate - arrival_rate
    if theta <= 0:
        return math.inf
    wait_prob = erlang_c(arrival_rate, service_rate, servers)
    target = 1.0 - q

    def excess(t: float) -> float:
        return _response_tail(theta, service_rate, wait_prob, t) - target

    hi = max(1.0 / service_rate, 1.0 / theta)
    while excess(hi) > 0:
        hi *= 2.0
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12))


def min_replicas_for_latency(
    arrival_rate: float,
    service_rate: float,
    target_seconds: float,
    q: float = 0.95,
    max_replicas: int = 1000,
) -> int:
    """Smallest number of servers c whose q-quantile response time is <= ``target_seconds``.

    The quantile falls monotonically as c grows (less waiting, faster draining), so we binary-search c
    between the smallest stable fleet, floor(lambda / mu) + 1, and ``max_replicas``. Raises ValueError if
    even ``max_replicas`` misses the target, e.g. when the target is below the service time's own quantile
    -ln(1 - q) / mu, which no number of servers can beat.
    """
    if target_seconds <= 0:
        raise ValueError(f"target_seconds must be > 0, got {target_seconds}")
    if max_replicas < 1:
        raise ValueError(f"max_replicas must be >= 1, got {max_replicas}")
    _check_queue_args(arrival_rate, service_rate, 1)

    def meets(c: int) -> bool:
        return response_time_quantile(arrival_rate, service_rate, c, q) <= target_seconds

    lo = math.floor(arrival_rate / service_rate) + 1
    if lo > max_replicas or not meets(max_replicas):
        raise ValueError(f"no fleet of <= {max_replicas} replicas meets p{q * 100:g} <= {target_seconds}")
    hi = max_replicas  # invariant: meets(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi
