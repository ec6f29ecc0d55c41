"""BigQuery ML on the local cloud through the unmodified google-cloud-bigquery client: CREATE MODEL for each model
type, ML.PREDICT / ML.EVALUATE / ML.ROC_CURVE / ML.CONFUSION_MATRIX / ML.FEATURE_IMPORTANCE / ML.TRAINING_INFO, data
splits, persistence, metering and errors. Results are checked against scikit-learn on the same rows: the metrics
must agree with what the model's own predictions do."""

import uuid

import numpy as np
import pandas as pd
import pytest
from google.api_core.exceptions import BadRequest, Conflict, NotFound
from google.cloud import bigquery
from sklearn import metrics
from sklearn.linear_model import LinearRegression

import labcloud
from labcloud import datasets

FRAUD_FEATURES = "amount, hour, merchant_category, account_age_days, transactions_last_24h, foreign"


@pytest.fixture
def client(connection):
    return bigquery.Client()


@pytest.fixture
def fraud(client):
    """A dataset with the course's fraud transactions split into train (3,000 rows) and test (1,500 rows)."""
    name = f"ml_{uuid.uuid4().hex[:8]}"
    client.create_dataset(name)
    frame = datasets.fraud_transactions(4500, seed=3)
    client.load_table_from_dataframe(frame.iloc[:3000], f"{name}.train").result()
    client.load_table_from_dataframe(frame.iloc[3000:], f"{name}.test").result()
    yield name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)


def query(client, sql: str) -> pd.DataFrame:
    return client.query(sql).to_dataframe(create_bqstorage_client=False)


def create_model(client, model: str, options: str, select: str) -> None:
    client.query(f"CREATE OR REPLACE MODEL {model} OPTIONS({options}) AS {select}").result()


def positive_probability(predictions: pd.DataFrame, label: str) -> np.ndarray:
    return np.array([next(p["prob"] for p in probs if p["label"]) for probs in predictions[f"predicted_{label}_probs"]])


def test_logistic_regression_metrics_agree_with_its_own_predictions(client, fraud):
    create_model(
        client,
        f"{fraud}.lr",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud'], max_iterations=50",
        f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train",
    )
    evaluation = query(client, f"SELECT * FROM ML.EVALUATE(MODEL {fraud}.lr, (SELECT * FROM {fraud}.test))")
    predictions = query(client, f"SELECT * FROM ML.PREDICT(MODEL `{fraud}.lr`, (SELECT * FROM {fraud}.test))")

    assert list(evaluation.columns) == [
        "threshold",
        "precision",
        "recall",
        "accuracy",
        "f1_score",
        "log_loss",
        "roc_auc",
    ]
    assert list(predictions.columns[:2]) == ["predicted_is_fraud", "predicted_is_fraud_probs"]
    assert "transaction_id" in predictions.columns and len(predictions) == 1500  # the input columns follow
    assert [p["label"] for p in predictions["predicted_is_fraud_probs"][0]] == [True, False]
    truth, predicted = predictions["is_fraud"], predictions["predicted_is_fraud"]
    probability = positive_probability(predictions, "is_fraud")
    row = evaluation.iloc[0]
    assert row["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert row["precision"] == pytest.approx(metrics.precision_score(truth, predicted, zero_division=0))
    assert row["recall"] == pytest.approx(metrics.recall_score(truth, predicted))
    assert row["roc_auc"] == pytest.approx(metrics.roc_auc_score(truth, probability))
    assert row["log_loss"] == pytest.approx(metrics.log_loss(truth, probability))
    assert row["roc_auc"] > 0.7  # the features carry signal: the model really learned


def test_threshold_changes_predictions_and_curves_agree(client, fraud):
    create_model(
        client,
        f"{fraud}.gbt",
        "model_type='BOOSTED_TREE_CLASSIFIER', num_parallel_tree=1, max_iterations=30, input_label_cols=['is_fraud']",
        f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train",
    )
    test = f"(SELECT * FROM {fraud}.test)"
    low = query(client, f"SELECT * FROM ML.PREDICT(MODEL {fraud}.gbt, {test}, STRUCT(0.1 AS threshold))")
    default = query(client, f"SELECT * FROM ML.PREDICT(MODEL {fraud}.gbt, {test})")
    probability = positive_probability(default, "is_fraud")
    assert (low["predicted_is_fraud"] == (probability >= 0.1)).all()
    assert low["predicted_is_fraud"].sum() > default["predicted_is_fraud"].sum()

    curve = query(client, f"SELECT * FROM ML.ROC_CURVE(MODEL {fraud}.gbt, {test}) ORDER BY threshold")
    point = curve.iloc[len(curve) // 2]
    flagged, fraud_rows = probability >= point["threshold"], default["is_fraud"].to_numpy()
    assert point["true_positives"] == (flagged & fraud_rows).sum()
    assert point["false_positives"] == (flagged & ~fraud_rows).sum()
    assert point["recall"] == pytest.approx((flagged & fraud_rows).sum() / fraud_rows.sum())

    matrix = query(client, f"SELECT * FROM ML.CONFUSION_MATRIX(MODEL {fraud}.gbt, {test})")
    expected = metrics.confusion_matrix(default["is_fraud"], default["predicted_is_fraud"], labels=[False, True])
    assert matrix[["False", "True"]].to_numpy().tolist() == expected.tolist()

    info = query(client, f"SELECT * FROM ML.TRAINING_INFO(MODEL {fraud}.gbt) ORDER BY iteration")
    assert len(info) == 30 and info["loss"].iloc[-1] < info["loss"].iloc[0]


def test_the_label_is_never_a_feature_and_a_leak_shows_in_feature_importance(client, fraud):
    leaky = f"SELECT {FRAUD_FEATURES}, IF(is_fraud, 1, 0) AS chargeback_filed, is_fraud FROM {fraud}.train"
    options = "model_type='BOOSTED_TREE_CLASSIFIER', max_iterations=20, input_label_cols=['is_fraud']"
    create_model(client, f"{fraud}.leaky", options, leaky)

    model = client.get_model(f"{fraud}.leaky")
    assert model.model_type == "BOOSTED_TREE_CLASSIFIER"
    assert "is_fraud" not in [c.name for c in model.feature_columns]
    importance = query(client, f"SELECT * FROM ML.FEATURE_IMPORTANCE(MODEL {fraud}.leaky)")
    assert set(importance.columns) == {"feature", "importance_weight", "importance_gain", "importance_cover"}
    assert importance.iloc[0]["feature"] == "chargeback_filed"
    evaluation = query(client, f"SELECT * FROM ML.EVALUATE(MODEL {fraud}.leaky)")  # the automatic eval split
    assert evaluation.iloc[0]["roc_auc"] > 0.99


def test_categories_are_encoded_the_same_in_training_and_prediction(client, fraud):
    create_model(
        client,
        f"{fraud}.cat",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud']",
        f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train",
    )
    batch = query(client, f"SELECT * FROM ML.PREDICT(MODEL {fraud}.cat, (SELECT * FROM {fraud}.test LIMIT 50))")
    one_id = int(batch["transaction_id"].iloc[7])
    alone = query(
        client,
        f"SELECT * FROM ML.PREDICT(MODEL {fraud}.cat, (SELECT * FROM {fraud}.test WHERE transaction_id = {one_id}))",
    )
    assert positive_probability(alone, "is_fraud")[0] == pytest.approx(positive_probability(batch, "is_fraud")[7])
    unseen = query(
        client,
        f"SELECT * FROM ML.PREDICT(MODEL {fraud}.cat, (SELECT * REPLACE ('spaceship' AS merchant_category) "
        f"FROM {fraud}.test LIMIT 3))",
    )
    assert len(unseen) == 3  # an unseen category counts as none of the known ones, as BigQuery does


def test_linear_regression_matches_least_squares(client):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x1": rng.normal(size=400), "x2": rng.normal(size=400)})
    frame["y"] = 3 * frame["x1"] - 2 * frame["x2"] + 1 + rng.normal(scale=0.1, size=400)
    name = f"reg_{uuid.uuid4().hex[:8]}"
    client.create_dataset(name)
    client.load_table_from_dataframe(frame, f"{name}.points").result()
    create_model(
        client, f"{name}.lin", "model_type='LINEAR_REG', input_label_cols=['y']", f"SELECT * FROM {name}.points"
    )

    predicted = query(client, f"SELECT * FROM ML.PREDICT(MODEL {name}.lin, (SELECT * FROM {name}.points))")
    reference = LinearRegression().fit(frame[["x1", "x2"]], frame["y"]).predict(predicted[["x1", "x2"]])
    np.testing.assert_allclose(predicted["predicted_y"], reference, rtol=1e-6)
    evaluation = query(client, f"SELECT * FROM ML.EVALUATE(MODEL {name}.lin, (SELECT * FROM {name}.points))")
    assert evaluation.iloc[0]["r2_score"] == pytest.approx(metrics.r2_score(predicted["y"], predicted["predicted_y"]))
    assert evaluation.iloc[0]["mean_absolute_error"] < 0.2
    client.delete_dataset(name, delete_contents=True)


def test_kmeans_finds_separated_clusters(client):
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 10], [-10, 10]])
    frame = pd.DataFrame(np.vstack([c + rng.normal(size=(60, 2)) for c in centres]), columns=["a", "b"])
    frame["blob"] = np.repeat([0, 1, 2], 60)
    name = f"km_{uuid.uuid4().hex[:8]}"
    client.create_dataset(name)
    client.load_table_from_dataframe(frame, f"{name}.points").result()
    create_model(client, f"{name}.km", "model_type='KMEANS', num_clusters=3", f"SELECT a, b FROM {name}.points")

    assigned = query(client, f"SELECT * FROM ML.PREDICT(MODEL {name}.km, (SELECT * FROM {name}.points))")
    assert set(assigned.columns[:2]) == {"CENTROID_ID", "NEAREST_CENTROIDS_DISTANCE"}
    assert metrics.adjusted_rand_score(assigned["blob"], assigned["CENTROID_ID"]) == pytest.approx(1.0)
    distances = assigned["NEAREST_CENTROIDS_DISTANCE"][0]
    assert distances[0]["CENTROID_ID"] == assigned["CENTROID_ID"][0] and len(distances) == 3
    evaluation = query(client, f"SELECT * FROM ML.EVALUATE(MODEL {name}.km, (SELECT a, b FROM {name}.points))")
    assert evaluation.iloc[0]["davies_bouldin_index"] < 0.5
    client.delete_dataset(name, delete_contents=True)


def test_data_split_methods(client, fraud):
    select = f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train"
    create_model(
        client,
        f"{fraud}.nosplit",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud'], data_split_method='NO_SPLIT'",
        select,
    )
    with pytest.raises(BadRequest, match="no evaluation data"):
        query(client, f"SELECT * FROM ML.EVALUATE(MODEL {fraud}.nosplit)")
    create_model(
        client,
        f"{fraud}.custom",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud'], data_split_method='CUSTOM', "
        "data_split_col='held_out'",
        f"SELECT {FRAUD_FEATURES}, is_fraud, MOD(transaction_id, 4) = 0 AS held_out FROM {fraud}.train",
    )
    assert "held_out" not in [c.name for c in client.get_model(f"{fraud}.custom").feature_columns]
    info = query(client, f"SELECT * FROM ML.TRAINING_INFO(MODEL {fraud}.custom)")
    assert info["eval_loss"].notna().all()


def test_models_persist_and_are_listed_and_dropped(own_cloud, tmp_path, saved_environment):
    from labcloud.localcloud import control

    labcloud.connect("local")  # the test's own cloud (LABCLOUD_HOME)
    client = bigquery.Client()
    client.create_dataset("keep")
    client.load_table_from_dataframe(datasets.fraud_transactions(300, seed=1), "keep.tx").result()
    options = "model_type='LOGISTIC_REG', input_label_cols=['is_fraud']"
    create_model(client, "keep.m", options, f"SELECT {FRAUD_FEATURES}, is_fraud FROM keep.tx")
    predict = "SELECT * FROM ML.PREDICT(MODEL keep.m, (SELECT * FROM keep.tx LIMIT 5))"
    before = query(client, predict)
    control.stop(tmp_path / "state")
    control.start(tmp_path / "state", port=0)
    labcloud.connect("local")
    client = bigquery.Client()
    after = query(client, predict)
    np.testing.assert_allclose(positive_probability(before, "is_fraud"), positive_probability(after, "is_fraud"))
    assert [m.model_id for m in client.list_models("keep")] == ["m"]
    client.query("DROP MODEL keep.m").result()
    client.query("DROP MODEL IF EXISTS keep.m").result()
    assert list(client.list_models("keep")) == []


def test_create_model_is_metered_at_bigquery_mls_rate(connection, client, fraud):
    create_model(
        client,
        f"{fraud}.metered",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud']",
        f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train",
    )
    costs = connection.costs()
    training = costs[costs["action"] == "CREATE MODEL"]
    assert len(training) == 1
    assert training["price_key"].iloc[0] == "gcp.bigquery_ml.create_model_per_tib"
    assert training["usd"].iloc[0] == pytest.approx(10 * 1024**2 / 1024**4 * 312.50)  # the 10 MB minimum


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        ("SELECT * FROM ML.PREDICT(MODEL {ds}.nope, (SELECT 1))", NotFound, "Model .*nope"),
        (
            "CREATE MODEL {ds}.x OPTIONS(model_type='LOGISTIC_REG', input_label_cols=['nope']) AS "
            "SELECT * FROM {ds}.train",
            BadRequest,
            "label column 'nope'",
        ),
        (
            "CREATE MODEL {ds}.x OPTIONS(model_type='DNN_CLASSIFIER') AS SELECT * FROM {ds}.train",
            BadRequest,
            "Unsupported model_type",
        ),
        ("SELECT * FROM ML.EVALUATE(MODEL {ds}.base, (SELECT amount FROM {ds}.test))", BadRequest, "no label column"),
        ("SELECT * FROM ML.PREDICT(MODEL {ds}.base, (SELECT 1 AS a))", BadRequest, "Column amount is not found"),
        ("SELECT * FROM ML.FEATURE_IMPORTANCE(MODEL {ds}.base)", BadRequest, "boosted tree"),
        (
            "CREATE MODEL {ds}.base OPTIONS(model_type='LOGISTIC_REG') AS SELECT * FROM {ds}.train",
            Conflict,
            "Already Exists",
        ),
        ("SELECT * FROM ML.PREDICT({ds}.base, (SELECT * FROM {ds}.test))", BadRequest, "Syntax error.*MODEL"),
    ],
)
def test_bad_ml_statements_get_bigquerys_errors(client, fraud, sql, error, message):
    create_model(
        client,
        f"{fraud}.base",
        "model_type='LOGISTIC_REG', input_label_cols=['is_fraud']",
        f"SELECT {FRAUD_FEATURES}, is_fraud FROM {fraud}.train",
    )
    with pytest.raises(error, match=message):
        client.query(sql.format(ds=fraud)).result()
    assert len(query(client, f"SELECT * FROM ML.PREDICT(MODEL {fraud}.base, (SELECT * FROM {fraud}.test))")) == 1500
