"""A learner's batch inference script: a linear model scoring CSV, JSON Lines or JSON rows.

One request may hold several rows (BatchStrategy MultiRecord): the answer has one line per row with the number of
rows its request held, so that tests see how the rows were batched. A row with the word "poison" makes input_fn
raise, as a model meeting bad data would; the archive's "delay" slows each row down, for tests that stop a job.
"""

import json
import os
import time


def model_fn(model_dir):
    with open(os.path.join(model_dir, "weights.json")) as f:
        return json.load(f)


def input_fn(request_body, content_type):
    text = request_body.decode() if isinstance(request_body, bytes) else request_body
    if "poison" in text:
        raise ValueError("cannot score a poisoned row")
    lines = [line for line in text.splitlines() if line.strip()]
    if content_type == "text/csv":
        return [[float(x) for x in line.split(",")] for line in lines]
    if content_type == "application/jsonlines":
        return [json.loads(line)["inputs"] for line in lines]
    if content_type == "application/json":
        return json.loads(text)["instances"]
    raise ValueError(f"unsupported content type {content_type}")


def predict_fn(rows, model):
    time.sleep(model.get("delay", 0) * len(rows))
    return [sum(w * x for w, x in zip(model["weights"], row, strict=True)) + model["bias"] for row in rows]


def output_fn(scores, accept):
    if accept == "application/json":
        return json.dumps({"scores": scores, "batch": len(scores)}), accept
    return "\n".join(f"{score},{len(scores)}" for score in scores), "text/csv"
