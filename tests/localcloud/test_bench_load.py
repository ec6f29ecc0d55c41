"""The load test (labcloud.bench_load) counts and reports what it did: its open loop on its own, then a short run
of every scenario against a local cloud of its own."""

import re
import threading

import pytest

from labcloud import bench_load
from labcloud.bench_load import LoadResult, Plan, request_count, run_schedule

RATE, DURATION_S = 100, 0.5


def test_the_open_loop_sends_every_request_when_due_and_counts_its_failures():
    def every_third_fails(i: int) -> None:
        if i % 3 == 0:
            raise ValueError(f"request {i}")

    calls = bench_load.open_loop(every_third_fails, RATE, DURATION_S, workers=8)
    row = LoadResult("test", "S3", RATE, calls)
    assert row.sent == request_count(RATE, DURATION_S) == 50
    assert (row.ok, row.errors) == (33, 17)
    assert row.error_kinds() == {"ValueError": 17}
    assert row.verdict == "errors"
    assert [call.due for call in calls] == [i / RATE for i in range(50)]
    assert all(call.sent >= call.due for call in calls)  # never early
    assert 0 < row.achieved_rate <= row.ok * RATE / row.sent + 1e-9


def test_a_slow_answer_does_not_hold_back_the_next_requests():
    # Each request waits until all of them have been sent: a loop that waited for answers would never get there.
    count, sent, everyone = 4, [], threading.Event()

    def wait_for_the_others(i: int) -> None:
        sent.append(i)
        if len(sent) == count:
            everyone.set()
        if not everyone.wait(timeout=30):
            raise TimeoutError("the next request was not sent")

    row = LoadResult("test", "S3", 10, run_schedule(wait_for_the_others, [i / 100 for i in range(count)], workers=4))
    assert (row.ok, row.errors) == (count, 0)


def test_requests_unanswered_or_unsent_after_the_drain_are_errors():
    # two threads, both held until the drain is over: two requests never answer, the third is never sent
    release = threading.Event()
    calls = run_schedule(lambda i: release.wait(timeout=30), [0.0, 0.0, 0.0], workers=2, drain_s=0.2)
    release.set()
    assert [call.error for call in calls] == ["no answer in time"] * 2 + ["not sent in time"]
    assert LoadResult("test", "Lambda warm", None, calls).verdict == "errors"


@pytest.mark.slow
def test_a_short_run_of_every_scenario_counts_and_reports(saved_environment):
    plan = Plan(duration_scale=0.05, rate_scale=0.05)  # 3 s of SageMaker at 10/s, 1.5 s of S3 at 25/s, ...
    rows = bench_load.run(plan)
    assert [row.error for row in rows] == [None] * 8
    expected = [
        request_count(plan.rate(bench_load.SAGEMAKER_RATE), plan.duration(bench_load.SAGEMAKER_DURATION_S)),
        request_count(plan.rate(bench_load.SAGEMAKER_RATE) * 2, plan.duration(bench_load.SAGEMAKER_DURATION_S)),
        request_count(plan.rate(bench_load.S3_RATE), plan.duration(bench_load.S3_DURATION_S)),
        request_count(plan.rate(bench_load.S3_RATE) * 2, plan.duration(bench_load.S3_DURATION_S)),
        *[plan.parallel(bench_load.LAMBDA_PARALLEL)] * 2,
        *[plan.parallel(bench_load.LAMBDA_PARALLEL) * 2] * 2,
    ]
    assert [row.sent for row in rows] == expected
    assert [row.ok for row in rows] == expected  # a low rate: every answer checked and right
    assert [row.target_rate for row in rows[:4]] == [10, 20, 25, 50]
    assert all(row.latency_percentile(50) <= row.latency_percentile(99) for row in rows)

    table = bench_load.table_lines(rows)
    assert len(table) == 2 + len(rows)  # header, rule, one line a row
    for line, row in zip(table[2:], rows, strict=True):
        assert line.startswith(row.scenario) and line.endswith(row.verdict)
        assert re.search(rf"\s{row.sent}\s+{row.ok}\s+{row.errors}\s", line), line


def test_only_runs_the_scenario_named(saved_environment, capsys):
    assert bench_load.main(["--only", "s3-put-get", "--duration-scale", "0.02", "--rate-scale", "0.05"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in table[2:4]] == ["S3 put/get 1 KiB (alternating)"] * 2
    assert not any(line.startswith(("SageMaker", "Lambda")) for line in table)
