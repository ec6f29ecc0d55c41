"""Vertex AI models, endpoints and online prediction on the local cloud, through the unmodified SDK: upload, deploy
(a real model server per replica), predict, traffic split, undeploy, delete, the meter, and Google's errors."""

import collections
import uuid

import joblib
import pytest
import requests
from google.api_core import exceptions
from google.cloud import storage
from sklearn.tree import DecisionTreeClassifier

from labcloud.localcloud.gcp.gateway import LOCAL_TOKEN

SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
FEATURES = [[0, 0], [1, 1], [0, 1], [1, 0], [2, 2], [2, 0]]


@pytest.fixture
def upload(vertex, tmp_path):
    """upload(labels, files=None) -> (aiplatform.Model, the fitted estimator): a decision tree trained on FEATURES
    with these labels, saved as model.joblib (or the given {name: bytes}) under a fresh gs:// folder."""

    def make(labels, files=None):
        estimator = DecisionTreeClassifier(random_state=0).fit(FEATURES, labels)
        joblib.dump(estimator, tmp_path / "model.joblib")
        files = files or {"model.joblib": (tmp_path / "model.joblib").read_bytes()}
        prefix = f"models/{uuid.uuid4().hex}/"
        bucket = storage.Client().bucket("labcloud-staging")  # the wired default staging bucket
        for name, data in files.items():
            bucket.blob(prefix + name).upload_from_string(data)
        model = vertex.Model.upload(
            display_name=f"tree-{prefix[7:15]}",
            artifact_uri=f"gs://labcloud-staging/{prefix}",
            serving_container_image_uri=SERVING_IMAGE,
        )
        return model, estimator

    return make


def _predict_url(connection, endpoint) -> str:
    return f"{connection.server.url}/v1/{endpoint.resource_name}:predict"


def test_upload_deploy_predict_undeploy_and_delete(vertex, upload, connection):
    model, estimator = upload([0, 1, 0, 1, 1, 0])
    assert vertex.Model(model.resource_name).display_name == model.display_name
    assert [m.resource_name for m in vertex.Model.list(filter=f'display_name="{model.display_name}"')] == [
        model.resource_name
    ]
    endpoint = vertex.Endpoint.create(display_name="my-endpoint")
    assert endpoint.resource_name in [e.resource_name for e in vertex.Endpoint.list()]

    model.deploy(
        endpoint=endpoint,
        machine_type="n1-standard-4",
        accelerator_type="NVIDIA_TESLA_T4",
        accelerator_count=1,
        min_replica_count=1,
        max_replica_count=5,
    )
    (deployed,) = endpoint.list_models()
    resources = deployed.dedicated_resources
    assert resources.machine_spec.machine_type == "n1-standard-4" and resources.machine_spec.accelerator_count == 1
    assert (resources.min_replica_count, resources.max_replica_count) == (1, 5)
    assert endpoint.traffic_split == {deployed.id: 100}

    instances = [[2, 2], [0, 0], [1, 0]]
    prediction = endpoint.predict(instances=instances)
    assert prediction.predictions == estimator.predict(instances).tolist()
    assert prediction.deployed_model_id == deployed.id and prediction.model_resource_name == model.resource_name

    with pytest.raises(exceptions.BadRequest, match="Prediction failed"):
        endpoint.predict(instances=[[1, 2, 3]])  # the model wants two features: the container's 400
    with pytest.raises(exceptions.BadRequest, match="deployed"):
        model.delete()  # still deployed

    endpoint.undeploy(deployed_model_id=deployed.id)
    with pytest.raises(exceptions.BadRequest, match="does not have any deployed model"):
        endpoint.predict(instances=instances)
    endpoint.delete()
    model.delete()
    with pytest.raises(exceptions.NotFound):
        vertex.Model(model.resource_name)

    costs = connection.costs()
    (line,) = costs[costs["resource"].str.contains(deployed.id)].to_dict("records")
    assert line["price_key"] == "vertex-prediction:n1-standard-4+T4" and line["usd"] > 0


def test_traffic_split_between_two_deployed_models(vertex, upload):
    first, _ = upload([0, 0, 0, 0, 0, 0])
    second, _ = upload([1, 1, 1, 1, 1, 1])
    endpoint = vertex.Endpoint.create(display_name="split-endpoint")
    first.deploy(endpoint=endpoint, machine_type="n1-standard-2")
    second.deploy(endpoint=endpoint, machine_type="n1-standard-2", traffic_percentage=30)
    ids = {m.model: m.id for m in endpoint.list_models()}
    first_id, second_id = ids[first.resource_name], ids[second.resource_name]
    assert endpoint.traffic_split == {first_id: 70, second_id: 30}

    answered = collections.Counter(endpoint.predict(instances=[[0, 0]]).deployed_model_id for _ in range(60))
    assert set(answered) == {first_id, second_id}
    assert 4 <= answered[second_id] <= 36  # 30 % of 60 is 18; the bounds are about four standard deviations

    endpoint.update(traffic_split={first_id: 0, second_id: 100})
    assert {endpoint.predict(instances=[[0, 0]]).predictions[0] for _ in range(10)} == {1}  # only the second

    endpoint.delete(force=True)  # undeploys both first
    assert vertex.Endpoint.list(filter='display_name="split-endpoint"') == []


def test_bad_requests_are_answered_in_googles_shape(vertex, connection):
    endpoint = vertex.Endpoint.create(display_name="empty-endpoint")
    headers = {"Authorization": f"Bearer {LOCAL_TOKEN}"}
    for body in ({"instances": "not a list"}, {"instances": []}, {}):
        answer = requests.post(_predict_url(connection, endpoint), json=body, headers=headers, timeout=10)
        assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    answer = requests.post(_predict_url(connection, endpoint), data=b"{not json", headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    answer = requests.post(
        _predict_url(connection, endpoint), json={"instances": [[1]]}, headers=headers, timeout=10
    ).json()
    assert answer["error"]["status"] == "FAILED_PRECONDITION"  # nothing deployed
    unknown = f"{connection.server.url}/v1/projects/p/locations/us-central1/endpoints/42:predict"
    answer = requests.post(unknown, json={"instances": [[1]]}, headers=headers, timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["status"] == "NOT_FOUND"
    endpoint.delete()


def test_an_artifact_the_prebuilt_containers_cannot_serve_fails_the_deploy(vertex, upload):
    model, _ = upload([0, 1, 0, 1, 1, 0], files={"saved_model.pb": b"not a scikit-learn model"})
    endpoint = vertex.Endpoint.create(display_name="failing-endpoint")
    with pytest.raises(exceptions.GoogleAPICallError, match="No model file found.*saved_model.pb"):
        model.deploy(endpoint=endpoint, machine_type="n1-standard-2")
    assert endpoint.list_models() == []
    endpoint.delete()
    model.delete()


def test_a_torchscript_model_is_served_as_the_pytorch_container_would(vertex, upload, tmp_path):
    import io

    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Softmax(dim=1)).eval()
    saved = io.BytesIO()
    torch.jit.save(torch.jit.script(network), saved)
    model, _ = upload([0, 1, 0, 1, 1, 0], files={"model.pt": saved.getvalue()})
    endpoint = vertex.Endpoint.create(display_name="torch-endpoint")
    model.deploy(endpoint=endpoint, machine_type="n1-standard-4")
    predictions = endpoint.predict(instances=FEATURES).predictions
    with torch.no_grad():
        expected = network(torch.tensor(FEATURES, dtype=torch.float32)).tolist()
    assert [p for row in predictions for p in row] == pytest.approx([p for row in expected for p in row], rel=1e-6)
    endpoint.delete(force=True)
    model.delete()
