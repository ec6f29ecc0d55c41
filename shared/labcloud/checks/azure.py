"""Checks for lab 04 (Azure ML, Azure OpenAI). Each recomputes what it judges: the job's input and output from the
service, the rate-limit handling against a real 429, the cluster settings by simulating a day of jobs."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import passed, require


def check_learning_rate_round_trip(ml_client, job_name: str, learning_rate: float, reported: float) -> None:
    exercise = "Exercise 1 (a learning rate in, read back out)"
    with _quiet_sdk():
        _check_round_trip(ml_client, job_name, learning_rate, reported, exercise)
    passed(exercise, "the input reached the script and came back in its output")


@contextlib.contextmanager
def _quiet_sdk():
    """The SDK logs each download with its temporary path at INFO: keep the check's output the same on every run."""
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("azure.ai.ml")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_round_trip(ml_client, job_name: str, learning_rate: float, reported: float, exercise: str) -> None:
    job = ml_client.jobs.get(job_name)
    require(job.status == "Completed", exercise, f"job {job_name} is {job.status}", "stream it and fix what failed.")
    given = job.inputs.get("learning_rate")
    value = float(getattr(given, "_data", given) if given is not None else "nan")
    require(
        math.isclose(value, learning_rate),
        exercise,
        f"the job's input learning_rate is {given!r}",
        f"pass inputs={{'learning_rate': {learning_rate}, ...}} and use ${{{{inputs.learning_rate}}}} in the command.",
    )
    with tempfile.TemporaryDirectory() as folder:
        ml_client.jobs.download(job_name, download_path=folder, output_name="model")
        found = list(Path(folder).rglob("metrics.json"))
        require(bool(found), exercise, "the job's model output has no metrics.json", "keep train.py's outputs.")
        written = json.loads(found[0].read_text())["learning_rate"]
    require(
        math.isclose(written, learning_rate) and math.isclose(reported, learning_rate),
        exercise,
        f"the output says {written}, you read {reported}",
        "download the job's `model` output (ml_client.jobs.download) and read learning_rate from metrics.json.",
    )


def check_backoff(chat_with_backoff, client, deployment: str, messages: list[dict], calls: int = 3) -> None:
    """The learner's function must get `calls` answers in a row from a deployment whose quota allows fewer per
    window: it has to wait for the quota, not fail or hammer the service."""
    import openai

    exercise = "Exercise 2 (retry on 429 with backoff)"
    started = time.monotonic()
    try:
        replies = [chat_with_backoff(client, deployment, messages) for _ in range(calls)]
    except openai.RateLimitError:
        require(False, exercise, "a 429 reached the caller", "catch openai.RateLimitError and try again.")
    require(
        all(getattr(r, "choices", None) for r in replies),
        exercise,
        "the function did not return the chat completion",
        "return the result of client.chat.completions.create(...).",
    )
    require(
        time.monotonic() - started < 30,
        exercise,
        "the calls took over 30 s",
        "wait as long as the retry-after header says, not longer.",
    )
    passed(exercise, f"{calls} answers in a row from a deployment whose quota holds fewer")


@dataclass(frozen=True)
class JobPattern:
    """One-node jobs of `job_minutes`, starting at `starts` (minutes after midnight), every day."""

    starts: tuple[float, ...]
    job_minutes: float
    node_start_minutes: float  # allocating a node when the cluster is at zero
    price_per_node_hour: float


def cluster_day(pattern: JobPattern, min_instances: int, idle_minutes: float) -> tuple[float, float]:
    """(USD per day, minutes jobs waited for a node) for a cluster with these settings; jobs do not overlap."""
    if min_instances >= 1:
        return min_instances * 24 * pattern.price_per_node_hour, 0.0
    billed, waited, release, allocated_at = 0.0, 0.0, -math.inf, None
    for start in pattern.starts:
        if start > release:  # the node was released: allocate one, and wait for it
            if allocated_at is not None:
                billed += release - allocated_at
            allocated_at, begin = start, start + pattern.node_start_minutes
            waited += pattern.node_start_minutes
        else:
            begin = start
        release = begin + pattern.job_minutes + idle_minutes
    if allocated_at is not None:
        billed += release - allocated_at
    return billed / 60 * pattern.price_per_node_hour, waited


def best_settings(pattern: JobPattern, candidates, max_wait_minutes: float) -> tuple[int, float]:
    """The cheapest (min_instances, idle minutes) among `candidates` whose jobs wait at most `max_wait_minutes`."""
    allowed = [c for c in candidates if cluster_day(pattern, *c)[1] <= max_wait_minutes]
    return min(allowed, key=lambda c: cluster_day(pattern, *c)[0])


def check_cluster_settings(ml_client, name: str, pattern: JobPattern, candidates, max_wait_minutes: float) -> None:
    exercise = "Exercise 3 (min_instances and idle time)"
    compute = ml_client.compute.get(name)
    chosen = (compute.min_instances, compute.idle_time_before_scale_down / 60)
    want = best_settings(pattern, candidates, max_wait_minutes)
    cost, waited = cluster_day(pattern, *chosen)
    require(
        waited <= max_wait_minutes,
        exercise,
        f"with min_instances={chosen[0]} and {chosen[1]:g} idle minutes, jobs wait {waited:g} minutes a day",
        "an idle node must still be there when the next job comes: the gap between jobs is what matters.",
    )
    require(
        chosen == want,
        exercise,
        f"your settings cost ${cost:.2f} a day",
        "a node kept all day (min_instances=1) bills 24 hours; find the shortest idle time that bridges the gaps.",
    )
    passed(exercise, f"${cost:.2f} a day, jobs wait {waited:g} minutes")
