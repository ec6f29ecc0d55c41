"""A learner's inference script: a linear model whose weights are a JSON file in the model archive.

All four functions of the SageMaker inference toolkit's contract are the learner's own; the answer names the
model and the process that served it, so that tests can see which variant and instance answered.
"""

import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "weights.json")) as f:
        return json.load(f)


def input_fn(request_body, content_type):
    if content_type != "application/json":
        raise ValueError(f"expected application/json, got {content_type}")
    return json.loads(request_body)["inputs"]


def predict_fn(inputs, model):
    if not isinstance(inputs, list):
        raise ValueError(f"inputs must be a list of numbers, not {inputs!r}")
    score = sum(w * x for w, x in zip(model["weights"], inputs, strict=True)) + model["bias"]
    return {"score": score, "model": model["name"]}


def output_fn(prediction, accept):
    return json.dumps({**prediction, "pid": os.getpid()}), accept
