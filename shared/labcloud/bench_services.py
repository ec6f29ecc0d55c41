"""Benchmark rows for the services the local cloud really executes: SageMaker training and hosting, Lambda.

Each is measured through the unmodified SDKs, as a notebook calls them, against the targets in DESIGN.md:
- `fit()` of a trivial script: what it adds over the same script run directly (budget 1 s);
- `deploy()` of a small model on one instance, until InService (budget 3 s);
- `predict()` through the local cloud against a direct POST to the same model server (budget: 3 ms more);
- Lambda invoke, cold (a new worker: spawn and import) and warm;
- Vertex AI: `CustomTrainingJob.run()` of a trivial scikit-learn script against the script run directly, then
  `deploy()` of its model on one replica and `predict()` against a direct POST to the replica's model server
  (the same budgets as SageMaker's);
- Azure OpenAI: a chat completion through the unmodified `openai` client (`AzureOpenAI`) against the same
  stand-in model called in-process (no budget: the row shows what HTTP and the client add).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from .bench import Lab, Row, interleaved, timed

FIT_RUNS, DEPLOY_RUNS = 5, 3
PREDICT_ITERATIONS, PREDICT_WARMUP = 300, 30
LAMBDA_COLD, LAMBDA_WARM = 8, 100
FIT_OVERHEAD_BUDGET_S, DEPLOY_BUDGET_S, PREDICT_OVERHEAD_BUDGET_S = 1.0, 3.0, 0.003

TRIVIAL_SCRIPT = """\
import os, pathlib
pathlib.Path(os.environ["SM_MODEL_DIR"], "done.txt").write_text("trained")
print("trained")
"""
INFERENCE_SCRIPT = """\
import json, os

def model_fn(model_dir):
    with open(os.path.join(model_dir, "weights.json")) as f:
        return json.load(f)

def input_fn(body, content_type):
    return json.loads(body)["inputs"]

def predict_fn(inputs, model):
    return {"score": sum(w * x for w, x in zip(model["weights"], inputs)) + model["bias"]}

def output_fn(prediction, accept):
    return json.dumps(prediction)
"""
VERTEX_TRAIN_SCRIPT = """\
import os

import joblib
from google.cloud import storage
from sklearn.linear_model import LogisticRegression

model = LogisticRegression().fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 0, 1])
joblib.dump(model, "model.joblib")
bucket, _, prefix = os.environ["AIP_MODEL_DIR"][len("gs://"):].partition("/")
storage.Client().bucket(bucket).blob(prefix + "model.joblib").upload_from_filename("model.joblib")
print("trained")
"""
VERTEX_TRAINING_IMAGE = "us-docker.pkg.dev/vertex-ai/training/sklearn-cpu.1-0:latest"
VERTEX_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
CHAT_ITERATIONS, CHAT_WARMUP = 200, 20
HANDLER = "def lambda_handler(event, context):\n    return {'echo': event}\n"


def connect_sdks(lab: Lab):
    """Point this process's SDKs at the benchmark's shared local cloud, as `connect("local")` does."""
    import labcloud

    os.environ["LABCLOUD_HOME"] = lab.cloud.state_dir
    return labcloud.connect("local")


def sagemaker_fit(lab: Lab) -> list[Row]:
    connect_sdks(lab)
    import sagemaker
    from sagemaker.pytorch import PyTorch

    source = Path(tempfile.mkdtemp(dir=lab.root))
    (source / "train.py").write_text(TRIVIAL_SCRIPT)
    role = sagemaker.get_execution_role()
    overheads, fits, directs = [], [], []
    for _ in range(FIT_RUNS):
        direct = _run_directly(source / "train.py")
        estimator = PyTorch(
            entry_point="train.py",
            source_dir=str(source),
            role=role,
            instance_type="ml.m5.xlarge",
            instance_count=1,
            framework_version="2.1.0",
            py_version="py310",
        )
        fit = timed(lambda estimator=estimator: estimator.fit(logs=False, wait=True))
        if estimator.latest_training_job.describe()["TrainingJobStatus"] != "Completed":
            raise RuntimeError("the benchmark's training job did not complete")
        directs.append(direct)
        fits.append(fit)
        overheads.append(fit - direct)
    return [
        Row("fit() of a trivial script", fits),
        Row("  the same script run directly", directs),
        Row("  fit() overhead over the script", overheads, FIT_OVERHEAD_BUDGET_S),
    ]


def _run_directly(script: Path) -> float:
    with tempfile.TemporaryDirectory() as model_dir:
        env = {**os.environ, "SM_MODEL_DIR": model_dir}
        return timed(lambda: subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True))


def sagemaker_deploy_and_predict(lab: Lab) -> list[Row]:
    connect_sdks(lab)
    import urllib3
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer

    model = linear_model(lab)
    deploys, predictor = [], None
    for run in range(DEPLOY_RUNS):
        if predictor is not None:
            predictor.delete_endpoint()
        began = time.perf_counter()
        predictor = model.deploy(
            initial_instance_count=1,
            instance_type="ml.m5.large",
            endpoint_name=f"bench-deploy-{run}",
            serializer=JSONSerializer(),
            deserializer=JSONDeserializer(),
        )
        deploys.append(time.perf_counter() - began)

    payload = {"inputs": [1.0, 2.0]}
    server = urllib3.HTTPConnectionPool("127.0.0.1", _model_server_port(lab, predictor.endpoint_name))
    body, headers = json.dumps(payload).encode(), {"Content-Type": "application/json", "Accept": "application/json"}

    def direct():
        return json.loads(server.urlopen("POST", "/invocations", body=body, headers=headers).data)

    if predictor.predict(payload) != direct():
        raise RuntimeError("the endpoint and its model server answered differently")
    through, straight = interleaved(lambda: predictor.predict(payload), direct, PREDICT_ITERATIONS, PREDICT_WARMUP)
    predictor.delete_endpoint()
    overhead = statistics.median(through) - statistics.median(straight)
    return [
        Row("deploy() 1 instance, until InService", deploys, DEPLOY_BUDGET_S),
        Row("predict() through the local cloud", through, baseline=straight),
        Row("  direct POST to the model server", straight),
        Row("  predict() overhead (median - median)", [overhead], PREDICT_OVERHEAD_BUDGET_S),
    ]


def linear_model(lab: Lab):
    """A `PyTorchModel` of the tiny linear model (weights in S3, INFERENCE_SCRIPT as its code), ready to deploy."""
    import boto3
    import sagemaker
    from sagemaker.pytorch import PyTorchModel

    code = Path(tempfile.mkdtemp(dir=lab.root))
    (code / "inference.py").write_text(INFERENCE_SCRIPT)
    return PyTorchModel(
        model_data=upload_model(boto3.client("s3")),
        role=sagemaker.get_execution_role(),
        entry_point="inference.py",
        source_dir=str(code),
        framework_version="2.1.0",
        py_version="py310",
    )


def upload_model(s3) -> str:
    archive = io.BytesIO()
    weights = json.dumps({"weights": [0.5, -0.25], "bias": 0.1}).encode()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights.json")
        info.size = len(weights)
        tar.addfile(info, io.BytesIO(weights))
    s3.create_bucket(Bucket="bench-models")
    s3.put_object(Bucket="bench-models", Key="linear/model.tar.gz", Body=archive.getvalue())
    return "s3://bench-models/linear/model.tar.gz"


def _model_server_port(lab: Lab, endpoint: str) -> int:
    """The port the endpoint's model server wrote into its records (see services/sagemaker_endpoints.py)."""
    ports = list(Path(lab.cloud.state_dir, "aws-services", "endpoints").glob(f"*/{endpoint}/*/*/*.port"))
    if not ports:
        raise RuntimeError(f"no model server port file for {endpoint}")
    return int(ports[0].read_text())


def lambda_invoke(lab: Lab) -> list[Row]:
    connect_sdks(lab)
    import boto3

    client = boto3.client("lambda")
    payload = json.dumps({"hello": "bench"})
    cold, warm = [], []
    for i in range(LAMBDA_COLD):  # a new function each time: its first call starts a worker
        name = create_echo_function(client, f"bench-fn-{i}")
        cold.append(timed(lambda name=name: client.invoke(FunctionName=name, Payload=payload)["Payload"].read()))
    for _ in range(LAMBDA_WARM):
        warm.append(timed(lambda: client.invoke(FunctionName="bench-fn-0", Payload=payload)["Payload"].read()))
    return [Row("Lambda invoke, cold (new worker)", cold), Row("Lambda invoke, warm", warm, baseline=cold)]


def create_echo_function(client, name: str) -> str:
    """A Lambda function named `name` whose handler (HANDLER) answers its event; its name."""
    import sagemaker

    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as zf:
        zf.writestr("app.py", HANDLER)
    role = sagemaker.get_execution_role()
    function = {"Runtime": "python3.11", "Role": role, "Handler": "app.lambda_handler"}
    client.create_function(FunctionName=name, Code={"ZipFile": package.getvalue()}, **function)
    return name


def vertex_train_deploy_and_predict(lab: Lab) -> list[Row]:
    connect_sdks(lab)
    from google.cloud import aiplatform

    aiplatform.init(project="bench-project", location="us-central1")  # staging: the wired default bucket
    script = Path(tempfile.mkdtemp(dir=lab.root)) / "train.py"
    script.write_text(VERTEX_TRAIN_SCRIPT)
    runs, directs, overheads, model = [], [], [], None
    for i in range(FIT_RUNS):
        direct = _run_directly_with(script, {"AIP_MODEL_DIR": f"gs://labcloud-staging/bench-direct/{i}/"})
        job = aiplatform.CustomTrainingJob(
            display_name=f"bench-train-{i}",
            script_path=str(script),
            container_uri=VERTEX_TRAINING_IMAGE,
            model_serving_container_image_uri=VERTEX_SERVING_IMAGE,
        )
        run = timed(lambda job=job: _keep(job.run(machine_type="n1-standard-4")))
        model = job.get_model()
        runs.append(run)
        directs.append(direct)
        overheads.append(run - direct)

    deploys, endpoint = [], None
    for _ in range(DEPLOY_RUNS):
        if endpoint is not None:
            endpoint.delete(force=True)
        endpoint = aiplatform.Endpoint.create(display_name="bench-endpoint")
        deploys.append(timed(lambda endpoint=endpoint: model.deploy(endpoint=endpoint, machine_type="n1-standard-4")))

    through, straight = _vertex_predictions(lab, endpoint)
    endpoint.delete(force=True)
    overhead = statistics.median(through) - statistics.median(straight)
    return [
        Row("Vertex CustomTrainingJob.run(), trivial script", runs),
        Row("  the same script run directly", directs),
        Row("  run() overhead over the script", overheads, FIT_OVERHEAD_BUDGET_S),
        Row("Vertex deploy() 1 replica, until deployed", deploys, DEPLOY_BUDGET_S),
        Row("Vertex predict() through the local cloud", through, baseline=straight),
        Row("  direct POST to the model server", straight),
        Row("  predict() overhead (median - median)", [overhead], PREDICT_OVERHEAD_BUDGET_S),
    ]


def _keep(model):
    if model is None:
        raise RuntimeError("the benchmark's training job registered no model")
    return model


def _run_directly_with(script: Path, env: dict[str, str]) -> float:
    run_env = {**os.environ, **env}
    with tempfile.TemporaryDirectory() as folder:
        return timed(
            lambda: subprocess.run(
                [sys.executable, str(script)], env=run_env, cwd=folder, check=True, capture_output=True
            )
        )


def _vertex_predictions(lab: Lab, endpoint) -> tuple[list[float], list[float]]:
    """predict() through the local cloud and a direct POST to the replica's model server, interleaved."""
    import urllib3

    (deployed,) = endpoint.list_models()
    ports = list(Path(lab.cloud.state_dir).glob(f"**/vertex-model-servers/{deployed.id}/replica-0.port"))
    if not ports:
        raise RuntimeError(f"no model server port file for deployed model {deployed.id}")
    server = urllib3.HTTPConnectionPool("127.0.0.1", int(ports[0].read_text()))
    instances = [[1.0, 1.0]]
    body, headers = json.dumps({"instances": instances}).encode(), {"Content-Type": "application/json"}

    def direct():
        return json.loads(server.urlopen("POST", "/predict", body=body, headers=headers).data)["predictions"]

    if endpoint.predict(instances=instances).predictions != direct():
        raise RuntimeError("the endpoint and its model server answered differently")
    return interleaved(lambda: endpoint.predict(instances=instances), direct, PREDICT_ITERATIONS, PREDICT_WARMUP)


def azure_openai_chat(lab: Lab) -> list[Row]:
    connect_sdks(lab)
    from openai import AzureOpenAI

    from .runtime import standin_llm
    from .wiring.azure import set_openai_deployment

    # A deployment of its own with a quota the loop cannot reach: the row measures latency, not throttling.
    set_openai_deployment("bench-gpt-4o", "gpt-4o", tokens_per_minute=100_000_000, requests_per_minute=1_000_000)
    client = AzureOpenAI(
        azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
        api_key=os.environ["AZURE_OPENAI_API_KEY"],
        api_version="2024-02-01",
    )
    question = "How are Azure OpenAI quotas set?"
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]

    def through():
        return client.chat.completions.create(model="bench-gpt-4o", messages=messages).choices[0].message.content

    def direct():
        return standin_llm.complete(question, [m["content"] for m in messages], 4096).text

    if through() != direct():
        raise RuntimeError("the local Azure OpenAI and the stand-in model answered differently")
    via_client, straight = interleaved(through, direct, CHAT_ITERATIONS, CHAT_WARMUP)
    overhead = statistics.median(via_client) - statistics.median(straight)
    return [
        Row("Azure OpenAI chat completion (openai client)", via_client, baseline=straight),
        Row("  the stand-in model called directly", straight),
        Row("  client + HTTP overhead (median - median)", [overhead]),
    ]


SERVICE_MEASUREMENTS = [
    sagemaker_fit,
    sagemaker_deploy_and_predict,
    lambda_invoke,
    vertex_train_deploy_and_predict,
    azure_openai_chat,
]
