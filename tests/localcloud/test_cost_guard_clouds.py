"""The cost guard on every cloud, through the real SDKs against the local cloud (`connect("local", budget_usd=...)`
arms it for all three): Vertex AI training and deploys (REST, as wired locally, and gRPC, aiplatform's default on
Google), BigQuery queries priced by a dry run, Azure ML jobs and always-on compute, and model calls on Bedrock, Gemini
and Azure OpenAI. A refused call is never sent; an allowed one is counted; a failed one is given back. And
`connect()` to a real cloud after "local" leaves no guard armed it did not arm, and no local endpoint behind."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

import labcloud
from labcloud.connect import CredentialsMissing
from labcloud.pricing.catalog import load_catalog, load_service_prices
from labcloud.pricing.guard import DEFAULT_SERVING_HOURS, BudgetExceeded, arm, armed
from labcloud.pricing.guard.llm import CHARS_PER_TOKEN

CATALOG, PRICES = load_catalog(), load_service_prices()
TIB = 2**40
NOWHERE = "127.0.0.1:9"  # nothing listens there: a call the guard lets through fails at once
TRAINING_IMAGE = "us-docker.pkg.dev/vertex-ai/training/pytorch-gpu.2-0:latest"
SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def _vertex_hourly(service: str, machine: str, accelerator: str | None = None) -> float:
    return CATALOG.find(service, machine, accelerator).on_demand_usd_per_hour


def _azure_hourly(vm_size: str) -> float:
    return CATALOG.get(vm_size, service="azure-vm").on_demand_usd_per_hour


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def budget(saved_environment):
    """budget(usd) -> the local connection with a guard of that budget on all three clouds; disarmed afterwards."""
    yield lambda usd: labcloud.connect("local", budget_usd=usd)
    arm(None)


@pytest.fixture
def vertex_job(vertex, tmp_path):
    """vertex_job(display_name) -> a CustomTrainingJob of a one-line script (staged to the local staging bucket)."""
    script = tmp_path / "train.py"
    script.write_text("print('trained')\n")

    def make(display_name: str):
        return vertex.CustomTrainingJob(
            display_name=display_name, script_path=str(script), container_uri=TRAINING_IMAGE
        )

    return make


def _pipelines_named(vertex, display_name: str) -> list:
    return vertex.CustomTrainingJob.list(filter=f'display_name="{display_name}"')


# ---------------------------------------------------------------------------------------------------------
# Vertex AI over REST (the local wiring's transport)
# ---------------------------------------------------------------------------------------------------------


def test_a_vertex_training_run_over_budget_is_never_created(vertex, vertex_job, budget):
    cloud = budget(100)
    name = _unique("too-big")
    with pytest.raises(BudgetExceeded) as refused:  # 8 A100s for a day (no timeout given) is about $811
        vertex_job(name).run(machine_type="a2-highgpu-8g", accelerator_type="NVIDIA_TESLA_A100", accelerator_count=8)
    hourly = _vertex_hourly("vertex-training", "a2-highgpu-8g", "NVIDIA_TESLA_A100")
    assert refused.value.action == "vertex:CreateTrainingPipeline"
    assert refused.value.estimate_usd == pytest.approx(hourly * 24)
    assert _pipelines_named(vertex, name) == [] and cloud.guard.allowed == []


def test_a_vertex_training_run_within_budget_runs_and_counts_for_its_timeout(vertex, vertex_job, budget):
    cloud = budget(1)
    name = _unique("small")
    vertex_job(name).run(machine_type="n1-standard-4", replica_count=2, timeout=600)
    assert [job.display_name for job in _pipelines_named(vertex, name)] == [name]
    (counted,) = cloud.guard.allowed
    assert counted.usd == pytest.approx(2 * _vertex_hourly("vertex-training", "n1-standard-4") * 600 / 3600)
    # the SDK asks for a chief pool and a worker pool of one replica each
    assert counted.detail == "1 x n1-standard-4 + 1 x n1-standard-4 for up to 0.166667 h"


def test_custom_jobs_and_tuning_jobs_over_budget_are_never_sent(vertex, budget, tmp_path):
    from google.cloud.aiplatform import hyperparameter_tuning as hpt

    (tmp_path / "task.py").write_text("print('trained')\n")
    cloud = budget(2)
    hourly = _vertex_hourly("vertex-training", "n1-standard-4", "NVIDIA_TESLA_T4")

    def custom_job():
        return vertex.CustomJob.from_local_script(
            display_name=_unique("custom"),
            script_path=str(tmp_path / "task.py"),
            container_uri=TRAINING_IMAGE,
            machine_type="n1-standard-4",
            accelerator_type="NVIDIA_TESLA_T4",
            accelerator_count=1,
        )

    with pytest.raises(BudgetExceeded) as custom:  # 1 T4 machine for the guard's default day: about $14.90
        custom_job().run()
    assert (custom.value.action, custom.value.estimate_usd) == ("vertex:CreateCustomJob", pytest.approx(24 * hourly))
    tuning = vertex.HyperparameterTuningJob(
        display_name=_unique("tuning"),
        custom_job=custom_job(),
        metric_spec={"accuracy": "maximize"},
        parameter_spec={"lr": hpt.DoubleParameterSpec(min=0.001, max=0.1, scale="log")},
        max_trial_count=12,
        parallel_trial_count=3,
    )
    with pytest.raises(BudgetExceeded) as tuned:  # 12 trials of up to half an hour: about $3.73
        tuning.run(timeout=1800)
    assert tuned.value.action == "vertex:CreateHyperparameterTuningJob"
    assert tuned.value.estimate_usd == pytest.approx(12 * 0.5 * hourly)
    assert cloud.guard.allowed == []


@pytest.fixture
def model(vertex, tmp_path):
    """A Vertex model (a scikit-learn tree in the staging bucket) registered on the local cloud."""
    import joblib
    from google.cloud import storage
    from sklearn.tree import DecisionTreeClassifier

    joblib.dump(DecisionTreeClassifier().fit([[0], [1]], [0, 1]), tmp_path / "model.joblib")
    prefix = f"models/{uuid.uuid4().hex}/"
    storage.Client().bucket("labcloud-staging").blob(prefix + "model.joblib").upload_from_filename(
        tmp_path / "model.joblib"
    )
    return vertex.Model.upload(
        display_name=_unique("tree"),
        artifact_uri=f"gs://labcloud-staging/{prefix}",
        serving_container_image_uri=SERVING_IMAGE,
    )


def test_a_vertex_deploy_over_budget_deploys_nothing(vertex, model, budget):
    cloud = budget(10)
    endpoint = vertex.Endpoint.create(display_name=_unique("guarded"))
    with pytest.raises(BudgetExceeded) as refused:  # two always-on replicas for the serving day: about $10.49
        model.deploy(endpoint=endpoint, machine_type="n1-standard-4", min_replica_count=2, max_replica_count=3)
    hourly = _vertex_hourly("vertex-prediction", "n1-standard-4")
    assert refused.value.action == "vertex:DeployModel"
    assert refused.value.estimate_usd == pytest.approx(2 * hourly * DEFAULT_SERVING_HOURS)
    assert endpoint.list_models() == [] and cloud.guard.allowed == []
    endpoint.delete()


# ---------------------------------------------------------------------------------------------------------
# Vertex AI over gRPC (aiplatform's default transport on Google Cloud)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def vertex_over_grpc(vertex, monkeypatch):
    """aiplatform as on Google Cloud (gRPC), but towards a closed port: a call the guard lets through fails."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform import initializer

    for name, value in (
        ("_api_transport", "grpc"),
        ("_api_endpoint", NOWHERE),
        ("_credentials", AnonymousCredentials()),
    ):
        monkeypatch.setattr(initializer.global_config, name, value)
    return vertex


def _gapic(client_class):
    from google.auth.credentials import AnonymousCredentials

    return client_class(credentials=AnonymousCredentials(), client_options={"api_endpoint": NOWHERE}, transport="grpc")


def test_vertex_over_grpc_is_estimated_before_it_is_sent(vertex_over_grpc, vertex_job, budget):
    from google.cloud import aiplatform_v1

    cloud = budget(5)
    with pytest.raises(BudgetExceeded) as training:  # stopped in the channel: never a connection error
        vertex_job(_unique("grpc")).run(
            machine_type="n1-standard-4", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1, timeout=36000
        )
    assert training.value.estimate_usd == pytest.approx(
        10 * _vertex_hourly("vertex-training", "n1-standard-4", "NVIDIA_TESLA_T4")
    )
    deployed = aiplatform_v1.DeployedModel(
        model="projects/p/locations/us-central1/models/1",
        dedicated_resources=aiplatform_v1.DedicatedResources(
            machine_spec=aiplatform_v1.MachineSpec(
                machine_type="n1-standard-4", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1
            ),
            min_replica_count=1,
        ),
    )
    with pytest.raises(BudgetExceeded) as deploy:
        _gapic(aiplatform_v1.EndpointServiceClient).deploy_model(
            endpoint="projects/p/locations/us-central1/endpoints/1", deployed_model=deployed
        )
    hourly = _vertex_hourly("vertex-prediction", "n1-standard-4", "NVIDIA_TESLA_T4")
    assert deploy.value.estimate_usd == pytest.approx(hourly * DEFAULT_SERVING_HOURS)
    assert cloud.guard.allowed == []


def test_a_vertex_grpc_call_that_fails_gives_its_estimate_back(vertex_over_grpc, budget):
    from google.api_core import exceptions
    from google.cloud import aiplatform_v1

    cloud = budget(5)
    job = aiplatform_v1.CustomJob(
        display_name="unreachable",
        job_spec=aiplatform_v1.CustomJobSpec(
            worker_pool_specs=[
                aiplatform_v1.WorkerPoolSpec(
                    machine_spec=aiplatform_v1.MachineSpec(machine_type="n1-standard-4"),
                    replica_count=1,
                    container_spec=aiplatform_v1.ContainerSpec(image_uri=TRAINING_IMAGE),
                )
            ],
            scheduling=aiplatform_v1.Scheduling(timeout=datetime.timedelta(hours=1)),
        ),
    )
    with pytest.raises(exceptions.ServiceUnavailable):  # allowed ($0.22), sent, and refused by the closed port
        _gapic(aiplatform_v1.JobServiceClient).create_custom_job(
            parent="projects/p/locations/us-central1", custom_job=job, timeout=30
        )
    assert cloud.guard.allowed == []


# ---------------------------------------------------------------------------------------------------------
# BigQuery: a dry run first
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def table(connection):
    """A 2,000-row table on the local cloud's BigQuery, dropped afterwards: (client, "dataset.table")."""
    from google.cloud import bigquery

    client = bigquery.Client()
    dataset = f"guard_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    schema = [bigquery.SchemaField(n, t) for n, t in (("id", "INT64"), ("label", "INT64"), ("score", "FLOAT64"))]
    client.create_table(bigquery.Table(f"{client.project}.{dataset}.events", schema=schema))
    rows = [{"id": x, "label": x % 2, "score": x * 0.5} for x in range(1, 2001)]
    assert client.insert_rows_json(f"{dataset}.events", rows) == []
    yield client, f"{dataset}.events"
    client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def sent_bigquery_jobs(monkeypatch):
    """The bodies of every jobs.insert / jobs.query request that left this process (dry runs included)."""
    sent, original = [], requests.Session.request

    def record(self, method, url, *args, **kwargs):
        if method.upper() == "POST" and "/bigquery/v2/" in str(url):
            sent.append(json.loads(kwargs.get("data") or "{}"))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", record)
    return sent


def _scanned(client, sql: str) -> int:
    from google.cloud import bigquery

    return client.query(sql, job_config=bigquery.QueryJobConfig(dry_run=True)).total_bytes_processed


def _query_text(body: dict) -> str:
    return body.get("query") or body.get("configuration", {}).get("query", {}).get("query", "")


def _is_dry_run(body: dict) -> bool:
    return bool(body.get("dryRun") or body.get("configuration", {}).get("dryRun"))


@pytest.mark.parametrize("run", ["query", "query_and_wait"])  # jobs.insert, and jobs.query
def test_a_query_over_budget_sends_its_dry_run_and_not_itself(table, budget, sent_bigquery_jobs, run):
    client, name = table
    sql = f"SELECT id, score, '{run}' AS called_by FROM {name} WHERE label = 1"
    scanned = _scanned(client, sql)
    cloud = budget(scanned / TIB * 6.25 / 2)  # half of what the query costs
    sent_bigquery_jobs.clear()
    before = cloud.costs()
    with pytest.raises(BudgetExceeded) as refused:
        getattr(client, run)(sql)
    assert refused.value.action == "bigquery:query"
    assert refused.value.estimate_usd == pytest.approx(scanned / TIB * PRICES["gcp.bigquery.on_demand_per_tib"].usd)
    sent = [body for body in sent_bigquery_jobs if _query_text(body) == sql]
    assert len(sent) == 1 and _is_dry_run(sent[0])  # the free dry run left, the query did not
    assert cloud.costs().equals(before)  # nothing metered on the local cloud


def test_a_query_within_budget_runs_and_counts_the_bytes_of_its_dry_run(table, budget):
    client, name = table
    sql = f"SELECT SUM(score) AS total FROM {name}"
    scanned = _scanned(client, sql)
    cloud = budget(1)
    assert [row.total for row in client.query_and_wait(sql)] == [sum(x * 0.5 for x in range(1, 2001))]
    (counted,) = cloud.guard.allowed
    assert counted.usd == pytest.approx(scanned / TIB * 6.25) and f"{scanned:,} bytes" in counted.detail


def test_create_model_is_priced_at_bigquery_mls_rate(table, budget):
    from google.api_core.exceptions import NotFound

    client, name = table
    dataset = name.split(".")[0]
    sql = (
        f"CREATE MODEL `{dataset}.clicks` OPTIONS (model_type='logistic_reg', input_label_cols=['label']) AS "
        f"SELECT score, label FROM {name}"
    )
    scanned = _scanned(client, sql)  # a dry run of CREATE MODEL: the bytes it would train on
    assert scanned > 0
    budget(scanned / TIB * 6.25 * 2)  # enough to query those bytes, not to train on them (50x the rate)
    with pytest.raises(BudgetExceeded) as refused:
        client.query(sql)
    assert refused.value.action == "bigquery:CREATE MODEL"
    assert refused.value.estimate_usd == pytest.approx(
        scanned / TIB * PRICES["gcp.bigquery_ml.create_model_per_tib"].usd
    )
    with pytest.raises(NotFound):
        client.get_model(f"{dataset}.clicks")


# ---------------------------------------------------------------------------------------------------------
# Azure Machine Learning
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def ml_client(connection):
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), SUBSCRIPTION, "rg-ai", "ai-workspace")


def _cluster(ml_client, size: str, min_instances: int = 0) -> str:
    from azure.ai.ml.entities import AmlCompute

    name = _unique("guard")[:24]
    ml_client.compute.begin_create_or_update(
        AmlCompute(name=name, size=size, min_instances=min_instances, max_instances=2)
    ).result()
    return name


def _command(tmp_path, compute: str, **options):
    from azure.ai.ml import command

    (tmp_path / "train.py").write_text("print('trained')\n")
    return command(
        code=str(tmp_path),
        command="python train.py",
        environment="AzureML-pytorch-2.0-ubuntu20.04-py38-cuda11-gpu@latest",
        compute=compute,
        name=_unique("job").replace("-", "_"),
        **options,
    )


def test_an_azure_ml_job_over_budget_is_never_submitted(ml_client, budget, tmp_path):
    from azure.core.exceptions import ResourceNotFoundError

    cluster = _cluster(ml_client, "Standard_ND96asr_v4")  # scales to zero: costs nothing until a job runs
    cloud = budget(50)
    job = _command(tmp_path, cluster, instance_count=2)  # no timeout: budgeted for a day
    with pytest.raises(BudgetExceeded) as refused:
        ml_client.jobs.create_or_update(job)
    assert refused.value.action == "azureml:jobs.create"
    assert refused.value.estimate_usd == pytest.approx(2 * 24 * _azure_hourly("Standard_ND96asr_v4"))
    with pytest.raises(ResourceNotFoundError):
        ml_client.jobs.get(job.name)
    assert cloud.guard.allowed == []
    ml_client.compute.begin_delete(cluster).result()


def test_an_azure_ml_job_within_budget_runs_and_counts_for_its_timeout(ml_client, budget, tmp_path):
    cluster = _cluster(ml_client, "Standard_DS3_v2")
    cloud = budget(1)
    job = _command(tmp_path, cluster)
    job.set_limits(timeout=900)
    submitted = ml_client.jobs.create_or_update(job)
    ml_client.jobs.stream(submitted.name)
    assert ml_client.jobs.get(submitted.name).status == "Completed"
    (counted,) = cloud.guard.allowed
    assert counted.usd == pytest.approx(_azure_hourly("Standard_DS3_v2") * 0.25)
    assert counted.detail == "1 x Standard_DS3_v2 for up to 0.25 h"
    ml_client.compute.begin_delete(cluster).result()


def test_always_on_compute_over_budget_is_never_created(ml_client, budget):
    from azure.ai.ml.entities import AmlCompute
    from azure.core.exceptions import ResourceNotFoundError

    cloud = budget(50)
    name = _unique("always-on")[:24]
    with pytest.raises(BudgetExceeded) as refused:
        ml_client.compute.begin_create_or_update(
            AmlCompute(name=name, size="Standard_ND96asr_v4", min_instances=1, max_instances=2)
        )
    assert refused.value.action == "azureml:computes.create"
    assert refused.value.estimate_usd == pytest.approx(DEFAULT_SERVING_HOURS * _azure_hourly("Standard_ND96asr_v4"))
    with pytest.raises(ResourceNotFoundError):
        ml_client.compute.get(name)
    assert cloud.guard.allowed == []


# ---------------------------------------------------------------------------------------------------------
# Model calls: Bedrock, Gemini, Azure OpenAI
# ---------------------------------------------------------------------------------------------------------

PROMPT = "Explain in two sentences why a training job should write checkpoints to object storage."
PROMPT_TOKENS = -(-len(PROMPT) // CHARS_PER_TOKEN)


def _token_usd(prefix: str, per: str, inputs: int, outputs: int) -> float:
    return (
        PRICES[f"{prefix}.input_{per}_tokens"].usd * inputs + PRICES[f"{prefix}.output_{per}_tokens"].usd * outputs
    ) / (1e3 if per == "per_1k" else 1e6)


def _metered(cloud, service: str) -> float:
    costs = cloud.costs()
    return costs[costs["service"] == service]["quantity"].sum() if not costs.empty else 0


def test_a_bedrock_call_is_refused_over_budget_and_counted_within_it(budget):
    haiku = "anthropic.claude-3-haiku-20240307-v1:0"
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": PROMPT}],
        }
    )
    expected = _token_usd("aws.bedrock.claude-3-haiku", "per_1k", PROMPT_TOKENS, 300)
    cloud = budget(expected / 2)
    bedrock = boto3.client("bedrock-runtime")
    with pytest.raises(BudgetExceeded) as refused:
        bedrock.invoke_model(modelId=haiku, body=body)
    assert refused.value.action == "bedrock:InvokeModel" and refused.value.estimate_usd == pytest.approx(expected)
    assert _metered(cloud, "bedrock") == 0  # never reached the local cloud

    cloud = budget(expected * 3)
    bedrock.invoke_model(modelId=haiku, body=body)
    bedrock.converse(
        modelId=haiku, messages=[{"role": "user", "content": [{"text": PROMPT}]}], inferenceConfig={"maxTokens": 300}
    )
    assert [e.action for e in cloud.guard.allowed] == ["bedrock:InvokeModel", "bedrock:Converse"]
    assert cloud.guard.spent_usd == pytest.approx(2 * expected) and _metered(cloud, "bedrock") > 0


def test_a_gemini_call_is_refused_over_budget_and_counted_within_it(vertex, budget):
    from vertexai.generative_models import GenerationConfig, GenerativeModel

    expected = _token_usd("gcp.gemini.gemini-2.0-flash", "per_1m", PROMPT_TOKENS, 200)
    gemini, config = GenerativeModel("gemini-2.0-flash"), GenerationConfig(max_output_tokens=200)
    cloud = budget(expected / 2)
    with pytest.raises(BudgetExceeded) as refused:
        gemini.generate_content(PROMPT, generation_config=config)
    assert refused.value.action == "vertex:GenerateContent" and refused.value.estimate_usd == pytest.approx(expected)
    assert _metered(cloud, "vertex-ai") == 0

    cloud = budget(expected * 2)
    assert gemini.generate_content(PROMPT, generation_config=config).text
    (counted,) = cloud.guard.allowed
    assert counted.usd == pytest.approx(expected) and _metered(cloud, "vertex-ai") > 0


def test_an_azure_openai_call_is_refused_over_budget_and_counted_within_it(budget):
    from openai import AzureOpenAI

    messages = [{"role": "user", "content": PROMPT}]
    expected = _token_usd("azure.openai.gpt-4o-mini", "per_1m", PROMPT_TOKENS, 100)
    cloud = budget(expected / 2)
    client = AzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
        api_key=os.environ["AZURE_OPENAI_API_KEY"],
        api_version="2024-02-01",
    )
    with pytest.raises(BudgetExceeded) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=100)
    assert refused.value.action == "openai:chat.completions" and refused.value.estimate_usd == pytest.approx(expected)
    assert _metered(cloud, "openai") == 0

    cloud = budget(1)
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=100)
    (counted,) = cloud.guard.allowed
    assert counted.usd == pytest.approx(expected) and _metered(cloud, "openai") > 0


def test_an_azure_openai_deployment_whose_name_names_no_model_is_priced_as_the_dearest():
    from labcloud.pricing.guard import Call, CostGuard
    from labcloud.pricing.guard.azure import ESTIMATORS

    guard = CostGuard(1)
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 100}
    estimate = guard.estimate(Call("openai:chat.completions", body, "team-chat"), ESTIMATORS["openai:chat.completions"])
    assert estimate.usd == pytest.approx(_token_usd("azure.openai.gpt-4o", "per_1m", PROMPT_TOKENS, 100))
    assert "'team-chat'" in estimate.detail and "gpt-4o:" in estimate.detail


# ---------------------------------------------------------------------------------------------------------
# connect() to a real cloud after "local"
# ---------------------------------------------------------------------------------------------------------


def test_a_failing_connect_aws_leaves_no_guard_armed(saved_environment, no_aws_credentials):
    labcloud.connect("local", budget_usd=1)
    assert all(armed(cloud) is not None for cloud in ("aws", "gcp", "azure"))
    with pytest.raises(CredentialsMissing):
        labcloud.connect("aws")
    assert [armed(cloud) for cloud in ("aws", "gcp", "azure")] == [None, None, None]
    sagemaker = boto3.client(
        "sagemaker", "us-east-1", endpoint_url=f"http://{NOWHERE}", config=Config(retries={"max_attempts": 0})
    )
    params = {"ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 4, "VolumeSizeInGB": 50}}
    with pytest.raises(EndpointConnectionError):  # no guard: sent (to a closed port), not stopped
        sagemaker.create_training_job(
            TrainingJobName="unguarded",
            AlgorithmSpecification={"TrainingImage": "train:latest", "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::123456789012:role/x",
            OutputDataConfig={"S3OutputPath": "s3://out/models"},
            StoppingCondition={"MaxRuntimeInSeconds": 86400},
            **params,
        )


@pytest.fixture
def gcp_credentials(tmp_path, monkeypatch):
    """Application-default credentials of the `authorized_user` kind (placeholders: nothing is sent with them)."""
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"})
    )
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(path), "GOOGLE_CLOUD_PROJECT": "my-real-project"}


def test_connect_gcp_after_local_points_aiplatform_back_at_google(vertex, gcp_credentials, monkeypatch):
    from google.cloud.aiplatform import initializer

    config = initializer.global_config
    local_url = os.environ["LABCLOUD_URL"]
    assert config.api_endpoint == local_url and config._api_transport == "rest"
    assert config.credentials.token and config.project == "my-project"  # the learner's own init
    for name, value in gcp_credentials.items():
        monkeypatch.setenv(name, value)  # what a learner with a Google account has
    cloud = labcloud.connect("gcp", budget_usd=5)
    assert config.api_endpoint is None and config._api_transport is None and config.staging_bucket is None
    assert config.get_client_options().api_endpoint == "us-central1-aiplatform.googleapis.com"
    assert config.project == "my-project"  # set by the learner, not by the wiring: kept
    assert "BIGQUERY_EMULATOR_HOST" not in os.environ and "STORAGE_EMULATOR_HOST" not in os.environ
    assert os.environ["GOOGLE_APPLICATION_CREDENTIALS"] == gcp_credentials["GOOGLE_APPLICATION_CREDENTIALS"]
    assert armed("gcp") is cloud.guard and armed("aws") is None
    arm(None)


def test_aiplatform_imported_after_connect_gcp_keeps_googles_endpoint(gcp_credentials, tmp_path):
    """The usual notebook order: connect first, import the SDK later; a pending local wiring must not apply."""
    script = textwrap.dedent(
        """
        import os, labcloud
        labcloud.connect("local")
        os.environ.update(GOOGLE_APPLICATION_CREDENTIALS=os.environ["ADC"], GOOGLE_CLOUD_PROJECT="my-real-project")
        labcloud.connect("gcp")
        from google.cloud.aiplatform import initializer
        print(initializer.global_config.api_endpoint, initializer.global_config.staging_bucket)
        """
    )
    env = {**os.environ, "ADC": gcp_credentials["GOOGLE_APPLICATION_CREDENTIALS"]}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]


def test_connect_azure_after_local_gives_back_the_learners_own_ca_bundle(saved_environment, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/my-company-roots.pem")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    labcloud.connect("local")
    assert os.environ["REQUESTS_CA_BUNDLE"] == os.environ["SSL_CERT_FILE"] != "/etc/ssl/my-company-roots.pem"
    for name, value in (("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION), ("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")):
        monkeypatch.setenv(name, value)
    cloud = labcloud.connect("azure", budget_usd=5)
    assert os.environ["REQUESTS_CA_BUNDLE"] == "/etc/ssl/my-company-roots.pem"  # as it was
    for name in ("SSL_CERT_FILE", "AZUREML_DEV_URL_MFE", "IDENTITY_ENDPOINT", "AZURE_OPENAI_ENDPOINT"):
        assert name not in os.environ, name  # unset before connect("local"): unset again
    assert armed("azure") is cloud.guard and armed("gcp") is None
    arm(None)
