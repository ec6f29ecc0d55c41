"""SageMaker training jobs through the real SageMaker SDK v2 and boto3: the script really runs under the container
contract, distributed jobs form one process group, logs reach CloudWatch and fit(), failures, stops, spot
interruptions with checkpoints, the cost meter, and a restart of the local cloud."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import sagemaker  # noqa: E402
from sagemaker.exceptions import UnexpectedStatusException  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.pytorch import PyTorch  # noqa: E402

from labcloud import connect  # noqa: E402
from labcloud.localcloud import control  # noqa: E402
from labcloud.pricing.catalog import load_catalog  # noqa: E402
from labcloud.runtime.sagemaker_training import INTERRUPT_TAG, visible_gpus  # noqa: E402

SCRIPTS = Path(__file__).parent / "training_scripts"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ACCOUNT = "123456789012"  # the local cloud's placeholder account


@pytest.fixture
def cloud():
    """connect("local") for one test; the environment it changed is put back afterwards."""
    saved = dict(os.environ)
    try:
        yield connect("local")
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def data_bucket(cloud):
    s3 = boto3.client("s3")
    bucket = f"training-data-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="train/part-0.csv", Body=b"x,y\n1,2\n")
    s3.put_object(Bucket=bucket, Key="train/nested/part-1.csv", Body=b"x,y\n3,4\n")
    s3.put_object(Bucket=bucket, Key="val/part-0.csv", Body=b"x,y\n5,6\n")
    return bucket


def estimator(entry_point: str, **kwargs) -> PyTorch:
    options = dict(
        role=sagemaker.get_execution_role(),
        instance_type="ml.m5.xlarge",
        instance_count=1,
        framework_version="2.1.0",
        py_version="py310",
    )
    options.update(kwargs)
    return PyTorch(entry_point=entry_point, source_dir=str(SCRIPTS), **options)


def model_file(model_data: str, name: str) -> dict:
    return json.loads(model_file_bytes(model_data, name))


def job_log(job_name: str) -> dict[str, list[str]]:
    logs = boto3.client("logs")
    streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/")["logStreams"]
    return {
        s["logStreamName"]: [
            e["message"]
            for e in logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=s["logStreamName"], startFromHead=True)[
                "events"
            ]
        ]
        for s in streams
    }


def statuses(description: dict) -> list[str]:
    return [t["Status"] for t in description["SecondaryStatusTransitions"]]


def meter_lines(info) -> list[dict]:
    with urllib.request.urlopen(f"{info.url}/_labcloud/costs", timeout=5) as response:
        return json.load(response)["lines"]


def wait_for(predicate, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout} s")


# ---------------------------------------------------------------------------------------------------------
# a job that completes
# ---------------------------------------------------------------------------------------------------------


def test_a_job_runs_the_script_under_the_container_contract(cloud, data_bucket, capsys):
    job = estimator(
        "contract.py",
        hyperparameters={"epochs": 3, "lr": 0.01, "optimizer": "adam w"},
        metric_definitions=[{"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"}],
    )
    started = time.monotonic()
    job.fit({"train": f"s3://{data_bucket}/train", "val": f"s3://{data_bucket}/val"})
    took = time.monotonic() - started
    name = job.latest_training_job.name

    seen = model_file(job.model_data, "seen.json")
    env = seen["env"]
    assert seen["argv"] == ["--epochs", "3", "--lr", "0.01", "--optimizer", "adam w"]
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "lr": 0.01, "optimizer": "adam w"}  # no sagemaker_* ones
    assert (env["SM_HP_EPOCHS"], env["SM_HP_LR"], env["SM_HP_OPTIMIZER"]) == ("3", "0.01", "adam w")
    assert json.loads(env["SM_USER_ARGS"]) == seen["argv"]
    assert seen["channels"] == {"train": ["nested", "part-0.csv"], "val": ["part-0.csv"]}
    assert json.loads(env["SM_CHANNELS"]) == ["train", "val"]
    assert (env["SM_CURRENT_HOST"], json.loads(env["SM_HOSTS"])) == ("algo-1", ["algo-1"])
    assert env["SM_NUM_GPUS"] == str(len(visible_gpus())) and int(env["SM_NUM_CPUS"]) == os.cpu_count()
    assert "MASTER_ADDR" not in env and "WORLD_SIZE" not in env  # one instance, no distribution
    assert env["SM_MODEL_DIR"].endswith("algo-1/model") and env["SM_OUTPUT_DATA_DIR"].endswith("output/data")
    assert seen["checkpoint_dir_writable"] and env["TRAINING_JOB_NAME"] == name
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["hyperparameters"]["epochs"] == 3 and training_env["current_host"] == "algo-1"
    assert env["AWS_ENDPOINT_URL"] == cloud.server.url  # the script's boto3 reaches the local cloud

    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert description["TrainingJobStatus"] == "Completed" and description["SecondaryStatus"] == "Completed"
    assert statuses(description) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert description["ModelArtifacts"]["S3ModelArtifacts"] == job.model_data
    assert job.model_data.endswith(f"/{name}/output/model.tar.gz")
    assert description["TrainingEndTime"] >= description["TrainingStartTime"] >= description["CreationTime"]
    assert description["TrainingTimeInSeconds"] >= 1
    assert description["BillableTimeInSeconds"] == description["TrainingTimeInSeconds"]
    assert description["FinalMetricDataList"][0]["MetricName"] == "validation:accuracy"
    assert description["FinalMetricDataList"][0]["Value"] == pytest.approx(0.875)
    assert description["AlgorithmSpecification"]["MetricDefinitions"][0]["Name"] == "validation:accuracy"

    # The log: printed by fit() while it waited, and kept in CloudWatch in a stream named like SageMaker's.
    printed = capsys.readouterr().out
    assert "contract script ran on algo-1 with --epochs 3 --lr 0.01 --optimizer adam w" in printed
    assert "Completed - Training job completed" in printed
    (stream, lines), *others = job_log(name).items()
    assert not others and re.fullmatch(rf"{re.escape(name)}/algo-1-\d{{10}}", stream)
    assert "contract script ran on algo-1 with --epochs 3 --lr 0.01 --optimizer adam w" in lines

    # The cost meter: instance-hours of the catalog's instance at its on-demand price.
    line = next(line for line in meter_lines(cloud.server) if line["resource"] == name)
    hourly = load_catalog().get("ml.m5.xlarge", service="sagemaker-training").on_demand_usd_per_hour
    assert (line["cloud"], line["service"], line["action"], line["unit"]) == (
        "aws",
        "sagemaker",
        "TrainingJob",
        "instance-hour",
    )
    assert line["price_key"] == "sagemaker-training:ml.m5.xlarge"
    assert 0 < line["quantity"] * 3600 <= description["TrainingTimeInSeconds"]
    assert line["usd"] == pytest.approx(hourly * line["quantity"])

    assert took < 5, f"fit() of a trivial script took {took:.1f} s"


def test_two_instances_with_torch_distributed_form_one_process_group(cloud):
    job = estimator(
        "distributed.py",
        instance_type="ml.g5.xlarge",  # torch_distributed needs a GPU type: simulated, it runs on the CPU here
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
    )
    job.fit()
    name = job.latest_training_job.name

    assert model_file(job.model_data, "result.json") == {"rank": 0, "world_size": 2, "sum": 3.0, "host": "algo-1"}
    logs = job_log(name)
    assert sorted(re.sub(r"-\d+$", "", s) for s in logs) == [f"{name}/algo-1", f"{name}/algo-2"]
    everything = "\n".join(line for lines in logs.values() for line in lines)
    assert "rank 0 of 2: all_reduce sum 3.0" in everything and "rank 1 of 2: all_reduce sum 3.0" in everything
    line = next(line for line in meter_lines(cloud.server) if line["resource"] == name)
    assert line["price_key"] == "sagemaker-training:ml.g5.xlarge"
    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert description["BillableTimeInSeconds"] == description["TrainingTimeInSeconds"]  # on demand
    assert 0 < line["quantity"] <= 2 * description["TrainingTimeInSeconds"] / 3600  # two instances
    attached = PyTorch.attach(name)  # the SDK rebuilds the estimator from DescribeTrainingJob
    assert (attached.model_data, attached.instance_count, attached.framework_version) == (job.model_data, 2, "2.1.0")


def test_instances_without_a_distribution_run_independent_copies(cloud, data_bucket):
    job = estimator("contract.py", instance_count=2, hyperparameters={"epochs": 1})
    job.fit(
        {
            "train": TrainingInput(f"s3://{data_bucket}/train", distribution="ShardedByS3Key"),
            "val": f"s3://{data_bucket}/val",
        }
    )
    name = job.latest_training_job.name

    seen = model_file(job.model_data, "seen.json")  # algo-1's model: the only one packed, as on SageMaker
    assert json.loads(seen["env"]["SM_HOSTS"]) == ["algo-1", "algo-2"] and seen["env"]["SM_CURRENT_HOST"] == "algo-1"
    assert not {"MASTER_ADDR", "WORLD_SIZE", "RANK"} & set(seen["env"])
    assert seen["channels"] == {"train": ["nested"], "val": ["part-0.csv"]}  # its share of the sharded channel
    lines = {re.sub(r"-\d+$", "", stream): lines for stream, lines in job_log(name).items()}
    assert "contract script ran on algo-1 with --epochs 1" in lines[f"{name}/algo-1"]
    assert "contract script ran on algo-2 with --epochs 1" in lines[f"{name}/algo-2"]


# ---------------------------------------------------------------------------------------------------------
# failures and errors
# ---------------------------------------------------------------------------------------------------------


def test_a_crashing_script_fails_the_job_with_its_reason_and_log(cloud, capsys):
    job = estimator("crash.py")
    with pytest.raises(UnexpectedStatusException) as raised:
        job.fit()
    name = job.latest_training_job.name
    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    reason = description["FailureReason"]
    assert description["TrainingJobStatus"] == "Failed" and statuses(description)[-1] == "Failed"
    assert reason.startswith("AlgorithmError: ExecuteUserScriptError:") and "exit code: 1" in reason
    assert "ValueError: the learning rate must be positive" in reason
    assert "ValueError: the learning rate must be positive" in str(raised.value)
    assert "ModelArtifacts" not in description
    lines = next(iter(job_log(name).values()))
    assert "loading data" in lines and any("Traceback" in line for line in lines)
    assert "ValueError: the learning rate must be positive" in capsys.readouterr().out
    assert control.health(cloud.server) is not None  # the local cloud is still up


def test_one_failing_host_fails_the_job_and_stops_the_others(cloud):
    job = estimator(
        "rank_one_fails.py",
        instance_type="ml.g5.xlarge",
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
    )
    with pytest.raises(UnexpectedStatusException):
        job.fit(logs=False)
    name = job.latest_training_job.name
    reason = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)["FailureReason"]
    assert "rank 1 lost its data shard" in reason and "exit code: 1" in reason  # algo-2's, not the stopped algo-1's
    pid = int(next(line for line in _all_lines(name) if line.startswith("pid ")).split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_api_errors_have_sagemakers_shapes(cloud):
    sm = boto3.client("sagemaker")
    for call in (sm.describe_training_job, sm.stop_training_job):
        with pytest.raises(ClientError) as missing:
            call(TrainingJobName="no-such-job")
        assert missing.value.response["Error"] == {
            "Code": "ValidationException",
            "Message": "Requested resource not found.",
        }
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    raw = boto3.client("sagemaker", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as incomplete:
        raw.create_training_job(TrainingJobName="incomplete-job")
    error = incomplete.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "Value null at 'roleArn' failed to satisfy constraint: Member must not be null" in error["Message"]
    with pytest.raises(ClientError) as bad_type:
        raw.create_training_job(**_minimal_job("bad-instance", InstanceType="ml.laptop.huge"))
    assert "resourceConfig.instanceType" in bad_type.value.response["Error"]["Message"]

    # A job without a script-mode source fails (the local cloud runs scripts, not images); its name stays taken.
    sm.create_training_job(**_minimal_job("image-only-job"))
    failed = wait_for(lambda: _final(sm.describe_training_job(TrainingJobName="image-only-job")))
    assert failed["TrainingJobStatus"] == "Failed" and "script-mode" in failed["FailureReason"]
    with pytest.raises(ClientError) as taken:
        sm.create_training_job(**_minimal_job("image-only-job"))
    assert taken.value.response["Error"]["Code"] == "ResourceInUse"
    assert control.health(cloud.server) is not None


def _minimal_job(name: str, InstanceType: str = "ml.m5.large") -> dict:  # noqa: N803 - the API's own name
    return dict(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
            "TrainingInputMode": "File",
        },
        RoleArn=sagemaker.get_execution_role(),
        OutputDataConfig={"S3OutputPath": "s3://nowhere-bucket/out"},
        ResourceConfig={"InstanceType": InstanceType, "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )


def _final(description: dict) -> dict | None:
    return description if description["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") else None


# ---------------------------------------------------------------------------------------------------------
# spot interruptions, checkpoints, stops, restarts
# ---------------------------------------------------------------------------------------------------------


def test_a_spot_interruption_resumes_from_the_synced_checkpoints(cloud, capsys):
    bucket = sagemaker.Session().default_bucket()
    prefix = f"checkpoints/{uuid.uuid4().hex[:8]}"
    job = estimator(
        "resumable.py",
        instance_type="ml.g5.xlarge",
        hyperparameters={"steps": 15},
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        checkpoint_s3_uri=f"s3://{bucket}/{prefix}",
        tags=[{"Key": INTERRUPT_TAG, "Value": "1.2"}],
    )
    job.fit()
    name = job.latest_training_job.name

    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert statuses(description) == [
        "Starting",
        "Downloading",
        "Training",
        "Interrupted",
        "Restarting",
        "Training",
        "Uploading",
        "Completed",
    ]
    run = model_file(job.model_data, "run.json")
    assert run["resumed_from"] >= 3, "the restarted script found the checkpoints synced before the interruption"
    assert run["resumed_from"] + run["steps_run"] == 15  # resumed, not redone
    state = boto3.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/state.json")["Body"].read()
    assert json.loads(state) == {"step": 15}
    assert description["BillableTimeInSeconds"] < description["TrainingTimeInSeconds"]
    assert "Managed Spot Training savings" in capsys.readouterr().out

    line = next(line for line in meter_lines(cloud.server) if line["resource"] == name)
    catalog = load_catalog()
    ec2 = catalog.get("g5.xlarge", service="ec2")
    spot_hourly = catalog.get("ml.g5.xlarge", service="sagemaker-training").on_demand_usd_per_hour * (
        ec2.spot_usd_per_hour / ec2.on_demand_usd_per_hour
    )
    assert line["usd"] == pytest.approx(spot_hourly * line["quantity"])


def test_stop_training_job_stops_the_processes_and_keeps_the_model(cloud):
    job = estimator("sleeper.py")
    job.fit(wait=False)
    name = job.latest_training_job.name
    sm = boto3.client("sagemaker")
    pid_line = wait_for(lambda: next((m for m in _all_lines(name) if m.startswith("pid ")), None))
    pid = int(pid_line.split()[1])
    os.kill(pid, 0)  # the script runs
    running = sm.list_training_jobs(StatusEquals="InProgress", NameContains=name)["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in running] == [name]

    sm.stop_training_job(TrainingJobName=name)
    stopped = wait_for(lambda: _final(sm.describe_training_job(TrainingJobName=name)), timeout=10)
    assert stopped["TrainingJobStatus"] == "Stopped" and statuses(stopped)[-2:] == ["Uploading", "Stopped"]
    assert "Stopping" in statuses(stopped)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert model_file_bytes(stopped["ModelArtifacts"]["S3ModelArtifacts"], "early.txt") == b"saved before the stop"
    with pytest.raises(ClientError) as again:
        sm.stop_training_job(TrainingJobName=name)
    assert "in status Stopped" in again.value.response["Error"]["Message"]
    assert sm.list_training_jobs(StatusEquals="Stopped", NameContains=name)["TrainingJobSummaries"]


def test_a_job_past_its_max_runtime_is_stopped_with_its_model(cloud, caplog):
    job = estimator("sleeper.py", max_run=1)
    job.fit()  # Stopped is not an error for the SDK: it warns
    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=job.latest_training_job.name)
    assert description["TrainingJobStatus"] == "Stopped" and description["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert 1 <= description["TrainingTimeInSeconds"] <= 3
    assert model_file_bytes(job.model_data, "early.txt") == b"saved before the stop"
    assert "Job ended with status 'Stopped'" in caplog.text


def model_file_bytes(model_data: str, name: str) -> bytes:
    bucket, key = model_data.removeprefix("s3://").split("/", 1)
    archive = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.extractfile(name).read()


def _all_lines(job_name: str) -> list[str]:
    try:
        return [line for lines in job_log(job_name).values() for line in lines]
    except ClientError:
        return []


def test_a_job_running_when_the_cloud_stops_is_failed_after_the_restart(own_cloud):
    saved = dict(os.environ)
    try:
        connect("local")
        job = estimator("sleeper.py")
        job.fit(wait=False)
        name = job.latest_training_job.name
        pid = int(wait_for(lambda: next((m for m in _all_lines(name) if m.startswith("pid ")), None)).split()[1])
        control.stop(Path(own_cloud.state_dir))
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        control.start(Path(own_cloud.state_dir), port=0)
        connect("local")
        description = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
        assert description["TrainingJobStatus"] == "Failed"
        assert description["FailureReason"] == "the local cloud stopped while the job ran"
        assert any(line.startswith("pid ") for line in _all_lines(name))  # the log survived too
    finally:
        os.environ.clear()
        os.environ.update(saved)
