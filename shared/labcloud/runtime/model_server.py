"""One instance of a SageMaker endpoint or batch transform job: the learner's inference script served under the
inference toolkit's contract.

    python -m labcloud.runtime.model_server --model-dir DIR [--code-dir DIR] [--program inference.py]
                                            [--port 0] [--port-file FILE]

It loads the learner's script the way SageMaker's PyTorch inference toolkit does: the code folder goes first on
`sys.path`, the module is imported, `model_fn(model_dir)` loads the model once, and each request runs
`input_fn(body, content_type)` -> `predict_fn(data, model)` -> `output_fn(prediction, accept)` (or one
`transform_fn(model, body, content_type, accept)`), with the toolkit's defaults for the functions the script leaves
out: JSON, CSV and NumPy `.npy` bodies decoded to tensors, `model(data)` under `torch.no_grad()`, the prediction
encoded as the first supported type in Accept. Without a script, the default `model_fn` loads TorchScript `model.pt`.

It answers `GET /ping` and `POST /invocations` on loopback, one request at a time (one toolkit worker), and writes
its port to `--port-file` once the model is loaded: whoever started it knows then where it listens and that it
is ready. A model that fails to load ends the process with the traceback on stderr.

Only the standard library is imported up front; NumPy and PyTorch are imported when the learner's code or a
default handler needs them, so a small model starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import http
import importlib
import inspect
import io
import json
import os
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
SUPPORTED_CONTENT_TYPES = (JSON, CSV, NPY)
UTF8_CONTENT_TYPES = (JSON, CSV)  # decoded to float tensors; NumPy bodies keep their dtype
DEFAULT_PROGRAM = "inference.py"
DEFAULT_MODEL_FILE = "model.pt"
HANDLER_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


class InferenceError(Exception):
    """An error with the HTTP status the toolkit answers for it (500 for anything the learner's code raises)."""

    status = 500


class UnsupportedFormat(InferenceError):
    status = 415

    def __init__(self, content_type: str):
        super().__init__(f"Content type {content_type} is not supported by this framework.")


# --- the toolkit's encoders and decoders -----------------------------------------------------------------------


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode(body: bytes, content_type: str):
    """A request body as a NumPy array (the toolkit's decoder)."""
    import numpy as np

    media_type = _media_type(content_type)
    if media_type == JSON:
        return np.array(json.loads(body))
    if media_type == CSV:
        return np.genfromtxt(io.StringIO(body.decode("utf-8")), delimiter=",")
    if media_type == NPY:
        return np.load(io.BytesIO(body), allow_pickle=False)
    raise UnsupportedFormat(content_type)


def _json_default(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars, tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(data, content_type: str) -> bytes:
    """A prediction as a response body (the toolkit's encoder)."""
    media_type = _media_type(content_type)
    if media_type == JSON:
        return json.dumps(data, default=_json_default).encode()
    import numpy as np

    if media_type == CSV:
        buffer = io.StringIO()
        np.savetxt(buffer, np.atleast_2d(np.asarray(data)), delimiter=",", fmt="%s")
        return buffer.getvalue().encode()
    if media_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(data), allow_pickle=False)
        return buffer.getvalue()
    raise UnsupportedFormat(content_type)


# --- the PyTorch toolkit's default handlers ----------------------------------------------------------------------


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_model_fn(model_dir: str):
    path = Path(model_dir) / DEFAULT_MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"Failed to load model with default model_fn: missing file {DEFAULT_MODEL_FILE}. "
            "Save a TorchScript model as model.pt, or define model_fn(model_dir) in your inference script."
        )
    import torch

    return torch.jit.load(str(path), map_location=_torch_device())


def default_input_fn(input_data: bytes, content_type: str):
    import torch

    array = decode(input_data, content_type)
    tensor = torch.FloatTensor(array) if _media_type(content_type) in UTF8_CONTENT_TYPES else torch.from_numpy(array)
    return tensor.to(_torch_device())


def default_predict_fn(data, model):
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(model, "eval"):
        return model(data)  # a plain callable: nothing to move to a device
    with torch.no_grad():
        device = _torch_device()
        model = model.to(device)
        model.eval()
        return model(data.to(device) if hasattr(data, "to") else data)


def default_output_fn(prediction, accept: str):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy().tolist()
    for content_type in accept.replace(" ", "").split(","):
        if _media_type(content_type) in SUPPORTED_CONTENT_TYPES:
            return encode(prediction, content_type), _media_type(content_type)
    raise UnsupportedFormat(accept)


# --- the learner's script ----------------------------------------------------------------------------------------


def load_user_module(code_dir: Path | None, program: str | None):
    """Import the inference script as the toolkit does; None when there is none (all defaults then)."""
    explicit = program is not None
    program = program or DEFAULT_PROGRAM
    if code_dir is None or not (code_dir / program).exists():
        if explicit:
            raise FileNotFoundError(f"The inference script {program} is not in the code folder {code_dir}.")
        return None
    if (code_dir / "requirements.txt").exists():
        print(
            f"{code_dir / 'requirements.txt'} found: the local cloud installs nothing; the lab environment has it all"
        )
    sys.path.insert(0, str(code_dir))
    return importlib.import_module(Path(program).stem)


def _accepting(fn, arity: int):
    """`fn` called with `arity` arguments, plus the toolkit's optional trailing `context` (None) if it takes one."""
    try:
        wants_context = len(inspect.signature(fn).parameters) > arity
    except (TypeError, ValueError):
        wants_context = False
    return (lambda *args: fn(*args, None)) if wants_context else fn


class Inference:
    """The loaded model and the handler chain for one request."""

    def __init__(self, model_dir: Path, module):
        found = {name: getattr(module, name, None) for name in HANDLER_NAMES} if module else {}
        self.transform_fn = found.get("transform_fn")
        if self.transform_fn and any(found.get(n) for n in ("input_fn", "predict_fn", "output_fn")):
            raise ValueError(
                "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, "
                "and/or output_fn implementation"
            )
        self.transform_fn = self.transform_fn and _accepting(self.transform_fn, 4)
        self.input_fn = _accepting(found.get("input_fn") or default_input_fn, 2)
        self.predict_fn = _accepting(found.get("predict_fn") or default_predict_fn, 2)
        self.output_fn = _accepting(found.get("output_fn") or default_output_fn, 2)
        self.default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", JSON)
        self.model = _accepting(found.get("model_fn") or default_model_fn, 1)(str(model_dir))
        self._lock = threading.Lock()  # one worker: the learner's code never runs twice at once

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        content_type = content_type or JSON
        if not accept or accept == "*/*":
            accept = self.default_accept
        with self._lock:
            if self.transform_fn:
                result = self.transform_fn(self.model, body, content_type, accept)
            else:
                result = self.output_fn(self.predict_fn(self.input_fn(body, content_type), self.model), accept)
        response, response_type = result if isinstance(result, tuple) else (result, accept)
        if isinstance(response, str):
            response = response.encode()
        if not isinstance(response, bytes | bytearray):
            raise TypeError(f"output_fn must return bytes or str, not {type(response).__name__}")
        return bytes(response), response_type


# --- HTTP ---------------------------------------------------------------------------------------------------------


def _learner_traceback(exc: BaseException) -> str:
    """The traceback from the learner's first frame on (all of it when the error is this server's own)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the local cloud reuses its connections
    server: _Server

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        if self.path == "/ping":
            self._reply(200, b"", "text/plain")
        else:
            self._reply(404, b"Not found", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invocations":
            self._reply(404, b"Not found", "text/plain")
            return
        try:
            response, content_type = self.server.inference.invoke(
                body, self.headers.get("Content-Type"), self.headers.get("Accept")
            )
        except Exception as exc:
            trace = _learner_traceback(exc)
            print(trace, file=sys.stderr, flush=True)
            status = exc.status if isinstance(exc, InferenceError) else 500
            self._reply(status, f"{type(exc).__name__}: {exc}\n{trace}".encode(), "text/plain")
            return
        self._reply(200, response, content_type)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        # Status line, headers and body in one write: no Nagle delay between two small segments.
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def log_message(self, format, *args):  # no access log: every request would become a log event
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, inference: Inference):
        self.inference = inference
        super().__init__(address, _Handler)


def _write_port(port_file: Path, port: int) -> None:
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="model_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path, help="the extracted model archive (/opt/ml/model)")
    parser.add_argument("--code-dir", type=Path, help="the inference code (default: MODEL_DIR/code)")
    parser.add_argument("--program", help="the inference script (default: SAGEMAKER_PROGRAM, else inference.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the port once the model is loaded")
    # Named only so that `ps` tells the instances apart.
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--variant", default="")
    parser.add_argument("--transform-job", default="")
    parser.add_argument("--instance-id", default="")
    args = parser.parse_args(argv)

    code_dir = args.code_dir or args.model_dir / "code"
    program = args.program or os.environ.get("SAGEMAKER_PROGRAM") or None
    started = time.monotonic()
    module = load_user_module(code_dir if code_dir.is_dir() else None, program)
    inference = Inference(args.model_dir, module)
    server = _Server((args.host, args.port), inference)
    port = server.server_address[1]
    script = f"{program or DEFAULT_PROGRAM}" if module else "the default handlers"
    print(f"Model server for {script} listening on {args.host}:{port} (loaded in {time.monotonic() - started:.2f} s)")
    sys.stdout.flush()
    if args.port_file:
        _write_port(args.port_file, port)
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    # Run as a file, Python puts this folder first on sys.path; the learner's modules must not meet ours.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    main()
