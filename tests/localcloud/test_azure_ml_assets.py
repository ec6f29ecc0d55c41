"""Azure ML datastores, data assets, models and `jobs.download` on the local cloud, through the unmodified azure-ai-ml
SDK: uploads land in Azurite through the datastore's account URL, jobs read registered data, models come from local
folders and job outputs, and bad references get Azure's errors while the cloud stays up."""

import os
import re
import uuid

import pytest
from azure.ai.ml import Input, MLClient, Output, command
from azure.ai.ml.entities import AmlCompute, Data, Model
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

COUNT_ROWS = (
    "python -c \"import pathlib, sys; rows = (pathlib.Path(sys.argv[1]) / 'rows.csv').read_text().splitlines(); "
    "print(f'{len(rows)} rows'); (pathlib.Path(sys.argv[2]) / 'model.txt').write_text(f'rows={len(rows)}')\" "
    "${{inputs.data}} ${{outputs.model}}"
)


@pytest.fixture
def ml_client(connection):
    return MLClient(DefaultAzureCredential(), SUBSCRIPTION, "rg-ai", "ai-workspace")


@pytest.fixture
def cluster(ml_client):
    ml_client.compute.begin_create_or_update(
        AmlCompute(name="cpu-cluster", size="Standard_DS3_v2", min_instances=0, max_instances=2)
    ).result()
    return "cpu-cluster"


@pytest.fixture
def learner_container(connection):
    """A Blob storage container the learner made: on the local cloud, a datastore of the same name."""
    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    name = _unique("learner")
    service.create_container(name)
    yield name
    service.delete_container(name)


def _job(tmp_path, command_line: str, inputs: dict, outputs: dict | None = None):
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "README.txt").write_text("the command needs no code of its own")
    return command(
        code=str(source),
        command=command_line,
        environment="AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest",
        compute="cpu-cluster",
        inputs=inputs,
        outputs=outputs or {},
    )


def _unique(prefix: str) -> str:
    """A fresh asset name per test: the session's local cloud keeps every version registered before."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _folder(tmp_path, name: str, rows: int):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "rows.csv").write_text("".join(f"{i},{i * 2}\n" for i in range(rows)))
    return folder


def _blobs(container: str, prefix: str) -> dict[str, bytes]:
    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    client = service.get_container_client(container)
    return {b.name: client.download_blob(b.name).readall() for b in client.list_blobs(name_starts_with=prefix)}


def _path_in_datastore(uri: str) -> tuple[str, str]:
    """(datastore, path) of azureml://[subscriptions/.../workspaces/<ws>/]datastores/<datastore>/paths/<path>."""
    match = re.match(r"^azureml://(?:subscriptions/.+/workspaces/[^/]+/)?datastores/([^/]+)/paths/(.*)$", uri)
    assert match, uri
    return match[1], match[2]


def test_the_default_datastore_is_the_workspaceblobstore_container(ml_client, learner_container):
    default = ml_client.datastores.get_default()
    assert (default.name, default.container_name, default.type) == (
        "workspaceblobstore",
        "workspaceblobstore",
        "AzureBlob",
    )
    names = [d.name for d in ml_client.datastores.list()]
    assert "workspaceblobstore" in names and learner_container in names
    assert ml_client.datastores.get(learner_container).container_name == learner_container


def test_a_data_asset_uploads_its_folder_and_is_read_listed_and_resolved_latest(ml_client, tmp_path):
    name = _unique("rows")
    first = ml_client.data.create_or_update(
        Data(name=name, version="1", type="uri_folder", path=str(_folder(tmp_path, "v1", 3)))
    )
    datastore, path = _path_in_datastore(first.path)
    assert datastore == "workspaceblobstore"
    uploaded = _blobs("workspaceblobstore", path.strip("/"))
    assert [content for blob, content in uploaded.items() if blob.endswith("rows.csv")] == [b"0,0\n1,2\n2,4\n"]

    # without a version the SDK asks the asset's container for the next one
    second = ml_client.data.create_or_update(Data(name=name, type="uri_folder", path=str(_folder(tmp_path, "v2", 5))))
    assert second.version == "2"
    assert ml_client.data.get(name, version="1").path == first.path
    assert ml_client.data.get(name, label="latest").version == "2"
    assert {d.version for d in ml_client.data.list(name=name)} == {"1", "2"}
    assert name in [d.name for d in ml_client.data.list()]


@pytest.mark.parametrize("reference", ["azureml:{name}:1", "azureml:{name}@latest"])
def test_a_job_reads_a_registered_data_asset(ml_client, cluster, tmp_path, capsys, reference):
    name = _unique("train")
    ml_client.data.create_or_update(
        Data(name=name, version="1", type="uri_folder", path=str(_folder(tmp_path, "d", 4)))
    )
    inputs = {"data": Input(type="uri_folder", path=reference.format(name=name))}
    job = ml_client.jobs.create_or_update(_job(tmp_path, COUNT_ROWS, inputs, {"model": Output(type="uri_folder")}))
    ml_client.jobs.stream(job.name)
    assert "4 rows" in capsys.readouterr().out
    assert ml_client.jobs.get(job.name).status == "Completed"


def _finished_job(ml_client, tmp_path, rows: int = 2) -> str:
    name = _unique("jobdata")
    ml_client.data.create_or_update(
        Data(name=name, version="1", type="uri_folder", path=str(_folder(tmp_path, "jobdata", rows)))
    )
    inputs = {"data": Input(type="uri_folder", path=f"azureml:{name}:1")}
    job = ml_client.jobs.create_or_update(_job(tmp_path, COUNT_ROWS, inputs, {"model": Output(type="uri_folder")}))
    ml_client.jobs.stream(job.name)
    return job.name


def test_models_are_registered_from_a_folder_and_from_a_job_output(ml_client, cluster, tmp_path):
    name = _unique("model")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "weights.bin").write_bytes(b"\x00\x01\x02")
    local = ml_client.models.create_or_update(Model(name=name, version="1", path=str(weights), type="custom_model"))
    datastore, path = _path_in_datastore(local.path)
    uploaded = _blobs(datastore, path.strip("/"))
    assert [content for blob, content in uploaded.items() if blob.endswith("weights.bin")] == [b"\x00\x01\x02"]

    job_name = _finished_job(ml_client, tmp_path, rows=6)
    output = f"azureml://jobs/{job_name}/outputs/model"
    from_job = ml_client.models.create_or_update(Model(name=name, version="2", path=output, type="custom_model"))
    assert from_job.version == "2" and job_name in from_job.path
    assert ml_client.models.get(name, version="1").path == local.path
    assert {m.version for m in ml_client.models.list(name=name)} == {"1", "2"}

    # the model a job wrote is what a later job reads when given the model as its input
    inputs = {"data": Input(type="custom_model", path=f"azureml:{name}:2")}
    reader = _job(tmp_path, "cat ${{inputs.data}}/model.txt", inputs)
    returned = ml_client.jobs.create_or_update(reader)
    ml_client.jobs.stream(returned.name)
    assert ml_client.jobs.get(returned.name).status == "Completed"
    downloaded = tmp_path / "reader"
    ml_client.jobs.download(returned.name, download_path=str(downloaded))
    assert "rows=6" in (downloaded / "artifacts" / "user_logs" / "std_log.txt").read_text()


def test_jobs_download_gets_the_logs_and_named_outputs(ml_client, cluster, tmp_path):
    job_name = _finished_job(ml_client, tmp_path, rows=7)

    only_output = tmp_path / "only-output"
    ml_client.jobs.download(job_name, download_path=str(only_output), output_name="model")
    assert (only_output / "named-outputs" / "model" / "model.txt").read_text() == "rows=7"
    assert not (only_output / "artifacts").exists()

    everything = tmp_path / "all"
    ml_client.jobs.download(job_name, download_path=str(everything), all=True)
    assert (everything / "named-outputs" / "model" / "model.txt").read_text() == "rows=7"
    assert "7 rows" in (everything / "artifacts" / "user_logs" / "std_log.txt").read_text()


def test_bad_asset_references_get_azures_errors_and_the_cloud_stays_up(ml_client, cluster, tmp_path):
    name = _unique("known")
    ml_client.data.create_or_update(
        Data(name=name, version="1", type="uri_folder", path=str(_folder(tmp_path, "k", 1)))
    )
    with pytest.raises(ResourceNotFoundError, match="no-such-data"):
        ml_client.data.get("no-such-data", version="1")
    with pytest.raises(ResourceNotFoundError, match=f"{name}:9"):
        ml_client.data.get(name, version="9")
    with pytest.raises(ResourceNotFoundError, match="no-such-model"):
        ml_client.models.get("no-such-model", version="1")
    with pytest.raises(ResourceNotFoundError):
        ml_client.datastores.get("no-such-datastore")

    # a job naming an unknown version fails with the reason in its log, and nothing else
    inputs = {"data": Input(type="uri_folder", path=f"azureml:{name}:9")}
    job = ml_client.jobs.create_or_update(_job(tmp_path, COUNT_ROWS, inputs, {"model": Output(type="uri_folder")}))
    with pytest.raises(Exception, match=f"{name}:9 was not found"):
        ml_client.jobs.stream(job.name)

    # an output the job does not have downloads nothing; an unknown job is Azure's 404
    nothing = tmp_path / "nothing"
    ml_client.jobs.download(job.name, download_path=str(nothing), output_name="no_such_output")
    assert not nothing.exists() or not any(path.is_file() for path in nothing.rglob("*"))
    with pytest.raises(ResourceNotFoundError):
        ml_client.jobs.download("no_such_job_456", download_path=str(nothing))
    assert ml_client.data.get(name, version="1").version == "1"


def test_asset_errors_have_azures_shape_on_the_wire(ml_client):
    """What the SDK parses above, as the REST API answers it: `{"error": {"code", "message"}}` and the status."""
    import requests

    token = DefaultAzureCredential().get_token("https://management.azure.com/.default").token
    workspace = (
        f"{os.environ['AZUREML_DEV_URL_MFE'].rstrip('/')}/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-ai"
        "/providers/Microsoft.MachineLearningServices/workspaces/ai-workspace"
    )
    headers = {"Authorization": f"Bearer {token}"}
    params = {"api-version": "2023-04-01"}
    missing = requests.get(f"{workspace}/models/no-such-model/versions/1", headers=headers, params=params, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "UserError" and "no-such-model" in missing.json()["error"]["message"]
    for body in (b"not json", b'{"properties": {}}'):  # malformed, then without the data's URI
        bad = requests.put(f"{workspace}/data/bad/versions/1", data=body, headers=headers, params=params, timeout=10)
        assert bad.status_code == 400 and set(bad.json()["error"]) == {"code", "message"}
    assert ml_client.datastores.get_default().name == "workspaceblobstore"
