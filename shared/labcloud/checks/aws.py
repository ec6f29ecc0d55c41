"""Checks for lab 02 (SageMaker training and hosting, Bedrock, Lambda)."""

from __future__ import annotations

import importlib.util
import io
import math
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from . import passed, require


def model_accuracy(model_data: str, source_dir: str | Path, val) -> float:
    """Accuracy on `val` (a DataFrame of text and label) of the model archive at `model_data` (s3://...),
    served by the inference code in `source_dir`, exactly as an endpoint would load it."""
    import boto3

    url = urlparse(model_data)
    archive = boto3.client("s3").get_object(Bucket=url.netloc, Key=url.path.lstrip("/"))["Body"].read()
    with tempfile.TemporaryDirectory() as model_dir:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(model_dir, filter="data")
        inference = _import_from(Path(source_dir), "inference")
        model = inference.model_fn(model_dir)
        probabilities = inference.predict_fn(list(val["text"]), model)
    predicted = probabilities.argmax(1).tolist()
    return sum(int(p == y) for p, y in zip(predicted, val["label"], strict=True)) / len(predicted)


def _import_from(folder: Path, name: str):
    """Import `name` from `folder` afresh (the learner may have rewritten the file since)."""
    sys.path.insert(0, str(folder))
    try:
        for module in ("inference", "train"):
            sys.modules.pop(module, None)
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))


def check_tuned_model(model_data: str, source_dir: str | Path, val, target: float) -> None:
    exercise = "Exercise 1 (tune the training job)"
    accuracy = model_accuracy(model_data, source_dir, val)
    require(
        accuracy >= target,
        exercise,
        f"the model reaches {accuracy:.1%} validation accuracy, below the {target:.0%} target",
        "train for more epochs, or with a larger learning rate (try 5 epochs at lr 0.05).",
    )
    # the figure itself is in the job's log; the check's own output stays the same from run to run
    passed(exercise, f"at least {target:.0%} validation accuracy, recomputed from the model artifact")


def check_csv_input_fn(input_fn) -> None:
    exercise = "Exercise 2 (input_fn for text/csv)"
    body = 'the endpoint is fast\n"the API is slow, and buggy"\n'
    try:
        parsed = input_fn(body, "text/csv")
    except Exception as exc:  # the learner's function: any failure is a hint, not a crash
        require(False, exercise, f"input_fn(body, 'text/csv') raised {exc!r}", "parse the body with the csv module.")
    require(
        list(parsed) == ["the endpoint is fast", "the API is slow, and buggy"],
        exercise,
        f"input_fn returned {parsed!r} for two CSV lines",
        "return a list with the first column of each line; csv.reader handles quoted commas.",
    )
    require(
        list(input_fn('{"inputs": "the API is great"}', "application/json")) == ["the API is great"],
        exercise,
        "JSON requests no longer work",
        "keep the application/json branch.",
    )
    try:
        input_fn("x", "image/png")
    except ValueError:
        passed(exercise, "CSV and JSON parsed, other content types refused")
        return
    require(False, exercise, "an image/png body was accepted", "raise ValueError for content types you do not serve.")


def check_canary_split(counts: dict[str, int], weights: dict[str, float]) -> None:
    """`counts` of responses per variant against the endpoint's current `weights` (4 standard deviations)."""
    exercise = "Exercise 3 (shift the canary to 50/50)"
    require(
        len(weights) == 2 and all(math.isclose(w, 0.5) for w in weights.values()),
        exercise,
        f"the endpoint's current weights are {weights}",
        "call update_endpoint_weights_and_capacities with DesiredWeight 0.5 for both variants.",
    )
    total = sum(counts.values())
    require(total >= 100, exercise, f"only {total} requests were counted", "send at least 100 requests.")
    tolerance = 4 * math.sqrt(0.25 / total)
    for variant, weight in weights.items():
        share = counts.get(variant, 0) / total
        require(
            abs(share - weight) <= tolerance,
            exercise,
            f"{variant} answered {share:.1%} of the requests, expected {weight:.0%} ± {tolerance:.1%}",
            "count the InvokedProductionVariant of each response after the update took effect.",
        )
    passed(exercise, f"each variant within {tolerance:.0%} of its weight over {total} requests")
