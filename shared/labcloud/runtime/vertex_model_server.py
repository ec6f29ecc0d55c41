"""One replica of a Vertex AI deployed model: the artifact served as Vertex's prebuilt prediction containers do.

    python vertex_model_server.py --artifact-dir DIR [--port 0] [--port-file FILE]

Vertex's prebuilt scikit-learn and XGBoost containers load the one model file they find in the model's
`artifactUri` and answer `POST {AIP_PREDICT_ROUTE}` with `{"instances": [...]}` -> `{"predictions": [...]}` and
`GET {AIP_HEALTH_ROUTE}`. This server does the same on loopback, with the same file names, checked in this order:

- `model.joblib` (joblib) or `model.pkl` (pickle): a scikit-learn estimator or pipeline, or an XGBoost model in
  its scikit-learn API (`XGBClassifier`, ...); predictions are `model.predict(instances)`.
- `model.bst`: an XGBoost `Booster`; predictions are `booster.predict(DMatrix(instances))`.
- `model.pt`: PyTorch, as a TorchScript module (`torch.jit.save(torch.jit.script(model), "model.pt")`);
  predictions are `model(torch.tensor(instances, dtype=torch.float32)).tolist()`. This is the local cloud's
  documented contract for PyTorch: Vertex's prebuilt PyTorch container serves a TorchServe archive
  (`model.mar`) whose handler does this conversion; a TorchScript file needs no handler code of yours.

Not served (the server exits with a message naming what it found, and deployModel fails with it): TensorFlow
SavedModels, TorchServe archives (`.mar`) and custom containers, which need the framework's own server. Like the
prebuilt containers, `parameters` in the request body are ignored, and a model with more than one model file
is refused (Vertex's containers refuse it too). The port is written to `--port-file` once the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_FILES = ("model.joblib", "model.pkl", "model.bst", "model.pt")
DEFAULT_PREDICT_ROUTE = "/predict"
DEFAULT_HEALTH_ROUTE = "/health"


class UnservableArtifact(Exception):
    pass


def find_model_file(artifact_dir: Path) -> Path:
    """The one model file of the artifact, as the prebuilt containers look for it."""
    present = [artifact_dir / name for name in MODEL_FILES if (artifact_dir / name).is_file()]
    if len(present) == 1:
        return present[0]
    listing = sorted(p.name for p in artifact_dir.iterdir()) if artifact_dir.is_dir() else []
    if not present:
        raise UnservableArtifact(
            f"No model file found in the model's artifactUri: the prebuilt scikit-learn/XGBoost/PyTorch containers "
            f"need one of {', '.join(MODEL_FILES)}; found {listing or 'nothing'}."
        )
    raise UnservableArtifact(f"More than one model file in the model's artifactUri: {[p.name for p in present]}.")


def load_model(model_file: Path):
    """(model, predict function) for a model file."""
    if model_file.name == "model.bst":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(model_file))
        return booster, lambda instances: booster.predict(xgboost.DMatrix(instances))
    if model_file.name == "model.pt":
        return _torchscript(model_file)
    if model_file.name == "model.joblib":
        import joblib

        model = joblib.load(model_file)
    else:
        with model_file.open("rb") as f:
            model = pickle.load(f)
    return model, model.predict


def _torchscript(model_file: Path):
    import torch

    module = torch.jit.load(str(model_file), map_location="cpu").eval()

    def predict(instances):
        with torch.no_grad():
            return module(torch.tensor(instances, dtype=torch.float32)).tolist()

    return module, predict


def _as_json(predictions) -> list:
    tolist = getattr(predictions, "tolist", None)
    return tolist() if tolist else list(predictions)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the local cloud reuses its connections to the replica

    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle's algorithm holds the body for ~40 ms
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        if self.path == self.server.health_route:
            self._reply(200, {})
        else:
            self._reply(404, {"error": f"No route {self.path}"})

    def do_POST(self):
        if self.path != self.server.predict_route:
            self._reply(404, {"error": f"No route {self.path}"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            instances = body["instances"]
        except (ValueError, KeyError, TypeError):
            self._reply(400, {"error": 'The request body must be a JSON object with an "instances" list.'})
            return
        try:
            predictions = self.server.predict(instances)
        except Exception as exc:  # the learner's model refused the input: the container answers 400 with why
            traceback.print_exc()
            self._reply(400, {"error": f"Prediction failed: {type(exc).__name__}: {exc}"})
            return
        self._reply(200, {"predictions": _as_json(predictions)})

    def _reply(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # no access log: one line per prediction is noise
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, predict, predict_route: str, health_route: str):
        self.predict, self.predict_route, self.health_route = predict, predict_route, health_route
        super().__init__(address, _Handler)


def _write_port(port_file: Path, port: int) -> None:
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vertex_model_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact-dir", required=True, type=Path, help="the model's artifactUri, downloaded")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the port once the model is loaded")
    parser.add_argument("--deployed-model-id", default="", help="named only so that `ps` tells replicas apart")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        model_file = find_model_file(args.artifact_dir)
        model, predict = load_model(model_file)
    except UnservableArtifact as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    except ImportError as exc:  # e.g. model.bst without XGBoost in the course environment
        print(f"Cannot load {model_file.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", DEFAULT_PREDICT_ROUTE)
    health_route = os.environ.get("AIP_HEALTH_ROUTE", DEFAULT_HEALTH_ROUTE)
    server = _Server((args.host, args.port), predict, predict_route, health_route)
    port = server.server_address[1]
    loaded_s = time.monotonic() - started
    print(f"Serving {model_file.name} ({type(model).__name__}) on {args.host}:{port} (loaded in {loaded_s:.2f} s)")
    sys.stdout.flush()
    if args.port_file:
        _write_port(args.port_file, port)
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    # Run as a file, Python puts this folder first on sys.path; the learner's modules must not meet ours.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    main()
