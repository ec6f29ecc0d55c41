"""Load test of the local cloud: how much traffic it takes on this machine, and what breaks first when it gets more.

Run as `python -m labcloud.bench_load` (`make load`); it starts a local cloud of its own (temporary state folder,
free loopback port, never the learner's) and prints one table. Scenarios, each through boto3 as a notebook calls it:

- SageMaker: an endpoint of the tiny linear model (bench_services.INFERENCE_SCRIPT) on two instances, deployed with
  the sagemaker SDK, driven with InvokeEndpoint at 200 invocations/s for 60 s; every answer is checked;
- S3: put_object (1 KiB, new keys) and get_object (keys written before the run) alternating, 500 requests/s for 30 s;
- Lambda: 20 invocations at once of a new function (every one a cold start: a worker process each), then 20 at once
  again (warm workers).
Then each again at double the rate (or twice as many at once), and the table says what broke first: `errors` (more
than 1% of the requests failed), `rate not reached` (answers came back slower than the requests were due, by more
than 5%), `latency` (p99 over the scenario's budget), or `holds`.

How load is made: an open loop. Requests are due on a fixed schedule (i / rate); a pool of WORKERS threads sends
each as soon as it is due and a thread is free. A slow answer does not push the schedule back (a closed loop would
then quietly send less), so latency is counted from when a request was due, not from when it was sent: time spent
waiting for a free thread is part of what a client would see. `late` is the share of requests sent more than
LATE_S after they were due: a high value with few errors means the generator itself, which shares this machine's
cores with the local cloud (boto3 costs about a millisecond of CPU per call), could not keep up: on a laptop or
a 2-core runner that limit can come before the local cloud's own.

Bounds: every run is a fixed number of requests (rate x duration, or the burst's size); each request has botocore's
timeouts (REQUEST_TIMEOUT_S, no retries); after the schedule, answers are awaited at most DRAIN_S, and the ones
still missing count as errors ("no answer in time", or "not sent in time" for those the generator had not got to
by then: it fell that far behind). Loopback only. Lambda runs with a concurrency limit of
`--lambda-concurrency` (default 1,000, the usual account quota; a new AWS account has 10, the local cloud's default,
which would throttle half of a burst of 20).

Options: `--only s3-put-get` runs one scenario (repeatable), `--duration-scale 0.1` shortens every run (a smoke
test), `--rate-scale` lowers every rate and burst.
It exits 0 when it could run every scenario, whatever their verdicts (it is a report), 1 when one could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from .bench import Lab, aws_client, machine_note, sigterm_as_exit
from .connect import local_environment

SAGEMAKER_RATE, SAGEMAKER_DURATION_S, SAGEMAKER_INSTANCES = 200, 60, 2
S3_RATE, S3_DURATION_S, S3_OBJECT_BYTES, S3_READ_KEYS = 500, 30, 1024, 100
LAMBDA_PARALLEL = 20
OVERLOAD = 2  # the second run of each scenario: this many times the rate (or the burst)
WORKERS = 64  # generator threads: at most this many requests in flight
REQUEST_TIMEOUT_S = 10
DRAIN_S = 30
LATE_S = 0.1
ERROR_BUDGET = 0.01
RATE_TOLERANCE = 0.95
LATENCY_BUDGET_S = {"SageMaker": 0.5, "S3": 0.5, "Lambda cold": 15.0, "Lambda warm": 1.0}
DEFAULT_LAMBDA_CONCURRENCY = 1000
LAMBDA_CONCURRENCY_VARIABLE = "LABCLOUD_LAMBDA_CONCURRENCY"  # read by localcloud/aws/services/awslambda.py


@dataclass(frozen=True)
class Call:
    """One request: when it was due, sent and answered (seconds from the run's start), and its error if it failed."""

    due: float
    sent: float | None = None
    answered: float | None = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.answered - self.due


@dataclass
class LoadResult:
    """One row of the table: a scenario run at one rate (or one burst)."""

    scenario: str
    kind: str  # the latency budget's key
    target_rate: float | None  # requests/s asked for; None for a burst (all at once)
    calls: list[Call] = field(default_factory=list)
    error: str | None = None  # the scenario could not run at all

    @property
    def sent(self) -> int:
        return len(self.calls)

    @property
    def ok(self) -> int:
        return sum(1 for call in self.calls if call.error is None)

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    @property
    def elapsed_s(self) -> float:
        """From the first request's due time to the last answer (or the last due time, if that came later)."""
        ends = [call.answered for call in self.calls if call.answered is not None]
        return max([*ends, *(call.due for call in self.calls)], default=0.0)

    @property
    def achieved_rate(self) -> float | None:
        """Answered requests per second over the run. For an open loop whose answers keep up, the target rate."""
        if self.target_rate is None or not self.calls:
            return None
        # a run of n requests due 1/rate apart spans n/rate: the last one is due at (n-1)/rate
        span = max(self.elapsed_s, self.sent / self.target_rate)
        return self.ok / span

    def latency_percentile(self, percent: float) -> float | None:
        latencies = [call.latency for call in self.calls if call.error is None]
        return float(np.percentile(latencies, percent)) if latencies else None

    @property
    def late_share(self) -> float:
        late = sum(1 for call in self.calls if call.sent is None or call.sent - call.due > LATE_S)
        return late / self.sent if self.sent else 0.0

    @property
    def verdict(self) -> str:
        """What broke first, in the order a learner notices it: failures, then throughput, then slowness."""
        if self.error is not None or not self.calls:
            return "could not run"
        if self.errors > ERROR_BUDGET * self.sent:
            return "errors"
        if self.target_rate is not None and self.achieved_rate < RATE_TOLERANCE * self.target_rate:
            return "rate not reached"
        if self.latency_percentile(99) > LATENCY_BUDGET_S[self.kind]:
            return "latency"
        return "holds"

    def error_kinds(self) -> Counter:
        return Counter(call.error for call in self.calls if call.error is not None)


def error_name(exc: Exception) -> str:
    """AWS's error code for a ClientError (ThrottlingException, ModelError...), else the exception's type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code"):
        return response["Error"]["Code"]
    return type(exc).__name__


def run_schedule(send: Callable[[int], None], due: list[float], workers: int, drain_s: float = DRAIN_S) -> list[Call]:
    """Send request i (`send(i)`, which raises when it fails) at `due[i]` seconds from now, on a pool of `workers`
    threads, never waiting for an answer before the next send; then wait for the answers, at most `drain_s`."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
    start = time.perf_counter()

    def one(i: int) -> Call:
        sent = time.perf_counter() - start
        try:
            send(i)
            error = None
        except Exception as exc:  # the request failed: counted, never raised out of the load test
            error = error_name(exc)
        return Call(due[i], sent, time.perf_counter() - start, error)

    futures = []
    try:
        for i, when in enumerate(due):
            delay = start + when - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i))
        wait(futures, timeout=drain_s)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [_outcome(future, due[i]) for i, future in enumerate(futures)]


def _outcome(future, due: float) -> Call:
    """The call a future ran; for one that never started (the pool was still busy at the end) or never answered
    within the drain, a failed call that says which."""
    if future.cancelled():
        return Call(due, error="not sent in time")
    if not future.done():
        return Call(due, error="no answer in time")
    return future.result()


def request_count(rate: float, duration_s: float) -> int:
    return max(1, round(rate * duration_s))


def open_loop(send: Callable[[int], None], rate: float, duration_s: float, workers: int = WORKERS) -> list[Call]:
    """`send(i)` due every 1/rate seconds for `duration_s` (see run_schedule)."""
    return run_schedule(send, [i / rate for i in range(request_count(rate, duration_s))], workers)


def burst(send: Callable[[int], None], count: int) -> list[Call]:
    """`count` requests all due at once, each on a thread of its own."""
    return run_schedule(send, [0.0] * count, workers=count)


@dataclass(frozen=True)
class Plan:
    """How big the runs are: the scenario's nominal sizes times the scales (from the command line)."""

    duration_scale: float = 1.0
    rate_scale: float = 1.0

    def rate(self, nominal: float) -> float:
        return nominal * self.rate_scale

    def duration(self, nominal: float) -> float:
        return nominal * self.duration_scale

    def parallel(self, nominal: int) -> int:
        return max(1, round(nominal * self.rate_scale))


def _client(lab: Lab, service: str):
    """boto3 for the load: a connection pool as large as the generator, botocore's timeouts, no retries."""
    env = local_environment(lab.cloud)
    options = {"max_pool_connections": WORKERS, "connect_timeout": REQUEST_TIMEOUT_S, "read_timeout": REQUEST_TIMEOUT_S}
    return aws_client(service, env, **options)


# --- scenarios: each returns its rows, the nominal run first and then the overload -----------------------------


def sagemaker_endpoint(lab: Lab, plan: Plan) -> list[LoadResult]:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    from .bench_services import connect_sdks, linear_model

    connect_sdks(lab)
    predictor = linear_model(lab).deploy(
        initial_instance_count=SAGEMAKER_INSTANCES,
        instance_type="ml.m5.large",
        endpoint_name="load-endpoint",
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    runtime = _client(lab, "sagemaker-runtime")

    def invoke(i: int) -> None:
        x = float(i % 100)
        body = json.dumps({"inputs": [x, 1.0]})
        answer = runtime.invoke_endpoint(
            EndpointName=predictor.endpoint_name, ContentType="application/json", Body=body
        )
        score = json.loads(answer["Body"].read())["score"]
        if abs(score - (0.5 * x - 0.25 + 0.1)) > 1e-9:  # the weights upload_model wrote
            raise ValueError(f"wrong prediction {score} for input {x}")

    rows = []
    for factor in (1, OVERLOAD):
        rate = plan.rate(SAGEMAKER_RATE) * factor
        name = f"SageMaker invoke, {SAGEMAKER_INSTANCES} instances"
        rows.append(LoadResult(name, "SageMaker", rate, open_loop(invoke, rate, plan.duration(SAGEMAKER_DURATION_S))))
    predictor.delete_endpoint()
    return rows


def s3_put_get(lab: Lab, plan: Plan) -> list[LoadResult]:
    s3 = _client(lab, "s3")
    bucket, body = "load-s3", os.urandom(S3_OBJECT_BYTES)
    s3.create_bucket(Bucket=bucket)
    for key in range(S3_READ_KEYS):
        s3.put_object(Bucket=bucket, Key=f"read/{key}", Body=body)

    def put_or_get(i: int) -> None:
        if i % 2 == 0:
            s3.put_object(Bucket=bucket, Key=f"write/{i}", Body=body)
        elif s3.get_object(Bucket=bucket, Key=f"read/{i % S3_READ_KEYS}")["Body"].read() != body:
            raise ValueError("get_object answered other bytes than were put")

    rows = []
    for factor in (1, OVERLOAD):
        rate = plan.rate(S3_RATE) * factor
        calls = open_loop(put_or_get, rate, plan.duration(S3_DURATION_S))
        rows.append(LoadResult("S3 put/get 1 KiB (alternating)", "S3", rate, calls))
    return rows


def lambda_parallel(lab: Lab, plan: Plan) -> list[LoadResult]:
    from .bench_services import connect_sdks, create_echo_function

    connect_sdks(lab)  # the execution role comes from the wiring, as in a notebook
    client = _client(lab, "lambda")
    rows = []
    for factor in (1, OVERLOAD):
        count = plan.parallel(LAMBDA_PARALLEL) * factor
        name = create_echo_function(client, f"load-fn-{count}")  # a new function: no worker yet

        def invoke(i: int, name=name) -> None:
            answer = client.invoke(FunctionName=name, Payload=json.dumps({"i": i}))
            payload = json.loads(answer["Payload"].read())
            if answer.get("FunctionError"):
                raise RuntimeError(f"FunctionError {answer['FunctionError']}: {payload}")
            if payload != {"echo": {"i": i}}:
                raise ValueError(f"wrong answer {payload}")

        for temperature in ("cold", "warm"):  # the second burst finds the workers the first one started
            calls = burst(invoke, count)
            rows.append(LoadResult(f"Lambda {count} at once, {temperature}", f"Lambda {temperature}", None, calls))
    return rows


Scenario = Callable[[Lab, Plan], list[LoadResult]]
SCENARIOS: list[Scenario] = [sagemaker_endpoint, s3_put_get, lambda_parallel]


def scenario_name(scenario: Scenario) -> str:
    return scenario.__name__.replace("_", "-")


def run(
    plan: Plan, lambda_concurrency: int = DEFAULT_LAMBDA_CONCURRENCY, scenarios: list[Scenario] = SCENARIOS
) -> list[LoadResult]:
    """The scenarios against a local cloud of their own, started for this run and stopped after it."""
    # the local cloud reads its Lambda limit when it starts: set it before the lab starts its cloud
    saved = os.environ.get(LAMBDA_CONCURRENCY_VARIABLE)
    os.environ[LAMBDA_CONCURRENCY_VARIABLE] = str(lambda_concurrency)
    lab = Lab()
    try:
        return [row for scenario in scenarios for row in _run_scenario(scenario, lab, plan)]
    finally:
        lab.close()
        if saved is None:
            os.environ.pop(LAMBDA_CONCURRENCY_VARIABLE, None)
        else:
            os.environ[LAMBDA_CONCURRENCY_VARIABLE] = saved


def _run_scenario(scenario: Scenario, lab: Lab, plan: Plan) -> list[LoadResult]:
    """The scenario's rows; one `could not run` row if it failed before it had measured (traceback on stderr)."""
    title = scenario.__name__.replace("_", " ")
    print(f"load: {title} ...", file=sys.stderr, flush=True)
    try:
        return scenario(lab, plan)
    except Exception as exc:
        traceback.print_exc()
        return [LoadResult(title, "", None, error=f"{type(exc).__name__}: {exc}")]


# --- the report --------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _target(row: LoadResult) -> str:
    return f"{row.sent} at once" if row.target_rate is None else f"{row.target_rate:.0f}/s"


def table_lines(rows: list[LoadResult]) -> list[str]:
    header = ("scenario", "target", "sent", "ok", "errors", "achieved", "p50", "p99", "late", "verdict")
    cells = [header]
    for row in rows:
        achieved = row.achieved_rate
        cells.append(
            (
                row.scenario,
                _target(row),
                str(row.sent),
                str(row.ok),
                str(row.errors),
                "-" if achieved is None else f"{achieved:.0f}/s",
                _ms(row.latency_percentile(50)),
                _ms(row.latency_percentile(99)),
                f"{row.late_share:.0%}",
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        rest = (cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))
        return "  ".join([line[0].ljust(widths[0]), *rest]).rstrip()

    lines = [render(line) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def findings(rows: list[LoadResult]) -> list[str]:
    """One line per row that did not hold: what broke, and the errors by kind."""
    lines = []
    for row in rows:
        if row.error is not None:
            lines.append(f"{row.scenario}: could not run: {row.error}")
        elif row.verdict != "holds":
            kinds = ", ".join(f"{kind} x{n}" for kind, n in row.error_kinds().most_common(3))
            lines.append(f"{row.scenario} at {_target(row)}: {row.verdict}" + (f" ({kinds})" if kinds else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labcloud-load", description="Load-test the local cloud on this machine.")
    parser.add_argument("--duration-scale", type=float, default=1.0, help="multiply every run's duration (0.1: smoke)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate and burst size")
    parser.add_argument("--lambda-concurrency", type=int, default=DEFAULT_LAMBDA_CONCURRENCY)
    names = {scenario_name(scenario): scenario for scenario in SCENARIOS}
    parser.add_argument("--only", choices=names, action="append", help="run this scenario (repeatable); default all")
    args = parser.parse_args(argv)
    if args.duration_scale <= 0 or args.rate_scale <= 0:
        parser.error("scales must be positive")
    began = time.perf_counter()
    with sigterm_as_exit():
        chosen = [names[name] for name in args.only] if args.only else SCENARIOS
        rows = run(Plan(args.duration_scale, args.rate_scale), args.lambda_concurrency, chosen)
    print("\n".join(table_lines(rows)))
    print("\n".join(findings(rows)) or "every scenario held at both rates")
    budgets = ", ".join(f"{kind} {_ms(budget)}" for kind, budget in LATENCY_BUDGET_S.items())
    print(
        f"open loop from {WORKERS} threads; latency from when a request was due; late: sent > {LATE_S * 1000:.0f} ms"
        f" after it was due; verdict: errors > {ERROR_BUDGET:.0%}, achieved < {RATE_TOLERANCE:.0%} of target,"
        f" p99 over budget ({budgets}); Lambda concurrency limit {args.lambda_concurrency}"
    )
    print(f"{machine_note()}; load test took {time.perf_counter() - began:.0f} s")
    return 1 if any(row.error is not None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
