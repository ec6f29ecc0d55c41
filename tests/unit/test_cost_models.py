"""Tests for labcloud.pricing.models: hand-computed cases (arithmetic in comments) plus simulation checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labcloud.pricing import models

# ---------------------------------------------------------------------------------------------------------
# spot_expected
# ---------------------------------------------------------------------------------------------------------


def test_spot_without_interruptions_takes_work_plus_checkpoints():
    # W = 10, tau = 3 -> segments 3, 3, 3, 1 -> 3 checkpoints of 0.5 h -> 10 + 1.5 = 11.5 h; at $2/h: $23.
    est = models.spot_expected(10, 0.0, checkpoint_interval_h=3, checkpoint_cost_h=0.5, price_per_hour=2.0)
    assert est.expected_hours == pytest.approx(11.5)
    assert est.expected_cost == pytest.approx(23.0)
    assert est.checkpoint_overhead_hours == pytest.approx(1.5)
    assert est.expected_interruptions == 0.0
    assert est.expected_lost_work_hours == 0.0


def test_spot_lambda_zero_without_checkpoints_is_exactly_the_work():
    est = models.spot_expected(7.0, 0.0)
    assert est.expected_hours == 7.0
    assert est.checkpoint_overhead_hours == 0.0


def test_spot_one_segment_classic_restart_model():
    # One 1 h segment, lambda = 0.1/h, R = 0: E[T] = (1/0.1) * (e^0.1 - 1) = 10 * 0.105171 = 1.051709 h.
    # Interruptions = e^0.1 - 1 = 0.105171; lost work = 1.051709 - 1 = 0.051709 h.
    est = models.spot_expected(1.0, 0.1)
    assert est.expected_hours == pytest.approx(1.0517091807564762, rel=1e-12)
    assert est.expected_interruptions == pytest.approx(0.1051709180756476, rel=1e-12)
    assert est.expected_lost_work_hours == pytest.approx(0.0517091807564762, rel=1e-9)


def test_spot_restart_overhead_adds_r_per_interruption():
    # (1/0.1 + 0.5) * (e^0.1 - 1) = 10.5 * 0.1051709 = 1.1042946 h.
    # lost = 1.1042946 - 1 (work) - 0.1051709 * 0.5 (restarts) = 0.0517092 (same as with R = 0).
    est = models.spot_expected(1.0, 0.1, restart_overhead_h=0.5)
    assert est.expected_hours == pytest.approx(1.104294639794301, rel=1e-12)
    assert est.expected_lost_work_hours == pytest.approx(0.0517091807564762, rel=1e-9)


def test_spot_segments_sum_with_shorter_last_segment():
    # W = 10, tau = 4, C = 0.5, lambda = 0.1: segments of wall length 4.5, 4.5 and 2 (no final checkpoint).
    # 2 * 10 * (e^0.45 - 1) + 10 * (e^0.2 - 1) = 2 * 5.683122 + 2.214028 = 13.580272 h.
    est = models.spot_expected(10, 0.1, checkpoint_interval_h=4, checkpoint_cost_h=0.5, price_per_hour=0.3)
    assert est.expected_hours == pytest.approx(2 * 5.683121854901689 + 2.2140275816016985, rel=1e-12)
    assert est.expected_cost == pytest.approx(0.3 * est.expected_hours)
    assert est.checkpoint_overhead_hours == pytest.approx(1.0)
    # Interruptions: 2 * (e^0.45 - 1) + (e^0.2 - 1) = 1.1366244 + 0.2214028 = 1.3580272.
    assert est.expected_interruptions == pytest.approx(1.3580272, rel=1e-6)
    # Bookkeeping identity: time = work + checkpoints + lost work + restarts * R (R = 0 here).
    assert est.expected_hours == pytest.approx(10 + 1.0 + est.expected_lost_work_hours)


def test_spot_segment_count_tolerates_float_noise():
    # 2.1 / 0.7 = 3.0000000000000004 in floats; a naive ceil would make 4 segments (3 checkpoints).
    # Correct: 3 segments of 0.7 h -> 2 checkpoints of 0.1 h -> 2.1 + 0.2 = 2.3 h.
    est = models.spot_expected(2.1, 0.0, checkpoint_interval_h=0.7, checkpoint_cost_h=0.1)
    assert est.checkpoint_overhead_hours == pytest.approx(0.2)
    assert est.expected_hours == pytest.approx(2.3)


def test_spot_interval_longer_than_job_means_no_checkpoint():
    no_ckpt = models.spot_expected(5, 0.2)
    long_interval = models.spot_expected(5, 0.2, checkpoint_interval_h=8, checkpoint_cost_h=1.0)
    assert long_interval == no_ckpt


def test_spot_checkpointing_rescues_long_jobs():
    # Without checkpoints a 100 h job at lambda = 0.1 needs 10 * (e^10 - 1) = 220,254.7 h.
    # Hourly checkpoints (C = 0.05): 99 * 10 * (e^0.105 - 1) + 10 * (e^0.1 - 1) = 109.60 + 1.05 = 110.65 h.
    bare = models.spot_expected(100, 0.1)
    ckpt = models.spot_expected(100, 0.1, checkpoint_interval_h=1, checkpoint_cost_h=0.05)
    assert bare.expected_hours == pytest.approx(10 * math.expm1(10))
    assert ckpt.expected_hours == pytest.approx(99 * 10 * math.expm1(0.105) + 10 * math.expm1(0.1))
    assert ckpt.expected_hours < 111 < bare.expected_hours


def test_spot_huge_exponent_is_infinite_not_an_error():
    assert models.spot_expected(1e4, 1.0).expected_hours == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"work_hours": 0, "rate_per_hour": 0.1},
        {"work_hours": 1, "rate_per_hour": -0.1},
        {"work_hours": 1, "rate_per_hour": 0.1, "checkpoint_interval_h": 0},
        {"work_hours": 1, "rate_per_hour": 0.1, "checkpoint_cost_h": -1},
        {"work_hours": 1, "rate_per_hour": 0.1, "restart_overhead_h": -1},
    ],
)
def test_spot_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        models.spot_expected(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# simulate_spot
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "work_hours": 10,
            "rate_per_hour": 0.2,
            "checkpoint_interval_h": 2,
            "checkpoint_cost_h": 0.1,
            "restart_overhead_h": 0.2,
            "price_per_hour": 0.4,
        },
        {"work_hours": 3, "rate_per_hour": 0.3, "restart_overhead_h": 0.25},
    ],
)
def test_simulation_means_match_analytic_within_3_percent(kwargs):
    est = models.spot_expected(**kwargs)
    sim = models.simulate_spot(**kwargs, runs=20_000, seed=1)
    assert sim.hours.shape == (20_000,)
    assert sim.mean_hours == pytest.approx(est.expected_hours, rel=0.03)
    assert sim.mean_cost == pytest.approx(est.expected_cost, rel=0.03)
    assert sim.mean_interruptions == pytest.approx(est.expected_interruptions, rel=0.03)
    assert sim.mean_lost_work == pytest.approx(est.expected_lost_work_hours, rel=0.03)


def test_simulation_without_interruptions_is_deterministic():
    sim = models.simulate_spot(10, 0.0, checkpoint_interval_h=3, checkpoint_cost_h=0.5, runs=50)
    np.testing.assert_allclose(sim.hours, 11.5)
    assert sim.interruptions.sum() == 0
    assert sim.lost_work.sum() == 0.0


def test_simulation_per_run_bookkeeping_and_seeding():
    kw = {
        "work_hours": 5,
        "rate_per_hour": 0.5,
        "checkpoint_interval_h": 1,
        "checkpoint_cost_h": 0.1,
        "restart_overhead_h": 0.3,
        "price_per_hour": 2.0,
        "runs": 500,
    }
    a = models.simulate_spot(**kw, seed=7)
    b = models.simulate_spot(**kw, seed=7)
    c = models.simulate_spot(**kw, seed=8)
    np.testing.assert_array_equal(a.hours, b.hours)
    assert not np.array_equal(a.hours, c.hours)
    # Every run: hours = work 5 + 4 checkpoints * 0.1 + lost work + interruptions * 0.3; cost = 2 * hours.
    np.testing.assert_allclose(a.hours, 5.4 + a.lost_work + 0.3 * a.interruptions)
    np.testing.assert_allclose(a.cost, 2.0 * a.hours)
    assert a.interruptions.max() > 0


# ---------------------------------------------------------------------------------------------------------
# Checkpoint interval
# ---------------------------------------------------------------------------------------------------------


def test_young_formula_by_hand():
    # sqrt(2 * 0.02 / 0.1) = sqrt(0.4) = 0.632456 h.
    assert models.optimal_checkpoint_interval(0.02, 0.1) == pytest.approx(0.6324555320336759)
    assert models.optimal_checkpoint_interval(0.02, 0.0) == math.inf


def test_daly_refinement_by_hand():
    # M = 10, C = 0.1: sqrt(2 C M) = sqrt(2) = 1.414214, C/(2M) = 0.005, sqrt(0.005) = 0.0707107.
    # 1.414214 * (1 + 0.0707107/3 + 0.005/9) - 0.1 = 1.414214 * 1.0241258 - 0.1 = 1.348333.
    assert models.optimal_checkpoint_interval(0.1, 0.1, method="daly") == pytest.approx(1.348333, rel=1e-6)
    # C >= 2M: Daly says checkpoint every M = 1/lambda = 2 h.
    assert models.optimal_checkpoint_interval(5.0, 0.5, method="daly") == pytest.approx(2.0)
    with pytest.raises(ValueError):
        models.optimal_checkpoint_interval(0.1, 0.1, method="guess")  # type: ignore[arg-type]


def test_numeric_optimum_close_to_young_when_checkpoints_are_cheap():
    # C = 0.01 h (36 s) << M = 10 h. Young: sqrt(0.2) = 0.447 h; the exact optimum is ~0.4405 (Daly).
    young = models.optimal_checkpoint_interval(0.01, 0.1)
    daly = models.optimal_checkpoint_interval(0.01, 0.1, method="daly")
    best = models.best_checkpoint_interval(100, 0.1, 0.01)
    assert best == pytest.approx(young, rel=0.03)
    assert abs(best - daly) < abs(best - young)

    def hours(tau: float) -> float:
        return models.spot_expected(100, 0.1, tau, 0.01).expected_hours

    assert hours(best) <= hours(young)
    assert hours(best) <= min(hours(best * 0.9), hours(best * 1.1))


def test_best_interval_with_grid_picks_the_cheapest_candidate():
    grid = np.array([0.1, 0.5, 2.0, 10.0])
    best = models.best_checkpoint_interval(100, 0.1, 0.01, grid=grid)
    assert best == 0.5  # nearest candidate to the ~0.44 h optimum
    with pytest.raises(ValueError):
        models.best_checkpoint_interval(100, 0.1, 0.01, grid=np.array([0.0, 1.0]))


def test_best_interval_without_interruptions_is_never_checkpoint():
    assert models.best_checkpoint_interval(12, 0.0, 0.1) == 12.0


# ---------------------------------------------------------------------------------------------------------
# Commitments
# ---------------------------------------------------------------------------------------------------------


def test_commitment_is_paid_for_the_whole_term():
    # $1/h on demand, 60% discount, 1 year = 8760 h: 1 * 0.4 * 8760 = $3504, whether used 100 h or 8760 h.
    assert models.commitment_cost(1.0, 100, 8760, 0.6) == pytest.approx(3504.0)
    assert models.commitment_cost(1.0, 8760, 8760, 0.6) == pytest.approx(3504.0)
    # Upfront share changes cash flow, not the undiscounted total.
    assert models.commitment_cost(1.0, 100, 8760, 0.6, upfront_fraction=1.0) == pytest.approx(3504.0)


def test_commitment_usage_beyond_the_term_is_on_demand():
    # 1000 h needed on a 800 h term at $2/h, 50% off: 2 * 0.5 * 800 + 2 * 200 = 800 + 400 = $1200.
    assert models.commitment_cost(2.0, 1000, 800, 0.5) == pytest.approx(1200.0)


def test_breakeven_utilisation():
    # 60% discount: commitment = 0.4 * T * price, equal to on-demand at 40% utilisation.
    assert models.breakeven_utilisation(0.6) == pytest.approx(0.4)
    assert models.breakeven_utilisation(0.3) == pytest.approx(0.7)
    term = 8760
    used = models.breakeven_utilisation(0.6) * term
    assert models.commitment_cost(1.0, used, term, 0.6) == pytest.approx(1.0 * used)
    with pytest.raises(ValueError):
        models.breakeven_utilisation(1.0)


def test_commitment_rejects_bad_upfront_fraction():
    with pytest.raises(ValueError):
        models.commitment_cost(1.0, 10, 100, 0.3, upfront_fraction=1.5)


def test_purchase_options_sorted_with_hand_costs():
    # od $2/h, spot $0.6/h, 1000 h needed, 2000 h term.
    # on-demand 2 * 1000 = 2000; spot (no interruptions) 0.6 * 1000 = 600;
    # 40% off: 2 * 0.6 * 2000 = 2400; 60% off: 2 * 0.4 * 2000 = 1600.
    rows = models.compare_purchase_options(2.0, 0.6, 1000, 2000, {"commit-40": 0.4, "commit-60": 0.6})
    assert [r.name for r in rows] == ["spot", "commit-60", "on-demand", "commit-40"]
    assert [r.cost for r in rows] == pytest.approx([600, 1600, 2000, 2400])
    assert all(r.hours == pytest.approx(1000) for r in rows)
    assert "50%" in rows[1].note and "40%" in rows[1].note  # utilisation 1000/2000 vs break-even 1 - 0.6


def test_purchase_options_spot_needs_checkpoints_for_long_jobs():
    base = (2.0, 0.6, 1000, 2000, {"commit-60": 0.6})
    # No checkpoints: one 1000 h segment at lambda = 0.1 -> astronomically long; spot ranks last.
    bare = models.compare_purchase_options(*base, spot_rate_per_hour=0.1)
    assert bare[-1].name == "spot"
    # Hourly checkpoints (C = 0.05 h): ~999 * 10 * (e^0.105 - 1) + 1.05 = 1107.1 h -> 0.6 * 1107.1 = $664.
    ckpt = models.compare_purchase_options(
        *base, spot_rate_per_hour=0.1, checkpoint_interval_h=1.0, checkpoint_cost_h=0.05
    )
    spot = ckpt[0]
    assert spot.name == "spot"
    assert spot.hours == pytest.approx(999 * 10 * math.expm1(0.105) + 10 * math.expm1(0.1))
    assert spot.cost == pytest.approx(0.6 * spot.hours)


# ---------------------------------------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------------------------------------


def test_daily_traffic_shape():
    rps = models.daily_traffic(1000, 200, hours=24, steps_per_hour=4, peak_hour=14)
    assert rps.shape == (96,)
    assert rps[14 * 4] == pytest.approx(1000)  # peak at 14:00
    assert rps[2 * 4] == pytest.approx(200)  # trough 12 h earlier, 02:00
    assert rps.min() == pytest.approx(200) and rps.max() == pytest.approx(1000)
    # A full cosine period sampled evenly averages to the midpoint (200 + 1000) / 2 = 600.
    assert rps.mean() == pytest.approx(600)


def test_replicas_needed_ceil_and_clip():
    # capacity 100 rps at 70% target -> 70 rps per replica: 0 -> 0 (clipped to 1), 69 -> 1, 70 -> 1,
    # 71 -> 2, 141 -> ceil(2.014) = 3, 1000 -> ceil(14.29) = 15 (clipped to 10 below).
    rps = np.array([0, 69, 70, 71, 141, 1000])
    np.testing.assert_array_equal(models.replicas_needed(rps, 100), [1, 1, 1, 2, 3, 15])
    np.testing.assert_array_equal(models.replicas_needed(rps, 100, max_replicas=10), [1, 1, 1, 2, 3, 10])
    np.testing.assert_array_equal(models.replicas_needed(rps, 100, min_replicas=2), [2, 2, 2, 2, 3, 15])
    assert models.replicas_needed(rps, 100).dtype.kind == "i"


def test_replicas_needed_ignores_float_noise():
    # 2.1 / (3 * 0.7) = 1.0000000000000002 in floats; the answer is 1 replica, not 2.
    assert int(models.replicas_needed(2.1, 3, target_utilisation=0.7)) == 1


def test_fleet_cost():
    # (2 + 3 + 5) replica-steps * $0.5/h * 0.25 h = $1.25.
    assert models.fleet_cost(np.array([2, 3, 5]), 0.5, 0.25) == pytest.approx(1.25)


def test_compare_fleets_step_curve():
    # 12 h at 100 rps then 12 h at 300 rps, 1 h steps, 100 rps/replica at 100% target, $1/h.
    # Fixed: 3 replicas * 24 h = $72. Autoscaled: 12 * 1 + 12 * 3 = $48 -> savings 1 - 48/72 = 1/3.
    traffic = np.array([100.0] * 12 + [300.0] * 12)
    cmp = models.compare_fleets(traffic, 100, 1.0, 1.0, target_utilisation=1.0)
    assert cmp.fixed_replicas == 3
    assert cmp.fixed_cost == pytest.approx(72)
    assert cmp.autoscaled_cost == pytest.approx(48)
    assert cmp.savings_fraction == pytest.approx(1 / 3)
    assert cmp.overloaded_steps == 0


def test_compare_fleets_delay_causes_overload():
    # Same curve, 2-step lag: steps 12 and 13 still run 1 replica for 300 rps -> 2 overloaded steps.
    # Cost: 14 * 1 + 10 * 3 = $44 -> savings 1 - 44/72 = 0.3889.
    traffic = np.array([100.0] * 12 + [300.0] * 12)
    cmp = models.compare_fleets(traffic, 100, 1.0, 1.0, target_utilisation=1.0, scale_up_delay_steps=2)
    assert cmp.overloaded_steps == 2
    assert cmp.autoscaled_cost == pytest.approx(44)
    assert cmp.savings_fraction == pytest.approx(1 - 44 / 72)
    np.testing.assert_array_equal(cmp.autoscaled_replicas[11:15], [1, 1, 1, 3])


def test_compare_fleets_on_a_daily_curve_saves_money_without_overload():
    traffic = models.daily_traffic(1000, 100)
    cmp = models.compare_fleets(traffic, 100, 0.5, 0.25)
    # Peak 1000 rps / 70 rps per replica -> ceil(14.29) = 15 replicas; fixed = 15 * 96 * 0.5 * 0.25 = $180.
    assert cmp.fixed_replicas == 15
    assert cmp.fixed_cost == pytest.approx(180)
    assert 0.3 < cmp.savings_fraction < 0.5  # average load is ~55% of peak
    assert cmp.overloaded_steps == 0


# ---------------------------------------------------------------------------------------------------------
# M/M/c queue: Erlang C, mean and quantile response time, fleet sizing
# ---------------------------------------------------------------------------------------------------------


def _erlang_c_textbook(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_by_hand():
    # a = 2, c = 3: B1 = 2/3, B2 = (4/3)/(2 + 4/3) = 0.4, B3 = 0.8/3.8 = 4/19;
    # C = 3 * (4/19) / (3 - 2 * 15/19) = (12/19) / (27/19) = 4/9.
    assert models.erlang_c(2, 1, 3) == pytest.approx(4 / 9, rel=1e-12)
    # M/M/1: C = rho.
    assert models.erlang_c(0.3, 1, 1) == pytest.approx(0.3)
    assert models.erlang_c(5, 1, 7) == pytest.approx(_erlang_c_textbook(5, 1, 7), rel=1e-12)


def test_erlang_c_unstable_and_large_fleets():
    assert models.erlang_c(3, 1, 3) == 1.0
    assert models.erlang_c(4, 1, 3) == 1.0
    # 450 erlangs on 500 servers: factorials would overflow a float; the recursion stays in [0, 1].
    value = models.erlang_c(450, 1, 500)
    assert 0.0 < value < 0.1


def test_mean_response_time():
    # M/M/1, lambda = 0.5, mu = 1: 1 / (mu - lambda) = 2. Via the formula: 0.5 / 0.5 + 1 = 2.
    assert models.mean_response_time(0.5, 1, 1) == pytest.approx(2.0)
    # lambda = 2, mu = 1, c = 3: (4/9) / (3 - 2) + 1 = 13/9.
    assert models.mean_response_time(2, 1, 3) == pytest.approx(13 / 9)
    assert models.mean_response_time(3, 1, 3) == math.inf


def test_quantile_mm1_closed_form():
    # M/M/1 response time is Exp(mu - lambda): p95 = -ln(0.05) / 0.5 = 5.991465.
    assert models.response_time_quantile(0.5, 1, 1, q=0.95) == pytest.approx(-math.log(0.05) / 0.5, rel=1e-9)


def test_quantile_equal_rates_case():
    # lambda = 1, mu = 1, c = 2 -> theta = c mu - lambda = 1 = mu. C = 1/3 (B2 = 0.2, C = 0.4 / 1.2).
    # Tail = e^{-t} (1 + C t); at the p95 it must equal 0.05.
    t = models.response_time_quantile(1, 1, 2)
    assert math.exp(-t) * (1 + t / 3) == pytest.approx(0.05, rel=1e-9)
    # Continuity: a tiny perturbation of mu (theta != mu branch) gives nearly the same answer.
    assert models.response_time_quantile(1, 1 + 1e-9, 2) == pytest.approx(t, rel=1e-6)


@pytest.mark.parametrize(("lam", "mu", "c"), [(8, 1, 9), (8, 1, 12), (2, 1, 3), (1.5, 1, 2), (0.5, 2, 1)])
def test_quantile_matches_sampled_response_times(lam, mu, c):
    rng = np.random.default_rng(0)
    n = 200_000
    wait_prob = models.erlang_c(lam, mu, c)
    waits = np.where(rng.random(n) < wait_prob, rng.exponential(1 / (c * mu - lam), n), 0.0)
    samples = waits + rng.exponential(1 / mu, n)
    sampled_p95 = np.quantile(samples, 0.95)
    assert models.response_time_quantile(lam, mu, c, q=0.95) == pytest.approx(sampled_p95, rel=0.02)


def test_quantile_monotone_in_servers_and_bounded_by_service_time():
    values = [models.response_time_quantile(8, 1, c) for c in range(9, 20)]
    assert np.all(np.diff(values) < 0)
    assert values[-1] > -math.log(0.05)  # no fleet beats the service time's own p95 = 2.9957
    assert models.response_time_quantile(8, 1, 8) == math.inf


def test_min_replicas_for_latency_is_the_smallest_fleet():
    # lambda = 8/s, mu = 1/s, p95 <= 4 s: c = 9 gives 4.34 s, c = 10 gives 3.33 s.
    c = models.min_replicas_for_latency(8, 1, 4.0)
    assert c == 10
    assert models.response_time_quantile(8, 1, c) <= 4.0 < models.response_time_quantile(8, 1, c - 1)


@pytest.mark.parametrize(("lam", "mu", "target", "q"), [(100, 1, 3.5, 0.95), (40, 2, 3.0, 0.99), (0.1, 1, 5, 0.9)])
def test_min_replicas_for_latency_c_minus_one_fails(lam, mu, target, q):
    c = models.min_replicas_for_latency(lam, mu, target, q=q)
    assert models.response_time_quantile(lam, mu, c, q) <= target
    if c > 1:
        assert models.response_time_quantile(lam, mu, c - 1, q) > target


def test_min_replicas_for_latency_impossible_target():
    # The p95 of the service time alone is -ln(0.05) / 1 = 3.0 s; a 2 s target is unreachable.
    with pytest.raises(ValueError):
        models.min_replicas_for_latency(1, 1, 2.0)
    with pytest.raises(ValueError):
        models.min_replicas_for_latency(50, 1, 10.0, max_replicas=40)  # 40 servers cannot carry 50 erlangs
