"""The synthetic data sets, and lab 02's exercise checks against right and wrong answers."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from labcloud.checks import ExerciseCheckFailed
from labcloud.checks.aws import check_canary_split, check_csv_input_fn
from labcloud.datasets import NEGATIVE, NEW_SUBJECTS, POSITIVE, fraud_transactions, product_reviews, shift


def test_reviews_are_reproducible_balanced_and_mostly_labelled_by_their_words():
    reviews = product_reviews(2000, seed=3)
    assert reviews.equals(product_reviews(2000, seed=3)) and not reviews.equals(product_reviews(2000, seed=4))
    assert 0.45 < reviews["label"].mean() < 0.55

    def words_say_positive(text: str) -> bool:
        words = text.split()
        positive = any(w in POSITIVE for w in words)
        return positive != ("not" in words)

    agreement = (reviews["text"].map(words_say_positive) == reviews["label"].astype(bool)).mean()
    assert 0.92 < agreement < 0.98  # 5% label noise


def test_shifted_reviews_bring_new_subjects_and_more_negative_ones():
    drifted = shift(2000, seed=1)
    assert drifted["text"].str.contains("|".join(NEW_SUBJECTS)).mean() > 0.3
    assert drifted["label"].mean() < 0.4
    assert not product_reviews(2000, seed=1)["text"].str.contains("|".join(NEW_SUBJECTS)).any()
    assert set(NEGATIVE).isdisjoint(POSITIVE)


def test_fraud_transactions_are_rare_reproducible_and_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    data = fraud_transactions(20000, seed=5)
    assert data.equals(fraud_transactions(20000, seed=5))
    assert 0.03 < data["is_fraud"].mean() < 0.05
    features = pd.get_dummies(data.drop(columns=["transaction_id", "is_fraud"]), dtype=float)
    features["amount"] = np.log(features["amount"])
    train, test = slice(0, 15000), slice(15000, None)
    model = LogisticRegression(max_iter=2000).fit(features[train], data["is_fraud"][train])
    auc = roc_auc_score(data["is_fraud"][test], model.predict_proba(features[test])[:, 1])
    assert 0.8 < auc < 0.99  # learnable, not trivial


def _good_input_fn(body, content_type):
    if content_type == "text/csv":
        return [row[0] for row in csv.reader(io.StringIO(body)) if row]
    if content_type == "application/json":
        inputs = json.loads(body)["inputs"]
        return [inputs] if isinstance(inputs, str) else inputs
    raise ValueError(content_type)


def _splits_on_commas(body, content_type):
    if content_type == "text/csv":
        return [line.split(",")[0] for line in body.splitlines()]
    return _good_input_fn(body, content_type)


def _accepts_anything(body, content_type):
    return _good_input_fn(body, "text/csv" if content_type != "application/json" else content_type)


def test_csv_input_fn_check_passes_a_right_answer(capsys):
    check_csv_input_fn(_good_input_fn)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [_splits_on_commas, _accepts_anything])
def test_csv_input_fn_check_fails_wrong_answers(wrong):
    with pytest.raises(ExerciseCheckFailed):
        check_csv_input_fn(wrong)


def test_canary_check_wants_both_weights_at_half_and_a_matching_split(capsys):
    check_canary_split({"current": 205, "candidate": 195}, {"current": 0.5, "candidate": 0.5})
    assert "passed" in capsys.readouterr().out
    with pytest.raises(ExerciseCheckFailed, match="weights"):
        check_canary_split({"current": 360, "candidate": 40}, {"current": 0.9, "candidate": 0.1})
    with pytest.raises(ExerciseCheckFailed, match="expected 50%"):
        check_canary_split({"current": 360, "candidate": 40}, {"current": 0.5, "candidate": 0.5})
    with pytest.raises(ExerciseCheckFailed, match="only 10"):
        check_canary_split({"current": 5, "candidate": 5}, {"current": 0.5, "candidate": 0.5})
