"""`labcloud.connect` (local wiring, real-cloud credential checks) and the cost guard (estimates, the budget,
and the botocore hook that stops a billed call before it is sent)."""

from __future__ import annotations

import os
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from labcloud.connect import _AWS_OVERRIDES, Connection, CredentialsMissing, connect, local_environment
from labcloud.localcloud import control
from labcloud.pricing.catalog import Catalog, load_catalog
from labcloud.pricing.guard import BudgetExceeded, CostGuard, Estimate, arm, armed, estimate_aws
from labcloud.wiring.aws import WIRED_VARIABLES
from labcloud.wiring.gcp import WIRED_VARIABLES as GCP_WIRED

P4D_TRAINING = load_catalog().get("ml.p4d.24xlarge", service="sagemaker-training").on_demand_usd_per_hour
NOWHERE = "http://127.0.0.1:9"  # nothing listens there: a call the guard lets through fails at once


@pytest.fixture(autouse=True)
def restored_environment(monkeypatch):
    """connect() writes os.environ: every variable it may touch is put back, and the AWS guard disarmed."""
    before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    session = control.status()
    touched = {*_AWS_OVERRIDES, *WIRED_VARIABLES, *GCP_WIRED, *(local_environment(session) if session else {})}
    for name in touched:
        # Record the current value (or its absence) so that monkeypatch restores it.
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if name not in before:
            monkeypatch.delenv(name)
    yield
    arm(None)
    monkeypatch.undo()
    assert {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"} == before


def _training_job(name: str, instance_type: str, count: int, max_runtime_s: int) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:latest",
            "TrainingInputMode": "File",
        },
        "RoleArn": "arn:aws:iam::123456789012:role/x",
        "OutputDataConfig": {"S3OutputPath": "s3://course-output/models"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_s},
    }


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------------------
# connect("local")
# ---------------------------------------------------------------------------------------------------------


def test_connect_local_points_the_sdks_at_the_session_cloud(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "someone-real")  # would send calls to a real account
    monkeypatch.setenv("AWS_SESSION_TOKEN", "real-token")
    monkeypatch.setenv("NO_PROXY", "internal.example.com")
    session = control.status()
    assert session is not None, "the root conftest starts a local cloud for the session"

    cloud = connect("local")

    assert isinstance(cloud, Connection) and cloud.is_local and cloud.backend == "local"
    assert cloud.server.url == session.url and cloud.server.pid == session.pid
    assert cloud.env["AWS_ENDPOINT_URL"] == session.url == os.environ["AWS_ENDPOINT_URL"]
    assert cloud.env["LABCLOUD_URL"] == session.url and os.environ["LABCLOUD_BACKEND"] == "local"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "labcloud"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "labcloud-local-only"
    assert os.environ["AWS_DEFAULT_REGION"] == os.environ["AWS_REGION"] == cloud.region == "us-east-1"
    assert "AWS_PROFILE" not in os.environ and "AWS_SESSION_TOKEN" not in os.environ
    no_proxy = os.environ["NO_PROXY"].split(",")
    assert {"127.0.0.1", "localhost", "internal.example.com"} <= set(no_proxy)
    assert os.environ["no_proxy"] == os.environ["NO_PROXY"]
    assert {k: os.environ[k] for k in cloud.env} == cloud.env
    assert cloud.guard is None and armed("aws") is None  # no budget given: no guard
    assert session.url in repr(cloud) and "budget" not in repr(cloud)


def test_boto3_works_after_connect_local():
    connect("local", region="eu-west-1")
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    s3 = boto3.client("s3")
    assert s3.meta.endpoint_url == control.status().url
    bucket = _unique("connect-test")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    account = boto3.client("sts").get_caller_identity()["Account"]
    assert account.isdigit() and len(account) == 12


def test_connect_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of local, aws, gcp, azure, not 'nope'"):
        connect("nope")


# ---------------------------------------------------------------------------------------------------------
# connect("aws" | "gcp" | "azure") without credentials
# ---------------------------------------------------------------------------------------------------------


def test_connect_aws_without_credentials_says_how_to_fix_it(no_aws_credentials):
    with pytest.raises(CredentialsMissing) as error:
        connect("aws")
    message = str(error.value)
    assert message.startswith("connect('aws'): no AWS credentials found")
    assert "aws configure" in message and "AWS_ACCESS_KEY_ID" in message
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_connect_aws_after_local_forgets_the_local_wiring(no_aws_credentials):
    connect("local")
    assert os.environ["AWS_ENDPOINT_URL"] == control.status().url
    # The only credentials now are the local cloud's fake ones: connect("aws") must not take them for real ones.
    with pytest.raises(CredentialsMissing, match="no AWS credentials found"):
        connect("aws")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LABCLOUD_BACKEND", "LABCLOUD_URL"):
        assert name not in os.environ, name
    # No endpoint is changed: a new client talks to real AWS, not to the local cloud.
    endpoint = boto3.client("s3", region_name="us-east-1").meta.endpoint_url
    assert endpoint.startswith("https://") and endpoint.endswith(".amazonaws.com"), endpoint


def test_connect_aws_without_a_region_says_so(no_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    with pytest.raises(CredentialsMissing, match="no AWS region set.*AWS_DEFAULT_REGION"):
        connect("aws")


def test_connect_aws_with_credentials_arms_the_guard_before_any_request(no_aws_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cloud = connect("aws", budget_usd=25)
    assert not cloud.is_local and cloud.server is None and cloud.env == {}
    assert cloud.guard.budget_usd == 25 and armed("aws") is cloud.guard and armed("gcp") is None
    assert "the real cloud" in repr(cloud) and "$25.00" in repr(cloud)
    sagemaker = boto3.client(
        "sagemaker", endpoint_url=NOWHERE, config=Config(retries={"max_attempts": 0}, connect_timeout=1)
    )
    with pytest.raises(BudgetExceeded):  # stopped here, never sent (it would fail to connect otherwise)
        sagemaker.create_training_job(**_training_job("too-big", "ml.p4d.24xlarge", 1, 3600))
    costs = cloud.costs()  # on a real cloud: what the guard let through
    assert costs.empty and list(costs.columns) == ["action", "usd", "detail"]
    # Calls the guard does not price go straight through (and fail on the closed port).
    with pytest.raises(EndpointConnectionError):
        sagemaker.list_training_jobs()


@pytest.fixture
def no_gcp_credentials(monkeypatch, tmp_path):
    from google.auth.compute_engine import _metadata

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gcloud").mkdir()
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    # google.auth reads NO_GCE_CHECK when it is imported, which may have happened already.
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)


def test_connect_gcp_without_credentials_says_how_to_fix_it(no_gcp_credentials):
    with pytest.raises(CredentialsMissing) as error:
        connect("gcp")
    message = str(error.value)
    assert message.startswith("connect('gcp'): no Google Cloud credentials found")
    assert "gcloud auth application-default login" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message


@pytest.fixture
def no_azure_credentials(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AZURE_") or name in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
            monkeypatch.delenv(name)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no `az` command


def test_connect_azure_without_credentials_names_what_is_missing(no_azure_credentials):
    with pytest.raises(CredentialsMissing) as error:
        connect("azure")
    message = str(error.value)
    assert message.startswith("connect('azure'): missing AZURE_SUBSCRIPTION_ID and a credential")
    assert "az login" in message and "AZURE_TENANT_ID" in message and "AZURE_CLIENT_ID" in message


def test_connect_azure_with_a_subscription_but_no_credential(no_azure_credentials, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CredentialsMissing) as error:
        connect("azure")
    assert "AZURE_SUBSCRIPTION_ID" not in str(error.value) and "az login" in str(error.value)


def test_connect_azure_with_a_service_principal_gets_a_budget_but_no_aws_guard(no_azure_credentials, monkeypatch):
    connect("local", budget_usd=3)  # an armed AWS guard from before must not stay armed
    assert armed("aws") is not None
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_TENANT_ID", "tenant")
    monkeypatch.setenv("AZURE_CLIENT_ID", "client")
    cloud = connect("azure", budget_usd=7)
    assert cloud.backend == "azure" and cloud.guard.budget_usd == 7
    assert armed("aws") is None and armed("azure") is cloud.guard
    assert "AWS_ENDPOINT_URL" not in os.environ


# ---------------------------------------------------------------------------------------------------------
# CostGuard estimates
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _hourly(catalog, name, service):
    return catalog.get(name, service=service).on_demand_usd_per_hour


def test_training_job_estimate_is_count_times_hours_times_price(catalog):
    guard = CostGuard(100_000, catalog)
    params = _training_job("t", "ml.p4d.24xlarge", 4, 7200)
    estimate = estimate_aws(guard, "CreateTrainingJob", params)
    assert estimate.action == "sagemaker:CreateTrainingJob"
    assert estimate.usd == pytest.approx(4 * 2 * _hourly(catalog, "ml.p4d.24xlarge", "sagemaker-training"))
    assert estimate.usd == pytest.approx(4 * 2 * 37.688)
    assert estimate.detail == "4 x ml.p4d.24xlarge for up to 2 h"


def test_training_job_without_a_stopping_condition_budgets_sagemaker_default_day(catalog):
    params = _training_job("t", "ml.g4dn.xlarge", 1, 0)
    del params["StoppingCondition"]
    estimate = estimate_aws(CostGuard(1000, catalog), "CreateTrainingJob", params)
    assert estimate.usd == pytest.approx(24 * _hourly(catalog, "ml.g4dn.xlarge", "sagemaker-training"))


def test_spot_training_is_flagged_and_uses_a_spot_price_when_there_is_one(catalog):
    params = {**_training_job("t", "ml.p4d.24xlarge", 2, 3600), "EnableManagedSpotTraining": True}
    estimate = estimate_aws(CostGuard(1000, catalog), "CreateTrainingJob", params)
    assert estimate.detail.endswith("(spot)")
    # SageMaker publishes no spot price: the guard budgets the on-demand price, the worst case.
    assert estimate.usd == pytest.approx(2 * P4D_TRAINING)
    # With a spot price in the catalog, that price is used.
    row = {
        **vars(catalog.get("ml.p4d.24xlarge", service="sagemaker-training")),
        "spot_usd_per_hour": 11.0,
    }
    with_spot = Catalog({"instances": [row]})
    assert estimate_aws(CostGuard(1000, with_spot), "CreateTrainingJob", params).usd == pytest.approx(2 * 11.0)
    params["EnableManagedSpotTraining"] = False
    assert estimate_aws(CostGuard(1000, with_spot), "CreateTrainingJob", params).usd == pytest.approx(2 * P4D_TRAINING)


def test_endpoint_config_sums_its_variants_for_the_serving_hours(catalog):
    params = {
        "EndpointConfigName": "ec",
        "ProductionVariants": [
            {"VariantName": "gpu", "ModelName": "m", "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 2},
            {"VariantName": "cpu", "ModelName": "m", "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1},
            {"VariantName": "sls", "ModelName": "m", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1}},
        ],
    }
    hourly = 2 * _hourly(catalog, "ml.g4dn.xlarge", "sagemaker-inference") + _hourly(
        catalog, "ml.m5.xlarge", "sagemaker-inference"
    )
    estimate = estimate_aws(CostGuard(1000, catalog), "CreateEndpointConfig", params)
    assert estimate.action == "sagemaker:CreateEndpointConfig"
    assert estimate.usd == pytest.approx(24 * hourly)
    assert estimate.usd == pytest.approx(24 * (2 * 0.736 + 0.23))
    assert estimate.detail == "2 x ml.g4dn.xlarge + 1 x ml.m5.xlarge for 24 h"
    two_hours = estimate_aws(CostGuard(1000, catalog, serving_hours=2), "CreateEndpointConfig", params)
    assert two_hours.usd == pytest.approx(2 * hourly)


def test_run_instances_uses_the_ec2_price_and_max_count(catalog):
    params = {"ImageId": "ami-12345678", "InstanceType": "p4d.24xlarge", "MinCount": 1, "MaxCount": 2}
    estimate = estimate_aws(CostGuard(10_000, catalog), "RunInstances", params)
    assert estimate.action == "ec2:RunInstances"
    assert estimate.usd == pytest.approx(2 * 24 * _hourly(catalog, "p4d.24xlarge", "ec2"))
    assert estimate.usd == pytest.approx(2 * 24 * 21.957642)
    assert estimate.detail == "2 x p4d.24xlarge for 24 h"


def test_unbilled_calls_and_unknown_instances_are_not_estimated(catalog, caplog):
    guard = CostGuard(1, catalog)
    assert estimate_aws(guard, "ListBuckets", {}) is None
    assert estimate_aws(guard, "DescribeTrainingJob", {"TrainingJobName": "x"}) is None
    with caplog.at_level("WARNING", logger="labcloud.pricing.guard"):
        assert estimate_aws(guard, "RunInstances", {"InstanceType": "x9.mega", "MaxCount": 1}) is None
    assert "x9.mega" in caplog.text and "RunInstances is not estimated" in caplog.text


@pytest.mark.parametrize(
    "operation, params",
    [
        (
            "CreateTrainingJob",
            {
                "ResourceConfig": {
                    "InstanceGroups": [
                        {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "InstanceGroupName": "cpu"},
                        {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "InstanceGroupName": "gpu"},
                    ],
                    "VolumeSizeInGB": 30,
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            },
        ),
        ("RunInstances", {"LaunchTemplate": {"LaunchTemplateName": "gpu-box"}, "MinCount": 1, "MaxCount": 1}),
    ],
)
def test_valid_requests_without_an_instance_type_do_not_crash_the_guard(catalog, operation, params):
    estimate = estimate_aws(CostGuard(1000, catalog), operation, params)
    assert estimate is None or estimate.usd >= 0


# ---------------------------------------------------------------------------------------------------------
# The budget
# ---------------------------------------------------------------------------------------------------------


def test_check_counts_estimates_until_the_budget_is_exceeded(catalog):
    guard = CostGuard(10, catalog)
    guard.check(Estimate("a", 4.0, ""))
    guard.check(Estimate("b", 6.0, ""))  # exactly at the budget is allowed
    assert guard.spent_usd == pytest.approx(10.0)
    with pytest.raises(BudgetExceeded) as error:
        guard.check(Estimate("sagemaker:CreateTrainingJob", 0.01, "one more"))
    assert [e.action for e in guard.allowed] == ["a", "b"]  # the refused one is not counted
    exc = error.value
    assert (exc.action, exc.estimate_usd) == ("sagemaker:CreateTrainingJob", 0.01)
    assert (exc.spent_usd, exc.budget_usd) == (10, 10)


def test_budget_exceeded_message_names_the_estimate_and_the_budget(catalog):
    guard = CostGuard(50, catalog)
    params = _training_job("t", "ml.p4d.24xlarge", 4, 7200)
    estimate = estimate_aws(guard, "CreateTrainingJob", params)
    with pytest.raises(BudgetExceeded) as error:
        guard.check(estimate)
    message = str(error.value)
    assert f"${estimate.usd:,.2f}" in message and "$301.50" in message
    assert "$50.00" in message and "sagemaker:CreateTrainingJob" in message
    assert "raise budget_usd" in message


def test_connect_local_with_a_budget_stops_an_expensive_training_job_before_it_is_created():
    cloud = connect("local", budget_usd=50)
    assert armed("aws") is cloud.guard and "$50.00" in repr(cloud)
    sagemaker = boto3.client("sagemaker")
    big = _unique("too-big")
    with pytest.raises(BudgetExceeded) as error:
        sagemaker.create_training_job(**_training_job(big, "ml.p4d.24xlarge", 4, 86400))
    assert error.value.estimate_usd == pytest.approx(4 * 24 * P4D_TRAINING)
    assert f"${4 * 24 * P4D_TRAINING:,.2f}" in str(error.value)
    assert sagemaker.list_training_jobs(NameContains=big)["TrainingJobSummaries"] == []
    with pytest.raises(ClientError, match="Requested resource not found"):
        sagemaker.describe_training_job(TrainingJobName=big)
    assert cloud.guard.allowed == []

    small = _unique("small")
    sagemaker.create_training_job(**_training_job(small, "ml.m5.xlarge", 1, 600))
    jobs = sagemaker.list_training_jobs(NameContains=small)["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == [small]
    assert cloud.guard.spent_usd == pytest.approx(0.23 * 600 / 3600)


def test_disarming_lets_the_same_call_through():
    connect("local", budget_usd=1)
    sagemaker = boto3.client("sagemaker")
    with pytest.raises(BudgetExceeded):
        sagemaker.create_training_job(**_training_job(_unique("blocked"), "ml.p4d.24xlarge", 1, 3600))
    arm(None)
    name = _unique("allowed")
    sagemaker.create_training_job(**_training_job(name, "ml.p4d.24xlarge", 1, 3600))
    assert sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobName"] == name
    # connect("local") without a budget disarms too.
    connect("local", budget_usd=1)
    connect("local")
    assert armed("aws") is None


def test_a_call_that_fails_does_not_use_up_the_budget():
    cloud = connect("local", budget_usd=50)
    sagemaker = boto3.client("sagemaker")
    params = _training_job(_unique("retry"), "ml.p4d.24xlarge", 1, 2880)  # about $30
    broken = {k: v for k, v in params.items() if k != "RoleArn"}
    with pytest.raises(ParamValidationError):
        sagemaker.create_training_job(**broken)
    assert cloud.guard.spent_usd == 0
    sagemaker.create_training_job(**params)  # the corrected request fits the budget


# ---------------------------------------------------------------------------------------------------------
# Connection.costs() on the local cloud
# ---------------------------------------------------------------------------------------------------------


def test_costs_lists_what_the_s3_calls_would_have_cost(own_cloud):
    cloud = connect("local")  # LABCLOUD_HOME is this test's own cloud
    assert cloud.server.url == own_cloud.url
    assert cloud.costs().empty
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="costs-bucket")
    for i in range(3):
        s3.put_object(Bucket="costs-bucket", Key=f"k{i}", Body=b"x")
    s3.get_object(Bucket="costs-bucket", Key="k0")
    s3.get_object(Bucket="costs-bucket", Key="k1")

    costs = cloud.costs()
    assert {"cloud", "service", "action", "usd"} <= set(costs.columns)
    assert set(costs["cloud"]) == {"aws"} and set(costs["service"]) == {"s3"}
    writes = costs[costs["price_key"] == "aws.s3.put_per_1000"]
    reads = costs[costs["price_key"] == "aws.s3.get_per_1000"]
    assert writes["quantity"].sum() == 4  # CreateBucket and three PutObject
    assert reads["quantity"].sum() == 2
    assert writes["usd"].sum() == pytest.approx(4 * 0.005 / 1000)
    assert reads["usd"].sum() == pytest.approx(2 * 0.0004 / 1000)
    assert costs["usd"].sum() == pytest.approx(4 * 0.005 / 1000 + 2 * 0.0004 / 1000)


def test_s3_deletes_are_free(own_cloud):
    cloud = connect("local")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="delete-bucket")
    s3.put_object(Bucket="delete-bucket", Key="k", Body=b"x")
    before = cloud.costs()["usd"].sum()
    s3.delete_object(Bucket="delete-bucket", Key="k")
    assert cloud.costs()["usd"].sum() == pytest.approx(before, abs=1e-12)


def test_costs_count_from_the_connection_unless_asked_for_everything(own_cloud):
    connect("local")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="baseline-bucket")
    s3.put_object(Bucket="baseline-bucket", Key="before", Body=b"x")

    second = connect("local")  # a notebook run again on the same local cloud
    assert second.costs().empty
    s3.put_object(Bucket="baseline-bucket", Key="after", Body=b"x")
    since = second.costs()
    assert since[["action", "quantity"]].values.tolist() == [["PutObject", 1]]
    everything = second.costs(since_connect=False).set_index("action")["quantity"]
    assert everything["PutObject"] >= 2 and everything["CreateBucket"] >= 1
