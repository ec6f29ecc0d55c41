"""Measure the local cloud against the performance budget in DESIGN.md, and print one table.

What is measured, each in a temporary state folder on a free port (never the learner's `~/.labcloud`):

- cold start: `control.start` of a fresh state folder until the health check answers (budget 1.5 s), and the
  `control.stop` that follows (saving state; reported, no budget);
- warm restart: the same start with saved state to restore (a bucket of 50 objects; budget 1.5 s);
- S3 put_object / get_object of 1 KiB through boto3 on loopback (budget 10 ms median each), side by side with
  a plain moto `ThreadedMotoServer` in this process: the ratio is what our gateway (request classification,
  the moto lock, metering, snapshots) adds to moto itself;
- SQS send_message + receive_message as one round trip (budget 10 ms median), with the same moto ratio;
- the health check, `GET /_labcloud/health` through urllib (reported, no budget).

Why medians: a laptop or CI runner is noisy (other processes, frequency scaling, the first call of a code
path), and one slow sample says more about the machine than about the local cloud. The median of repeated
runs is stable under that noise; p90 shows the tail where there are enough samples to have one. Ratios to
moto are measured in the same run, in alternating blocks, so both sides see the same machine state.

The in-process moto shares this process's GIL with the boto3 client, while the local cloud is a process of
its own; on a machine with several cores that handicaps the baseline slightly, so the ratio is a lower bound.

Run as `python -m labcloud.bench` (`make bench`). It exits 0 even when a budget is missed, since it is a
report; `--strict` exits 1 when any row is over budget or could not be measured.

To add a measurement, write a function `(Lab) -> list[Row]` and append it to `MEASUREMENTS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .connect import local_environment
from .localcloud import control
from .localcloud.state import ServerInfo

COLD_STARTS = 5
WARM_RESTARTS = 3
WARM_OBJECTS = 50
S3_ITERATIONS, S3_WARMUP = 200, 20
SQS_ITERATIONS, SQS_WARMUP = 100, 10
HEALTH_ITERATIONS, HEALTH_WARMUP = 100, 5
BLOCK = 20  # iterations per side before switching between the local cloud and moto
P90_MIN_SAMPLES = 5  # below this a p90 is just the slowest sample
P99_MIN_SAMPLES = 100

START_BUDGET_S = 1.5
REQUEST_BUDGET_S = 0.010


@dataclass
class Row:
    """One line of the report: samples in seconds; the budget applies to their median."""

    metric: str
    samples: list[float]
    budget: float | None = None
    baseline: list[float] | None = None  # what the row is compared with, measured side by side (see /base)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float | None:
        return float(np.percentile(self.samples, 90)) if len(self.samples) >= P90_MIN_SAMPLES else None

    @property
    def p99(self) -> float | None:
        return float(np.percentile(self.samples, 99)) if len(self.samples) >= P99_MIN_SAMPLES else None

    @property
    def over_budget(self) -> bool:
        return self.error is not None or (self.budget is not None and self.median > self.budget)

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "error"
        if self.budget is None:
            return "-"
        return "over" if self.over_budget else "ok"


class Lab:
    """The temporary folders and servers one benchmark run uses; `close` stops and removes all of them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="labcloud-bench-"))
        self._running: list[Path] = []
        self._moto = None
        self._shared: ServerInfo | None = None
        self._count = 0

    def fresh_state(self, name: str) -> Path:
        self._count += 1
        return self.root / f"{self._count:02d}-{name}"

    def start(self, state: Path) -> ServerInfo:
        self._running.append(state)
        return control.start(state, port=0)

    def stop(self, state: Path) -> None:
        control.stop(state)
        self._running.remove(state)

    @property
    def cloud(self) -> ServerInfo:
        """A local cloud kept running for the request measurements."""
        if self._shared is None:
            self._shared = self.start(self.fresh_state("shared"))
        return self._shared

    @property
    def moto_url(self) -> str:
        """A plain moto server in this process: the baseline for the request measurements."""
        if self._moto is None:
            from moto.server import ThreadedMotoServer

            # Silence werkzeug's line per request, as the local cloud does: writing it would slow the baseline.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            self._moto = server
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    def environments(self) -> dict[str, dict[str, str]]:
        """The SDK environment for the local cloud, and the same one pointed at the moto baseline."""
        local = local_environment(self.cloud)
        return {"local": local, "moto": {**local, "AWS_ENDPOINT_URL": self.moto_url}}

    def close(self) -> None:
        for state in reversed(self._running):
            try:
                control.stop(state)
            except Exception:  # stop the others all the same
                traceback.print_exc()
        self._running.clear()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        shutil.rmtree(self.root, ignore_errors=True)


def aws_client(service: str, env: dict[str, str], **config_options):
    """A boto3 client for the endpoint and fake credentials in `env` (from `local_environment`), no proxy, no retry;
    `config_options` go to botocore's Config (a load test's pool size and timeouts)."""
    import boto3
    from botocore.config import Config

    config = Config(proxies={}, retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}, **config_options)
    return boto3.session.Session().client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


def timed(call: Callable[[], object]) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def side_by_side(
    step: Callable[[object, int], tuple[float, ...]], targets: dict[str, object], iterations: int, warmup: int
) -> dict[str, list[tuple[float, ...]]]:
    """Run `step(target, i)` on every target in alternating blocks, after a warm-up on each; timings per target."""
    for target in targets.values():
        for i in range(warmup):
            step(target, -1 - i)
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in targets}
    for start in range(0, iterations, BLOCK):
        for name, target in targets.items():
            samples[name] += [step(target, i) for i in range(start, min(start + BLOCK, iterations))]
    return samples


def interleaved(
    through: Callable[[], object], direct: Callable[[], object], iterations: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Time `through` (the local cloud) and `direct` (its baseline) alternately, after a warm-up of both, so that
    both see the same machine state; (through's timings, direct's timings)."""
    for _ in range(warmup):
        through(), direct()
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(iterations):
        timings[0].append(timed(through))
        timings[1].append(timed(direct))
    return timings


# --- measurements: each returns rows for the table ---------------------------------------------------------


def cold_start(lab: Lab) -> list[Row]:
    starts, stops = [], []
    for _ in range(COLD_STARTS):
        state = lab.fresh_state("cold")
        starts.append(timed(lambda state=state: lab.start(state)))
        stops.append(timed(lambda state=state: lab.stop(state)))
    return [
        Row("cold start (fresh state, until healthy)", starts, START_BUDGET_S),
        Row("stop (saves state)", stops),
    ]


def warm_restart(lab: Lab) -> list[Row]:
    state = lab.fresh_state("warm")
    s3 = aws_client("s3", local_environment(lab.start(state)))
    s3.create_bucket(Bucket="bench-warm")
    for i in range(WARM_OBJECTS):
        s3.put_object(Bucket="bench-warm", Key=f"object-{i:03d}", Body=os.urandom(1024))
    lab.stop(state)
    samples = []
    for run in range(WARM_RESTARTS):
        begin = time.perf_counter()
        info = lab.start(state)
        samples.append(time.perf_counter() - begin)
        if run == 0:
            _check_restored(aws_client("s3", local_environment(info)), "bench-warm", WARM_OBJECTS)
        lab.stop(state)
    return [Row(f"warm restart ({WARM_OBJECTS} S3 objects to restore)", samples, START_BUDGET_S)]


def _check_restored(s3, bucket: str, expected: int) -> None:
    found = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    if found != expected:
        raise RuntimeError(f"warm restart restored {found} of {expected} objects; the timing would be meaningless")


def s3_round_trip(lab: Lab) -> list[Row]:
    body = os.urandom(1024)
    targets = {name: aws_client("s3", env) for name, env in lab.environments().items()}
    for client in targets.values():
        client.create_bucket(Bucket="bench-s3")

    def step(s3, i: int) -> tuple[float, float]:
        key = f"object-{i}"
        put = timed(lambda: s3.put_object(Bucket="bench-s3", Key=key, Body=body))
        get = timed(lambda: s3.get_object(Bucket="bench-s3", Key=key)["Body"].read())
        return put, get

    samples = side_by_side(step, targets, S3_ITERATIONS, S3_WARMUP)
    local, moto = samples["local"], samples["moto"]
    return [
        Row(f"S3 {op} 1 KiB", [s[k] for s in local], REQUEST_BUDGET_S, [s[k] for s in moto])
        for k, op in enumerate(("put_object", "get_object"))
    ]


def sqs_round_trip(lab: Lab) -> list[Row]:
    targets = {}
    for name, env in lab.environments().items():
        client = aws_client("sqs", env)
        targets[name] = (client, client.create_queue(QueueName="bench-sqs")["QueueUrl"])

    def step(target, i: int) -> tuple[float]:
        sqs, queue = target
        begin = time.perf_counter()
        sqs.send_message(QueueUrl=queue, MessageBody=f"message {i}")
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=0).get("Messages")
        elapsed = time.perf_counter() - begin
        if not messages:
            raise RuntimeError("receive_message returned nothing right after send_message")
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=messages[0]["ReceiptHandle"])
        return (elapsed,)

    samples = side_by_side(step, targets, SQS_ITERATIONS, SQS_WARMUP)
    local, moto = ([s[0] for s in samples[name]] for name in ("local", "moto"))
    return [Row("SQS send + receive", local, REQUEST_BUDGET_S, moto)]


def health_check(lab: Lab) -> list[Row]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"{lab.cloud.url}/_labcloud/health"

    def get() -> bytes:
        with opener.open(url, timeout=5) as response:
            return response.read()

    for _ in range(HEALTH_WARMUP):
        get()
    return [Row("health check (GET /_labcloud/health)", [timed(get) for _ in range(HEALTH_ITERATIONS)])]


Measurement = Callable[[Lab], list[Row]]
MEASUREMENTS: list[Measurement] = [cold_start, warm_restart, s3_round_trip, sqs_round_trip, health_check]


# --- the report --------------------------------------------------------------------------------------------


def run_all(measurements: list[Measurement]) -> list[Row]:
    """Run every measurement; one that fails becomes an `error` row (with its traceback on stderr)."""
    rows: list[Row] = []
    lab = Lab()
    try:
        for measure in measurements:
            print(f"measuring {measure.__name__.replace('_', ' ')} ...", file=sys.stderr, flush=True)
            try:
                rows += measure(lab)
            except Exception as exc:
                traceback.print_exc()
                rows.append(Row(measure.__name__.replace("_", " "), [], error=f"{type(exc).__name__}: {exc}"))
    finally:
        lab.close()
    return rows


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.2f} ms"


def format_ratio(value: float | None, reference: float | None) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}x"


def table_lines(rows: list[Row]) -> list[str]:
    header = ("metric", "n", "median", "p90", "p99", "budget", "/budget", "/base", "verdict")
    cells = [header]
    for row in rows:
        if row.error is not None:
            cells.append((row.metric, "0", "-", "-", "-", format_seconds(row.budget), "-", "-", "error"))
            continue
        baseline = statistics.median(row.baseline) if row.baseline else None
        cells.append(
            (
                row.metric,
                str(len(row.samples)),
                format_seconds(row.median),
                format_seconds(row.p90),
                format_seconds(row.p99),
                format_seconds(row.budget),
                format_ratio(row.median, row.budget),
                format_ratio(row.median, baseline),
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        first = line[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True))]
        ).rstrip()

    lines = [render(line) for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def machine_note() -> str:
    return (
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({platform.python_implementation()}, {platform.system()} {platform.machine()})"
    )


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """A SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so the servers are stopped all the same."""

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labcloud-bench", description="Measure the local cloud against its budget.")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row is over budget")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    from .bench_azure import AZURE_MEASUREMENTS
    from .bench_bigquery import BIGQUERY_MEASUREMENTS
    from .bench_services import SERVICE_MEASUREMENTS

    with sigterm_as_exit():
        rows = run_all(MEASUREMENTS + SERVICE_MEASUREMENTS + BIGQUERY_MEASUREMENTS + AZURE_MEASUREMENTS)
    print("\n".join(table_lines(rows)))
    for row in rows:
        if row.error is not None:
            print(f"error in {row.metric}: {row.error}")
    print(
        "medians over repeated runs; /base: median against a baseline measured in the same run, interleaved: plain"
        " moto for S3 and SQS, a direct call to the model server for predict(), a cold invoke for a warm one,"
        " DuckDB directly for BigQuery queries, scikit-learn directly for BigQuery ML, the command run directly"
        " for an Azure ML job"
    )
    print(f"{machine_note()}; benchmark took {time.perf_counter() - began:.0f} s")
    return 1 if args.strict and any(row.over_budget for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
