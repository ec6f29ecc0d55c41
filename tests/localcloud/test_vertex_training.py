"""Vertex AI custom training on the local cloud, through the unmodified SDK: `CustomTrainingJob.run` stages the
script, the pipeline really runs it with Vertex's environment, registers the model, meters the machine, and fails
the way Vertex does (script errors, missing requirements, no model written)."""

import json
import textwrap

import pytest
from google.cloud import storage

TRAINING_IMAGE = "us-docker.pkg.dev/vertex-ai/training/pytorch-gpu.2-0:latest"
SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"

# A trivial training script that saves its model and what it saw of the container contract to AIP_MODEL_DIR.
TRAIN_AND_SAVE = """
import argparse, json, os, sys

import joblib
from google.cloud import storage
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser()
parser.add_argument("--c", type=float, default=1.0)
args = parser.parse_args()
model = LogisticRegression(C=args.c).fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 0, 1])
joblib.dump(model, "model.joblib")
names = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR", "CLUSTER_SPEC", "RANK", "WORLD_SIZE")
contract = {"argv": sys.argv[1:], **{name: os.environ.get(name) for name in names}}
bucket, _, prefix = os.environ["AIP_MODEL_DIR"][len("gs://"):].partition("/")
for name, data in (("model.joblib", open("model.joblib", "rb").read()), ("contract.json", json.dumps(contract))):
    storage.Client().bucket(bucket).blob(prefix + name).upload_from_string(data)
print("trained with C =", args.c)
"""


@pytest.fixture
def training_job(vertex, tmp_path):
    """make(script_source, **job_options) -> a CustomTrainingJob for that script, written into tmp_path."""

    def make(source: str, **options):
        script = tmp_path / "train.py"
        script.write_text(textwrap.dedent(source))
        options.setdefault("model_serving_container_image_uri", SERVING_IMAGE)
        return vertex.CustomTrainingJob(
            display_name="pytorch-training", script_path=str(script), container_uri=TRAINING_IMAGE, **options
        )

    return make


def _read_json(uri: str) -> dict:
    bucket, _, name = uri[len("gs://") :].partition("/")
    return json.loads(storage.Client().bucket(bucket).blob(name).download_as_bytes())


def test_run_trains_for_real_registers_the_model_and_meters_the_machine(training_job, connection):
    job = training_job(TRAIN_AND_SAVE, requirements=["scikit-learn", "joblib"])
    model = job.run(
        machine_type="a2-highgpu-8g",
        accelerator_type="NVIDIA_TESLA_A100",
        accelerator_count=8,
        args=["--c", "0.5"],
    )
    assert job.state.name == "PIPELINE_STATE_SUCCEEDED"
    assert model is not None and model.display_name
    contract = _read_json(model.uri.rstrip("/") + "/contract.json")
    assert contract["argv"] == ["--c", "0.5"]
    assert contract["AIP_MODEL_DIR"] == model.uri
    base = model.uri.removesuffix("model/")
    assert base.startswith("gs://labcloud-staging/aiplatform-custom-training")  # the wired default bucket
    assert contract["AIP_CHECKPOINT_DIR"] == base + "checkpoints/"
    assert contract["AIP_TENSORBOARD_LOG_DIR"] == base + "logs/"
    assert json.loads(contract["CLUSTER_SPEC"])["task"] == {"type": "workerpool0", "index": 0}
    assert (contract["RANK"], contract["WORLD_SIZE"]) == ("0", "1")  # a PyTorch image
    assert "DEDICATED_RESOURCES" in [t.name for t in model.supported_deployment_resources_types]

    costs = connection.costs()
    (line,) = costs[(costs["action"] == "custom-training") & costs["resource"].str.contains(job.name)].to_dict(
        "records"
    )
    assert line["price_key"] == "vertex-training:a2-highgpu-8g"
    assert line["usd"] > 0 and line["unit"] == "replica-hours"


def test_a_failing_script_fails_the_pipeline_with_its_error(training_job, vertex):
    job = training_job("import sys\nprint('loading data')\nsys.exit('boom: the data file is missing')\n")
    with pytest.raises(RuntimeError, match="non-zero status of 1") as failure:
        job.run(replica_count=1, machine_type="n1-standard-4")
    assert "boom: the data file is missing" in str(failure.value)  # the log's tail travels with the error
    assert job.state.name == "PIPELINE_STATE_FAILED"
    assert vertex.CustomTrainingJob.get(job.resource_name).state.name == "PIPELINE_STATE_FAILED"  # still serving


def test_requirements_that_are_not_installed_fail_the_job_naming_them(training_job):
    job = training_job("print('never runs')\n", requirements=["scikit-learn", "labcloud-no-such-package>=1.0"])
    with pytest.raises(RuntimeError, match="labcloud-no-such-package>=1.0") as failure:
        job.run(machine_type="n1-standard-4")
    assert "scikit-learn" not in str(failure.value).split("download packages:")[1]  # installed: not named


def test_a_script_that_saves_no_model_fails_the_upload(training_job):
    with pytest.raises(RuntimeError, match="no files under gs://labcloud-staging/"):
        training_job("print('forgot to save the model')\n").run(machine_type="n1-standard-4")


def test_the_learners_own_staging_bucket_and_no_serving_container(training_job):
    client = storage.Client()
    if not client.bucket("my-staging").exists():  # the session's local cloud is shared by the tests
        client.create_bucket("my-staging")
    job = training_job(
        "print('just a job')\n", model_serving_container_image_uri=None, staging_bucket="gs://my-staging"
    )
    assert job.run(machine_type="n1-standard-4") is None  # nothing to register
    assert job.state.name == "PIPELINE_STATE_SUCCEEDED"
    output = job.gca_resource.training_task_inputs["base_output_directory"]["output_uri_prefix"]
    assert output.startswith("gs://my-staging/")


def test_a_running_job_can_be_cancelled(training_job):
    job = training_job("import time\nprint('training for a minute', flush=True)\ntime.sleep(60)\n")
    job.run(machine_type="n1-standard-4", sync=False)
    job.wait_for_resource_creation()
    job.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        job.wait()
    assert job.state.name == "PIPELINE_STATE_CANCELLED"


def test_delete_after_a_run_is_a_long_running_operation_and_keeps_the_model(training_job, vertex):
    from google.api_core import exceptions

    job = training_job(TRAIN_AND_SAVE, requirements=["scikit-learn", "joblib"])
    model = job.run(machine_type="n1-standard-4")
    name = job.resource_name
    job.delete()  # polls the delete operation to its end

    with pytest.raises(exceptions.NotFound, match="TrainingPipeline"):
        vertex.CustomTrainingJob.get(name)
    assert name not in [j.resource_name for j in vertex.CustomTrainingJob.list()]
    assert vertex.Model(model.resource_name).uri == model.uri  # the uploaded model stays, as on Vertex
    with pytest.raises(exceptions.NotFound):
        vertex.CustomTrainingJob.get(name).delete()

    running = training_job("import time\nprint('training for a minute', flush=True)\ntime.sleep(60)\n")
    running.run(machine_type="n1-standard-4", sync=False)
    running.wait_for_resource_creation()
    # A job object of its own: `running.delete()` would first wait for this process's run() to end (and raise its
    # error), as the SDK does.
    with pytest.raises(exceptions.BadRequest, match="cannot be deleted: cancel it first"):
        vertex.CustomTrainingJob.get(running.resource_name).delete()
    running.cancel()
    with pytest.raises(RuntimeError, match="cancelled"):
        running.wait()
    vertex.CustomTrainingJob.get(running.resource_name).delete()
    with pytest.raises(exceptions.NotFound):
        vertex.CustomTrainingJob.get(running.resource_name)
