# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 02 — AWS: SageMaker training and hosting, a canary, Bedrock and Lambda
#
# **Time:** about 50 minutes. **Cost:** nothing on the local cloud; the cost meter shows what real AWS would charge.
#
# **You will learn to**
# 1. write a training script for SageMaker's container contract, and run it as a training job with the SageMaker
#    Python SDK — on one instance, then on four as one PyTorch DDP job;
# 2. make a spot training job survive an interruption by checkpointing;
# 3. deploy the model to an endpoint with your own `inference.py`, and call it;
# 4. release a new model version as a canary: split traffic 90/10 between two variants, then shift it;
# 5. call a foundation model through Bedrock, and serve the model from a Lambda function, cold and warm;
# 6. publish a custom CloudWatch metric.
#
# Everything here is **real SDK code**: with `backend = "aws"` it runs on your AWS account unchanged. On the local
# cloud the training scripts and the inference code really run (as processes on this machine); what is
# **simulated** is the hardware: an `ml.p4d.24xlarge` here is a CPU process, and its price is the list price of the
# real instance.

# %% tags=["parameters"]
backend = "local"  # "local" runs on the local cloud; "aws" uses your account (and costs money)
seed = 42
train_size, val_size = 2000, 400  # synthetic reviews
epochs = 2  # deliberately too few: exercise 1 tunes them
instance_count = 4  # the distributed job's instances
canary_requests = 400
budget_usd = 100.0  # the cost guard stops any call whose worst case would take the notebook past this

# %% [markdown]
# Connect first: the SDKs read their settings (endpoints, credentials, SageMaker's defaults) when they are imported
# and when their clients are made.

# %%
import labcloud

cloud = labcloud.connect(backend, budget_usd=budget_usd)
cloud

# %%
import base64
import json
import time
from collections import Counter
from pathlib import Path

import boto3
import matplotlib.pyplot as plt
import sagemaker
from botocore.exceptions import ClientError
from sagemaker.deserializers import JSONDeserializer
from sagemaker.pytorch import PyTorch, PyTorchModel
from sagemaker.serializers import JSONSerializer

from labcloud.checks import aws as checks
from labcloud.datasets import product_reviews
from labcloud.quiz import quiz_widget

# %% [markdown]
# ## 1. A session, a role, a bucket
#
# A SageMaker job runs *as* an IAM role (it reads your S3 data and writes the model with it). On a SageMaker
# notebook `get_execution_role()` finds the notebook's role; on the local cloud you are that role. On your own
# machine against real AWS you are usually a user, not a role: put your SageMaker execution role's ARN in `role`
# instead (and let it trust `lambda.amazonaws.com` too, for section 10). The session's default bucket,
# `sagemaker-<region>-<account>`, holds code and models.
#
# We stay on **SageMaker Python SDK v2** (`sagemaker<3`): v3 replaced `Estimator`, `Model` and `Predictor` by
# `ModelTrainer` and `ModelBuilder`, and most material you will meet still uses v2. In v3 the job below reads
# `ModelTrainer(training_image=..., source_code=SourceCode(source_dir="src", entry_script="train.py"),
# compute=Compute(instance_type=..., instance_count=4), distributed=Torchrun()).train(input_data_config=[...])`.

# %%
session = sagemaker.Session()
role = sagemaker.get_execution_role()
bucket = session.default_bucket()
prefix = "lab02"
print(role)
print(bucket)

# %% [markdown]
# Endpoints bill by the hour until they are deleted, so a notebook that creates them should delete them — also what
# an earlier, interrupted run of it left behind. This lab names everything it creates `lab02-...`:

# %%
sm = boto3.client("sagemaker")
lambda_client = boto3.client("lambda")


def delete_lab_resources() -> list[str]:
    """Delete this lab's endpoints, endpoint configs, models and function, where they exist."""
    deleted = []
    for delete, parameter, names in [
        (sm.delete_endpoint, "EndpointName", ["lab02-sentiment", "lab02-canary"]),
        (sm.delete_endpoint_config, "EndpointConfigName", ["lab02-sentiment", "lab02-canary"]),
        (sm.delete_model, "ModelName", ["lab02-current", "lab02-candidate"]),
        (lambda_client.delete_function, "FunctionName", ["lab02-sentiment"]),
    ]:
        for name in names:
            try:
                delete(**{parameter: name})
                deleted.append(f"{parameter[:-4]} {name}")
            except ClientError:
                pass  # not there: nothing to delete
    return deleted


delete_lab_resources()

# %% [markdown]
# ## 2. Data: synthetic product reviews
#
# No data set is downloaded: we make short reviews of cloud services with a sentiment label, seeded. "not" flips a
# review's meaning, and 5% of the labels are wrong, as in real data.

# %%
work = Path("work/02_aws")
(work / "src").mkdir(parents=True, exist_ok=True)
train_df, val_df = product_reviews(train_size, seed), product_reviews(val_size, seed + 1)
s3 = boto3.client("s3")
channels = {}
for name, frame in [("train", train_df), ("val", val_df)]:
    key = f"{prefix}/data/{name}/{name}.jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body=frame.to_json(orient="records", lines=True).encode())
    channels[name] = f"s3://{bucket}/{prefix}/data/{name}"
print(channels)
train_df.head()

# %% [markdown]
# ## 3. The training script
#
# SageMaker runs your script in a container and tells it everything through the environment — the **container
# contract**: `SM_CHANNEL_TRAIN` is the folder where the `train` channel's S3 objects were downloaded, `SM_MODEL_DIR`
# is where to save the model (it is uploaded as `model.tar.gz`), and hyperparameters arrive as command-line
# arguments. With `torch_distributed`, SageMaker starts the script like `torchrun` does: `WORLD_SIZE`, `RANK` and
# `MASTER_ADDR` let `init_process_group` join the processes of all instances into one DDP job.
#
# The model is small on purpose (a bag of hashed words and word pairs), so every job takes seconds. It saves a
# checkpoint after each epoch and resumes from one if it finds it: that is what makes spot training safe.

# %%
# %%writefile work/02_aws/src/train.py
"""Train a bag-of-words sentiment classifier under SageMaker's container contract (one process per instance)."""

import argparse
import json
import os
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

BUCKETS = 4096


def features(text: str) -> list[int]:
    """Hashed words and word pairs ("not slow" is a pair): crc32, so every process hashes alike."""
    words = text.lower().split()
    grams = words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(g.encode()) % BUCKETS for g in grams]


def load(channel: str):
    rows = [json.loads(line) for f in sorted(Path(channel).glob("*.jsonl")) for line in f.read_text().splitlines()]
    return [features(r["text"]) for r in rows], torch.tensor([r["label"] for r in rows])


def batch(token_lists):
    offsets = torch.tensor([0] + [len(t) for t in token_lists[:-1]]).cumsum(0)
    return torch.tensor([i for t in token_lists for i in t]), offsets


class Classifier(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(BUCKETS, dim, mode="mean")
        self.out = nn.Linear(dim, 2)

    def forward(self, tokens, offsets):
        return self.out(self.embed(tokens, offsets))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epoch-pause", type=float, default=0.0)  # stretch epochs, to see a spot interruption
    args = parser.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)

    x_train, y_train = load(os.environ["SM_CHANNEL_TRAIN"])
    x_val, y_val = load(os.environ["SM_CHANNEL_VAL"])
    model = Classifier(args.dim)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    checkpoints = Path(os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    start = 0
    if (checkpoints / "last.pt").exists():  # a restarted spot job resumes where it stopped
        state = torch.load(checkpoints / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
        print(f"resumed from the checkpoint of epoch {state['epoch']}", flush=True)

    mine = list(range(rank, len(x_train), world))  # each process trains on its own shard
    for epoch in range(start, args.epochs):
        order = torch.randperm(len(mine), generator=torch.Generator().manual_seed(epoch)).tolist()
        for i in range(0, len(order), args.batch_size):
            rows = [mine[j] for j in order[i : i + args.batch_size]]
            loss = nn.functional.cross_entropy(model(*batch([x_train[r] for r in rows])), y_train[rows])
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients of all processes here
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(*batch(x_val)).argmax(1) == y_val).float().mean().item()
        time.sleep(args.epoch_pause)
        if rank == 0:
            print(f"epoch {epoch}: loss={loss.item():.4f} val_accuracy={accuracy:.4f}", flush=True)
            checkpoints.mkdir(parents=True, exist_ok=True)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            torch.save(state, checkpoints / "last.pt")

    if rank == 0:
        weights = (model.module if distributed else model).state_dict()
        model_dir = Path(os.environ["SM_MODEL_DIR"])
        torch.save(weights, model_dir / "model.pt")
        (model_dir / "config.json").write_text(json.dumps({"dim": args.dim, "buckets": BUCKETS}))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

# %% [markdown]
# ## 4. A training job on one instance
#
# `fit()` packs `src/`, uploads it, creates the training job and prints its log until it ends. `metric_definitions`
# tell SageMaker how to find metrics in the log. `max_run` caps the job's run time, and so its cost: the cost guard
# budgets every job for its `max_run`.

# %%
metrics = [{"Name": "val_accuracy", "Regex": r"val_accuracy=([0-9.]+)"}]
estimator = PyTorch(
    entry_point="train.py",
    source_dir=str(work / "src"),
    role=role,
    instance_type="ml.m5.xlarge",
    instance_count=1,
    framework_version="2.1.0",
    py_version="py310",
    hyperparameters={"epochs": epochs, "lr": 0.01},
    metric_definitions=metrics,
    output_path=f"s3://{bucket}/{prefix}/models",
    max_run=600,  # seconds: a job never runs (and bills) longer than this
)
estimator.fit({"train": channels["train"], "val": channels["val"]})

# the same script, container and limits for the jobs below; each adds its own instances and hyperparameters
our_script = {
    "entry_point": "train.py",
    "source_dir": str(work / "src"),
    "role": role,
    "framework_version": "2.1.0",
    "py_version": "py310",
    "output_path": f"s3://{bucket}/{prefix}/models",
    "max_run": 600,
}

# %%
job = estimator.latest_training_job.describe()
print(job["TrainingJobStatus"], job["ModelArtifacts"]["S3ModelArtifacts"])
print(f"billable seconds: {job['BillableTimeInSeconds']}")
print(" -> ".join(t["Status"] for t in job["SecondaryStatusTransitions"]))

# %% [markdown]
# ## 5. Distributed: four `ml.p4d.24xlarge` as one DDP job
#
# This is the course's own example, `PyTorch(entry_point='train.py', source_dir='./src', role=role,
# instance_type='ml.p4d.24xlarge', instance_count=4, framework_version='2.1.0', py_version='py310',
# hyperparameters={...}, distribution={'torch_distributed': {'enabled': True}})`, with the shared settings in
# `our_script`. `instance_count=4` with `torch_distributed` starts four processes (here on this machine; on AWS, one
# per GPU on each of four hosts) that average their gradients at every step.

# %%
distributed = PyTorch(
    **our_script,
    instance_type="ml.p4d.24xlarge",
    instance_count=instance_count,
    hyperparameters={"epochs": epochs, "lr": 0.01, "batch-size": 8},
    distribution={"torch_distributed": {"enabled": True}},
    metric_definitions=metrics,
)
distributed.fit({"train": channels["train"], "val": channels["val"]}, logs=False)
print(distributed.latest_training_job.describe()["TrainingJobStatus"])

# %% [markdown]
# What would that have cost? The meter prices each job at the instance's list price for the time it ran: four
# p4d instances cost over a hundred times what one `ml.m5.xlarge` does.

# %%
costs = cloud.costs()
costs[costs["action"] == "TrainingJob"] if backend == "local" else costs

# %% [markdown]
# ## 6. Managed spot training survives an interruption
#
# Spot capacity is up to 90% cheaper, and AWS can take it back with two minutes' notice. With
# `use_spot_instances=True` and a `checkpoint_s3_uri`, SageMaker syncs the checkpoint folder to S3 and restarts an
# interrupted job, which resumes from its last checkpoint.
#
# On the local cloud you can interrupt a job on purpose with the tag `labcloud:interrupt-after-seconds` (real AWS
# ignores it). Watch the log: the job is interrupted, restarts, and resumes after the last saved epoch, losing at
# most one epoch of work.

# %%
spot = PyTorch(
    **our_script,
    instance_type="ml.p3.2xlarge",
    instance_count=1,
    hyperparameters={"epochs": 6, "lr": 0.1, "epoch-pause": 0.5},
    use_spot_instances=True,
    max_wait=1200,  # how long to wait for spot capacity and restarts, in all
    checkpoint_s3_uri=f"s3://{bucket}/{prefix}/checkpoints/spot-{time.strftime('%Y%m%d-%H%M%S')}",  # one per job
    tags=[{"Key": "labcloud:interrupt-after-seconds", "Value": "4"}],
)
spot.fit({"train": channels["train"], "val": channels["val"]})

# %%
spot_job = spot.latest_training_job.describe()
print(" -> ".join(t["Status"] for t in spot_job["SecondaryStatusTransitions"]))
saved = 1 - spot_job["BillableTimeInSeconds"] / max(spot_job["TrainingTimeInSeconds"], 1)
print(
    f"training {spot_job['TrainingTimeInSeconds']} s, billable {spot_job['BillableTimeInSeconds']} s: {saved:.0%} saved"
)

# %% [markdown]
# ## 7. Deploy: an endpoint that runs your `inference.py`
#
# SageMaker's PyTorch serving container calls four functions of your inference script: `model_fn` loads the model
# once, then for each request `input_fn` parses the body, `predict_fn` predicts and `output_fn` writes the answer.

# %%
# %%writefile work/02_aws/src/inference.py
"""Serve the sentiment classifier: SageMaker calls model_fn once, then input_fn, predict_fn, output_fn per request."""

import json
from pathlib import Path

import torch
from train import Classifier, batch, features

LABELS = ["negative", "positive"]


def model_fn(model_dir):
    config = json.loads((Path(model_dir) / "config.json").read_text())
    model = Classifier(config["dim"])
    model.load_state_dict(torch.load(Path(model_dir) / "model.pt"))
    return model.eval()


def input_fn(body, content_type):
    if content_type != "application/json":
        raise ValueError(f"unsupported content type {content_type}")
    inputs = json.loads(body)["inputs"]
    return [inputs] if isinstance(inputs, str) else inputs


def predict_fn(texts, model):
    with torch.no_grad():
        return model(*batch([features(t) for t in texts])).softmax(1)


def output_fn(probabilities, accept):
    best = probabilities.argmax(1).tolist()
    return json.dumps(
        [{"label": LABELS[i], "score": round(p[i].item(), 4)} for i, p in zip(best, probabilities, strict=True)]
    )


# %%
def sentiment_model(model_data: str) -> PyTorchModel:
    return PyTorchModel(
        model_data=model_data,
        role=role,
        entry_point="inference.py",
        source_dir=str(work / "src"),
        framework_version="2.1.0",
        py_version="py310",
        sagemaker_session=session,
    )


started = time.perf_counter()
predictor = sentiment_model(estimator.model_data).deploy(
    initial_instance_count=2,
    instance_type="ml.g4dn.xlarge",
    endpoint_name="lab02-sentiment",
    serializer=JSONSerializer(),
    deserializer=JSONDeserializer(),
)
print(f"deployed in {time.perf_counter() - started:.1f} s")
predictor.predict({"inputs": "Hello, cloud AI!"})

# %%
predictor.predict({"inputs": ["the endpoint is fast and reliable", "the console is not fast"]})

# %% [markdown]
# ## 8. A canary release: 90% to the current model, 10% to the new one
#
# A new model version (the distributed job's) goes live as a second **production variant** of one endpoint. Each
# request goes to a variant at random, in proportion to the variants' weights; the response says which one answered.

# %%
runtime = boto3.client("sagemaker-runtime")
versions = {"current": estimator.model_data, "candidate": distributed.model_data}
for name, model_data in versions.items():
    model = sentiment_model(model_data)
    model.name = f"lab02-{name}"
    model.create(instance_type="ml.m5.large")  # registers the model (repacked with inference.py) without deploying
variants = [
    {"VariantName": name, "ModelName": f"lab02-{name}", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
    for name in versions
]
variants[0]["InitialVariantWeight"], variants[1]["InitialVariantWeight"] = 0.9, 0.1
sm.create_endpoint_config(EndpointConfigName="lab02-canary", ProductionVariants=variants)
sm.create_endpoint(EndpointName="lab02-canary", EndpointConfigName="lab02-canary")
sm.get_waiter("endpoint_in_service").wait(EndpointName="lab02-canary", WaiterConfig={"Delay": 1})


def send_traffic(n: int) -> Counter:
    answered = Counter()
    for text in val_df["text"].sample(n, replace=True, random_state=seed):
        response = runtime.invoke_endpoint(
            EndpointName="lab02-canary", ContentType="application/json", Body=json.dumps({"inputs": text})
        )
        answered[response["InvokedProductionVariant"]] += 1
    return answered


canary = send_traffic(canary_requests)
plt.figure(figsize=(5, 3))
plt.bar(list(versions), [canary[v] / canary_requests for v in versions], color=["tab:blue", "tab:orange"])
plt.axhline(0.9, ls=":", c="gray")
plt.axhline(0.1, ls=":", c="gray")
plt.ylabel("share of requests")
plt.title(f"{canary_requests} requests, weights 90/10")
plt.show()

# %% [markdown]
# ## 9. Bedrock: a foundation model behind an API
#
# `invoke_model` takes the model provider's own request body — for Anthropic models, the Messages API. On the local
# cloud the answer comes from a small **deterministic stand-in**, not from Claude: it retrieves the course note that
# best matches your question. The request and response shapes, token usage and errors are Bedrock's.

# %%
bedrock = boto3.client("bedrock-runtime")
response = bedrock.invoke_model(
    modelId="anthropic.claude-3-haiku-20240307-v1:0",
    body=json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "Why should a spot training job save checkpoints?"}],
        }
    ),
)
answer = json.loads(response["body"].read())
print(answer["content"][0]["text"])
print(answer["stop_reason"], answer["usage"])

# %% [markdown]
# ## 10. Serverless inference with Lambda, cold and warm
#
# A Lambda function is a handler, `lambda_handler(event, context)`, in a zip. Its first call **cold-starts**: a worker
# starts and imports your code (the log's `Init Duration`); later calls reuse the warm worker. The handler below
# serves the same model without PyTorch: the model is linear after the averaging, so each hashed word's contribution
# to the two logits can be precomputed into a small table, which makes a slim package.

# %%
import io
import tarfile
import zipfile

import torch

archive = s3.get_object(Bucket=bucket, Key=estimator.model_data.split(f"{bucket}/", 1)[1])["Body"].read()
with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(work / "model", filter="data")
state = torch.load(work / "model" / "model.pt")
table = state["embed.weight"] @ state["out.weight"].T  # each hashed word's share of the two logits
(work / "lambda").mkdir(exist_ok=True)
(work / "lambda" / "model.json").write_text(
    json.dumps({"table": table.round(decimals=5).tolist(), "bias": state["out.bias"].tolist()})
)

# %%
# %%writefile work/02_aws/lambda/app.py
"""Sentiment inference in a Lambda function, with the standard library only (a slim package starts fast)."""

import json
import math
import zlib
from pathlib import Path

MODEL = json.loads((Path(__file__).parent / "model.json").read_text())  # loaded once, during the cold start
LABELS = ["negative", "positive"]


def features(text):
    words = text.lower().split()
    grams = words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(g.encode()) % len(MODEL["table"]) for g in grams]


def lambda_handler(event, context):
    text = json.loads(event["body"])["inputs"] if "body" in event else event["inputs"]
    ids = features(text) or [0]
    logits = [sum(MODEL["table"][i][k] for i in ids) / len(ids) + MODEL["bias"][k] for k in (0, 1)]
    positive = 1 / (1 + math.exp(logits[0] - logits[1]))
    best = int(positive >= 0.5)
    score = positive if best else 1 - positive
    return {"statusCode": 200, "body": json.dumps({"label": LABELS[best], "score": round(score, 4)})}


# %% [markdown]
# Package it, create the function (on AWS the role must trust `lambda.amazonaws.com`), and call it five times with
# `LogType="Tail"`: the last lines of the log come back with each response, ending in Lambda's `REPORT` line.

# %%
package = io.BytesIO()
with zipfile.ZipFile(package, "w") as zf:
    for name in ("app.py", "model.json"):
        zf.write(work / "lambda" / name, name)
lambda_client.create_function(
    FunctionName="lab02-sentiment",
    Runtime="python3.11",
    Role=role,
    Handler="app.lambda_handler",
    Code={"ZipFile": package.getvalue()},
    MemorySize=256,
    Timeout=30,
)
lambda_client.get_waiter("function_active_v2").wait(FunctionName="lab02-sentiment")


def report_line(response) -> str:
    log = base64.b64decode(response["LogResult"]).decode()
    return next(line for line in log.splitlines() if line.startswith("REPORT"))


invocations = []
for i in range(5):
    started = time.perf_counter()
    response = lambda_client.invoke(
        FunctionName="lab02-sentiment",
        Payload=json.dumps({"inputs": "the endpoint is not slow"}),
        LogType="Tail",
    )
    invocations.append(
        {
            "call": i + 1,
            "answer": json.loads(json.loads(response["Payload"].read())["body"]),
            "round trip ms": round((time.perf_counter() - started) * 1000, 1),
            "cold start": "Init Duration" in report_line(response),
        }
    )
print(report_line(response))
invocations

# %% [markdown]
# ## 11. A custom CloudWatch metric

# %% [markdown]
# Endpoints publish their own metrics; your code can publish more. Here the Lambda's latency goes to a custom
# namespace, and an alarm watches it: **ALARM** when the average is over 50 ms in 2 of the last 3 minutes.
# (On the local cloud a datapoint counts at once; CloudWatch waits for the minute to close.)

# %%
cloudwatch = boto3.client("cloudwatch")
dimensions = [{"Name": "ModelName", "Value": "sentiment-v2"}]
cloudwatch.put_metric_alarm(
    AlarmName="lab02-latency",
    Namespace="MLModel/Inference",
    MetricName="PredictionLatency",
    Dimensions=dimensions,
    Statistic="Average",
    Period=60,
    EvaluationPeriods=3,
    DatapointsToAlarm=2,
    Threshold=50.0,
    ComparisonOperator="GreaterThanThreshold",
)
now = time.time()
for minutes_ago, latency_ms in [(2, 45.3), (1, 61.0), (0, 72.5)]:  # a model that is getting slower
    cloudwatch.put_metric_data(
        Namespace="MLModel/Inference",
        MetricData=[
            {
                "MetricName": "PredictionLatency",
                "Value": latency_ms,
                "Unit": "Milliseconds",
                "Dimensions": dimensions,
                "Timestamp": now - 60 * minutes_ago,
            }
        ],
    )
alarm = cloudwatch.describe_alarms(AlarmNames=["lab02-latency"])["MetricAlarms"][0]
print(alarm["StateValue"], "-", alarm["StateReason"])

# %% [markdown]
# ## 12. Exercises
#
# ### Exercise 1 — tune the training job
# The first job trained for only two epochs at a small learning rate. Train a model that reaches **at least 90%
# validation accuracy**: run a training job with better hyperparameters and put its `model_data` in `tuned_model`.
# The check downloads your model artifact and measures its accuracy itself.

# %%
### BEGIN SOLUTION
### HINT: PyTorch(**our_script, instance_type=..., instance_count=1, hyperparameters={"epochs": ..., "lr": ...}),
### HINT: then fit it on the same channels and use its model_data.
tuned = PyTorch(**our_script, instance_type="ml.m5.xlarge", instance_count=1, hyperparameters={"epochs": 5, "lr": 0.05})
tuned.fit({"train": channels["train"], "val": channels["val"]}, logs=False)
tuned_model = tuned.model_data
### END SOLUTION

# %% tags=["nbval-check-output"]
checks.check_tuned_model(tuned_model, work / "src", val_df, target=0.90)

# %% [markdown]
# ### Exercise 2 — `input_fn` for CSV
# A client sends reviews as `text/csv`, one review per line (quoted when it contains a comma). Write an `input_fn`
# that accepts `text/csv` and still accepts `application/json`, and refuses other content types with `ValueError`.

# %%
import csv


def input_fn(body, content_type):
    ### BEGIN SOLUTION
    ### HINT: for text/csv, csv.reader(io.StringIO(body)) yields rows; keep each row's first column.
    if content_type == "text/csv":
        return [row[0] for row in csv.reader(io.StringIO(body)) if row]
    if content_type == "application/json":
        inputs = json.loads(body)["inputs"]
        return [inputs] if isinstance(inputs, str) else inputs
    raise ValueError(f"unsupported content type {content_type}")
    ### END SOLUTION


# %% tags=["nbval-check-output"]
checks.check_csv_input_fn(input_fn)

# %% [markdown]
# ### Exercise 3 — shift the canary to 50/50
# The candidate looks healthy. Shift the canary endpoint's traffic to **50/50** without redeploying, wait until the
# endpoint is `InService` again, send `canary_requests` requests and count the variants that answered in `counts`.

# %%
### BEGIN SOLUTION
### HINT: sm.update_endpoint_weights_and_capacities(EndpointName=..., DesiredWeightsAndCapacities=[{"VariantName":
### HINT: ..., "DesiredWeight": 0.5}, ...]), then the endpoint_in_service waiter, then send_traffic(canary_requests).
sm.update_endpoint_weights_and_capacities(
    EndpointName="lab02-canary",
    DesiredWeightsAndCapacities=[{"VariantName": name, "DesiredWeight": 0.5} for name in versions],
)
sm.get_waiter("endpoint_in_service").wait(EndpointName="lab02-canary", WaiterConfig={"Delay": 1})
counts = send_traffic(canary_requests)
### END SOLUTION
current = sm.describe_endpoint(EndpointName="lab02-canary")["ProductionVariants"]

# %% tags=["nbval-check-output"]
checks.check_canary_split(counts, {v["VariantName"]: v["CurrentWeight"] for v in current})

# %% [markdown]
# ## 13. What it cost, and cleaning up
#
# Endpoints bill by the hour until you delete them — on real AWS, delete them as soon as you are done.

# %%
print("deleted:", ", ".join(delete_lab_resources()))
cloud.costs()

# %% [markdown]
# ## 14. Quiz

# %%
quiz_widget("02")

# %% [markdown]
# ## What you did
# - ran a training script under SageMaker's container contract, on one instance and as a four-instance DDP job;
# - saw a spot job interrupted and resumed from its checkpoint;
# - deployed your own inference code, released a canary and shifted its traffic;
# - called a foundation model through Bedrock and served the model from a Lambda function;
# - published a custom metric.
#
# Next: **lab 03** does the same on Google Cloud with Vertex AI and BigQuery ML.
