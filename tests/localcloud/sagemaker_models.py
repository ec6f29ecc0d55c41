"""What the SageMaker endpoint and batch transform tests share: model archives, names, model-server processes, the
meter."""

import io
import json
import tarfile
import urllib.request
import uuid
from pathlib import Path

from labcloud.localcloud import control

CODE = Path(__file__).parent / "inference_code"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def upload_model(s3, bucket: str, files: dict[str, bytes], code: Path | None = None) -> str:
    """A model.tar.gz with `files` (and `code` as code/), uploaded; its S3 URL."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if code is not None:
            tar.add(code, arcname="code")
    key = f"{uuid.uuid4().hex[:8]}/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"


def pytorch_model(model_data: str, code: str):
    """A SageMaker SDK PyTorchModel for an archive in S3, serving `inference.py` from inference_code/<code>."""
    import sagemaker
    from sagemaker.pytorch import PyTorchModel

    return PyTorchModel(
        model_data=model_data,
        role=sagemaker.get_execution_role(),
        entry_point="inference.py",
        source_dir=str(CODE / code),
        framework_version="2.1.0",
        py_version="py310",
    )


def linear_weights(name: str, weights: list[float], bias: float, **extra) -> dict[str, bytes]:
    return {"weights.json": json.dumps({"name": name, "weights": weights, "bias": bias, **extra}).encode()}


def create_model(sm, s3, bucket: str, name: str, files: dict[str, bytes], code: Path) -> str:
    """A model as boto3 users create it: the archive holds code/inference.py, the environment names it."""
    url = upload_model(s3, bucket, files, code=code)
    model_name = unique(name)
    sm.create_model(
        ModelName=model_name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": PYTORCH_IMAGE,
            "ModelDataUrl": url,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
        },
    )
    return model_name


def model_server_pids(**labels: str) -> set[int]:
    """The model-server processes whose command lines carry these labels (endpoint=..., variant=...)."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode().split("\0")
        except OSError:
            continue
        if not any(a.endswith("model_server.py") for a in args):
            continue
        flags = {f"--{name.replace('_', '-')}": value for name, value in labels.items()}
        if all(flag in args and args[args.index(flag) + 1] == value for flag, value in flags.items()):
            pids.add(int(cmdline.parent.name))
    return pids


def gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def meter_lines() -> list[dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{control.status().url}/_labcloud/costs", timeout=5) as response:
        return json.load(response)["lines"]
