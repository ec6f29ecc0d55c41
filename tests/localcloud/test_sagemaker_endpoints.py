"""SageMaker endpoints on the local cloud: the learner's inference code really serves, through the unmodified
SageMaker SDK v2 and boto3 — deploy, predict, traffic split, live weights, updates, data capture, errors, the meter,
and a restart."""

import io
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
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

G4DN_INFERENCE_USD_PER_HOUR = 0.736  # shared/labcloud/pricing/instances.yaml, sagemaker-inference:ml.g4dn.xlarge


@pytest.fixture
def aws(monkeypatch):
    """This process's SDKs pointed at the session's local cloud, as a notebook does; the environment is restored."""
    saved = dict(os.environ)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    labcloud.connect("local")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def bucket(aws):
    name = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def create_linear_model(sm, s3, bucket: str, name: str, weights: list[float], bias: float) -> str:
    return create_model(sm, s3, bucket, name, linear_weights(name, weights, bias), CODE / "linear")


def wait_status(sm, endpoint: str, timeout: float = 30.0) -> dict:
    """DescribeEndpoint once the endpoint has left Creating/Updating (boto3's own waiter polls every 30 s)."""
    deadline = time.monotonic() + timeout
    while True:
        described = sm.describe_endpoint(EndpointName=endpoint)
        if described["EndpointStatus"] not in ("Creating", "Updating", "SystemUpdating"):
            return described
        assert time.monotonic() < deadline, f"{endpoint} still {described['EndpointStatus']}"
        time.sleep(0.05)


def server_pids(endpoint: str, variant: str | None = None) -> set[int]:
    """The model-server processes of an endpoint, found by their command lines."""
    return model_server_pids(endpoint=endpoint, **({"variant": variant} if variant else {}))


def invoke(runtime, endpoint: str, payload, **kwargs) -> tuple[dict, str]:
    answer = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(payload), ContentType="application/json", **kwargs
    )
    return json.loads(answer["Body"].read()), answer["InvokedProductionVariant"]


# ---------------------------------------------------------------------------------------------------------------


def test_pytorch_model_deploys_predicts_logs_and_is_metered(bucket, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    s3, sm, logs = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("logs")
    model_data = upload_model(s3, bucket, linear_weights("linear-v1", [2.0, -1.0, 0.5], 0.25))
    endpoint = unique("my-endpoint")
    model = pytorch_model(model_data, "linear")
    predictor = model.deploy(
        initial_instance_count=2,
        instance_type="ml.g4dn.xlarge",
        endpoint_name=endpoint,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )

    described = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    answers = [predictor.predict({"inputs": [1.0, 2.0, 4.0]}) for _ in range(6)]
    assert {a["score"] for a in answers} == {2.0 - 2.0 + 2.0 + 0.25}  # computed from the archive's weights
    assert {a["model"] for a in answers} == {"linear-v1"}
    pids = server_pids(endpoint)
    assert len(pids) == 2 and {a["pid"] for a in answers} == pids  # both instances served, in turn

    # The SDK repacked the archive with code/inference.py and named it in the model's environment.
    environment = sm.describe_model(ModelName=model.name)["PrimaryContainer"]["Environment"]
    assert environment["SAGEMAKER_PROGRAM"] == "inference.py"

    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    streams = [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]]
    assert len(streams) == 2 and all(re.fullmatch(r"AllTraffic/i-[0-9a-f]{17}", s) for s in streams)
    deadline = time.monotonic() + 5
    while not (events := logs.filter_log_events(logGroupName=group)["events"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("listening on 127.0.0.1" in e["message"] for e in events)

    predictor.delete_endpoint()
    assert gone(pids)
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName=endpoint)
    (line,) = [m for m in meter_lines() if m["resource"] == f"{endpoint}/AllTraffic"]
    assert (line["cloud"], line["service"], line["action"], line["unit"]) == (
        "aws",
        "sagemaker",
        "Endpoint",
        "instance-hour",
    )
    assert 0 < line["quantity"] < 2 * 60 / 3600  # two instances for well under a minute
    assert line["usd"] == pytest.approx(line["quantity"] * G4DN_INFERENCE_USD_PER_HOUR)
    assert line["price_key"] == "sagemaker-inference:ml.g4dn.xlarge"


def test_learner_errors_are_model_errors_and_the_endpoint_keeps_serving(bucket):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    s3 = boto3.client("s3")
    model = pytorch_model(upload_model(s3, bucket, linear_weights("linear", [1.0], 0.0)), "linear")
    endpoint = unique("errors")
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        endpoint_name=endpoint,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    try:
        runtime = boto3.client("sagemaker-runtime")
        with pytest.raises(runtime.exceptions.ModelError) as error:
            predictor.predict({"inputs": "Hello, cloud AI!"})  # predict_fn raises ValueError
        response = error.value.response
        assert response["OriginalStatusCode"] == 500
        assert "inputs must be a list of numbers, not 'Hello, cloud AI!'" in response["OriginalMessage"]
        assert "inference.py" in response["OriginalMessage"]  # the learner's traceback
        assert response["LogStreamArn"].endswith(f":log-group:/aws/sagemaker/Endpoints/{endpoint}")
        assert "Received server error (500) from primary" in str(error.value)

        with pytest.raises(runtime.exceptions.ModelError, match=r"expected application/json, got text/csv"):
            runtime.invoke_endpoint(EndpointName=endpoint, Body=b"1,2", ContentType="text/csv")
        assert predictor.predict({"inputs": [3.0]})["score"] == 3.0  # still serving
        assert boto3.client("s3").list_buckets()["Buckets"]  # and the local cloud is healthy
    finally:
        predictor.delete_endpoint()


def test_numpy_bodies_with_the_toolkit_default_handlers(bucket):
    """No inference script at all: the default model_fn loads TorchScript model.pt; input, predict and output
    are the toolkit's defaults (NumPy .npy and JSON)."""
    torch = pytest.importorskip("torch")

    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.5, -0.5]))
    saved = io.BytesIO()
    torch.jit.save(torch.jit.script(linear), saved)
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    model_name, endpoint = unique("torchscript"), unique("numpy")
    url = upload_model(s3, bucket, {"model.pt": saved.getvalue()})
    sm.create_model(
        ModelName=model_name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PYTORCH_IMAGE, "ModelDataUrl": url}
    )
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.xlarge",
            }
        ],
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    try:
        assert wait_status(sm, endpoint, timeout=60)["EndpointStatus"] == "InService"
        batch = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, -1.0]], dtype=np.float32)
        expected = batch @ np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], dtype=np.float32).T + [0.5, -0.5]
        body = io.BytesIO()
        np.save(body, batch)

        answer = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body.getvalue(), ContentType="application/x-npy", Accept="application/x-npy"
        )
        assert answer["ContentType"] == "application/x-npy"
        np.testing.assert_allclose(np.load(io.BytesIO(answer["Body"].read())), expected, rtol=1e-6)

        answer = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=json.dumps(batch.tolist()), ContentType="application/json"
        )
        assert answer["ContentType"] == "application/json"
        np.testing.assert_allclose(json.loads(answer["Body"].read()), expected, rtol=1e-6)

        with pytest.raises(runtime.exceptions.ModelError) as error:
            runtime.invoke_endpoint(EndpointName=endpoint, Body=b"<x/>", ContentType="application/xml")
        assert error.value.response["OriginalStatusCode"] == 415
    finally:
        sm.delete_endpoint(EndpointName=endpoint)


def test_traffic_split_live_weights_target_variant_and_scaling(bucket):
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    champion = create_linear_model(sm, s3, bucket, "champion", [1.0], 0.0)
    challenger = create_linear_model(sm, s3, bucket, "challenger", [1.0], 100.0)
    endpoint = unique("ab-test")
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[
            {"VariantName": "A", "ModelName": champion, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
             "InitialVariantWeight": 0.9},
            {"VariantName": "B", "ModelName": challenger, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
             "InitialVariantWeight": 0.1},
        ],
    )  # fmt: skip
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    try:
        assert wait_status(sm, endpoint)["EndpointStatus"] == "InService"

        def split(n: int = 400) -> dict[str, int]:
            counts = {"A": 0, "B": 0}
            for _ in range(n):
                answer, variant = invoke(runtime, endpoint, {"inputs": [1.0]})
                assert answer["model"] == {"A": "champion", "B": "challenger"}[variant]  # really that variant's model
                counts[variant] += 1
            return counts

        assert 15 <= split()["B"] <= 70  # 10% of 400 = 40, sd 6

        sm.update_endpoint_weights_and_capacities(
            EndpointName=endpoint,
            DesiredWeightsAndCapacities=[
                {"VariantName": "A", "DesiredWeight": 1.0},
                {"VariantName": "B", "DesiredWeight": 1.0},
            ],
        )
        described = wait_status(sm, endpoint)
        assert described["EndpointStatus"] == "InService"
        assert {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]} == {"A": 1.0, "B": 1.0}
        assert 150 <= split()["B"] <= 250  # 50% of 400 = 200, sd 10

        for _ in range(10):
            answer, variant = invoke(runtime, endpoint, {"inputs": [1.0]}, TargetVariant="B")
            assert (variant, answer["score"]) == ("B", 101.0)

        a_before = server_pids(endpoint, "A")
        sm.update_endpoint_weights_and_capacities(
            EndpointName=endpoint, DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredInstanceCount": 2}]
        )
        described = wait_status(sm, endpoint)
        (a,) = [v for v in described["ProductionVariants"] if v["VariantName"] == "A"]
        assert a["CurrentInstanceCount"] == a["DesiredInstanceCount"] == 2 and a["CurrentWeight"] == 1.0
        a_now = server_pids(endpoint, "A")
        assert len(a_now) == 2 and a_before < a_now
        served = {invoke(runtime, endpoint, {"inputs": [1.0]}, TargetVariant="A")[0]["pid"] for _ in range(4)}
        assert served == a_now

        with pytest.raises(ClientError, match="DesiredWeightsAndCapacities|not present"):
            sm.update_endpoint_weights_and_capacities(
                EndpointName=endpoint, DesiredWeightsAndCapacities=[{"VariantName": "C", "DesiredWeight": 1.0}]
            )
    finally:
        sm.delete_endpoint(EndpointName=endpoint)
    assert not server_pids(endpoint)


def test_data_capture_writes_sagemaker_capture_files(bucket):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.model_monitor import DataCaptureConfig
    from sagemaker.serializers import JSONSerializer

    s3 = boto3.client("s3")
    model = pytorch_model(upload_model(s3, bucket, linear_weights("captured", [1.0, 1.0], 0.0)), "linear")
    endpoint = unique("captured")
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        endpoint_name=endpoint,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
        data_capture_config=DataCaptureConfig(
            enable_capture=True,
            sampling_percentage=50,
            destination_s3_uri=f"s3://{bucket}/capture",
            json_content_types=["application/json"],
        ),
    )
    capture = boto3.client("sagemaker").describe_endpoint(EndpointName=endpoint)["DataCaptureConfig"]
    assert capture == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 50,
        "DestinationS3Uri": f"s3://{bucket}/capture",
    }
    prefix = f"capture/{endpoint}/AllTraffic/"
    for i in range(200):
        predictor.predict({"inputs": [float(i), 1.0]})
    deadline = time.monotonic() + 5  # flushed every second, without waiting for the delete
    while not s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents")
    predictor.delete_endpoint()  # flushes the rest

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    uuid_pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    for key in keys:
        assert re.fullmatch(
            rf"{prefix}\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/\d{{2}}-\d{{2}}-\d{{3}}-{uuid_pattern}\.jsonl", key
        )
    records = [
        json.loads(line) for key in keys for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    ]
    assert 65 <= len(records) <= 135  # 50% of 200, sd 7
    first = records[0]
    assert first["eventVersion"] == "0"
    assert re.fullmatch(uuid_pattern, first["eventMetadata"]["eventId"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", first["eventMetadata"]["inferenceTime"])
    request, response = first["captureData"]["endpointInput"], first["captureData"]["endpointOutput"]
    assert (request["mode"], request["encoding"], request["observedContentType"]) == (
        "INPUT",
        "JSON",
        "application/json",
    )
    assert (response["mode"], response["encoding"]) == ("OUTPUT", "JSON")
    inputs = json.loads(request["data"])["inputs"]
    assert json.loads(response["data"])["score"] == sum(inputs)  # the response to that very request
    assert len({json.loads(r["captureData"]["endpointInput"]["data"])["inputs"][0] for r in records}) == len(records)


def test_model_fn_raising_at_load_fails_the_endpoint(bucket):
    from sagemaker.exceptions import UnexpectedStatusException

    sm = boto3.client("sagemaker")
    model = pytorch_model(upload_model(boto3.client("s3"), bucket, linear_weights("broken", [1.0], 0.0)), "broken")
    endpoint = unique("broken")
    with pytest.raises(UnexpectedStatusException, match="cannot load weights: checksum mismatch"):
        model.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=endpoint)
    described = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "Failed"
    assert "did not pass the ping health check" in described["FailureReason"]
    assert "RuntimeError: cannot load weights" in described["FailureReason"]
    assert len(described["FailureReason"]) <= 1024
    assert not server_pids(endpoint)
    runtime = boto3.client("sagemaker-runtime")
    with pytest.raises(runtime.exceptions.ValidationError, match="not in service"):
        runtime.invoke_endpoint(EndpointName=endpoint, Body=b"{}", ContentType="application/json")
    sm.delete_endpoint(EndpointName=endpoint)


def test_missing_model_data_fails_the_endpoint(bucket):
    sm = boto3.client("sagemaker")
    model_name, endpoint = unique("missing"), unique("missing")
    url = f"s3://{bucket}/nowhere/model.tar.gz"
    sm.create_model(
        ModelName=model_name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": PYTORCH_IMAGE, "ModelDataUrl": url}
    )
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    described = wait_status(sm, endpoint)
    assert described["EndpointStatus"] == "Failed"
    assert f'Failed to download model data from URL "{url}"' in described["FailureReason"]
    with pytest.raises(ClientError, match="Cannot create already existing endpoint"):
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)
    sm.delete_endpoint(EndpointName=endpoint)


def test_unknown_endpoint_is_a_validation_error(aws):
    runtime = boto3.client("sagemaker-runtime")
    with pytest.raises(runtime.exceptions.ValidationError) as error:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}", ContentType="application/json")
    assert error.value.response["Error"]["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_update_endpoint_starts_the_new_config_then_stops_the_old(bucket):
    s3, sm, runtime = boto3.client("s3"), boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    endpoint = unique("rolling")

    def config(model_name: str) -> str:
        name = unique("config")
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model_name,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        return name

    first = config(create_linear_model(sm, s3, bucket, "v1", [1.0], 0.0))
    second = config(create_linear_model(sm, s3, bucket, "v2", [10.0], 0.0))
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=first)
    try:
        assert wait_status(sm, endpoint)["EndpointStatus"] == "InService"
        assert invoke(runtime, endpoint, {"inputs": [2.0]})[0]["score"] == 2.0
        old = server_pids(endpoint)

        sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=second)
        assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "Updating"
        assert invoke(runtime, endpoint, {"inputs": [2.0]})[0]["score"] in (2.0, 20.0)  # served throughout
        described = wait_status(sm, endpoint)
        assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", second)
        answer, _ = invoke(runtime, endpoint, {"inputs": [2.0]})
        assert (answer["model"], answer["score"]) == ("v2", 20.0)
        assert gone(old) and server_pids(endpoint) == {answer["pid"]}
    finally:
        sm.delete_endpoint(EndpointName=endpoint)


def test_serving_endpoints_come_back_after_a_restart(own_cloud):
    s3, sm, runtime = clients(own_cloud, "s3", "sagemaker", "sagemaker-runtime")
    s3.create_bucket(Bucket="models")
    name = unique("kept")
    model = create_linear_model(sm, s3, "models", "kept", [3.0], 1.0)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert wait_status(sm, name)["EndpointStatus"] == "InService"
    assert invoke(runtime, name, {"inputs": [1.0]})[0]["score"] == 4.0
    before = server_pids(name)

    control.stop(Path(own_cloud.state_dir))
    assert gone(before)
    info = control.start(Path(own_cloud.state_dir), port=0)
    sm, runtime = clients(info, "sagemaker", "sagemaker-runtime")

    assert wait_status(sm, name)["EndpointStatus"] == "InService"
    answer, _ = invoke(runtime, name, {"inputs": [2.0]})
    assert (answer["model"], answer["score"]) == ("kept", 7.0)
    assert server_pids(name) == {answer["pid"]} and answer["pid"] not in before
    sm.delete_endpoint(EndpointName=name)
    assert not server_pids(name)


def test_the_model_server_alone_serves_transform_fn(tmp_path):
    """`python -m labcloud.runtime.model_server`: ping, a transform_fn script, and its port file."""
    import subprocess
    import sys

    import urllib3

    model_dir = tmp_path / "model"
    shutil.copytree(CODE / "transform", model_dir / "code")
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labcloud.runtime.model_server",
            "--model-dir",
            str(model_dir),
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.02)
        pool = urllib3.HTTPConnectionPool("127.0.0.1", int(port_file.read_text()))
        assert pool.request("GET", "/ping").status == 200
        answer = pool.request("POST", "/invocations", body=b"1,2.5", headers={"Content-Type": "text/csv"})
        assert (answer.status, answer.headers["Content-Type"], answer.data) == (200, "text/csv", b"3.0,7.5")
        assert pool.request("POST", "/other", body=b"").status == 404
    finally:
        server.terminate()
        server.wait()
    assert b"listening on 127.0.0.1" in server.stdout.read()
