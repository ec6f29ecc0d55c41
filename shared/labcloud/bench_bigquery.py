"""Benchmark rows for BigQuery on the local cloud, through the unmodified google-cloud-bigquery client:

- a 100k-row aggregate query, against the same SQL run by DuckDB directly on the same rows (the ratio is what the
  client, the REST round trips, sqlglot's translation and the result encoding cost);
- a BigQuery ML `CREATE MODEL` (boosted trees, 50 iterations) on 100k rows, against the same scikit-learn model
  fitted directly (one-hot encoding + HistGradientBoosting): what BigQuery ML's bookkeeping costs on top
  (reading the rows out of DuckDB, the evaluation split, the loss per iteration for ML.TRAINING_INFO, saving).
"""

from __future__ import annotations

from .bench import Lab, Row, interleaved, timed
from .bench_services import connect_sdks

ROWS = 100_000
QUERY_RUNS, QUERY_WARMUP, TRAINING_RUNS = 15, 3, 3
AGGREGATE = (
    "SELECT merchant_category, COUNT(*) AS payments, AVG(amount) AS mean_amount, "
    "SUM(CAST(is_fraud AS INT64)) AS frauds FROM {table} GROUP BY merchant_category ORDER BY frauds DESC"
)
DUCKDB_AGGREGATE = AGGREGATE.replace("INT64", "BIGINT")
TRAINING_OPTIONS = {"model_type": "BOOSTED_TREE_CLASSIFIER", "max_iterations": 50, "input_label_cols": ["is_fraud"]}


def _payments_table(lab: Lab):
    """A BigQuery client and a 100k-row payments table on the benchmark's local cloud, plus the same rows."""
    connect_sdks(lab)
    from google.cloud import bigquery

    from .datasets import fraud_transactions

    client = bigquery.Client()
    client.create_dataset("bench_bq", exists_ok=True)
    frame = fraud_transactions(ROWS, seed=0).drop(columns=["transaction_id"])
    client.load_table_from_dataframe(frame, "bench_bq.payments").result()
    return client, frame


def bigquery_aggregate(lab: Lab) -> list[Row]:
    import duckdb

    client, frame = _payments_table(lab)
    local = duckdb.connect()
    local.register("payments", frame)

    def through_client():
        return list(client.query(AGGREGATE.format(table="bench_bq.payments")).result())

    def direct():
        return local.execute(DUCKDB_AGGREGATE.format(table="payments")).fetchall()

    if len(through_client()) != len(direct()):
        raise RuntimeError("the local BigQuery and DuckDB answered the aggregate differently")
    through, straight = interleaved(through_client, direct, QUERY_RUNS, QUERY_WARMUP)
    return [
        Row(f"BigQuery {ROWS // 1000}k-row GROUP BY through the client", through, baseline=straight),
        Row("  the same SQL in DuckDB directly", straight),
    ]


def bigquery_ml_training(lab: Lab) -> list[Row]:
    client, frame = _payments_table(lab)
    statement = (
        "CREATE OR REPLACE MODEL bench_bq.fraud OPTIONS(model_type='BOOSTED_TREE_CLASSIFIER', max_iterations=50, "
        "input_label_cols=['is_fraud']) AS SELECT * FROM bench_bq.payments"
    )
    through, straight = [], []
    for _ in range(TRAINING_RUNS):
        through.append(timed(lambda: client.query(statement).result()))
        straight.append(timed(lambda: _sklearn_fit(frame)))
    return [
        Row(f"BigQuery ML CREATE MODEL, boosted trees, {ROWS // 1000}k rows", through, baseline=straight),
        Row("  the same model fitted by scikit-learn directly", straight),
    ]


def _sklearn_fit(frame):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [c for c in frame.columns if c not in ("merchant_category", "is_fraud")]
    encode = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="mean"), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["merchant_category"]),
        ]
    )
    model = HistGradientBoostingClassifier(max_iter=50, learning_rate=0.3, max_depth=6, early_stopping=False)
    features = frame.drop(columns=["is_fraud"]).astype({c: float for c in numeric})
    return Pipeline([("encode", encode), ("model", model)]).fit(features, frame["is_fraud"])


BIGQUERY_MEASUREMENTS = [bigquery_aggregate, bigquery_ml_training]
