"""SageMaker batch transform on the local cloud: the learner's inference code runs over every input object, through
the unmodified SageMaker SDK v2 (`Transformer.transform`) and boto3 — SplitType, BatchStrategy, ContentType/Accept,
AssembleWith, gzip input, `.out` objects, logs, the meter, failures with their reasons, stop, and a restart."""

import gzip
import json
import os
import signal
import time
import uuid
from pathlib import Path

import boto3
import pytest
from aws_clients import clients
from botocore.exceptions import ClientError
from sagemaker_models import (
    CODE,
    PYTORCH_IMAGE,
    ROLE,
    create_model,
    gone,
    linear_weights,
    meter_lines,
    model_server_pids,
    pytorch_model,
    unique,
    upload_model,
)

import labcloud
from labcloud.localcloud import control
from labcloud.pricing.catalog import load_catalog

LOG_GROUP = "/aws/sagemaker/TransformJobs"
WEIGHTS = ([2.0, -1.0], 0.5)  # score = 2 x - y + 0.5


@pytest.fixture
def aws(monkeypatch, saved_environment):
    """This process's SDKs pointed at the session's local cloud, as a notebook does; the environment is restored."""
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    labcloud.connect("local")


@pytest.fixture
def bucket(aws):
    name = f"batch-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def batch_model(sm, s3, bucket: str, **extra) -> str:
    return create_model(sm, s3, bucket, "scorer", linear_weights("scorer", *WEIGHTS, **extra), CODE / "batch")


def score(x: float, y: float) -> float:
    (a, b), bias = WEIGHTS
    return a * x + b * y + bias


def job_request(name: str, model: str, bucket: str, input_prefix: str, **options) -> dict:
    """A CreateTransformJob request: `options` override TransformInput (input_*), TransformOutput (output_*)
    and the top level."""
    inputs = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/{input_prefix}"}}}
    output = {"S3OutputPath": f"s3://{bucket}/out/{name}"}
    top = {}
    for key, value in options.items():
        if key.startswith("input_"):
            inputs[key.removeprefix("input_")] = value
        elif key.startswith("output_"):
            output[key.removeprefix("output_")] = value
        else:
            top[key] = value
    return {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": inputs,
        "TransformOutput": output,
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **top,
    }


def wait_job(sm, name: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        described = sm.describe_transform_job(TransformJobName=name)
        if described["TransformJobStatus"] not in ("InProgress", "Stopping"):
            return described
        assert time.monotonic() < deadline, f"{name} still {described['TransformJobStatus']}"
        time.sleep(0.05)


def read(s3, bucket: str, key: str) -> str:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_transformer_runs_the_inference_code_on_every_object_and_writes_out_files(bucket, capsys):
    s3, sm, logs = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("logs")
    s3.put_object(Bucket=bucket, Key="in/day1.csv", Body=b"1,2\n3,4\n\n5,6\n")  # the empty line is no record
    s3.put_object(Bucket=bucket, Key="in/more/day2.csv", Body=b"0,1\n")
    model = pytorch_model(upload_model(s3, bucket, linear_weights("scorer", *WEIGHTS)), "batch")
    job = unique("nightly-scores")
    transformer = model.transformer(
        instance_count=2,
        instance_type="ml.m5.large",
        strategy="SingleRecord",
        assemble_with="Line",
        accept="text/csv",
        output_path=f"s3://{bucket}/scores",
    )
    transformer.transform(
        f"s3://{bucket}/in/", content_type="text/csv", split_type="Line", job_name=job, wait=True, logs=True
    )

    # One .out object per input object, below the output path as below the input prefix; a line per record.
    assert read(s3, bucket, "scores/day1.csv.out") == "".join(f"{score(*r)},1\n" for r in [(1, 2), (3, 4), (5, 6)])
    assert read(s3, bucket, "scores/more/day2.csv.out") == f"{score(0, 1)},1\n"

    described = sm.describe_transform_job(TransformJobName=job)
    assert described["TransformJobStatus"] == "Completed" and "FailureReason" not in described
    assert described["TransformStartTime"] <= described["TransformEndTime"]
    assert described["ModelName"] == model.name and described["TransformInput"]["SplitType"] == "Line"
    assert not model_server_pids(transform_job=job)  # the instances stop with the job

    streams = [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=LOG_GROUP)["logStreams"]]
    assert len([s for s in streams if s.startswith(f"{job}/i-")]) == 2  # one per instance
    events = logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")["events"]
    assert any("listening on 127.0.0.1" in e["message"] for e in events)  # the model servers' own output
    assert any(f"s3://{bucket}/in/day1.csv: 3 request(s)" in e["message"] for e in events)
    assert f"s3://{bucket}/in/day1.csv" in capsys.readouterr().out  # transform(logs=True) printed them

    (line,) = [m for m in meter_lines() if m["resource"] == job]
    assert (line["service"], line["action"], line["unit"]) == ("sagemaker", "TransformJob", "instance-hour")
    assert 0 < line["quantity"] < 2 * 60 / 3600  # two instances for well under a minute
    price = load_catalog().get("ml.m5.large", service="sagemaker-inference")
    assert line["price_key"] == price.id and line["usd"] == pytest.approx(line["quantity"] * price.hourly())


def test_multi_record_batches_fill_the_payload_limit(bucket):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = batch_model(sm, s3, bucket)
    rows = 300_000  # "1,2" and a newline: 262,144 records fill one 1 MB request
    s3.put_object(Bucket=bucket, Key="big/rows.csv", Body=b"1,2\n" * rows)
    job = unique("multi")
    sm.create_transform_job(
        **job_request(
            job,
            model,
            bucket,
            "big/",
            input_ContentType="text/csv",
            input_SplitType="Line",
            BatchStrategy="MultiRecord",
            MaxPayloadInMB=1,
            output_AssembleWith="Line",
        )
    )
    assert wait_job(sm, job)["TransformJobStatus"] == "Completed"
    # No Accept: the model server's default, JSON; one answer line per request (AssembleWith Line).
    answers = [json.loads(line) for line in read(s3, bucket, f"out/{job}/rows.csv.out").splitlines()]
    assert [a["batch"] for a in answers] == [262_144, rows - 262_144]  # two requests, the first full
    assert {s for a in answers for s in a["scores"]} == {score(1, 2)}


def test_whole_objects_json_accept_and_gzip_input(bucket):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = batch_model(sm, s3, bucket)
    s3.put_object(Bucket=bucket, Key="json/a.json", Body=json.dumps({"instances": [[1, 1], [2, 0]]}).encode())
    rows = b'{"inputs": [1, 0]}\n{"inputs": [0, 3]}\n'
    s3.put_object(Bucket=bucket, Key="gz/rows.jsonl.gz", Body=gzip.compress(rows))
    whole, zipped = unique("whole"), unique("zipped")
    sm.create_transform_job(
        **job_request(
            whole, model, bucket, "json/", input_ContentType="application/json", output_Accept="application/json"
        )
    )
    sm.create_transform_job(
        **job_request(
            zipped,
            model,
            bucket,
            "gz/",
            input_ContentType="application/jsonlines",
            input_CompressionType="Gzip",
            input_SplitType="Line",
            BatchStrategy="SingleRecord",
            output_Accept="application/json",
            output_AssembleWith="Line",
        )
    )
    assert wait_job(sm, whole)["TransformJobStatus"] == "Completed"
    assert json.loads(read(s3, bucket, f"out/{whole}/a.json.out")) == {"scores": [score(1, 1), score(2, 0)], "batch": 2}
    assert wait_job(sm, zipped)["TransformJobStatus"] == "Completed"
    answers = [json.loads(line) for line in read(s3, bucket, f"out/{zipped}/rows.jsonl.gz.out").splitlines()]
    assert answers == [{"scores": [score(1, 0)], "batch": 1}, {"scores": [score(0, 3)], "batch": 1}]


def test_a_model_error_fails_the_job_with_the_models_message(bucket):
    import sagemaker
    from sagemaker.transformer import Transformer

    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = batch_model(sm, s3, bucket)
    s3.put_object(Bucket=bucket, Key="bad/rows.csv", Body=b"1,2\npoison,3\n")
    job = unique("poisoned")
    transformer = Transformer(
        model_name=model, instance_count=1, instance_type="ml.m5.large", output_path=f"s3://{bucket}/never"
    )
    with pytest.raises(sagemaker.exceptions.UnexpectedStatusException) as error:
        transformer.transform(f"s3://{bucket}/bad/", content_type="text/csv", split_type="Line", job_name=job)
    assert "cannot score a poisoned row" in str(error.value)

    described = sm.describe_transform_job(TransformJobName=job)
    assert described["TransformJobStatus"] == "Failed"
    reason = described["FailureReason"]
    assert f"s3://{bucket}/bad/rows.csv" in reason and "answered 500" in reason and LOG_GROUP in reason
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="never/")  # no partial output
    assert not model_server_pids(transform_job=job)


def test_jobs_that_cannot_run_fail_with_their_reason_and_bad_requests_are_refused(bucket):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = batch_model(sm, s3, bucket)
    broken = create_model(sm, s3, bucket, "broken", {}, CODE / "broken")  # model_fn raises
    missing = unique("missing")
    sm.create_model(
        ModelName=missing,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": PYTORCH_IMAGE, "ModelDataUrl": f"s3://{bucket}/nothing/model.tar.gz"},
    )
    s3.put_object(Bucket=bucket, Key="rows/a.csv", Body=b"1,2\n")
    s3.put_object(Bucket=bucket, Key="plain/a.csv", Body=b"1,2\n")
    cases = [
        (broken, "rows/", {}, "cannot load weights: checksum mismatch"),  # the log tail of the model server
        (missing, "rows/", {}, "Failed to download model data"),
        (model, "empty/", {}, "No S3 objects found under S3 URL"),
        (model, "plain/", {"input_CompressionType": "Gzip"}, "is not gzip data"),
        (model, "rows/", {"input_SplitType": "RecordIO"}, "does not serve SplitType RecordIO"),
    ]
    names = []
    for model_name, prefix, options, _ in cases:
        names.append(unique("doomed"))
        sm.create_transform_job(**job_request(names[-1], model_name, bucket, prefix, **options))
    for name, (*_, message) in zip(names, cases, strict=True):
        described = wait_job(sm, name)
        assert described["TransformJobStatus"] == "Failed", name
        assert message in described["FailureReason"], described["FailureReason"]

    refused = [
        (job_request(names[0], model, bucket, "rows/"), "ResourceInUse", "a job with this name already exists"),
        (job_request(unique("x"), "no-such-model", bucket, "rows/"), "ValidationException", "Could not find model"),
        (
            job_request(unique("x"), model, bucket, "rows/", input_SplitType="Lines"),
            "ValidationException",
            "Member must satisfy enum value set: [None, Line, RecordIO, TFRecord]",
        ),
    ]
    for request, code, message in refused:
        with pytest.raises(ClientError) as error:
            sm.create_transform_job(**request)
        assert error.value.response["Error"]["Code"] == code
        assert message in error.value.response["Error"]["Message"]
    assert boto3.client("s3").list_buckets()["Buckets"]  # the local cloud is healthy


def test_stop_transform_job_stops_the_servers(bucket):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    model = batch_model(sm, s3, bucket, delay=0.5)  # 200 rows: far longer than the test waits
    s3.put_object(Bucket=bucket, Key="slow/rows.csv", Body=b"1,2\n" * 200)
    job = unique("stopped")
    sm.create_transform_job(
        **job_request(job, model, bucket, "slow/", input_ContentType="text/csv", input_SplitType="Line")
    )
    deadline = time.monotonic() + 30
    while not (pids := model_server_pids(transform_job=job)):
        assert time.monotonic() < deadline, "no model server started"
        time.sleep(0.05)
    sm.stop_transform_job(TransformJobName=job)
    assert wait_job(sm, job)["TransformJobStatus"] == "Stopped"
    assert gone(pids)
    with pytest.raises(ClientError, match="only a job in progress can be stopped"):
        sm.stop_transform_job(TransformJobName=job)
    with pytest.raises(ClientError, match="Could not find transform job"):
        sm.stop_transform_job(TransformJobName=unique("never"))


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_job_running_when_the_cloud_stops_is_failed_after_the_restart(own_cloud, how):
    s3, sm = clients(own_cloud, "s3", "sagemaker")
    s3.create_bucket(Bucket="batch")
    model = batch_model(sm, s3, "batch", delay=0.5)
    s3.put_object(Bucket="batch", Key="slow/rows.csv", Body=b"1,2\n" * 200)
    s3.put_object(Bucket="batch", Key="fast/rows.csv", Body=b"1,2\n")
    done, job = unique("done"), unique("interrupted")
    sm.create_transform_job(**job_request(done, model, "batch", "fast/", input_ContentType="text/csv"))
    assert wait_job(sm, done)["TransformJobStatus"] == "Completed"
    sm.create_transform_job(
        **job_request(job, model, "batch", "slow/", input_ContentType="text/csv", input_SplitType="Line")
    )
    deadline = time.monotonic() + 30
    while not (pids := model_server_pids(transform_job=job)):
        assert time.monotonic() < deadline, "no model server started"
        time.sleep(0.05)

    if how == "killed":  # no shutdown hook runs: the next start fails the job from its record
        os.kill(own_cloud.pid, signal.SIGKILL)
    else:
        control.stop(Path(own_cloud.state_dir))
    info = control.start(Path(own_cloud.state_dir), port=0)
    assert gone(pids)
    (sm,) = clients(info, "sagemaker")
    described = sm.describe_transform_job(TransformJobName=job)
    assert described["TransformJobStatus"] == "Failed"
    assert described["FailureReason"] == "the local cloud stopped while the job ran"
    assert sm.describe_transform_job(TransformJobName=done)["TransformJobStatus"] == "Completed"
    assert {j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"]} == {done, job}
