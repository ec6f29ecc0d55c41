"""What the local cloud does not serve gets a clear answer, in the cloud's own error shape, at once: the SDKs get
their own exception naming the operation and do not retry it, and the local cloud stays healthy.

Each test counts the server's "does not implement" log lines for its operation: one line per request the server
answered, so a retry would show as a second line."""

import os
import uuid

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from google.api_core import exceptions as google_exceptions

from labcloud.localcloud.state import StateDir

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


class ServerLog:
    """The local cloud's "does not implement" lines about one operation, counted from when this was made."""

    def __init__(self, connection, operation: str):
        self.path = StateDir(connection.server.state_dir).log_file
        self.operation = operation
        self.before = self._count()

    def _count(self) -> int:
        lines = self.path.read_text(errors="replace").splitlines()
        return sum("does not implement" in line and self.operation in line for line in lines)

    def new_lines(self) -> int:
        return self._count() - self.before


def assert_healthy(connection):
    health = requests.get(connection.server.url + "/_labcloud/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "Buckets" in boto3.client("s3").list_buckets()


def call_aws(connection, operation: str, call) -> ClientError:
    """Call a boto3 operation the local cloud does not implement; its error, after checking it was sent once."""
    log = ServerLog(connection, operation)
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert log.new_lines() == 1
    assert operation in raised.value.response["Error"]["Message"]
    return raised.value


# --- AWS ---------------------------------------------------------------------------------------------------------


def test_a_json_service_moto_lacks_is_an_unknown_operation(connection):
    error = call_aws(connection, "kendra ListIndices", lambda: boto3.client("kendra").list_indices())
    assert error.response["Error"]["Code"] == "UnknownOperationException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_healthy(connection)


def test_an_action_moto_has_not_implemented_is_named_in_its_protocol(connection):
    json_error = call_aws(
        connection, "rekognition ListCollections", lambda: boto3.client("rekognition").list_collections()
    )
    assert json_error.response["Error"]["Code"] == "UnknownOperationException"
    topic = "arn:aws:sns:us-east-1:123456789012:no-topic"
    query_error = call_aws(
        connection,
        "sns GetDataProtectionPolicy",
        lambda: boto3.client("sns").get_data_protection_policy(ResourceArn=topic),
    )
    assert query_error.response["Error"]["Code"] == "InvalidAction"
    assert query_error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_healthy(connection)


def test_a_rest_operation_without_a_route_is_501_with_its_model_name(connection):
    lambda_error = call_aws(
        connection,
        "lambda GetFunctionRecursionConfig (GET /2024-08-31/functions/some-function/recursion-config)",
        lambda: boto3.client("lambda").get_function_recursion_config(FunctionName="some-function"),
    )
    assert lambda_error.response["Error"]["Code"] == "NotImplemented"
    assert lambda_error.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    unknown_service = call_aws(
        connection, "codeartifact ListDomains", lambda: boto3.client("codeartifact").list_domains()
    )
    assert unknown_service.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert_healthy(connection)


def test_motos_real_errors_stay_as_they_are(connection):
    s3 = boto3.client("s3")
    bucket = f"unrouted-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as missing_key:
        s3.get_object(Bucket=bucket, Key="nothing-here")
    assert missing_key.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as missing_head:
        s3.head_object(Bucket=bucket, Key="nothing-here")
    assert missing_head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as missing_function:
        boto3.client("lambda").get_function(FunctionName="no-such-function")
    assert missing_function.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize("bucket", ["subscriptions", "openai", "mferp", "bigquery", "storage"])
def test_s3_buckets_named_like_other_clouds_paths_stay_s3(connection, bucket):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    key = "resourceGroups/rg/providers/x?api-version=2024-01-01"
    s3.put_object(Bucket=bucket, Key=key, Body=b"still S3")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"still S3"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


# --- Google Cloud ------------------------------------------------------------------------------------------------


def test_a_cloud_storage_method_the_local_cloud_lacks_is_unimplemented(connection):
    from google.cloud import storage

    log = ServerLog(connection, "/hmacKeys (Cloud Storage JSON API)")
    with pytest.raises(google_exceptions.MethodNotImplemented, match="does not implement GET /storage/v1/projects/"):
        list(storage.Client().list_hmac_keys())
    assert log.new_lines() == 1
    assert_healthy(connection)


def test_a_vertex_api_the_local_cloud_lacks_is_unimplemented(connection, vertex):
    log = ServerLog(connection, "locations/us-central1/customJobs (Vertex AI API)")
    with pytest.raises(google_exceptions.MethodNotImplemented) as raised:
        vertex.CustomJob.list()
    assert "does not implement GET /v1/projects/my-project/locations/us-central1/customJobs" in str(raised.value)
    assert log.new_lines() == 1


def test_a_bigquery_method_the_local_cloud_lacks_is_not_retried(connection):
    from google.cloud import bigquery

    log = ServerLog(connection, "/datasets/some_dataset/routines (BigQuery API)")
    with pytest.raises(google_exceptions.MethodNotImplemented) as raised:
        list(bigquery.Client().list_routines("some_dataset"))
    assert raised.value.errors[0]["reason"] == "notImplemented"  # BigQuery's retries go by reason
    assert log.new_lines() == 1


def test_a_google_api_the_local_cloud_does_not_serve_is_not_found(connection):
    answer = requests.get(
        connection.server.url + "/v1/projects/my-project/topics",
        headers={"x-goog-api-client": "gl-python/3.11 grpc/1.0"},
        timeout=10,
    )
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert (error["code"], error["status"], error["errors"][0]["reason"]) == (404, "NOT_FOUND", "notFound")
    assert error["message"].startswith("The local cloud does not implement GET /v1/projects/my-project/topics")


# --- Azure -------------------------------------------------------------------------------------------------------


def test_an_azure_ml_operation_the_local_cloud_lacks_is_not_implemented(connection):
    from azure.ai.ml import MLClient
    from azure.core.exceptions import HttpResponseError
    from azure.identity import DefaultAzureCredential

    ml_client = MLClient(DefaultAzureCredential(), SUBSCRIPTION, "rg-ai", "ai-workspace")
    log = ServerLog(connection, "/workspaces/ai-workspace/onlineEndpoints (Azure Machine Learning)")
    with pytest.raises(HttpResponseError) as raised:
        list(ml_client.online_endpoints.list())
    assert raised.value.status_code == 501
    assert raised.value.error.code == "NotImplemented"
    assert "does not implement GET /mferp/managementfrontend/subscriptions/" in raised.value.message
    assert raised.value.response.headers["x-ms-request-id"]
    assert log.new_lines() == 1  # azure-core retries 5xx but 501
    assert ml_client.workspaces.get("ai-workspace").name == "ai-workspace"


def test_an_azure_openai_operation_the_local_cloud_lacks_is_not_retried(connection):
    import openai

    client = openai.AzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
        api_key=os.environ["AZURE_OPENAI_API_KEY"],
        api_version="2024-02-01",
    )
    log = ServerLog(connection, "GET /openai/models (Azure OpenAI)")
    with pytest.raises(openai.APIStatusError) as raised:
        client.models.list()
    assert raised.value.status_code == 501 and raised.value.body["code"] == "NotImplemented"
    assert log.new_lines() == 1  # the openai client retries 5xx unless told not to


def test_an_arm_path_the_local_cloud_does_not_serve_is_resource_not_found(connection):
    answer = requests.get(
        connection.server.url + f"/subscriptions/{SUBSCRIPTION}/resourcegroups",
        params={"api-version": "2021-04-01"},
        timeout=10,
    )
    assert answer.status_code == 404 and answer.headers["x-ms-request-id"]
    assert answer.json()["error"]["code"] == "ResourceNotFound"
    assert "does not implement GET /subscriptions/" in answer.json()["error"]["message"]
