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
# # Lab 04 — Azure: Azure Machine Learning jobs and Azure OpenAI
#
# **Time:** about 40 minutes. **Cost:** nothing on the local cloud; the cost meter shows what Azure would charge.
#
# **You will learn to**
# 1. connect to an Azure ML workspace with `MLClient` and `DefaultAzureCredential`;
# 2. create an autoscaling compute cluster and understand what `min_instances` and the idle time cost;
# 3. submit a command job with inputs from a datastore, follow its log, and fetch its outputs;
# 4. call Azure OpenAI with a system prompt, count the tokens, and handle a quota's 429 with backoff.
#
# Everything here is **real SDK code**: with `backend = "azure"` it runs on your subscription unchanged (set
# `subscription_id`, and have the workspace, the `mydata` datastore and the model deployments). On the local cloud the
# job's command really runs as a process on this machine and Blob storage is Azurite (Microsoft's emulator); Azure
# OpenAI is answered by a small, deterministic **stand-in model** that says so. What is **simulated** is the hardware
# (a `Standard_ND96asr_v4` node is this machine) and the prices (list prices per node-hour and per token).

# %% tags=["parameters"]
backend = "local"  # "local" runs on the local cloud; "azure" uses your subscription (and costs money)
subscription_id = None  # your Azure subscription on "azure"; the local cloud takes any
resource_group, workspace_name = "rg-ai", "ai-workspace"
seed = 42
epochs, learning_rate = 10, 0.001

# %% [markdown]
# Connect first: the SDKs read their endpoints and credentials when their clients are made.

# %%
import labcloud

cloud = labcloud.connect(backend)
cloud

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import openai
from azure.ai.ml import Input, MLClient, Output, command
from azure.ai.ml.entities import AmlCompute
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient
from openai import AzureOpenAI

from labcloud.checks import azure as checks
from labcloud.datasets import fraud_transactions
from labcloud.quiz import quiz_widget

# %% [markdown]
# ## 1. The workspace
#
# An Azure ML **workspace** groups compute, data, jobs and models. `DefaultAzureCredential` tries, in order, the
# environment, a managed identity, the Azure CLI's login... and uses the first that works: the same line works on your
# laptop, in CI and on Azure. (On the local cloud it finds a local managed identity.)

# %%
if subscription_id is None:
    subscription_id = os.environ.get("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
ml_client = MLClient(
    DefaultAzureCredential(),
    subscription_id=subscription_id,
    resource_group_name=resource_group,
    workspace_name=workspace_name,
)
workspace = ml_client.workspaces.get(workspace_name)
print(workspace.name, workspace.location)

# %% [markdown]
# ## 2. A compute cluster that scales to zero
#
# An **AmlCompute** cluster adds nodes when jobs are queued and removes them when they have been idle for
# `idle_time_before_scale_down` seconds, down to `min_instances`. With `min_instances=0` an idle cluster costs
# nothing — but the first job waits a few minutes for a node. This is the course's cluster: up to four
# `Standard_ND96asr_v4` nodes (8 A100 GPUs each, about $27 an hour per node).

# %%
gpu_cluster = AmlCompute(
    name="gpu-cluster",
    type="amlcompute",
    size="Standard_ND96asr_v4",
    min_instances=0,
    max_instances=4,
    idle_time_before_scale_down=120,
)
ml_client.compute.begin_create_or_update(gpu_cluster).result()
cluster = ml_client.compute.get("gpu-cluster")
print(cluster.name, cluster.size, cluster.min_instances, "-", cluster.max_instances, "nodes")

# %% [markdown]
# ## 3. Training data in a datastore
#
# Jobs read data from **datastores**, named connections to storage. The job below reads
# `azureml://datastores/mydata/paths/train/`: the `train/` folder of the `mydata` datastore. Here we put a CSV
# there, in the datastore's Blob container. (On Azure, register the `mydata` datastore for your storage account
# first and set `AZURE_STORAGE_CONNECTION_STRING` to that account.)

# %%
blob_service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
container = blob_service.get_container_client("mydata")
if not container.exists():
    container.create_container()
payments = fraud_transactions(4000, seed)
container.upload_blob("train/payments.csv", payments.to_csv(index=False), overwrite=True)
print([blob.name for blob in container.list_blobs(name_starts_with="train/")])

# %% [markdown]
# ## 4. The training script
#
# A command job runs a command in your code folder. Inputs arrive as paths or values on the command line, and
# the script writes its results into the output folders it is given.

# %%
work = Path("work/04_azure")
(work / "src").mkdir(parents=True, exist_ok=True)

# %%
# %%writefile work/04_azure/src/train.py
"""Train a fraud classifier with SGD: CSV folder in, model.joblib and metrics.json out."""

import argparse
import json
from pathlib import Path

import joblib
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["amount", "hour", "account_age_days", "transactions_last_24h", "foreign"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning_rate", type=float, default=0.001)
    parser.add_argument("--model_dir", default="outputs")
    args = parser.parse_args()

    frame = pd.concat(pd.read_csv(f) for f in sorted(Path(args.data).glob("*.csv")))
    x, y = frame[FEATURES].astype(float), frame["is_fraud"]
    model = make_pipeline(
        StandardScaler(),
        SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.learning_rate, random_state=0),
    )
    classes = sorted(y.unique())
    for epoch in range(args.epochs):
        model[:-1].fit(x)
        model[-1].partial_fit(model[:-1].transform(x), y, classes=classes)
        auc = roc_auc_score(y, model.predict_proba(x)[:, 1])
        print(f"epoch {epoch}: train_roc_auc={auc:.4f}", flush=True)

    out = Path(args.model_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    metrics = {"learning_rate": args.learning_rate, "epochs": args.epochs, "train_roc_auc": auc}
    (out / "metrics.json").write_text(json.dumps(metrics))
    print("saved", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()

# %% [markdown]
# ## 5. A command job
#
# This is the course's job, with one correction: the course writes `Command(...)` from `azure.ai.ml.entities`, which
# raises a `TypeError` in the SDK; the `command(...)` builder from `azure.ai.ml` is the call. `${{inputs.x}}` and
# `${{outputs.y}}` in the command are replaced by the input's path or value and the output's folder. The
# environment is one of Azure's curated ones (on the local cloud it stands for this machine's Python).


# %%
def training_job(learning_rate: float, display_name: str = "pytorch-training-job"):
    """The course's command job, for a given learning rate."""
    return command(
        code=str(work / "src"),
        command=(
            "python train.py --data ${{inputs.train_data}} --epochs ${{inputs.epochs}} "
            "--learning_rate ${{inputs.learning_rate}} --model_dir ${{outputs.model}}"
        ),
        environment="AzureML-pytorch-2.0-ubuntu20.04-py38-cuda11-gpu@latest",
        compute="gpu-cluster",
        inputs={
            "train_data": Input(type="uri_folder", path="azureml://datastores/mydata/paths/train/"),
            "epochs": epochs,
            "learning_rate": learning_rate,
        },
        outputs={"model": Output(type="uri_folder")},
        display_name=display_name,
    )


job = training_job(learning_rate)
returned_job = ml_client.jobs.create_or_update(job)
print(returned_job.studio_url)
ml_client.jobs.stream(returned_job.name)

# %%
finished = ml_client.jobs.get(returned_job.name)
print(finished.name, finished.status)

# %% [markdown]
# ## 6. Azure OpenAI: a system prompt, and what each call costs
#
# Azure OpenAI serves models through **deployments** you create; `model=` names the deployment. The system prompt
# sets the assistant's role. Every call reports its tokens: input and output are priced separately.

# %%
client = AzureOpenAI(
    azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
    api_key=os.environ["AZURE_OPENAI_API_KEY"],
    api_version="2024-02-01",
)
messages = [
    {"role": "system", "content": "You are a concise assistant for a bank's fraud analysts."},
    {"role": "user", "content": "Which signs make a card payment suspicious?"},
]
response = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=120)
print(response.choices[0].message.content)
usage = response.usage
print(f"tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out")
print(f"at $2.50 / $10 per million tokens: ${usage.prompt_tokens * 2.5e-6 + usage.completion_tokens * 10e-6:.6f}")

# %% [markdown]
# ## 7. Quotas: 429 and `retry-after`
#
# Each deployment has a quota in **tokens per minute** (TPM). A call is counted at its prompt plus `max_tokens`;
# over the quota Azure answers **429 Too Many Requests** with a `retry-after` header. On the local cloud we make a
# deployment with a tiny quota (a local-only call; on Azure you set a deployment's TPM in the portal or with ARM);
# its "minute" lasts `window_seconds`, to see a refill in seconds.

# %%
tight = "lab04-tight"
if backend == "local":
    from labcloud.wiring.azure import set_openai_deployment

    set_openai_deployment(tight, "gpt-4o", tokens_per_minute=150, requests_per_minute=100, window_seconds=2)
no_retries = client.with_options(max_retries=0)  # the client retries 429s itself; switch that off to see one
try:
    for attempt in range(3):
        no_retries.chat.completions.create(model=tight, messages=messages, max_tokens=60)
        print(f"call {attempt + 1}: answered")
except openai.RateLimitError as error:
    print(f"call {attempt + 1}: {error.status_code}, retry after {error.response.headers['retry-after']} s")

# %% [markdown]
# ## 8. Exercises
#
# ### Exercise 1 — a learning rate in, read back out
# Submit the training job again with `learning_rate` **0.05** (and the same data), wait for it, then download its
# `model` output with `ml_client.jobs.download(...)` and read the learning rate the script wrote into
# `metrics.json` into `reported_learning_rate`. The check reads the job's input and output from the service.

# %%
new_learning_rate = 0.05
# TODO: ml_client.jobs.create_or_update(training_job(new_learning_rate, "tuned")),
#       ml_client.jobs.stream(name), then ml_client.jobs.download(name, download_path=...,
#       output_name="model") and read metrics.json.
raise NotImplementedError("Exercise 1: replace this line with your code")

# %% tags=["nbval-check-output"]
checks.check_learning_rate_round_trip(ml_client, tuned_job.name, new_learning_rate, reported_learning_rate)

# %% [markdown]
# ### Exercise 2 — retry on 429 with backoff
# Write `chat_with_backoff(client, deployment, messages)`: it calls `client.chat.completions.create` and, on
# `openai.RateLimitError`, waits as long as the response's `retry-after` header says and tries again (at most 5
# times). The check calls it three times in a row on the tight deployment, whose quota holds only one call at a time.


# %%
def chat_with_backoff(client, deployment, messages, attempts=5):
    # TODO: try: return client.chat.completions.create(model=deployment, messages=messages,
    #       max_tokens=60) except openai.RateLimitError as error:
    #       time.sleep(float(error.response.headers["retry-after"]))
    raise NotImplementedError("Exercise 2: replace this line with your code")


# %% tags=["nbval-check-output"]
checks.check_backoff(chat_with_backoff, no_retries, tight, messages)

# %% [markdown]
# ### Exercise 3 — `min_instances` and the idle time
# A team runs one 20-minute job every hour from 9:00 to 16:00 on a `Standard_NC6s_v3` cluster. A node takes 4
# minutes to start when the cluster is at zero; jobs may wait **at most 5 minutes a day** in all. Among the
# `candidates` (`min_instances`, idle minutes), find the cheapest that meets the limit — `checks.cluster_day(pattern,
# min_instances, idle_minutes)` gives (dollars a day, minutes waited) — and create the cluster `lab04-cluster`
# with it.

# %%
pattern = checks.JobPattern(
    starts=tuple(range(9 * 60, 17 * 60, 60)), job_minutes=20, node_start_minutes=4, price_per_node_hour=3.06
)
candidates = [(low, idle) for low in (0, 1) for idle in (2, 10, 30, 45, 60)]
# TODO: evaluate checks.cluster_day(pattern, *c) for c in candidates; keep those with waiting <= 5;
#       take the cheapest. then AmlCompute(name="lab04-cluster", size="Standard_NC6s_v3",
#       min_instances=..., max_instances=2, idle_time_before_scale_down=<seconds>) and
#       ml_client.compute.begin_create_or_update(...).result()
raise NotImplementedError("Exercise 3: replace this line with your code")

# %% tags=["nbval-check-output"]
checks.check_cluster_settings(ml_client, "lab04-cluster", pattern, candidates, max_wait_minutes=5)

# %% [markdown]
# A picture of the trade-off: cost against waiting for every candidate.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for low, idle in candidates:
    cost, waited = checks.cluster_day(pattern, low, idle)
    ax.scatter(waited, cost, color="tab:red" if low else "tab:blue")
    ax.annotate(f"{low}/{idle}m", (waited, cost), textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.axvline(5, color="grey", linestyle="--")
ax.set_xlabel("minutes jobs wait per day")
ax.set_ylabel("USD per day")
ax.set_title("min_instances / idle minutes (red: a node kept all day)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 9. What it cost, and cleaning up
#
# The cluster bills node-hours while nodes are up (a job's run plus the idle time before scale-down), Azure OpenAI
# by tokens. Delete the clusters when you are done; a cluster at zero nodes costs nothing, one with
# `min_instances > 0` bills every hour.

# %%
for name in ("gpu-cluster", "lab04-cluster"):
    ml_client.compute.begin_delete(name).result()
costs = cloud.costs()
costs.groupby(["service", "action"], as_index=False)[["quantity", "usd"]].sum() if backend == "local" else costs

# %% [markdown]
# ## 10. Quiz

# %%
quiz_widget("04")

# %% [markdown]
# ## What you did
# - connected to a workspace with `DefaultAzureCredential`, created an autoscaling cluster;
# - ran a command job with datastore inputs, streamed its log and downloaded its outputs;
# - called Azure OpenAI with a system prompt, counted its tokens, and handled a 429 with backoff;
# - chose a cluster's minimum size and idle time from the cost of a day of jobs.
#
# Next: **lab 05** runs AI workloads on Kubernetes.
