"""Small, seeded, synthetic data sets made in code (nothing is downloaded), shared by the labs.

`product_reviews` makes short reviews of cloud services with a sentiment label. The words carry the signal,
"not" flips it and some labels are noisy, so a bag-of-words model learns it well but not perfectly: good for
training jobs that finish in seconds yet respond to their hyperparameters. `shift` drifts the vocabulary and
the class balance, for the monitoring lab. `fraud_transactions` makes card transactions with a rare fraud label,
for BigQuery ML.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

POSITIVE = ["fast", "reliable", "cheap", "great", "excellent", "smooth", "accurate", "helpful", "stable", "simple"]
NEGATIVE = ["slow", "flaky", "expensive", "terrible", "awful", "buggy", "confusing", "broken", "laggy", "clunky"]
SUBJECTS = ["the endpoint", "this GPU", "the training job", "the console", "the pipeline", "the notebook", "the API"]
FILLERS = ["today", "again", "for our team", "in production", "overall", "this week", "after the upgrade", ""]
NEW_SUBJECTS = ["the chatbot", "the vector store", "the agent", "the LLM gateway"]  # vocabulary only `shift` uses


def product_reviews(n: int, seed: int = 0, label_noise: float = 0.05, negation_rate: float = 0.2) -> pd.DataFrame:
    """`n` reviews with columns text and label (1 = positive), reproducible from `seed`."""
    return _reviews(n, np.random.default_rng(seed), label_noise, negation_rate, SUBJECTS, positive_share=0.5)


def shift(n: int, seed: int = 0, new_subject_share: float = 0.6, positive_share: float = 0.3) -> pd.DataFrame:
    """Reviews drawn after the world changed: new subjects and more negative reviews than in training."""
    rng = np.random.default_rng(seed)
    subjects = SUBJECTS + NEW_SUBJECTS * max(1, round(new_subject_share * len(SUBJECTS) / len(NEW_SUBJECTS)))
    return _reviews(n, rng, 0.05, 0.2, subjects, positive_share)


def _reviews(n, rng, label_noise, negation_rate, subjects, positive_share) -> pd.DataFrame:
    rows = []
    for _ in range(n):
        sentiment = int(rng.random() < positive_share)
        negated = rng.random() < negation_rate
        # a negated review uses the opposite words: "not slow" is positive
        words = POSITIVE if sentiment != negated else NEGATIVE
        adjectives = rng.choice(words, size=rng.integers(1, 3), replace=False)
        text = f"{rng.choice(subjects)} is {'not ' if negated else ''}{' and '.join(adjectives)} {rng.choice(FILLERS)}"
        label = 1 - sentiment if rng.random() < label_noise else sentiment
        rows.append((text.strip(), label))
    return pd.DataFrame(rows, columns=["text", "label"])


MERCHANT_CATEGORIES = ["grocery", "electronics", "travel", "restaurants", "gaming", "fuel", "jewelry"]
_CATEGORY_RISK = {"grocery": -1.0, "electronics": 0.6, "travel": 0.4, "restaurants": -0.6, "gaming": 0.9, "fuel": -0.3}


def fraud_transactions(n: int, seed: int = 0, fraud_rate: float = 0.04, chargebacks: bool = False) -> pd.DataFrame:
    """`n` card transactions with `is_fraud`, reproducible from `seed`: large amounts at night, in risky
    categories, from new accounts, abroad, or in a burst make fraud likelier; about `fraud_rate` are fraud.

    With `chargebacks`, a column `chargeback_filed` is added, as a bank's warehouse has it: set when the card
    holder disputes the charge, days *after* the transaction — for 90% of frauds and 0.5% of the rest. It is
    known only once the outcome is, so a model must not learn from it (label leakage)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1),
            "amount": np.round(rng.lognormal(3.5, 1.0, n), 2),
            "hour": rng.integers(0, 24, n),
            "merchant_category": rng.choice(MERCHANT_CATEGORIES, n),
            "account_age_days": rng.integers(1, 3650, n),
            "transactions_last_24h": rng.poisson(2.0, n),
            "foreign": rng.random(n) < 0.1,
        }
    )
    risk = (
        0.9 * np.log(frame["amount"] / 30)
        + 1.2 * frame["hour"].isin([0, 1, 2, 3, 4]).to_numpy()
        + frame["merchant_category"].map(_CATEGORY_RISK).fillna(1.2).to_numpy()
        - 0.8 * np.log1p(frame["account_age_days"] / 30)
        + 0.35 * frame["transactions_last_24h"]
        + 1.5 * frame["foreign"].to_numpy()
    )
    # shift the risk so that the expected share of fraud is `fraud_rate`
    offset = _logit_offset(risk.to_numpy(), fraud_rate)
    frame["is_fraud"] = rng.random(n) < 1 / (1 + np.exp(-(risk.to_numpy() + offset)))
    if chargebacks:
        disputed = rng.random(n)
        frame["chargeback_filed"] = np.where(frame["is_fraud"], disputed < 0.9, disputed < 0.005)
    return frame


def _logit_offset(risk: np.ndarray, rate: float) -> float:
    low, high = -50.0, 50.0
    for _ in range(60):  # bisection: the mean probability grows with the offset
        middle = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(risk + middle)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2
