"""AWS through the real boto3: S3, SQS, CloudWatch, IAM, STS round trips, errors, and state kept on restart."""

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from aws_clients import clients
from botocore.exceptions import ClientError

from labcloud.localcloud import control


def test_round_trips_with_only_the_environment_from_labcloud_env(own_cloud):
    exports = subprocess.run(
        [sys.executable, "-m", "labcloud.cli", "env", "--state", own_cloud.state_dir],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    script = r"""
import boto3, datetime as dt, json
s3, sqs, cw, sts = (boto3.client(n) for n in ("s3", "sqs", "cloudwatch", "sts"))
s3.create_bucket(Bucket="course-data")
s3.put_object(Bucket="course-data", Key="hello.txt", Body=b"hello, cloud")
body = s3.get_object(Bucket="course-data", Key="hello.txt")["Body"].read().decode()
queue = sqs.create_queue(QueueName="jobs")["QueueUrl"]
sqs.send_message(QueueUrl=queue, MessageBody="train")
message = sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"]
cw.put_metric_data(Namespace="Lab", MetricData=[{"MetricName": "Latency", "Value": 42.0, "Unit": "Milliseconds"}])
now = dt.datetime.now(dt.timezone.utc)
stats = cw.get_metric_statistics(Namespace="Lab", MetricName="Latency", StartTime=now - dt.timedelta(minutes=5),
                                 EndTime=now + dt.timedelta(minutes=1), Period=60, Statistics=["Maximum"])
print(json.dumps({"body": body, "message": message, "max": stats["Datapoints"][0]["Maximum"],
                  "account": sts.get_caller_identity()["Account"]}))
"""
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["body"] == "hello, cloud"
    assert out["message"] == "train"
    assert out["max"] == 42.0
    assert out["account"].isdigit() and len(out["account"]) == 12


def test_bad_requests_get_aws_errors_and_the_cloud_stays_up(own_cloud):
    s3, sqs = clients(own_cloud, "s3", "sqs")
    with pytest.raises(ClientError) as missing_bucket:
        s3.get_object(Bucket="no-such-bucket", Key="x")
    assert missing_bucket.value.response["Error"]["Code"] == "NoSuchBucket"
    with pytest.raises(ClientError) as missing_queue:
        sqs.get_queue_url(QueueName="no-such-queue")
    assert "NonExistentQueue" in missing_queue.value.response["Error"]["Code"]

    # Garbage on the wire: an unknown service, and a JSON-protocol call with a body that is not JSON.
    for headers, body in (
        (
            {"Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/nosuchservice/aws4_request"},
            b"{}",
        ),
        (
            {
                "X-Amz-Target": "AmazonSQS.SendMessage",
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/sqs/aws4_request",
            },
            b"\x00not json",
        ),
    ):
        request = urllib.request.Request(own_cloud.url + "/", data=body, headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            control._opener.open(request, timeout=5)
        assert 400 <= error.value.code < 600
        payload = error.value.read().decode()
        assert "__type" in payload or "<Code>" in payload, payload  # an AWS error shape, not a crash page
    assert control.health(own_cloud)["status"] == "ok"


def test_state_survives_down_and_up(own_cloud):
    state = own_cloud.state_dir
    s3, sqs, cw, iam = clients(own_cloud, "s3", "sqs", "cloudwatch", "iam")
    s3.create_bucket(Bucket="kept-bucket")
    s3.put_object(Bucket="kept-bucket", Key="model/model.tar.gz", Body=b"\x1f\x8b weights")
    queue = sqs.create_queue(QueueName="kept-queue")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="still here")
    cw.put_metric_data(Namespace="Kept", MetricData=[{"MetricName": "Drift", "Value": 0.3}])
    iam.create_role(RoleName="SageMakerRole", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))

    control.stop(state)
    info = control.start(state, port=0)
    s3, sqs, cw, iam = clients(info, "s3", "sqs", "cloudwatch", "iam")
    assert s3.get_object(Bucket="kept-bucket", Key="model/model.tar.gz")["Body"].read() == b"\x1f\x8b weights"
    queue = sqs.get_queue_url(QueueName="kept-queue")["QueueUrl"]
    assert sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"] == "still here"
    now = dt.datetime.now(dt.timezone.utc)
    points = cw.get_metric_statistics(
        Namespace="Kept",
        MetricName="Drift",
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["Average"],
    )["Datapoints"]
    assert points and points[0]["Average"] == pytest.approx(0.3)
    assert iam.get_role(RoleName="SageMakerRole")["Role"]["Arn"].endswith(":role/SageMakerRole")


def test_requests_are_metered_at_real_prices(own_cloud):
    (s3,) = clients(own_cloud, "s3")
    s3.create_bucket(Bucket="metered")
    for i in range(3):
        s3.put_object(Bucket="metered", Key=f"k{i}", Body=b"x")
    with control._opener.open(own_cloud.url + "/_labcloud/costs", timeout=5) as response:
        lines = json.load(response)["lines"]
    by_action = {line["action"]: line for line in lines if line["service"] == "s3"}
    assert by_action["PutObject"]["quantity"] == 3
    assert by_action["CreateBucket"]["quantity"] == 1  # bucket writes are billed at the PUT rate too
    assert by_action["PutObject"]["usd"] == pytest.approx(3 * 0.005 / 1000)
