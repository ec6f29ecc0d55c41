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


TRAIN = """\
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--learning_rate", type=float)
parser.add_argument("--model_dir")
args = parser.parse_args()
rows = (pathlib.Path(args.data) / "rows.csv").read_text().splitlines()
print(f"read {len(rows)} rows from the datastore, learning rate {args.learning_rate}")
pathlib.Path(args.model_dir, "model.txt").write_text(f"lr={args.learning_rate}")
"""


@pytest.fixture
def cluster(ml_client):
    cluster = AmlCompute(name="cpu-cluster", size="Standard_DS3_v2", min_instances=0, max_instances=2)
    ml_client.compute.begin_create_or_update(cluster).result()
    return "cpu-cluster"


@pytest.fixture
def datastore_data(connection):
    """rows.csv in the `testdata` datastore (its container in Blob storage), under paths/train/; not `mydata`,
    which lab 04 fills on the same local cloud."""
    import os

    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    container = service.get_container_client("testdata")
    if not container.exists():
        container.create_container()
    container.upload_blob("train/rows.csv", b"1,2\n3,4\n5,6\n", overwrite=True)
    return "azureml://datastores/testdata/paths/train/"


def _job(tmp_path, command, inputs, outputs=None, compute="cpu-cluster"):
    from azure.ai.ml import command as command_job

    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(TRAIN)
    return command_job(
        code=str(source),
        command=command,
        environment="AzureML-pytorch-2.0-ubuntu20.04-py38-cuda11-gpu@latest",
        compute=compute,
        inputs=inputs,
        outputs=outputs or {},
        display_name="pytorch-training-job",
    )


def test_a_command_job_runs_with_its_inputs_and_streams_its_log(
    ml_client, cluster, datastore_data, tmp_path, capsys, caplog
):
    from azure.ai.ml import Input, Output

    job = _job(
        tmp_path,
        "python train.py --data ${{inputs.train_data}} --learning_rate ${{inputs.learning_rate}} "
        "--model_dir ${{outputs.model}}",
        {"train_data": Input(type="uri_folder", path=datastore_data), "learning_rate": 0.001},
        {"model": Output(type="uri_folder")},
    )
    returned = ml_client.jobs.create_or_update(job)
    assert returned.status in ("Queued", "Preparing", "Running")
    page = requests.get(returned.studio_url, timeout=10)
    assert page.status_code == 200 and returned.name in page.text
    ml_client.jobs.stream(returned.name)
    streamed = capsys.readouterr().out
    assert "read 3 rows from the datastore, learning rate 0.001" in streamed
    # the SDK's notes about itself are not logged as if they were the learner's problems
    logged = [record.getMessage() for record in caplog.records if record.name.startswith("azure.ai.ml")]
    assert not [message for message in logged if "experimental class" in message or "tenant id" in message]
    assert ml_client.jobs.get(returned.name).status == "Completed"

    import os

    from azure.storage.blob import BlobServiceClient

    outputs = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    blob = outputs.get_blob_client("workspaceblobstore", f"azureml/{returned.name}/model/model.txt")
    assert blob.download_blob().readall() == b"lr=0.001"


def test_a_failing_command_fails_the_job_with_its_log(ml_client, cluster, datastore_data, tmp_path):
    from azure.ai.ml import Input
    from azure.ai.ml.exceptions import JobException

    job = _job(
        tmp_path, "python train.py --data ${{inputs.train_data}} --bogus", {"train_data": Input(path=datastore_data)}
    )
    returned = ml_client.jobs.create_or_update(job)
    with pytest.raises(JobException, match="exited with status code 2"):
        ml_client.jobs.stream(returned.name)
    assert ml_client.jobs.get(returned.name).status == "Failed"


def test_bad_jobs_get_azures_errors(ml_client, cluster, tmp_path):
    from azure.ai.ml import Input

    with pytest.raises(HttpResponseError, match="Compute no-such-cluster was not found"):
        ml_client.jobs.create_or_update(_job(tmp_path, "python train.py", {}, compute="no-such-cluster"))
    missing = _job(
        tmp_path, "python train.py --data ${{inputs.d}}", {"d": Input(path="azureml://datastores/none/paths/x/")}
    )
    returned = ml_client.jobs.create_or_update(missing)
    with pytest.raises(Exception, match="nothing found at azureml://datastores/none"):
        ml_client.jobs.stream(returned.name)
    with pytest.raises(ResourceNotFoundError):
        ml_client.jobs.get("no_such_job_123")


def test_cluster_nodes_are_metered_with_the_idle_time_before_scale_down(
    connection, ml_client, datastore_data, tmp_path
):
    from azure.ai.ml import Input

    from labcloud.pricing.catalog import load_catalog

    metered = AmlCompute(
        name="metered-cluster",
        size="Standard_DS3_v2",
        min_instances=0,
        max_instances=2,
        idle_time_before_scale_down=600,
    )
    ml_client.compute.begin_create_or_update(metered).result()
    job = _job(tmp_path, "python -c 'print(1)'", {"d": Input(path=datastore_data)}, compute="metered-cluster")
    ml_client.jobs.stream(ml_client.jobs.create_or_update(job).name)

    costs = connection.costs()
    line = costs[(costs["service"] == "machine-learning") & costs["resource"].str.startswith("metered-cluster/")]
    (hours,) = line["quantity"]
    assert 600 / 3600 < hours < 660 / 3600  # the run (seconds) plus the 10 idle minutes before scale-down
    price = load_catalog().get("Standard_DS3_v2").on_demand_usd_per_hour
    assert line["usd"].iloc[0] == pytest.approx(hours * price)
    ml_client.compute.begin_delete("metered-cluster").result()


def test_a_malformed_body_is_azures_400_and_the_cloud_stays_up(connection, ml_client):
    from labcloud.localcloud.azure.services.machine_learning import LOCAL_TOKEN, MFE

    url = (
        f"{connection.server.https_url}{MFE}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai/providers/"
        "Microsoft.MachineLearningServices/workspaces/ai-workspace/computes/broken?api-version=2023-08-01-preview"
    )
    headers = {"Authorization": f"Bearer {LOCAL_TOKEN}", "Content-Type": "application/json"}
    answer = requests.put(url, data=b"{not json", headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "BadRequest"
    answer = requests.put(url.replace("computes/broken", "jobs/broken"), json={"properties": {}}, headers=headers)
    assert answer.status_code == 400 and "command" in answer.json()["error"]["message"].lower()
    assert ml_client.workspaces.get("ai-workspace").name == "ai-workspace"
