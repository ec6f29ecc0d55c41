"""BigQuery ML models, trained and applied by scikit-learn: what `CREATE MODEL`, `ML.PREDICT`, `ML.EVALUATE`,
`ML.ROC_CURVE`, `ML.CONFUSION_MATRIX`, `ML.FEATURE_IMPORTANCE` and `ML.TRAINING_INFO` compute.

Model types and their local stand-ins (same options, same output columns as BigQuery; the numbers come from
scikit-learn, so they are close to, not identical with, BigQuery's):
- LOGISTIC_REG → LogisticRegression; LINEAR_REG → Ridge (least squares when l2_reg is 0);
- BOOSTED_TREE_CLASSIFIER / _REGRESSOR → HistGradientBoosting (BigQuery uses XGBoost; `num_parallel_tree` is
  accepted and not used);
- KMEANS → KMeans.
Preprocessing follows BigQuery's: every column but the label is a feature; numbers are standardised (linear
models and k-means) with NULLs imputed by the mean; STRING columns are one-hot encoded with the categories seen
in training (unseen ones count as none); BOOL is 0/1; DATE/TIMESTAMP become seconds since the epoch. The same
fitted preprocessing is applied at prediction, so training and prediction always encode alike.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CLASSIFIERS = {"LOGISTIC_REG", "BOOSTED_TREE_CLASSIFIER"}
REGRESSORS = {"LINEAR_REG", "BOOSTED_TREE_REGRESSOR"}
MODEL_TYPES = CLASSIFIERS | REGRESSORS | {"KMEANS"}
AUTO_SPLIT_MIN_ROWS, AUTO_SPLIT_LARGE_ROWS, AUTO_SPLIT_LARGE_EVAL = 500, 50_000, 10_000
ROC_POINTS = 100
SEED = 0


class ModelError(ValueError):
    """Bad options or input for a model; becomes BigQuery's 400 invalidQuery."""


@dataclass
class Features:
    """Which input columns a model uses and how each is encoded."""

    numeric: list[str]
    categorical: list[str]

    @property
    def names(self) -> list[str]:
        return self.numeric + self.categorical

    @classmethod
    def of(cls, frame: pd.DataFrame, exclude: set[str]) -> Features:
        numeric, categorical = [], []
        for name in frame.columns:
            if name in exclude:
                continue
            kind = frame[name].dtype
            if pd.api.types.is_numeric_dtype(kind) or pd.api.types.is_datetime64_any_dtype(kind):
                numeric.append(name)  # BOOL counts as numeric (0/1)
            elif pd.api.types.is_string_dtype(kind) or pd.api.types.is_object_dtype(kind):
                if frame[name].map(lambda v: isinstance(v, (list, dict, np.ndarray))).any():
                    raise ModelError(f"Column {name} has a type (ARRAY or STRUCT) that cannot be a feature")
                categorical.append(name)
            else:
                raise ModelError(f"Column {name} has a type that cannot be a feature: {kind}")
        if not numeric + categorical:
            raise ModelError("The training data has no feature columns besides the label")
        return cls(numeric, categorical)

    def matrix_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature columns of `frame` as the preprocessing expects them; a clear error for a missing one."""
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise ModelError(f"Column {missing[0]} is not found in the input data of the model")
        data = frame[self.names].copy()
        for name in self.numeric:
            column = data[name]
            if pd.api.types.is_datetime64_any_dtype(column.dtype):
                data[name] = column.astype("int64") / 1e9
            else:
                data[name] = pd.to_numeric(column.astype("float64"), errors="coerce")
        for name in self.categorical:
            data[name] = data[name].astype(object).where(data[name].notna(), "").astype(str)
        return data

    def encoder(self, scale: bool) -> ColumnTransformer:
        numeric = [("impute", SimpleImputer(strategy="mean"))] + ([("scale", StandardScaler())] if scale else [])
        return ColumnTransformer(
            [
                ("numeric", Pipeline(numeric), self.numeric),
                ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), self.categorical),
            ]
        )


@dataclass
class TrainedModel:
    """A fitted model with what BigQuery reports about it; pickled (joblib) into the state folder."""

    model_type: str
    options: dict
    features: Features
    label: str | None
    estimator: Pipeline
    classes: list = field(default_factory=list)
    eval_frame: pd.DataFrame | None = None
    training_info: list[dict] = field(default_factory=list)
    label_kind: str = "FLOAT"
    created: float = field(default_factory=time.time)

    @property
    def is_classifier(self) -> bool:
        return self.model_type in CLASSIFIERS

    # ML.PREDICT -----------------------------------------------------------------------------------------
    def predict(self, frame: pd.DataFrame, options: dict) -> pa.Table:
        """predicted_<label>[, predicted_<label>_probs] (or CENTROID_ID, NEAREST_CENTROIDS_DISTANCE), then the
        input columns."""
        data = self.features.matrix_input(frame)
        if self.model_type == "KMEANS":
            columns = self._nearest_centroids(data)
        elif self.is_classifier:
            probabilities = self.estimator.predict_proba(data)
            labels = self._decide(probabilities, options.get("threshold"))
            columns = {
                f"predicted_{self.label}": pa.array(labels, type=_arrow_type(self.label_kind)),
                f"predicted_{self.label}_probs": self._probability_structs(probabilities),
            }
        else:
            predicted = self.estimator.predict(data).astype(float)
            columns = {f"predicted_{self.label}": pa.array(predicted, type=pa.float64())}
        inputs = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        for name in inputs.column_names:
            if name not in columns:
                columns[name] = inputs[name]
        return pa.table(columns)

    def _decide(self, probabilities: np.ndarray, threshold) -> np.ndarray:
        """Binary: the positive class (the larger label) when its probability reaches the threshold (0.5)."""
        classes = np.asarray(self.classes)
        if len(self.classes) == 2:
            cut = 0.5 if threshold is None else float(threshold)
            return np.where(probabilities[:, 1] >= cut, classes[1], classes[0])
        return classes[probabilities.argmax(axis=1)]

    def _probability_structs(self, probabilities: np.ndarray) -> pa.Array:
        order = np.arange(len(self.classes))[::-1]  # BigQuery lists the larger label first
        labels = pa.array(np.tile(np.asarray(self.classes)[order], len(probabilities)), _arrow_type(self.label_kind))
        probs = pa.array(probabilities[:, order].ravel(), pa.float64())
        return _list_of_structs({"label": labels, "prob": probs}, len(self.classes), len(probabilities))

    def _nearest_centroids(self, data: pd.DataFrame) -> dict:
        distances = self.estimator.transform(data)
        order = np.argsort(distances, axis=1)
        structs = {
            "CENTROID_ID": pa.array((order + 1).ravel(), pa.int64()),
            "DISTANCE": pa.array(np.take_along_axis(distances, order, axis=1).ravel(), pa.float64()),
        }
        return {
            "CENTROID_ID": pa.array(order[:, 0] + 1, type=pa.int64()),
            "NEAREST_CENTROIDS_DISTANCE": _list_of_structs(structs, distances.shape[1], len(distances)),
        }

    # ML.EVALUATE and friends --------------------------------------------------------------------------------
    def evaluation_data(self, frame: pd.DataFrame | None) -> pd.DataFrame:
        if frame is not None:
            if self.label and self.label not in frame.columns:
                raise ModelError(f"The input data to evaluate has no label column {self.label}")
            return frame
        if self.eval_frame is None or self.eval_frame.empty:
            raise ModelError("The model has no evaluation data (data_split_method NO_SPLIT); pass the input data")
        return self.eval_frame

    def evaluate(self, frame: pd.DataFrame | None, options: dict) -> pd.DataFrame:
        data = self.evaluation_data(frame)
        features = self.features.matrix_input(data)
        if self.model_type == "KMEANS":
            return pd.DataFrame([self._cluster_metrics(features)])
        if self.is_classifier:
            return pd.DataFrame([self._classification_metrics(data[self.label], features, options.get("threshold"))])
        return pd.DataFrame([regression_metrics(data[self.label].astype(float), self.estimator.predict(features))])

    def _classification_metrics(self, truth: pd.Series, features: pd.DataFrame, threshold) -> dict:
        probabilities = self.estimator.predict_proba(features)
        predicted = list(self._decide(probabilities, threshold))
        truth = list(truth)
        binary = len(self.classes) == 2
        averaging = {"average": "binary", "pos_label": self.classes[1]} if binary else {"average": "macro"}
        scores = {
            "precision": metrics.precision_score(truth, predicted, zero_division=0, **averaging),
            "recall": metrics.recall_score(truth, predicted, zero_division=0, **averaging),
            "accuracy": metrics.accuracy_score(truth, predicted),
            "f1_score": metrics.f1_score(truth, predicted, zero_division=0, **averaging),
            "log_loss": metrics.log_loss(truth, probabilities, labels=self.classes),
        }
        if binary:
            scores["roc_auc"] = metrics.roc_auc_score([t == self.classes[1] for t in truth], probabilities[:, 1])
        else:
            scores["roc_auc"] = metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=self.classes)
        if binary:
            return {"threshold": 0.5 if threshold is None else float(threshold), **scores}
        return scores

    def _cluster_metrics(self, features: pd.DataFrame) -> dict:
        distances = self.estimator.transform(features)
        assigned = distances.argmin(axis=1)
        encoded = self.estimator[:-1].transform(features)
        davies_bouldin = metrics.davies_bouldin_score(encoded, assigned) if len(set(assigned)) > 1 else float("nan")
        return {
            "davies_bouldin_index": davies_bouldin,
            "mean_squared_distance": float((distances.min(axis=1) ** 2).mean()),
        }

    def roc_curve(self, frame: pd.DataFrame | None) -> pd.DataFrame:
        """Recall and false-positive rate at thresholds spread over the predicted probabilities (binary only)."""
        self._require_binary("ML.ROC_CURVE")
        data = self.evaluation_data(frame)
        positive = np.asarray(data[self.label] == self.classes[1])
        scores = self.estimator.predict_proba(self.features.matrix_input(data))[:, 1]
        thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, ROC_POINTS + 1)))[::-1]
        rows = []
        for threshold in thresholds:
            flagged = scores >= threshold
            tp, fp = int((flagged & positive).sum()), int((flagged & ~positive).sum())
            fn, tn = int((~flagged & positive).sum()), int((~flagged & ~positive).sum())
            rows.append(
                {
                    "threshold": float(threshold),
                    "recall": tp / max(tp + fn, 1),
                    "false_positive_rate": fp / max(fp + tn, 1),
                    "true_positives": tp,
                    "false_positives": fp,
                    "true_negatives": tn,
                    "false_negatives": fn,
                }
            )
        return pd.DataFrame(rows)

    def confusion_matrix(self, frame: pd.DataFrame | None, options: dict) -> pd.DataFrame:
        """One row per expected label, one column per predicted label (named `_<label>` when not a name)."""
        if not self.is_classifier:
            raise ModelError("ML.CONFUSION_MATRIX needs a classification model")
        data = self.evaluation_data(frame)
        predicted = self._decide(
            self.estimator.predict_proba(self.features.matrix_input(data)), options.get("threshold")
        )
        counts = metrics.confusion_matrix(list(data[self.label]), predicted, labels=self.classes)
        table = {"expected_label": list(self.classes)}
        for index, label in enumerate(self.classes):
            table[_column_name(label)] = counts[:, index].astype("int64")
        return pd.DataFrame(table)

    def feature_importance(self) -> pd.DataFrame:
        """Per input feature: splits using it (weight), their mean gain and mean cover — as XGBoost reports."""
        if not self.model_type.startswith("BOOSTED_TREE"):
            raise ModelError("ML.FEATURE_IMPORTANCE is only available for boosted tree models")
        owners = self._encoded_feature_owners()
        weight = dict.fromkeys(self.features.names, 0)
        gain, cover = dict.fromkeys(self.features.names, 0.0), dict.fromkeys(self.features.names, 0.0)
        # HistGradientBoosting keeps its fitted trees in `_predictors` (one list per iteration); each split node
        # has its feature, gain and sample count. No public API exposes these.
        for iteration in self.estimator[-1]._predictors:
            for tree in iteration:
                for node in tree.nodes[~tree.nodes["is_leaf"].astype(bool)]:
                    owner = owners[int(node["feature_idx"])]
                    weight[owner] += 1
                    gain[owner] += float(node["gain"])
                    cover[owner] += float(node["count"])
        rows = [
            {
                "feature": name,
                "importance_weight": weight[name],
                "importance_gain": gain[name] / weight[name] if weight[name] else 0.0,
                "importance_cover": cover[name] / weight[name] if weight[name] else 0.0,
            }
            for name in self.features.names
        ]
        return pd.DataFrame(rows).sort_values("importance_gain", ascending=False, ignore_index=True)

    def _encoded_feature_owners(self) -> list[str]:
        """The input column behind each column of the encoded matrix (one-hot columns map back to their column)."""
        encoder = self.estimator[0]
        owners = list(self.features.numeric)
        if self.features.categorical:
            one_hot = encoder.named_transformers_["categorical"]
            for name, categories in zip(self.features.categorical, one_hot.categories_, strict=True):
                owners += [name] * len(categories)
        return owners

    def training_info_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.training_info)

    def _require_binary(self, function: str) -> None:
        if not (self.is_classifier and len(self.classes) == 2):
            raise ModelError(f"{function} needs a binary classification model")


def apply(model: TrainedModel, function: str, frame: pd.DataFrame | None, options: dict) -> pa.Table:
    """The result table of `ML.<function>(MODEL model, frame, STRUCT(options))`."""
    if function == "PREDICT":
        if frame is None:
            raise ModelError("ML.PREDICT needs input data: a query or TABLE name after the model")
        return model.predict(frame, options)
    results = {
        "EVALUATE": lambda: model.evaluate(frame, options),
        "ROC_CURVE": lambda: model.roc_curve(frame),
        "CONFUSION_MATRIX": lambda: model.confusion_matrix(frame, options),
        "FEATURE_IMPORTANCE": model.feature_importance,
        "TRAINING_INFO": model.training_info_frame,
    }
    return _arrow(results[function]())


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """A result frame as Arrow, with columns that hold only NULLs typed FLOAT64 (as BigQuery's metrics are)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for index, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            table = table.set_column(index, column.name, table.column(index).cast(pa.float64()))
    return table


# training ---------------------------------------------------------------------------------------------------
def train(frame: pd.DataFrame, options: dict) -> TrainedModel:
    """Fit a model of `options['model_type']` on `frame` (the CREATE MODEL query's rows)."""
    model_type = str(options.get("model_type", "")).upper()
    if model_type not in MODEL_TYPES:
        raise ModelError(
            f"Unsupported model_type '{options.get('model_type')}'; the local BigQuery ML has {sorted(MODEL_TYPES)}"
        )
    label = _label_column(frame, options, model_type)
    if label:
        frame = frame[frame[label].notna()].reset_index(drop=True)
    split_column = options.get("data_split_col") if _split_method(options, len(frame)) == "CUSTOM" else None
    features = Features.of(frame, {c for c in (label, split_column) if c})
    train_frame, eval_frame = split(frame, options)
    if train_frame.empty:
        raise ModelError("The training data is empty")
    started = time.perf_counter()
    estimator = Pipeline(
        [
            ("encode", features.encoder(scale=not model_type.startswith("BOOSTED"))),
            ("model", _estimator(model_type, options, len(frame))),
        ]
    )
    model = TrainedModel(model_type, options, features, label, estimator, eval_frame=eval_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iterations is honoured, as BigQuery does
        if label:
            truth = train_frame[label]
            model.label_kind = _bigquery_kind(truth)
            if model.is_classifier:
                model.classes = sorted(truth.unique().tolist())
                if len(model.classes) < 2:
                    raise ModelError(f"The label column {label} has only one distinct value; a classifier needs two")
            estimator.fit(features.matrix_input(train_frame), truth if model.is_classifier else truth.astype(float))
        else:
            estimator.fit(features.matrix_input(train_frame))
    model.training_info = _training_info(model, train_frame, eval_frame, time.perf_counter() - started)
    return model


def _label_column(frame: pd.DataFrame, options: dict, model_type: str) -> str | None:
    if model_type == "KMEANS":
        return None
    labels = options.get("input_label_cols") or ["label"]
    label = labels[0] if isinstance(labels, list) else labels
    if label not in frame.columns:
        raise ModelError(
            f"Unable to identify the label column '{label}' in the training data; "
            "name it in input_label_cols in the OPTIONS clause"
        )
    return label


def _split_method(options: dict, rows: int) -> str:
    method = str(options.get("data_split_method", "AUTO_SPLIT")).upper()
    if method == "AUTO_SPLIT":
        return "NO_SPLIT" if rows < AUTO_SPLIT_MIN_ROWS else "RANDOM"
    return method


def split(frame: pd.DataFrame, options: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """BigQuery's data_split_method: AUTO_SPLIT (none under 500 rows; 20 %; 10,000 rows over 50,000), RANDOM
    (data_split_eval_fraction, 0.2), SEQ (the last rows by data_split_col), CUSTOM (data_split_col TRUE = eval),
    NO_SPLIT."""
    rows = len(frame)
    method = _split_method(options, rows)
    fraction = float(options.get("data_split_eval_fraction", 0.2))
    if method == "NO_SPLIT":
        return frame, None
    if method == "RANDOM":
        if str(options.get("data_split_method", "AUTO_SPLIT")).upper() == "AUTO_SPLIT" and rows > AUTO_SPLIT_LARGE_ROWS:
            fraction = AUTO_SPLIT_LARGE_EVAL / rows
        chosen = np.random.default_rng(SEED).random(rows) < fraction
    elif method in ("SEQ", "CUSTOM"):
        column = options.get("data_split_col")
        if column not in frame.columns:
            raise ModelError(f"data_split_col '{column}' is not a column of the training data")
        if method == "CUSTOM":
            chosen = frame[column].fillna(False).astype(bool).to_numpy()
        else:
            order = frame[column].rank(method="first").to_numpy()
            chosen = order > rows * (1 - fraction)
    else:
        raise ModelError(f"Unsupported data_split_method '{options.get('data_split_method')}'")
    return frame[~chosen].reset_index(drop=True), frame[chosen].reset_index(drop=True)


def _estimator(model_type: str, options: dict, rows: int):
    iterations = int(options.get("max_iterations", 20))
    l2 = float(options.get("l2_reg", 0.0))
    balanced = "balanced" if options.get("auto_class_weights") else None
    if model_type == "LOGISTIC_REG":
        return LogisticRegression(max_iter=iterations, C=1 / l2 if l2 > 0 else 1e6, class_weight=balanced)
    if model_type == "LINEAR_REG":
        return Ridge(alpha=l2) if l2 > 0 else LinearRegression()
    if model_type == "KMEANS":
        clusters = int(options.get("num_clusters") or max(2, round(np.log10(max(rows, 10)))))
        return KMeans(n_clusters=clusters, max_iter=iterations, n_init=1, random_state=SEED)
    trees = {
        "max_iter": iterations,
        "learning_rate": float(options.get("learn_rate", 0.3)),
        "max_depth": int(options.get("max_tree_depth", 6)),
        "l2_regularization": float(options.get("l2_reg", 1.0)),
        "early_stopping": False,
        "random_state": SEED,
    }
    if model_type == "BOOSTED_TREE_CLASSIFIER":
        return HistGradientBoostingClassifier(class_weight=balanced, **trees)
    return HistGradientBoostingRegressor(**trees)


def _training_info(model: TrainedModel, train_frame, eval_frame, seconds: float) -> list[dict]:
    """ML.TRAINING_INFO's rows: the loss per iteration (boosted trees) or once (others), train and eval."""
    losses = _loss_curve(model, train_frame)
    eval_losses = _loss_curve(model, eval_frame) if eval_frame is not None and not eval_frame.empty else None
    rate = float(model.options.get("learn_rate", 0.3)) if model.model_type.startswith("BOOSTED") else None
    per_iteration = seconds * 1000 / max(len(losses), 1)
    return [
        {
            "training_run": 0,
            "iteration": index,
            "loss": loss,
            "eval_loss": eval_losses[index] if eval_losses is not None else None,
            "learning_rate": rate,
            "duration_ms": int(per_iteration),
        }
        for index, loss in enumerate(losses)
    ]


def _loss_curve(model: TrainedModel, frame: pd.DataFrame) -> list[float]:
    features = model.features.matrix_input(frame)
    if model.model_type == "KMEANS":
        return [float((model.estimator.transform(features).min(axis=1) ** 2).mean())]
    encoded = model.estimator[0].transform(features)
    fitted = model.estimator[-1]
    if model.is_classifier:
        truth = np.searchsorted(np.asarray(model.classes), frame[model.label].to_numpy())
        stages = (
            fitted.staged_predict_proba(encoded)
            if model.model_type.startswith("BOOSTED")
            else [fitted.predict_proba(encoded)]
        )
        return [_log_loss(truth, p) for p in stages]
    truth = frame[model.label].astype(float).to_numpy()
    stages = fitted.staged_predict(encoded) if model.model_type.startswith("BOOSTED") else [fitted.predict(encoded)]
    return [float(np.mean((truth - p) ** 2)) for p in stages]


def _log_loss(truth_index: np.ndarray, probabilities: np.ndarray) -> float:
    """Cross-entropy of the true classes (given as column indices); sklearn's log_loss, without its per-call checks
    (it is computed once per boosting iteration)."""
    chosen = probabilities[np.arange(len(truth_index)), truth_index]
    return float(-np.mean(np.log(np.clip(chosen, 1e-15, 1.0))))


def regression_metrics(truth, predicted) -> dict:
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    non_negative = (truth >= 0).all() and (predicted >= 0).all()
    return {
        "mean_absolute_error": metrics.mean_absolute_error(truth, predicted),
        "mean_squared_error": metrics.mean_squared_error(truth, predicted),
        "mean_squared_log_error": metrics.mean_squared_log_error(truth, predicted) if non_negative else None,
        "median_absolute_error": metrics.median_absolute_error(truth, predicted),
        "r2_score": metrics.r2_score(truth, predicted),
        "explained_variance": metrics.explained_variance_score(truth, predicted),
    }


def _bigquery_kind(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values.dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(values.dtype):
        return "INTEGER"
    if pd.api.types.is_float_dtype(values.dtype):
        return "FLOAT"
    return "STRING"


def _list_of_structs(children: dict[str, pa.Array], per_row: int, rows: int) -> pa.Array:
    """ARRAY<STRUCT<...>> with `per_row` structs in each of `rows` rows, built from flat columns."""
    structs = pa.StructArray.from_arrays(list(children.values()), names=list(children))
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1) * per_row, pa.int32()), structs)


def _arrow_type(kind: str) -> pa.DataType:
    return {"BOOLEAN": pa.bool_(), "INTEGER": pa.int64(), "FLOAT": pa.float64()}.get(kind, pa.string())


def _column_name(label) -> str:
    text = str(label)
    return text if text.isidentifier() else f"_{text}"
