"""Small, seeded, synthetic data sets made in code (nothing is downloaded), shared by the labs.

`product_reviews` makes short reviews of cloud services with a sentiment label. The words carry the signal,
"not" flips it and some labels are noisy, so a bag-of-words model learns it well but not perfectly: good for
training jobs that finish in seconds yet respond to their hyperparameters. `shift` drifts the vocabulary and
the class balance, for the monitoring lab.
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
