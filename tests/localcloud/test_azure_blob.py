"""Azure Blob storage on the local cloud (Azurite, a child process), through the unmodified `azure-storage-blob`:
containers and blobs, a SAS URL upload, blobs kept across a restart, Azurite stopped with the local cloud, and a
local cloud without Azurite that still starts and says so."""

import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

import labcloud
from labcloud.localcloud import control
from labcloud.localcloud.azure.services.blob import ACCOUNT, ACCOUNT_KEY, AZURITE_VARIABLE, read_status
from labcloud.wiring.azure import STORAGE_VARIABLE, BlobStorageUnavailable

# Azurite runs on Node.js: a machine without node cannot run it (the set-up installs the package itself).
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


@pytest.fixture
def blob_service(saved_environment) -> BlobServiceClient:
    labcloud.connect("local")
    return BlobServiceClient.from_connection_string(os.environ[STORAGE_VARIABLE])


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_containers_and_blobs_round_trip(blob_service):
    container = blob_service.create_container(_name("course-data"))
    container.upload_blob("raw/train.csv", b"x,y\n1,2\n")
    container.upload_blob("raw/test.csv", b"x,y\n3,4\n")
    assert sorted(b.name for b in container.list_blobs(name_starts_with="raw/")) == ["raw/test.csv", "raw/train.csv"]
    assert container.download_blob("raw/train.csv").readall() == b"x,y\n1,2\n"
    assert container.get_blob_client("raw/test.csv").get_blob_properties().size == 8
    container.delete_blob("raw/test.csv")
    assert [b.name for b in container.list_blobs()] == ["raw/train.csv"]
    assert container.container_name in [c.name for c in blob_service.list_containers()]
    blob_service.delete_container(container.container_name)
    with pytest.raises(ResourceNotFoundError):
        container.get_container_properties()


def test_a_sas_url_lets_a_client_without_the_key_upload(blob_service):
    container = blob_service.create_container(_name("uploads"))
    sas = generate_blob_sas(
        account_name=ACCOUNT,
        container_name=container.container_name,
        blob_name="model.pt",
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(create=True, write=True),
        expiry=datetime.now(timezone.utc) + timedelta(minutes=10),
    )
    url = f"{container.url}/model.pt?{sas}"
    BlobClient.from_blob_url(url).upload_blob(b"weights")  # no key: the SAS is the only credential
    assert container.download_blob("model.pt").readall() == b"weights"

    with pytest.raises(HttpResponseError) as read_refused:  # the SAS grants write only
        BlobClient.from_blob_url(url).download_blob().readall()
    assert read_refused.value.status_code == 403
    forged = url.replace("sig=", "sig=x")
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as forged_refused:
        BlobClient.from_blob_url(forged).upload_blob(b"tampered", overwrite=True)
    assert forged_refused.value.status_code == 403
    assert container.download_blob("model.pt").readall() == b"weights"


def test_blobs_survive_a_restart_and_azurite_stops_with_the_cloud(own_cloud, saved_environment):
    labcloud.connect("local")  # LABCLOUD_HOME is this test's own cloud
    service = BlobServiceClient.from_connection_string(os.environ[STORAGE_VARIABLE])
    service.create_container("checkpoints").upload_blob("epoch-3.pt", b"state")
    azurite_pid = read_status(os.path.join(own_cloud.state_dir, "azure")).pid
    assert azurite_pid > 0

    control.stop(own_cloud.state_dir)
    with pytest.raises(ProcessLookupError):
        os.kill(azurite_pid, 0)
    control.start(own_cloud.state_dir, port=0)
    labcloud.connect("local")
    service = BlobServiceClient.from_connection_string(os.environ[STORAGE_VARIABLE])
    assert service.get_container_client("checkpoints").download_blob("epoch-3.pt").readall() == b"state"


def test_without_azurite_the_cloud_starts_and_says_blob_storage_is_unavailable(
    tmp_path, monkeypatch, saved_environment
):
    state = tmp_path / "state"
    monkeypatch.setenv("LABCLOUD_HOME", str(state))
    monkeypatch.setenv(AZURITE_VARIABLE, str(tmp_path / "no-azurite-here" / "main.js"))
    info = control.start(state, port=0)  # the server inherits the variable
    try:
        assert control.health(info)["status"] == "ok"
        status = read_status(state / "azure")
        assert status.status == "unavailable" and "no-azurite-here" in status.reason
        assert "Blob storage is not available" in (state / "server.log").read_text()
        with pytest.warns(BlobStorageUnavailable, match="Azure Blob storage is not available"):
            connection = labcloud.connect("local")
        assert STORAGE_VARIABLE not in os.environ and STORAGE_VARIABLE not in connection.env
        assert os.environ["AZURE_OPENAI_ENDPOINT"] == info.url  # the rest of Azure is there all the same
    finally:
        control.stop(state)


def test_the_status_file_names_a_loopback_port(blob_service):
    status = read_status(os.path.join(control.status().state_dir, "azure"))
    assert status.status == "ready" and status.endpoint.startswith("http://127.0.0.1:")
    assert f"BlobEndpoint={status.endpoint};" in os.environ[STORAGE_VARIABLE]
