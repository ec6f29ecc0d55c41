"""Benchmark row for Azure ML on the local cloud, through the unmodified azure-ai-ml SDK: the time from
`jobs.create_or_update` of a trivial command job to its Completed status, against the same command run directly
(the difference is what the code upload through Blob storage, the job record and the process start cost)."""

from __future__ import annotations

import logging
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from .bench import Lab, Row, timed
from .bench_services import connect_sdks

JOB_RUNS = 5
COMMAND = "python -c 'print(1)'"
POLL_S = 0.02
ENVIRONMENT = "AzureML-sklearn-1.0@latest"  # a curated name: the local cloud runs it with this machine's Python
JOB_OVERHEAD_BUDGET_S = 1.0  # as for SageMaker's and Vertex's training jobs


def azure_ml_command_job(lab: Lab) -> list[Row]:
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every HTTP request at INFO
    connect_sdks(lab)
    from azure.ai.ml import MLClient, command
    from azure.ai.ml.entities import AmlCompute
    from azure.identity import DefaultAzureCredential

    client = MLClient(DefaultAzureCredential(), "00000000-0000-0000-0000-000000000000", "rg-bench", "bench")
    client.compute.begin_create_or_update(AmlCompute(name="bench-cluster", size="Standard_DS3_v2")).result()
    source = Path(tempfile.mkdtemp(dir=lab.root))
    (source / "README.txt").write_text("a trivial job's code folder\n")
    jobs, directs = [], []
    for _ in range(JOB_RUNS):
        job = command(code=str(source), command=COMMAND, environment=ENVIRONMENT, compute="bench-cluster")
        jobs.append(timed(lambda job=job: _until_completed(client, client.jobs.create_or_update(job).name)))
        directs.append(timed(lambda: subprocess.run(COMMAND, shell=True, check=True, capture_output=True, cwd=source)))
    overhead = statistics.median(jobs) - statistics.median(directs)
    return [
        Row("Azure ML command job, create_or_update to Completed", jobs, baseline=directs),
        Row("  the same command run directly", directs),
        Row("  job overhead (median - median)", [overhead], JOB_OVERHEAD_BUDGET_S),
    ]


def _until_completed(client, name: str) -> None:
    while (status := client.jobs.get(name).status) not in ("Completed", "Failed", "Canceled"):
        time.sleep(POLL_S)
    if status != "Completed":
        raise RuntimeError(f"the benchmark's job ended {status}")


AZURE_MEASUREMENTS = [azure_ml_command_job]
