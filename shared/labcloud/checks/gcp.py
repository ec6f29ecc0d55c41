"""Checks for lab 03 (BigQuery ML, Vertex AI). Each recomputes what it judges: metrics from the model's own
predictions on the test table (scikit-learn's roc_auc), features from the model's metadata, replicas from the
endpoint's deployed model."""

from __future__ import annotations

import math

from . import passed, require

LEAKY_COLUMNS = ("chargeback_filed",)


def roc_auc_on_test(client, model: str, test_table: str, label: str = "is_fraud") -> float:
    """ROC AUC of `model` on `test_table`, from ML.PREDICT's probabilities (not from ML.EVALUATE)."""
    from sklearn.metrics import roc_auc_score

    rows = client.query(f"SELECT * FROM ML.PREDICT(MODEL `{model}`, (SELECT * FROM `{test_table}`))").result()
    truth, scores = [], []
    for row in rows:
        truth.append(bool(row[label]))
        probabilities = row[f"predicted_{label}_probs"]
        scores.append(next(p["prob"] for p in probabilities if p["label"] in (True, 1, "true", "1")))
    return roc_auc_score(truth, scores)


def model_features(client, model: str) -> list[str]:
    return [column.name for column in client.get_model(model).feature_columns]


def check_no_leakage(client, model: str, test_table: str) -> None:
    exercise = "Exercise 1 (fix the label leakage)"
    features = model_features(client, model)
    _require_no_leak(
        features,
        exercise,
        "a chargeback is filed days after the transaction, because it was fraud: leave it out of the SELECT "
        "(SELECT * EXCEPT(...) lists the columns to drop).",
    )
    require(
        "transaction_id" not in features,
        exercise,
        "transaction_id is a feature",
        "an id numbers rows; it carries nothing that holds for new transactions. Leave it out too.",
    )
    auc = roc_auc_on_test(client, model, test_table)
    require(
        0.7 <= auc < 0.97,
        exercise,
        f"ROC AUC on the test table is {auc:.3f}",
        "a leak-free model of this data scores between 0.7 and 0.97; check the columns you select.",
    )
    passed(exercise, "no leaked or id columns, and a believable ROC AUC on the test table")


def check_beats_baseline(client, model: str, baseline_auc: float, test_table: str, margin: float = 0.02) -> None:
    exercise = "Exercise 2 (a better feature)"
    _require_no_leak(
        model_features(client, model),
        exercise,
        "that is known only after the outcome (exercise 1): a model may only use what is known at payment time.",
    )
    auc = roc_auc_on_test(client, model, test_table)
    require(
        auc >= baseline_auc + margin,
        exercise,
        f"ROC AUC {auc:.3f} on the test table, not {margin} above the baseline's {baseline_auc:.3f}",
        "which columns did the baseline leave out? New accounts, payments abroad and bursts of payments are "
        "riskier; add one or more of them.",
    )
    passed(exercise, f"at least {margin} ROC AUC above the baseline, recomputed from ML.PREDICT")


def _require_no_leak(features: list[str], exercise: str, hint: str) -> None:
    leaked = [c for c in features if c in LEAKY_COLUMNS]
    require(not leaked, exercise, f"the model learns from {', '.join(leaked)}", hint)


def replicas_needed(requests_per_second: float, replica_capacity_rps: float, target_utilization: float) -> int:
    """Replicas that keep each one at or under the target utilisation for a given load (at least one)."""
    return max(1, math.ceil(requests_per_second / (replica_capacity_rps * target_utilization)))


def check_replica_sizing(endpoint, base_rps, peak_rps, replica_capacity_rps, target_utilization) -> None:
    exercise = "Exercise 3 (size the replicas)"
    deployed = endpoint.list_models()
    require(bool(deployed), exercise, "the endpoint has no deployed model", "deploy the model to it.")
    resources = deployed[0].dedicated_resources
    low, high = resources.min_replica_count, resources.max_replica_count
    want_low = replicas_needed(base_rps, replica_capacity_rps, target_utilization)
    want_high = replicas_needed(peak_rps, replica_capacity_rps, target_utilization)
    require(
        low == want_low,
        exercise,
        f"min_replica_count is {low}",
        "Vertex never scales below the minimum, and every replica bills every hour: size it for the quiet "
        "hours' load at the target utilisation (round up).",
    )
    require(
        high == want_high,
        exercise,
        f"max_replica_count is {high}",
        "size the maximum for the peak at the target utilisation; one replica serves "
        "replica_capacity_rps * target_utilization requests per second (round up).",
    )
    passed(exercise, "min and max replicas fit the quiet hours and the peak")
