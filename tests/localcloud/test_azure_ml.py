"""Azure Machine Learning on the local cloud, through the unmodified azure-ai-ml SDK and DefaultAzureCredential:
HTTPS with the local CA, the managed-identity token flow, workspaces, AmlCompute clusters with their scale settings,
and Azure's errors — the server survives them."""

import certifi
import pytest
import requests
from azure.ai.ml import MLClient
from azure.ai.ml.entities import AmlCompute
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def ml_client(connection):
    return MLClient(
        DefaultAzureCredential(),
        subscription_id=SUBSCRIPTION,
        resource_group_name="rg-ai",
        workspace_name="ai-workspace",
    )


def test_the_workspace_is_served_over_https_with_a_local_token(connection, ml_client):
    assert connection.server.https_url.startswith("https://127.0.0.1:")
    workspace = ml_client.workspaces.get("ai-workspace")
    assert workspace.name == "ai-workspace" and workspace.location == "eastus"
    # the local CA is trusted only through the bundle connect() names; with the public roots alone, TLS fails
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(connection.server.https_url + "/", verify=certifi.where(), timeout=5)


def test_compute_cluster_is_created_read_listed_and_deleted(ml_client):
    cluster = AmlCompute(
        name="gpu-cluster",
        type="amlcompute",
        size="Standard_ND96asr_v4",
        min_instances=0,
        max_instances=4,
        idle_time_before_scale_down=120,
    )
    created = ml_client.compute.begin_create_or_update(cluster).result()
    assert (created.name, created.size, created.provisioning_state) == (
        "gpu-cluster",
        "Standard_ND96asr_v4",
        "Succeeded",
    )
    fetched = ml_client.compute.get("gpu-cluster")
    assert (fetched.min_instances, fetched.max_instances, fetched.idle_time_before_scale_down) == (0, 4, 120)
    assert "gpu-cluster" in [c.name for c in ml_client.compute.list()]
    ml_client.compute.begin_delete("gpu-cluster").result()
    with pytest.raises(ResourceNotFoundError, match="gpu-cluster"):
        ml_client.compute.get("gpu-cluster")


def test_bad_compute_requests_get_azures_errors_and_the_cloud_stays_up(ml_client):
    with pytest.raises(ResourceNotFoundError, match="no-such-cluster"):
        ml_client.compute.get("no-such-cluster")
    bad_size = AmlCompute(name="cpu-cluster", size="Tiny", min_instances=0, max_instances=1)
    with pytest.raises(HttpResponseError, match="VM size 'Tiny'"):
        ml_client.compute.begin_create_or_update(bad_size).result()
    upside_down = AmlCompute(name="cpu-cluster", size="Standard_DS3_v2", min_instances=3, max_instances=1)
    with pytest.raises(HttpResponseError, match="minNodeCount"):
        ml_client.compute.begin_create_or_update(upside_down).result()
    assert ml_client.workspaces.get("ai-workspace").name == "ai-workspace"


def test_a_token_the_local_cloud_did_not_issue_is_refused(connection):
    from azure.core.credentials import AccessToken

    class ForeignCredential:
        def get_token(self, *scopes, **kwargs):
            return AccessToken("a-real-looking-token", 4102444800)

    client = MLClient(ForeignCredential(), SUBSCRIPTION, "rg-ai", "ai-workspace")
    with pytest.raises((ClientAuthenticationError, HttpResponseError), match="AuthenticationFailed"):
        client.compute.get("gpu-cluster")
