"""BigQuery ML models on disk: one joblib file per model under `models/<dataset>/<model>.joblib` in the state
folder, so that models survive restarts of the local cloud; loaded once and kept in memory."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ml import TrainedModel

# BigQuery's names of the model types in the REST API's Model resource
REST_MODEL_TYPES = {"LOGISTIC_REG": "LOGISTIC_REGRESSION", "LINEAR_REG": "LINEAR_REGRESSION"}


class ModelStore:
    def __init__(self, root: Path, project: str, error_type):
        self.root, self.project, self.error_type = root, project, error_type
        self.lock = threading.Lock()
        self.cache: dict[tuple[str, str], TrainedModel] = {}

    def path(self, dataset: str, name: str) -> Path:
        return self.root / dataset / f"{name}.joblib"

    def exists(self, dataset: str, name: str) -> bool:
        return (dataset, name) in self.cache or self.path(dataset, name).exists()

    def names(self, dataset: str) -> list[str]:
        folder = self.root / dataset
        return sorted(p.stem for p in folder.glob("*.joblib")) if folder.exists() else []

    def save(self, dataset: str, name: str, model: TrainedModel) -> None:
        path = self.path(dataset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        import joblib

        with self.lock:
            joblib.dump(model, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            self.cache[(dataset, name)] = model

    def load(self, dataset: str, name: str) -> TrainedModel:
        with self.lock:
            if (dataset, name) not in self.cache:
                path = self.path(dataset, name)
                if not path.exists():
                    raise self.not_found(dataset, name)
                import joblib

                self.cache[(dataset, name)] = joblib.load(path)
            return self.cache[(dataset, name)]

    def delete(self, dataset: str, name: str) -> None:
        with self.lock:
            self.cache.pop((dataset, name), None)
            self.path(dataset, name).unlink(missing_ok=True)

    def delete_dataset(self, dataset: str) -> None:
        with self.lock:
            for key in [k for k in self.cache if k[0] == dataset]:
                del self.cache[key]
            shutil.rmtree(self.root / dataset, ignore_errors=True)

    def not_found(self, dataset: str, name: str) -> Exception:
        return self.error_type(404, f"Not found: Model {self.project}:{dataset}.{name}", "notFound")
