"""Lambda through the real boto3: handlers really run in worker processes, cold then warm, with Lambda's payloads,
errors, timeouts, logs, provisioned concurrency, throttling and prices."""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from labcloud.connect import local_environment
from labcloud.localcloud import control

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"  # exists from the start and trusts Lambda

APP = """
import json, os, time
print("initialising", flush=True)
STARTED = time.time()  # module level: runs once per worker, during the cold start


def lambda_handler(event, context):
    print("event", json.dumps(event))
    if event.get("fail"):
        raise ValueError(event["fail"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("touch"):
        open(event["touch"], "w").write(context.aws_request_id)
    return {
        "pid": os.getpid(),
        "answer": os.environ.get("ANSWER"),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "log_group": context.log_group_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "initialization": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
    }
"""


def package(source: str, name: str = "app.py") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, source)
    return buffer.getvalue()


def client_kwargs(info) -> dict:
    env = local_environment(info)
    return dict(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}),  # show throttling instead of retrying it
    )


@pytest.fixture(scope="module")
def cloud():
    info = control.status()
    assert info is not None, "the session's local cloud is not running"
    return info


@pytest.fixture(scope="module")
def lam(cloud):
    return boto3.client("lambda", **client_kwargs(cloud))


def create(lam, source: str = APP, **options) -> str:
    settings = {
        "FunctionName": f"fn-{uuid.uuid4().hex[:10]}",
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.lambda_handler",
        "Code": {"ZipFile": package(source)},
        **options,
    }
    lam.create_function(**settings)
    return settings["FunctionName"]


def call(lam, name: str, event: dict | None = None, **options) -> tuple[dict, str, dict]:
    """(payload, log tail, raw response) of a synchronous invocation."""
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), LogType="Tail", **options)
    return json.loads(response["Payload"].read()), base64.b64decode(response["LogResult"]).decode(), response


def report(log: str) -> str:
    return next(line for line in log.splitlines() if line.startswith("REPORT RequestId: "))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_create_function_needs_an_existing_role_and_a_real_zip(lam):
    with pytest.raises(ClientError) as missing_role:
        create(lam, Role="arn:aws:iam::123456789012:role/NoSuchRole")
    assert missing_role.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "cannot be assumed by Lambda" in missing_role.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as not_a_zip:
        lam.create_function(
            FunctionName="not-a-zip", Runtime="python3.11", Role=ROLE, Handler="app.h", Code={"ZipFile": b"nope"}
        )
    assert "Could not unzip uploaded file" in not_a_zip.value.response["Error"]["Message"]


def test_first_call_cold_starts_later_calls_are_warm(lam, cloud):
    name = create(lam, MemorySize=256, Timeout=5, Environment={"Variables": {"ANSWER": "42"}})
    round_trips, results = [], []
    for i in range(6):
        started = time.perf_counter()
        payload, log, response = call(lam, name, {"call": i})
        round_trips.append((time.perf_counter() - started) * 1000)
        results.append((payload, log, response))

    (first, first_log, first_response), warm = results[0], results[1:]
    assert first_response["StatusCode"] == 200 and "FunctionError" not in first_response
    assert first_response["ExecutedVersion"] == "$LATEST"
    assert "Init Duration: " in report(first_log)
    assert all("Init Duration" not in report(log) for _, log, _ in warm)
    assert {payload["pid"] for payload, _, _ in results} == {first["pid"]}  # one warm worker served them all

    assert first["answer"] == "42" and first["function_name"] == name and first["memory_limit_in_mb"] == "256"
    assert first["request_id"] == first_response["ResponseMetadata"]["RequestId"]
    assert first["arn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    assert first["log_group"] == f"/aws/lambda/{name}" and 0 < first["remaining_ms"] <= 5000
    lines = first_log.splitlines()
    assert lines[0] == f"START RequestId: {first['request_id']} Version: $LATEST"
    assert lines[1] == 'event {"call": 0}' and lines[2] == f"END RequestId: {first['request_id']}"
    assert "Memory Size: 256 MB" in lines[3] and "Billed Duration: " in lines[3]

    cold, warm_median = round_trips[0], statistics.median(round_trips[1:])
    print(f"\ncold invoke {cold:.1f} ms, warm median {warm_median:.1f} ms")
    assert warm_median < cold

    logs = boto3.client("logs", **client_kwargs(cloud))
    [stream] = logs.describe_log_streams(logGroupName=f"/aws/lambda/{name}")["logStreams"]
    assert "[$LATEST]" in stream["logStreamName"]
    events = [e["message"] for e in logs.get_log_events(**_stream(name, stream))["events"]]
    assert events[:2] == ["initialising", f"START RequestId: {first['request_id']} Version: $LATEST"]
    assert sum(e.startswith("REPORT RequestId") for e in events) == 6


def _stream(name: str, stream: dict) -> dict:
    return {"logGroupName": f"/aws/lambda/{name}", "logStreamName": stream["logStreamName"]}


def test_handler_exception_is_an_unhandled_function_error_and_the_worker_stays_warm(lam):
    name = create(lam)
    payload, log, response = call(lam, name, {"fail": "bad input"})
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert payload["errorMessage"] == "bad input" and payload["errorType"] == "ValueError"
    assert any("raise ValueError" in frame for frame in payload["stackTrace"])
    assert "[ERROR] ValueError: bad input" in log

    payload, log, response = call(lam, name)
    assert "FunctionError" not in response and "Init Duration" not in report(log)


def test_init_failures_report_the_runtimes_error_types(lam):
    import_error = create(lam, "import no_such_package_for_labcloud\n")
    payload, log, response = call(lam, import_error)
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"] == "Unable to import module 'app': No module named 'no_such_package_for_labcloud'"
    assert "Init Duration" in report(log) and "Status: error" in report(log)

    missing_handler = create(lam, Handler="app.no_such_handler")
    payload, _, _ = call(lam, missing_handler)
    assert payload["errorType"] == "Runtime.HandlerNotFound"


def test_a_call_past_the_timeout_is_stopped_and_the_next_one_is_cold(lam):
    name = create(lam, Timeout=1)
    pid = call(lam, name)[0]["pid"]
    started = time.perf_counter()
    payload, log, response = call(lam, name, {"sleep": 5})
    assert time.perf_counter() - started < 3
    assert response["FunctionError"] == "Unhandled" and payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"]
    assert "Status: timeout" in report(log)
    assert wait_until(lambda: not alive(pid))
    payload, log, _ = call(lam, name)
    assert payload["pid"] != pid and "Init Duration" in report(log)


def test_unknown_function_is_resource_not_found(lam):
    for operation in (
        lambda: lam.invoke(FunctionName="no-such-function", Payload=b"{}"),
        lambda: lam.get_provisioned_concurrency_config(FunctionName="no-such-function", Qualifier="1"),
    ):
        with pytest.raises(ClientError) as error:
            operation()
        assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_update_code_brings_new_behaviour_on_a_cold_worker_and_delete_stops_it(lam):
    name = create(lam, "import os\ndef lambda_handler(e, c):\n    return ['one', os.getpid()]\n")
    (answer, old_pid), _, _ = call(lam, name)
    assert answer == "one"
    lam.update_function_code(
        FunctionName=name, ZipFile=package("import os\ndef lambda_handler(e, c):\n    return ['two', os.getpid()]\n")
    )
    assert wait_until(lambda: not alive(old_pid))
    (answer, new_pid), log, _ = call(lam, name)
    assert answer == "two" and new_pid != old_pid and "Init Duration" in report(log)

    lam.delete_function(FunctionName=name)
    assert wait_until(lambda: not alive(new_pid))
    with pytest.raises(ClientError) as gone:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_provisioned_concurrency_makes_the_first_call_warm(lam):
    name = create(lam)
    with pytest.raises(ClientError) as unpublished:
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    assert unpublished.value.response["Error"]["Code"] == "InvalidParameterValueException"

    version = lam.publish_version(FunctionName=name)["Version"]
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
    )
    assert put["Status"] == "IN_PROGRESS" and put["RequestedProvisionedConcurrentExecutions"] == 2

    def config():
        return lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)

    assert wait_until(lambda: config()["Status"] == "READY")
    assert config()["AllocatedProvisionedConcurrentExecutions"] == 2

    payload, log, response = call(lam, name, Qualifier=version)
    assert response["ExecutedVersion"] == version and "Init Duration" not in report(log)
    assert payload["initialization"] == "provisioned-concurrency"
    assert payload["arn"].endswith(f":function:{name}:{version}")
    _, latest_log, _ = call(lam, name)  # $LATEST has no provisioned environments: cold
    assert "Init Duration" in report(latest_log)

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    assert wait_until(lambda: not alive(payload["pid"]))
    with pytest.raises(ClientError) as deleted:
        config()
    assert deleted.value.response["Error"]["Code"] == "ProvisionedConcurrencyConfigNotFoundException"


def test_concurrent_calls_start_more_workers_and_reserved_concurrency_throttles(lam):
    name = create(lam)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: call(lam, name, {"sleep": 0.4}), range(3)))
    assert len({payload["pid"] for payload, _, _ in results}) == 3
    assert all("Init Duration" in report(log) for _, log, _ in results)

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as throttled:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert throttled.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_event_invocation_returns_202_and_runs_in_the_background(lam, tmp_path):
    name = create(lam)
    marker = tmp_path / "ran"
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"touch": str(marker)}))
    assert response["StatusCode"] == 202
    assert wait_until(marker.exists)
    assert len(marker.read_text()) == 36  # the request id the handler saw


def test_each_call_is_metered_in_gb_seconds_plus_the_request_price(lam, cloud):
    name = create(lam, MemorySize=512)
    billed_ms = []
    for _ in range(3):
        log = call(lam, name)[1]
        billed_ms.append(int(report(log).split("Billed Duration: ")[1].split(" ms")[0]))
    with control._opener.open(cloud.url + "/_labcloud/costs", timeout=5) as response:
        [line] = [x for x in json.load(response)["lines"] if x["service"] == "lambda" and x["resource"] == name]
    gb_seconds = sum(billed_ms) / 1000 * 512 / 1024
    assert (line["action"], line["unit"]) == ("Invoke", "GB-second")
    assert line["quantity"] == pytest.approx(gb_seconds)
    assert line["usd"] == pytest.approx(gb_seconds * 0.0000166667 + 3 * 0.20 / 1_000_000)


def test_idle_workers_are_reclaimed_and_functions_survive_a_restart(tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("LABCLOUD_HOME", str(state))
    monkeypatch.setenv("LABCLOUD_LAMBDA_IDLE_S", "0.3")
    info = control.start(state, port=0)
    try:
        lam = boto3.client("lambda", **client_kwargs(info))
        name = create(lam, FunctionName="kept-function")
        pid = call(lam, name)[0]["pid"]
        assert wait_until(lambda: not alive(pid), timeout=5)  # reclaimed after 0.3 s idle
        assert "Init Duration" in report(call(lam, name)[1])
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)

        control.stop(state)
        info = control.start(state, port=0)
        lam = boto3.client("lambda", **client_kwargs(info))
        payload, log, _ = call(lam, name)
        assert payload["function_name"] == name and "Init Duration" in report(log)

        def ready() -> bool:
            config = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
            return config["Status"] == "READY"

        assert wait_until(ready)  # provisioned again after the restart, and never reclaimed
        time.sleep(0.5)
        assert "Init Duration" not in report(call(lam, name, Qualifier=version)[1])
    finally:
        control.stop(state)
