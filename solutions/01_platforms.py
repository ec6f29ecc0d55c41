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
# # Lab 01 — Cloud AI platforms, GPU instances and what they cost
#
# **Time:** about 40 minutes. **Cost:** nothing: everything runs on the local cloud.
#
# **You will learn to**
# 1. place the three clouds' AI services on the IaaS / PaaS / SaaS map, and find the service for a job;
# 2. read a GPU instance catalog: GPU model and count, GPU memory, vCPUs, RAM, on-demand and spot prices;
# 3. compare on-demand, spot (with interruptions and checkpoints), reserved / committed use and savings plans;
# 4. size an inference fleet: autoscaling against a fixed fleet, and the replicas a latency target needs;
# 5. use the course's cost meter and cost guard, which every later lab uses.
#
# Prices are **list prices with a date and a source** (see `shared/labcloud/pricing/instances.yaml`); some are
# marked unverified. Spot interruptions are **simulated** here as a random process: no real machine is reclaimed.

# %% tags=["parameters"]
backend = "local"  # "local" runs on the local cloud; "aws" / "gcp" / "azure" use your real account
seed = 42
budget_usd = 20.0  # the cost guard stops any single session from spending more than this
simulation_runs = 4000

# %%
import boto3
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import labcloud
from labcloud.checks import platforms as checks
from labcloud.pricing import models
from labcloud.pricing.catalog import load_catalog
from labcloud.pricing.guard import BudgetExceeded
from labcloud.quiz import quiz_widget
from labcloud.widgets import plot_fleets, plot_spot_tradeoff, service_explorer, service_map_frame, spot_explorer

pd.set_option("display.width", 140)
cloud = labcloud.connect(backend, budget_usd=budget_usd)
cloud

# %% [markdown]
# ## 1. IaaS, PaaS, SaaS — and the course's service map
#
# - **IaaS** rents you infrastructure: a GPU virtual machine (EC2 `p4d.24xlarge`, Compute Engine `a2-highgpu-8g`,
#   Azure `Standard_ND96asr_v4`). You install drivers, CUDA, frameworks, and you pay while it runs.
# - **PaaS** runs *your* code on infrastructure it manages: SageMaker AI training jobs, Vertex AI custom jobs,
#   Azure ML command jobs. You hand over a script and a machine type; the platform starts, runs and stops it.
# - **SaaS** is a finished service you call: a speech-to-text or translation API, or a chat product.
#   LLM APIs (Bedrock, Gemini, Azure OpenAI) sit between PaaS and SaaS: you call a model, you do not host it.
#
# The map below is the course's own data file; each row is a capability, each column a cloud.

# %%
service_map = service_map_frame()
service_map

# %% [markdown]
# Explore it: pick a delivery model, then a capability, and read what each cloud offers and what changed
# recently (products are renamed often; the notes say when).

# %%
service_explorer()

# %% tags=["nbval-check-output"]
print(service_map["model"].value_counts().sort_index().to_string())

# %% [markdown]
# ## 2. The GPU instance catalog
#
# Every instance type the course names, with its GPUs and its price. A GCP `n1-standard-8+V100` row is a machine
# type with an attached GPU (priced as machine + GPU); the `sagemaker-*` and `vertex-*` rows are the managed
# platforms' prices for the same hardware, which include a platform margin.

# %%
catalog = load_catalog()
instances = catalog.frame()
columns = ["cloud", "service", "gpu_model", "gpu_count", "gpu_memory_gib", "vcpus", "ram_gib"]
prices = ["on_demand_usd_per_hour", "spot_usd_per_hour", "price_date", "verified"]
instances[columns + prices]

# %% [markdown]
# The number that compares GPU machines across clouds is the **price of one GPU for one hour**. Training a model
# usually needs a fixed number of GPU-hours, so this is what a budget is made of.

# %%
gpus = instances[instances.gpu_count > 0].copy()
gpus["usd_per_gpu_hour"] = gpus.on_demand_usd_per_hour / gpus.gpu_count
ranked = gpus.sort_values("usd_per_gpu_hour")

fig, ax = plt.subplots(figsize=(9, 5))
colours = ranked.cloud.map({"aws": "tab:orange", "gcp": "tab:blue", "azure": "tab:cyan"})
ax.barh(ranked.index + " (" + ranked.gpu_model + ")", ranked.usd_per_gpu_hour, color=colours)
ax.set(xlabel="on-demand USD per GPU-hour", title="One GPU for one hour, by instance type")
plt.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
p4d = catalog.get("p4d.24xlarge")
print(
    f"p4d.24xlarge: {p4d.gpu_count} x {p4d.gpu_model} {p4d.gpu_memory_gib:g} GiB,"
    f" {p4d.vcpus} vCPUs, {p4d.ram_gib:g} GiB RAM"
)
print(
    f"on-demand ${p4d.on_demand_usd_per_hour:,.2f}/h = ${p4d.gpu_hour_usd:,.2f} per GPU-hour (as of {p4d.price_date})"
)

# %% [markdown]
# ## 3. On-demand or spot? Interruptions and checkpoints
#
# Spot (AWS, GCP Spot VMs, Azure Spot) sells spare capacity at a large discount, and takes it back when it is
# needed: AWS gives a **two-minute** notice, GCP and Azure about **30 seconds**. A job that is interrupted loses
# everything since its last **checkpoint**, then pays a restart overhead (a new machine, reloading the checkpoint).
#
# We model interruptions as a Poisson process with rate λ per hour. For a stretch of `t` hours that must finish
# without an interruption, the expected wall-clock time is `(1/λ + R) · (e^{λt} − 1)`: exponential in `t`.
# Checkpoints every τ hours cut the job into short stretches, at the price of the time each checkpoint takes.
#
# The rate below is **high on purpose** (one interruption every ten hours on average) to make the effect
# visible; the catalog's `spot_interruption` section has the commonly cited figures, and their sources.

# %%
spot_risk = {"rate_per_hour": 0.1, "checkpoint_cost_h": 0.1, "restart_overhead_h": 0.25}
job_hours = 24.0
spot_price = p4d.spot_usd_per_hour

plans = {
    "on-demand": models.spot_expected(job_hours, 0.0, price_per_hour=p4d.on_demand_usd_per_hour),
    "spot, no checkpoints": models.spot_expected(
        job_hours, spot_risk["rate_per_hour"], None, 0.0, spot_risk["restart_overhead_h"], spot_price
    ),
    "spot, checkpoint hourly": models.spot_expected(
        job_hours, checkpoint_interval_h=1.0, price_per_hour=spot_price, **spot_risk
    ),
}
comparison = pd.DataFrame({name: vars(estimate) for name, estimate in plans.items()}).T.round(2)
comparison

# %% [markdown]
# The formula is an expectation. A simulation shows the spread: each run draws its interruptions at random.

# %%
simulated = {
    "no checkpoints": models.simulate_spot(
        job_hours,
        spot_risk["rate_per_hour"],
        None,
        0.0,
        spot_risk["restart_overhead_h"],
        spot_price,
        runs=simulation_runs,
        seed=seed,
    ),
    "checkpoint hourly": models.simulate_spot(
        job_hours, checkpoint_interval_h=1.0, price_per_hour=spot_price, runs=simulation_runs, seed=seed, **spot_risk
    ),
}
fig, ax = plt.subplots(figsize=(8, 3.5))
for name, runs in simulated.items():
    ax.hist(
        runs.hours, bins=60, range=(job_hours, job_hours * 4), alpha=0.6, label=f"{name} (mean {runs.mean_hours:.1f} h)"
    )
ax.axvline(job_hours, color="grey", linestyle=":", label="no interruptions")
ax.set(xlabel="wall-clock hours for 24 h of work", ylabel="runs", title=f"{simulation_runs} simulated spot jobs")
ax.legend()
plt.show()

# %% tags=["nbval-check-output"]
for name, runs in simulated.items():
    print(
        f"{name:18} mean {runs.mean_hours:6.2f} h, p95 {np.percentile(runs.hours, 95):6.2f} h, "
        f"mean cost ${runs.mean_cost:8,.2f}, lost work {runs.mean_lost_work:5.2f} h"
    )

# %% [markdown]
# Move the sliders: how do the interruption rate and the cost of one checkpoint move the best interval? The
# green line is **Young's approximation** `τ* ≈ √(2C/λ)`.

# %%
spot_explorer(work_hours=job_hours)

# %% [markdown]
# ## 4. Reserved instances, committed use, savings plans
#
# A **commitment** (AWS Reserved Instances or Savings Plans, GCP committed-use discounts, Azure reservations or
# savings plans) buys a discount by paying for every hour of a one- or three-year term, used or not. It pays off
# above a **break-even utilisation** of `1 − discount`.

# %%
aws_discounts = {k: v for k, v in catalog.commitments["aws"].items() if isinstance(v, float)}
year = 24 * 365
utilisation = np.linspace(0.05, 1.0, 96)
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.plot(utilisation * 100, p4d.on_demand_usd_per_hour * utilisation * year / 1000, label="on-demand", color="black")
for name, discount in aws_discounts.items():
    term_cost = models.commitment_cost(p4d.on_demand_usd_per_hour, 0, year, discount) / 1000
    ax.axhline(term_cost, linestyle="--", label=f"{name} (break-even {models.breakeven_utilisation(discount):.0%})")
ax.set(xlabel="utilisation over a year (%)", ylabel="thousand USD per year", title="One p4d.24xlarge for a year")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# For a concrete team — 3,000 instance-hours of p4d a year, and spot with hourly checkpoints — the options rank:

# %%
options = models.compare_purchase_options(
    p4d.on_demand_usd_per_hour,
    spot_price,
    hours_needed=3000,
    term_hours=year,
    discounts=aws_discounts,
    spot_rate_per_hour=spot_risk["rate_per_hour"],
    checkpoint_interval_h=1.0,
    checkpoint_cost_h=spot_risk["checkpoint_cost_h"],
    restart_overhead_h=spot_risk["restart_overhead_h"],
)

# %% tags=["nbval-check-output"]
for option in options:
    print(f"{option.name:16} ${option.cost:>12,.0f}   {option.hours:7.0f} h   {option.note}")

# %% [markdown]
# ## 5. Serving: autoscaling against a fixed fleet
#
# Inference traffic follows the day. A fixed fleet must be sized for the peak and idles at night; an autoscaled
# fleet follows the traffic, keeping each replica below a target utilisation (70% here) so that bursts and
# the minutes a new replica takes to start do not overload it.

# %%
step_hours = 0.25
traffic = models.daily_traffic(peak_rps=400, trough_rps=40, steps_per_hour=4, peak_hour=14)
g4dn = catalog.get("ml.g4dn.xlarge", service="sagemaker-inference")
fleets = models.compare_fleets(
    traffic,
    capacity_rps_per_replica=25,
    price_per_hour=g4dn.on_demand_usd_per_hour,
    step_hours=step_hours,
    target_utilisation=0.7,
    min_replicas=2,
)
plot_fleets(traffic, fleets, step_hours)
plt.title("One day on ml.g4dn.xlarge replicas")
plt.show()

# %% tags=["nbval-check-output"]
print(f"fixed fleet: {fleets.fixed_replicas} replicas, ${fleets.fixed_cost:,.2f} per day")
print(f"autoscaled : ${fleets.autoscaled_cost:,.2f} per day ({fleets.savings_fraction:.0%} saved)")

# %% [markdown]
# ## 6. The cost meter and the cost guard
#
# Every action the local cloud executes is metered at the real cloud's list price. Store the catalog in S3 — a
# real S3 call, on the local cloud — and read the meter.

# %%
s3 = boto3.client("s3")
s3.create_bucket(Bucket="lab01-pricing")
s3.put_object(Bucket="lab01-pricing", Key="catalog/instances.csv", Body=instances.to_csv().encode())
stored = s3.head_object(Bucket="lab01-pricing", Key="catalog/instances.csv")["ContentLength"]
print(f"stored {stored:,} bytes")
cloud.costs()

# %% [markdown]
# The **cost guard** works the other way round: on a real cloud it estimates a call *before* it is sent, and stops
# it when it would take the session past `budget_usd`. Here we armed it on the local cloud to see it work: four
# `ml.p4d.24xlarge` for up to a day is far more than a 20-dollar budget, so the request never leaves the kernel.

# %% tags=["nbval-check-output"]
sagemaker = boto3.client("sagemaker")
try:
    sagemaker.create_training_job(
        TrainingJobName="too-expensive",
        AlgorithmSpecification={"TrainingImage": "pytorch-training:2.1.0", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        OutputDataConfig={"S3OutputPath": "s3://lab01-pricing/output"},
        ResourceConfig={"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 4, "VolumeSizeInGB": 100},
        StoppingCondition={"MaxRuntimeInSeconds": 24 * 3600},
    )
except BudgetExceeded as stopped:
    print(stopped)

# %% [markdown]
# ## 7. Exercises
#
# ### Exercise 1 — the cheapest 200 A100 GPU-hours before a deadline
# You need **200 A100 GPU-hours** and the result within **40 hours**. Any A100 instance in the catalog will do,
# on-demand or spot (one instance; use `spot_risk` above, with checkpoints every hour, for spot's expected cost and
# hours). Build a table of every offer and return the cheapest one that meets the deadline, as a dict with the
# keys `instance`, `purchase` ("on-demand" or "spot"), `cost_usd` and `hours`.

# %%
gpu_hours, deadline_h = 200, 40
hourly_checkpoints = {**spot_risk, "checkpoint_interval_h": 1.0}


def cheapest_a100_plan(gpu_hours: float, deadline_h: float) -> dict:
    ### BEGIN SOLUTION
    ### HINT: loop over catalog.instances whose gpu_model starts with "A100"; hours = gpu_hours / gpu_count;
    ### HINT: for spot use models.spot_expected(hours, price_per_hour=spot price, **hourly_checkpoints).
    offers = []
    for instance in catalog.instances:
        if not instance.gpu_model.startswith("A100"):
            continue
        hours = gpu_hours / instance.gpu_count
        offers.append(
            {
                "instance": instance.id,
                "purchase": "on-demand",
                "hours": hours,
                "cost_usd": hours * instance.on_demand_usd_per_hour,
            }
        )
        if instance.spot_usd_per_hour is not None:
            spot = models.spot_expected(hours, price_per_hour=instance.spot_usd_per_hour, **hourly_checkpoints)
            offers.append(
                {
                    "instance": instance.id,
                    "purchase": "spot",
                    "hours": spot.expected_hours,
                    "cost_usd": spot.expected_cost,
                }
            )
    feasible = [offer for offer in offers if offer["hours"] <= deadline_h]
    return min(feasible, key=lambda offer: offer["cost_usd"])
    ### END SOLUTION


plan = cheapest_a100_plan(gpu_hours, deadline_h)
plan

# %% tags=["nbval-check-output"]
checks.check_cheapest_plan(plan, gpu_hours, deadline_h, hourly_checkpoints)

# %% [markdown]
# ### Exercise 2 — how often should a spot job checkpoint?
# A 24-hour training job on spot is interrupted at λ = 0.1 per hour; one checkpoint takes 6 minutes and a restart
# 15 minutes (`spot_risk`). Find the checkpoint interval (hours of work between checkpoints) that minimises its
# expected wall-clock time, and so its cost. Compare your answer with Young's formula.

# %%
### BEGIN SOLUTION
### HINT: scan np.geomspace(0.1, 24, 500) with models.spot_expected(job_hours, checkpoint_interval_h=t, **spot_risk)
candidates = np.geomspace(0.1, job_hours, 500)
expected = [models.spot_expected(job_hours, checkpoint_interval_h=t, **spot_risk).expected_hours for t in candidates]
best_interval = float(candidates[int(np.argmin(expected))])
### END SOLUTION
young = models.optimal_checkpoint_interval(spot_risk["checkpoint_cost_h"], spot_risk["rate_per_hour"])
plot_spot_tradeoff(job_hours, **spot_risk)
plt.axvline(best_interval, color="black", label="your interval")
plt.legend(fontsize=8)
plt.show()
print(f"your interval {best_interval:.2f} h; Young's approximation {young:.2f} h")

# %% tags=["nbval-check-output"]
checks.check_checkpoint_interval(best_interval, job_hours, spot_risk)

# %% [markdown]
# ### Exercise 3 — replicas for a latency target at peak
# At peak an endpoint receives **120 requests per second**; one replica serves **20 requests per second** on
# average (50 ms each). Requests queue when all replicas are busy (an M/M/c queue). What is the smallest number of
# replicas that keeps the **95th percentile** of response time under **200 ms**? (`models.response_time_quantile`
# gives the quantile for a given number of replicas.) Mind the floor: a request's own service time has a p95 of
# $-\ln(0.05)/\mu \approx 150$ ms, so no number of replicas gets the p95 below that — a 100 ms target is impossible.

# %%
peak_rps, replica_rps, target_s = 120.0, 20.0, 0.200
### BEGIN SOLUTION
### HINT: start at the fewest replicas that keep utilisation below 100% and add one until the p95 meets the target.
replicas = int(np.floor(peak_rps / replica_rps)) + 1
while models.response_time_quantile(peak_rps, replica_rps, replicas, q=0.95) > target_s:
    replicas += 1
### END SOLUTION
for c in range(replicas - 1, replicas + 2):
    p95 = models.response_time_quantile(peak_rps, replica_rps, c, q=0.95) * 1000
    print(f"{c} replicas: utilisation {peak_rps / (c * replica_rps):.0%}, p95 {p95:.0f} ms")

# %% tags=["nbval-check-output"]
checks.check_fleet_size(replicas, peak_rps, replica_rps, target_s, quantile=0.95)

# %% [markdown]
# ## 8. Quiz
# Check what you learned; each answer explains itself. (Also in a terminal: `labcloud quiz 01`.)

# %%
quiz_widget("01")

# %% [markdown]
# ## What you did
# - mapped the three clouds' services onto IaaS, PaaS and SaaS;
# - compared GPU instances by the price of a GPU-hour;
# - saw why spot jobs must checkpoint, and found the interval that minimises their cost;
# - ranked on-demand, spot, reserved and savings-plan purchases, and sized a fleet for traffic and for latency;
# - met the cost meter and the cost guard that every later lab uses.
#
# Next: **lab 02** trains and deploys a model on SageMaker, for real, on the local cloud.
