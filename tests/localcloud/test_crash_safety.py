"""A local cloud killed with SIGKILL right after its acknowledgements: nothing acknowledged is lost, the children it
left are reaped at the next start, and the training job that was running is Failed with the reason — through the
real SDKs (boto3, the SageMaker SDK, google-cloud-storage, google-cloud-bigquery, azure-storage-blob). Also: a
journal record is replayed once, `labcloud down` after a crash stops what was left, and SageMaker endpoints being
created or updated at the crash end Failed or rolled back."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import psutil
import pytest

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import sagemaker  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402
from sagemaker.pytorch import PyTorch  # noqa: E402

import labcloud  # noqa: E402
from labcloud.localcloud import control  # noqa: E402
from labcloud.localcloud.state import StateDir  # noqa: E402
from labcloud.wiring.azure import STORAGE_VARIABLE  # noqa: E402

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "training_scripts"
HAS_NODE = shutil.which("node") is not None  # Azurite runs on Node.js


@pytest.fixture
def state(tmp_path, monkeypatch, saved_environment):
    """A state folder of this test's own; whatever local cloud runs on it is stopped afterwards."""
    folder = tmp_path / "state"
    monkeypatch.setenv("LABCLOUD_HOME", str(folder))
    monkeypatch.setenv("LABCLOUD_PORT", "0")
    yield folder
    control.stop(folder)


def wait_for(condition, timeout: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def recorded_children(folder: Path) -> list[psutil.Process]:
    """The children the running local cloud recorded, as processes (pid and start time checked)."""
    records = json.loads((folder / "children.json").read_text())["children"]
    alive = []
    for pid, record in records.items():
        try:
            process = psutil.Process(int(pid))
        except psutil.NoSuchProcess:
            continue
        if abs(process.create_time() - record["started"]) < 0.05:
            alive.append(process)
    return alive


def sleeping_training_job() -> tuple[str, int]:
    """A SageMaker training job whose script sleeps: its name, and the script's pid once it runs."""
    job = PyTorch(
        entry_point="sleeper.py",
        source_dir=str(SCRIPTS),
        role=sagemaker.get_execution_role(),
        instance_type="ml.m5.xlarge",
        instance_count=1,
        framework_version="2.1.0",
        py_version="py310",
    )
    job.fit(wait=False)
    name = job.latest_training_job.name
    logs, group = boto3.client("logs"), "/aws/sagemaker/TrainingJobs"

    def script_pid():
        for stream in logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name)["logStreams"]:
            events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])
            for event in events["events"]:
                if event["message"].startswith("pid "):
                    return int(event["message"].split()[1])
        return None

    return name, wait_for(script_pid, what="the training script to run")


def costs(info) -> list[dict]:
    with urllib.request.urlopen(f"{info.url}/_labcloud/costs", timeout=10) as response:
        return json.load(response)["lines"]


def test_a_killed_local_cloud_loses_nothing_acknowledged_and_leaves_nothing_running(state):
    from google.cloud import bigquery, storage

    info = control.start(state)
    labcloud.connect("local")
    job_name, script_pid = sleeping_training_job()

    gcs_bucket = storage.Client().create_bucket(f"crash-{uuid.uuid4().hex[:8]}")
    gcs_bucket.blob("notes/kept.txt").upload_from_string(b"acknowledged by GCS")
    bq = bigquery.Client()
    bq.create_dataset("crash_ds")
    bq.query("CREATE TABLE crash_ds.kept AS SELECT 1 AS id, 'acknowledged' AS word").result()
    bq.query("INSERT INTO crash_ds.kept (id, word) VALUES (2, 'by BigQuery')").result()
    if HAS_NODE:
        blobs = BlobServiceClient.from_connection_string(os.environ[STORAGE_VARIABLE])
        blobs.create_container("crash").upload_blob("kept.txt", b"acknowledged by Azurite")

    # Last, and the kill right after: well inside the half second before moto's next snapshot.
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    s3.create_bucket(Bucket="crash-bucket")
    queue = sqs.create_queue(QueueName="crash-queue")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="handled, then deleted")
    handled = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)["Messages"][0]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=handled["ReceiptHandle"])
    sent = sqs.send_message(QueueUrl=queue, MessageBody="acknowledged by SQS")
    s3.put_object(Bucket="crash-bucket", Key="kept.txt", Body=b"acknowledged by S3")
    upload = s3.create_multipart_upload(Bucket="crash-bucket", Key="in-parts.bin")["UploadId"]
    part = s3.upload_part(Bucket="crash-bucket", Key="in-parts.bin", UploadId=upload, PartNumber=1, Body=b"p" * 1024)
    left_behind = [*recorded_children(state), psutil.Process(script_pid)]
    os.kill(info.pid, signal.SIGKILL)

    time.sleep(0.5)
    assert all(p.is_running() for p in left_behind)  # the children run on without their server
    assert not HAS_NODE or any("azurite" in " ".join(p.cmdline()) for p in left_behind)
    restarted = control.start(state)
    labcloud.connect("local")

    gone, alive = psutil.wait_procs(left_behind, timeout=5)
    assert alive == [], f"still running after the restart: {alive}"
    log = StateDir(state).log_tail(200)
    assert "reaped" in log and str(script_pid) in log

    assert boto3.client("s3").get_object(Bucket="crash-bucket", Key="kept.txt")["Body"].read() == b"acknowledged by S3"
    parts = {"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}  # the upload id given before the crash still works
    boto3.client("s3").complete_multipart_upload(
        Bucket="crash-bucket", Key="in-parts.bin", UploadId=upload, MultipartUpload=parts
    )
    assert boto3.client("s3").get_object(Bucket="crash-bucket", Key="in-parts.bin")["Body"].read() == b"p" * 1024
    queue = boto3.client("sqs").get_queue_url(QueueName="crash-queue")["QueueUrl"]
    messages = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [(m["Body"], m["MessageId"]) for m in messages] == [("acknowledged by SQS", sent["MessageId"])]
    assert storage.Client().bucket(gcs_bucket.name).blob("notes/kept.txt").download_as_bytes() == b"acknowledged by GCS"
    rows = bigquery.Client().query("SELECT id, word FROM crash_ds.kept ORDER BY id").result()
    assert [tuple(row.values()) for row in rows] == [(1, "acknowledged"), (2, "by BigQuery")]
    if HAS_NODE:
        blobs = BlobServiceClient.from_connection_string(os.environ[STORAGE_VARIABLE])
        assert blobs.get_container_client("crash").download_blob("kept.txt").readall() == b"acknowledged by Azurite"
        assert sum("azurite" in " ".join(p.cmdline()) for p in recorded_children(state)) == 1

    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    assert description["TrainingJobStatus"] == "Failed"
    assert description["FailureReason"] == "the local cloud stopped while the job ran"
    (sends,) = [line for line in costs(restarted) if line["action"] == "SendMessage"]
    assert sends["quantity"] == 2  # the meter's last lines survived too


@pytest.mark.skipif(not HAS_NODE, reason="Node.js is not installed (Azurite is the child this test leaves behind)")
def test_labcloud_down_after_a_crash_stops_what_the_dead_run_left(state):
    info = control.start(state)
    azurite = wait_for(
        lambda: [p for p in recorded_children(state) if "azurite" in " ".join(p.cmdline())], what="Azurite to start"
    )
    server = psutil.Process(info.pid)
    os.kill(info.pid, signal.SIGKILL)
    server.wait(timeout=10)
    assert control.stop(state) is False  # no local cloud was running...
    assert psutil.wait_procs(azurite, timeout=5)[1] == []  # ...but what it left is stopped
    assert not (state / "children.json").exists()


def test_a_journal_record_is_replayed_once_and_a_record_cut_short_is_ignored(state):
    info = control.start(state)
    labcloud.connect("local")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="once-queue")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="exactly once")
    os.kill(info.pid, signal.SIGKILL)
    psutil.Process(info.pid).wait(timeout=10)

    journal = state / "aws" / "journal.bin"
    before_restart = journal.read_bytes()
    with journal.open("ab") as torn:  # a record whose write the kill cut short: its answer never went back
        torn.write(struct.pack(">QQ", 500, 0) + b"half a record")
    control.start(state)
    assert "cut short" in StateDir(state).log_tail(100)
    control.stop(state)  # an orderly stop: the snapshots now cover every record, and the journal is empty
    journal.write_bytes(before_restart)  # as if the crash had come between writing the snapshots and the truncation

    control.start(state)
    labcloud.connect("local")
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"


SLOW_MODEL = """
import time


def model_fn(model_dir):
    time.sleep(600)  # the endpoint stays Creating (or Updating) while this loads
"""


def endpoint_model(sm, s3, bucket: str, name: str, code: Path) -> str:
    """A model whose archive holds `code` as code/ (the inference toolkit's layout); its name."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        weights = json.dumps({"name": name, "weights": [1.0], "bias": 0.0}).encode()
        info = tarfile.TarInfo("weights.json")
        info.size = len(weights)
        tar.addfile(info, io.BytesIO(weights))
        tar.add(code, arcname="code")
    s3.put_object(Bucket=bucket, Key=f"{name}/model.tar.gz", Body=archive.getvalue())
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerExecutionRole",
        PrimaryContainer={
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310",
            "ModelDataUrl": f"s3://{bucket}/{name}/model.tar.gz",
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
        },
    )
    variant = {"VariantName": "main", "ModelName": name, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    return name


def endpoint_status(sm, name: str, leaving: tuple[str, ...]) -> dict:
    return wait_for(
        lambda: (d := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] not in leaving and d,
        what=f"{name} to leave {leaving}",
    )


def test_endpoints_being_created_fail_and_one_being_updated_rolls_back_after_a_crash(state, tmp_path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "inference.py").write_text(SLOW_MODEL)
    info = control.start(state)
    labcloud.connect("local")
    sm, s3 = boto3.client("sagemaker"), boto3.client("s3")
    s3.create_bucket(Bucket="crash-models")
    linear = endpoint_model(sm, s3, "crash-models", "linear", Path(__file__).parent / "inference_code" / "linear")
    endpoint_model(sm, s3, "crash-models", "slow", slow)
    sm.create_endpoint(EndpointName="serving", EndpointConfigName=linear)
    assert endpoint_status(sm, "serving", ("Creating",))["EndpointStatus"] == "InService"
    sm.update_endpoint(EndpointName="serving", EndpointConfigName="slow")
    sm.create_endpoint(EndpointName="being-created", EndpointConfigName="slow")
    assert sm.describe_endpoint(EndpointName="being-created")["EndpointStatus"] == "Creating"
    assert sm.describe_endpoint(EndpointName="serving")["EndpointStatus"] == "Updating"
    os.kill(info.pid, signal.SIGKILL)

    control.start(state)
    labcloud.connect("local")
    sm = boto3.client("sagemaker")
    created = sm.describe_endpoint(EndpointName="being-created")
    assert created["EndpointStatus"] == "Failed"
    assert created["FailureReason"] == "the local cloud stopped while the endpoint was being created"
    updated = endpoint_status(sm, "serving", ("SystemUpdating", "Updating"))
    assert updated["EndpointStatus"] == "InService" and updated["EndpointConfigName"] == linear
    assert updated["FailureReason"].startswith("the local cloud stopped while the endpoint was updating")
    answer = boto3.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="serving", Body=json.dumps({"inputs": [2.0]}), ContentType="application/json"
    )
    assert json.loads(answer["Body"].read())["model"] == "linear"  # the configuration it had before the update
