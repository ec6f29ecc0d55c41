"""Run a SageMaker training job's script on this machine, under SageMaker's container contract.

What a SageMaker training container does, done with local processes: download the source archive (the SDK
uploads `sourcedir.tar.gz` and names it in the `sagemaker_submit_directory` hyperparameter) and the S3 channels;
start the entry point once per instance ("host" algo-1..algo-N) with the `SM_*` environment and the
hyperparameters as command-line arguments; stream each host's output; sync checkpoints with S3; tar algo-1's
model folder to `<S3OutputPath>/<job>/output/model.tar.gz`.

What is simulated, and how it differs from AWS:
- The instance type is not real: a job on `ml.p4d.24xlarge` runs on this machine's CPUs (and GPUs, if any).
  `SM_NUM_GPUS` is the real number of GPUs this machine gives each host, `SM_NUM_CPUS` its real CPU count.
- The training image is not pulled: the script runs with the local cloud's Python (the course's environment),
  and a `requirements.txt` in the source folder is not installed (there is no network).
- Folders: `/opt/ml/...` cannot be written here, so each host gets the same layout under the job's work folder
  (`SAGEMAKER_BASE_DIR` points at it). Scripts that read the `SM_*` variables run unchanged; a checkpoint
  folder is `SM_CHECKPOINT_DIR` (not a SageMaker variable: scripts should use
  `os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints")`, which works on both).
- Distributed training (`torch_distributed`, `pytorchddp`, `smdistributed` data parallel or `mpi` in the
  estimator's `distribution`): one process per instance, forming one `torch.distributed` group with the
  variables torchrun sets (MASTER_ADDR=127.0.0.1, a free MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK=0, ...);
  the script picks its backend (gloo on CPU, nccl with GPUs). Without a distribution, N instances run N
  independent copies, as on SageMaker.
- Managed spot interruptions are made on purpose by the training-job tag `labcloud:interrupt-after-seconds`
  (see `INTERRUPT_TAG`); real AWS ignores the tag, so the same notebook runs there.
- A stop or an interruption gives the processes `STOP_GRACE_S` between SIGTERM and SIGKILL (AWS gives 120 s).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

INTERRUPT_TAG = "labcloud:interrupt-after-seconds"
"""Tag value "S" interrupts a managed-spot job S seconds after its script starts, then restarts it; "S1,S2,..."
interrupts the first run after S1 seconds, the restarted run after S2 seconds, and so on. Ignored (with a
note in the job's log) on jobs without EnableManagedSpotTraining."""

STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long (AWS waits 120 s)
CHECKPOINT_SYNC_S = 1.0  # how often new or changed checkpoint files are uploaded while the script runs
TICK_S = 0.05  # the supervisor's pace: log flushes, exits noticed, deadlines checked
FAILURE_REASON_MAX = 1024  # DescribeTrainingJob's FailureReason limit
_DISTRIBUTED_FLAGS = (
    "sagemaker_torch_distributed_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_mpi_enabled",
)


class JobFailed(Exception):
    """The job cannot go on; the message is its FailureReason (SageMaker's style: "ClientError: ...")."""


# --- the job, as CreateTrainingJob describes it --------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    name: str
    s3_uri: str
    sharded: bool  # S3DataDistributionType ShardedByS3Key: each host gets its share of the objects
    config: dict  # the channel's entry in inputdataconfig.json


@dataclass(frozen=True)
class TrainingSpec:
    job_name: str
    job_arn: str
    region: str
    instance_type: str
    instance_count: int
    hyperparameters: dict[str, str]  # as sent: the SageMaker SDK JSON-encodes each value
    channels: tuple[Channel, ...]
    output_path: str
    checkpoint_uri: str | None
    max_runtime_s: float | None
    max_wait_s: float | None
    spot: bool
    interruptions: tuple[float, ...]
    notes: tuple[str, ...] = ()  # said in the job's log when it starts

    @classmethod
    def from_request(cls, request: dict, job_arn: str, region: str) -> TrainingSpec:
        """From a CreateTrainingJob request body (already validated against the API's shapes)."""
        resources = request["ResourceConfig"]
        stopping = request.get("StoppingCondition") or {}
        spot = bool(request.get("EnableManagedSpotTraining"))
        interruptions, notes = _interruptions(request.get("Tags") or [], spot)
        return cls(
            job_name=request["TrainingJobName"],
            job_arn=job_arn,
            region=region,
            instance_type=resources.get("InstanceType") or "",
            instance_count=int(resources.get("InstanceCount") or 1),
            hyperparameters=dict(request.get("HyperParameters") or {}),
            channels=tuple(_channel(c, request) for c in request.get("InputDataConfig") or []),
            output_path=request["OutputDataConfig"]["S3OutputPath"],
            checkpoint_uri=(request.get("CheckpointConfig") or {}).get("S3Uri"),
            max_runtime_s=stopping.get("MaxRuntimeInSeconds"),
            max_wait_s=stopping.get("MaxWaitTimeInSeconds") if spot else None,
            spot=spot,
            interruptions=interruptions,
            notes=notes,
        )

    @property
    def hosts(self) -> list[str]:
        return [f"algo-{i + 1}" for i in range(self.instance_count)]

    @property
    def decoded_hyperparameters(self) -> dict:
        return {key: _json_or_text(value) for key, value in self.hyperparameters.items()}

    @property
    def user_hyperparameters(self) -> dict:
        """What the script sees: the SDK's own `sagemaker_*` entries are for the container, not the script."""
        return {k: v for k, v in self.decoded_hyperparameters.items() if not k.startswith("sagemaker_")}

    @property
    def distributed(self) -> bool:
        return any(self.decoded_hyperparameters.get(flag) is True for flag in _DISTRIBUTED_FLAGS)

    @property
    def model_artifact_uri(self) -> str:
        return f"{self.output_path.rstrip('/')}/{self.job_name}/output/model.tar.gz"

    @property
    def output_artifact_uri(self) -> str:
        return f"{self.output_path.rstrip('/')}/{self.job_name}/output/output.tar.gz"


def _channel(entry: dict, request: dict) -> Channel:
    source = entry.get("DataSource") or {}
    s3 = source.get("S3DataSource")
    if s3 is None:
        kind = next(iter(source), "an unknown data source")
        raise JobFailed(f"ClientError: channel {entry.get('ChannelName')!r} uses {kind}; the local cloud reads S3.")
    if s3.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise JobFailed(
            f"ClientError: channel {entry.get('ChannelName')!r} is a {s3['S3DataType']}; "
            "the local cloud supports S3Prefix channels."
        )
    config = {
        "TrainingInputMode": entry.get("InputMode") or request["AlgorithmSpecification"].get("TrainingInputMode"),
        "S3DistributionType": s3.get("S3DataDistributionType", "FullyReplicated"),
        "RecordWrapperType": entry.get("RecordWrapperType", "None"),
    }
    return Channel(entry["ChannelName"], s3["S3Uri"], config["S3DistributionType"] == "ShardedByS3Key", config)


def _interruptions(tags: list[dict], spot: bool) -> tuple[tuple[float, ...], tuple[str, ...]]:
    value = next((t.get("Value", "") for t in tags if t.get("Key") == INTERRUPT_TAG), None)
    if value is None:
        return (), ()
    if not spot:
        return (), (f"[labcloud] tag {INTERRUPT_TAG} ignored: the job does not use managed spot training.",)
    try:
        seconds = tuple(float(part) for part in value.split(","))
        if any(s <= 0 for s in seconds):
            raise ValueError
    except ValueError:
        return (), (f"[labcloud] tag {INTERRUPT_TAG}={value!r} ignored: give seconds, like '3' or '3,5'.",)
    return seconds, ()


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


# --- the container contract ---------------------------------------------------------------------------------


def to_cmd_args(hyperparameters: dict) -> list[str]:
    """Hyperparameters as the SageMaker training toolkit passes them: sorted, `--name value` (`-n` for one
    letter), booleans as True/False, dicts as k=v,k2=v2."""
    args = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"-{name}" if len(name) == 1 else f"--{name}", str(value)]
    return args


def visible_gpus() -> list[str]:
    """The GPUs a process started here would see: CUDA_VISIBLE_DEVICES if set, else what the NVIDIA driver
    lists (what torch.cuda.device_count() counts, without importing torch into the local cloud)."""
    if (setting := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        devices = []
        for device in (d.strip() for d in setting.split(",")):
            if not device or device.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            devices.append(device)
        return devices
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Host:
    """One simulated instance: its name, its /opt/ml-like folder, its GPUs."""

    name: str
    rank: int
    root: Path
    gpus: list[str]

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    def channel_dir(self, channel: str) -> Path:
        return self.root / "input" / "data" / channel

    def reset(self) -> None:
        """A fresh instance: empty model, output and checkpoint folders (input data is kept)."""
        for folder in (self.model_dir, self.output_dir, self.checkpoint_dir):
            shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.model_dir, self.output_dir / "data", self.checkpoint_dir, self.config_dir):
            folder.mkdir(parents=True, exist_ok=True)


def _assign_gpus(count: int) -> list[list[str]]:
    """Each host its own GPUs when there are enough; otherwise every host shares them all."""
    gpus = visible_gpus()
    if len(gpus) < count:
        return [gpus] * count
    per_host = len(gpus) // count
    return [gpus[i * per_host : (i + 1) * per_host] for i in range(count)]


def container_environment(spec: TrainingSpec, host: Host, channel_dirs: dict[str, Path], code_dir: Path) -> dict:
    """The SM_* variables SageMaker's training toolkit gives the script on `host` (paths under `host.root`);
    writes the host's input/config/*.json files too, as SageMaker does."""
    hosts = spec.hosts
    decoded = spec.decoded_hyperparameters
    user_hps = spec.user_hyperparameters
    user_args = to_cmd_args(user_hps)
    resource_config = {"current_host": host.name, "hosts": hosts, "current_instance_type": spec.instance_type}
    input_data_config = {c.name: c.config for c in spec.channels}
    program = str(decoded.get("sagemaker_program", ""))
    training_env = {
        "additional_framework_parameters": {k: v for k, v in decoded.items() if k.startswith("sagemaker_")},
        "channel_input_dirs": {name: str(path) for name, path in channel_dirs.items()},
        "current_host": host.name,
        "current_instance_type": spec.instance_type,
        "hosts": hosts,
        "hyperparameters": user_hps,
        "input_config_dir": str(host.config_dir),
        "input_data_config": input_data_config,
        "input_dir": str(host.root / "input"),
        "is_master": host.rank == 0,
        "job_name": spec.job_name,
        "log_level": decoded.get("sagemaker_container_log_level", 20),
        "model_dir": str(host.model_dir),
        "module_dir": str(decoded.get("sagemaker_submit_directory", "")),
        "module_name": program.removesuffix(".py"),
        "num_cpus": os.cpu_count() or 1,
        "num_gpus": len(host.gpus),
        "output_data_dir": str(host.output_dir / "data"),
        "output_dir": str(host.output_dir),
        "resource_config": resource_config,
        "user_entry_point": program,
    }
    env = {
        "SAGEMAKER_BASE_DIR": str(host.root),
        "TRAINING_JOB_NAME": spec.job_name,
        "TRAINING_JOB_ARN": spec.job_arn,
        "SM_MODEL_DIR": str(host.model_dir),
        "SM_CHANNELS": json.dumps(sorted(channel_dirs)),
        "SM_HPS": json.dumps(user_hps),
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": host.name,
        "SM_CURRENT_INSTANCE_TYPE": spec.instance_type,
        "SM_NUM_GPUS": str(len(host.gpus)),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_LOG_LEVEL": str(training_env["log_level"]),
        "SM_USER_ARGS": json.dumps(user_args),
        "SM_USER_ENTRY_POINT": program,
        "SM_MODULE_NAME": training_env["module_name"],
        "SM_MODULE_DIR": training_env["module_dir"],
        "SM_INPUT_DIR": training_env["input_dir"],
        "SM_INPUT_CONFIG_DIR": str(host.config_dir),
        "SM_OUTPUT_DIR": str(host.output_dir),
        "SM_OUTPUT_DATA_DIR": str(host.output_dir / "data"),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(host.output_dir / "intermediate"),
        "SM_CHECKPOINT_DIR": str(host.checkpoint_dir),
        "SM_RESOURCE_CONFIG": json.dumps(resource_config),
        "SM_INPUT_DATA_CONFIG": json.dumps(input_data_config),
        "SM_TRAINING_ENV": json.dumps(training_env),
        "SM_FRAMEWORK_PARAMS": json.dumps(training_env["additional_framework_parameters"]),
        "PYTHONUNBUFFERED": "1",  # lines reach the log as they are printed
        "PYTHONPATH": os.pathsep.join(filter(None, [str(code_dir), os.environ.get("PYTHONPATH")])),
    }
    for name, value in user_hps.items():
        env[f"SM_HP_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    for name, path in channel_dirs.items():
        env[f"SM_CHANNEL_{name.upper()}"] = str(path)
    if host.gpus or visible_gpus():
        env["CUDA_VISIBLE_DEVICES"] = ",".join(host.gpus)
    _write_config_files(host, user_hps, resource_config, input_data_config)
    return env


def _write_config_files(host: Host, hyperparameters: dict, resources: dict, data_config: dict) -> None:
    """/opt/ml/input/config/*.json, which scripts written for SageMaker sometimes read instead of SM_*."""
    host.config_dir.mkdir(parents=True, exist_ok=True)
    as_strings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}
    for name, content in (
        ("hyperparameters.json", as_strings),
        ("resourceconfig.json", resources),
        ("inputdataconfig.json", data_config),
    ):
        (host.config_dir / name).write_text(json.dumps(content))


def distributed_environment(host: Host, world_size: int, master_port: int, restart: int) -> dict:
    """What torchrun gives each process, with one process per instance."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(world_size),
        "RANK": str(host.rank),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": str(host.rank),
        "GROUP_WORLD_SIZE": str(world_size),
        "ROLE_RANK": str(host.rank),
        "ROLE_WORLD_SIZE": str(world_size),
        "NODE_RANK": str(host.rank),
        "TORCHELASTIC_RESTART_COUNT": str(restart),
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": "labcloud",
    }


# --- S3 ---------------------------------------------------------------------------------------------------


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise JobFailed(f"ClientError: {uri!r} is not an s3:// URI.")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _s3_keys(s3, uri: str) -> list[tuple[str, str]]:
    """(key, path relative to the prefix) for every object under an S3 prefix, as SageMaker lays them out."""
    bucket, prefix = split_s3_uri(uri)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/"):
                continue  # a folder marker
            relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
            keys.append((key, relative))
    return keys


def download_prefix(s3, uri: str, folder: Path, share: tuple[int, int] = (0, 1)) -> int:
    """Download every object under `uri` into `folder` (host `share[0]` of `share[1]` gets its share)."""
    bucket, _ = split_s3_uri(uri)
    keys = _s3_keys(s3, uri)[share[0] :: share[1]]
    for key, relative in keys:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    return len(keys)


class CheckpointSync:
    """Keeps S3 (CheckpointConfig.S3Uri) up to date with the hosts' checkpoint folders, like SageMaker does."""

    def __init__(self, s3, uri: str):
        self.s3 = s3
        self.bucket, prefix = split_s3_uri(uri)
        self.prefix = prefix.rstrip("/")
        self._uploaded: dict[str, tuple[int, int]] = {}  # local path -> (size, mtime) at its last upload

    def download(self, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{self.prefix}/" if self.prefix else ""
        count = download_prefix(self.s3, f"s3://{self.bucket}/{prefix}", folder)
        for path in folder.rglob("*"):
            if path.is_file():  # downloaded files are already in S3
                stat = path.stat()
                self._uploaded[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return count

    def upload_changes(self, folders: list[Path]) -> int:
        uploaded = 0
        for folder in folders:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # the script replaced it meanwhile
                signature = (stat.st_size, stat.st_mtime_ns)
                if self._uploaded.get(str(path)) == signature:
                    continue
                key = "/".join(filter(None, [self.prefix, path.relative_to(folder).as_posix()]))
                try:
                    self.s3.upload_file(str(path), self.bucket, key)
                except FileNotFoundError:
                    continue
                self._uploaded[str(path)] = signature
                uploaded += 1
        return uploaded


def pack(folder: Path, archive: Path) -> Path:
    """folder's contents as a .tar.gz, files at the archive's root (as SageMaker packs /opt/ml/model)."""
    with tarfile.open(archive, "w:gz", compresslevel=3) as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


# --- running it ------------------------------------------------------------------------------------------


class Observer(Protocol):
    """What the run reports to the service that started it."""

    def secondary_status(self, status: str, message: str) -> None: ...

    def log(self, host: str, line: str) -> None: ...

    def flush(self) -> None: ...


class Processes(Protocol):
    """Starts and stops child processes (the local cloud's ChildProcesses)."""

    def spawn(self, args: list[str], **popen_kwargs) -> subprocess.Popen: ...

    def stop(self, process: subprocess.Popen, timeout: float = 5.0) -> None: ...


@dataclass
class Outcome:
    status: str  # Completed | Failed | Stopped
    secondary_status: str  # Completed | Failed | Stopped | MaxRuntimeExceeded | MaxWaitTimeExceeded
    message: str
    failure_reason: str | None = None
    model_artifacts: str | None = None
    training_start: float | None = None
    training_end: float | None = None


@dataclass
class _Running:
    host: Host
    process: subprocess.Popen
    command: list[str]
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=12))
    readers: list[threading.Thread] = field(default_factory=list)


class TrainingRun:
    """One training job, from its downloads to its artifacts. `execute()` blocks; `stop()` may come from
    another thread (StopTrainingJob), and so may `abort()` (the local cloud shutting down)."""

    def __init__(
        self,
        spec: TrainingSpec,
        work_dir: Path,
        s3,
        processes: Processes,
        observer: Observer,
        script_environment: dict[str, str] | None = None,
    ):
        self.spec = spec
        self.script_environment = script_environment or {}  # e.g. how the script's boto3 reaches the cloud
        self.work_dir = work_dir
        self.s3 = s3
        self.processes = processes
        self.observer = observer
        self.code_dir = work_dir / "code"
        self.hosts = [
            Host(name, rank, work_dir / "hosts" / name, gpus)
            for rank, (name, gpus) in enumerate(zip(spec.hosts, _assign_gpus(spec.instance_count), strict=True))
        ]
        self.checkpoints = CheckpointSync(s3, spec.checkpoint_uri) if spec.checkpoint_uri else None
        self._stop_requested = threading.Event()
        self._abort_reason: str | None = None
        self._running: list[_Running] = []
        self._first_failure: _Running | None = None
        self._training_start: float | None = None

    # -- control from other threads --

    def stop(self) -> None:
        self._stop_requested.set()

    def abort(self, reason: str) -> None:
        """Stop at once, without uploads: the local cloud is going down."""
        self._abort_reason = reason
        self._stop_requested.set()
        for running in list(self._running):
            if running.process.poll() is None:
                running.process.kill()

    # -- the job --

    def execute(self) -> Outcome:
        try:
            return self._execute()
        except JobFailed as failure:
            self._kill_all()
            return self._failed(str(failure))
        except Exception as exc:  # an error of the local cloud's own, reported on the job, never raised
            self._kill_all()
            return self._failed(f"InternalServerError: the local cloud could not run the job: {exc!r}")
        finally:
            self.observer.flush()
            shutil.rmtree(self.work_dir / "data", ignore_errors=True)

    def _execute(self) -> Outcome:
        gpus = sum(len(h.gpus) for h in self.hosts)
        self.observer.log(
            self.hosts[0].name,
            f"[labcloud] {self.spec.instance_count} x {self.spec.instance_type} simulated: "
            f"{len(self.hosts)} process(es) on this machine ({os.cpu_count()} CPUs, {gpus} GPUs).",
        )
        for note in self.spec.notes:
            self.observer.log(self.hosts[0].name, note)
        self.observer.secondary_status("Downloading", "Downloading input data")
        self._training_start = time.time()
        entry_point = self._download_code()
        channel_dirs = self._download_channels()
        attempt = 0
        while True:
            if self._stop_requested.is_set():
                ended = "stopped"
                break
            self._prepare_hosts()
            self.observer.secondary_status("Training", "Training image download completed. Training in progress.")
            ended = self._run_attempt(entry_point, channel_dirs, attempt)
            if ended != "interrupted":
                break
            attempt += 1
            self.observer.secondary_status(
                "Restarting", "Restarting the training job on new spot capacity, from its last checkpoint"
            )
        if self._abort_reason:
            return self._failed(self._abort_reason)
        if ended == "failed":
            return self._failed(self._failure_reason())
        return self._finish(ended)

    def _download_code(self) -> list[str]:
        hps = self.spec.decoded_hyperparameters
        program, archive = hps.get("sagemaker_program"), hps.get("sagemaker_submit_directory")
        if not program or not archive:
            raise JobFailed(
                "ClientError: the local cloud runs script-mode jobs (an estimator with entry_point), "
                "not training images; no sagemaker_program/sagemaker_submit_directory hyperparameters were given."
            )
        bucket, key = split_s3_uri(str(archive))
        self.code_dir.mkdir(parents=True, exist_ok=True)
        tar_path = self.work_dir / "sourcedir.tar.gz"
        try:
            self.s3.download_file(bucket, key, str(tar_path))
        except Exception as exc:
            raise JobFailed(f"ClientError: could not download the source archive {archive}: {exc}") from exc
        with tarfile.open(tar_path) as tar:
            tar.extractall(self.code_dir, filter="data")
        if not (self.code_dir / str(program)).is_file():
            raise JobFailed(f"ClientError: the source archive {archive} has no entry point {program!r}.")
        if (self.code_dir / "requirements.txt").exists():
            self.observer.log(
                self.hosts[0].name,
                "[labcloud] requirements.txt is not installed on the local cloud (no network): "
                "the script runs with the course's environment.",
            )
        return _interpreter(str(program))

    def _download_channels(self) -> dict[str, dict[str, Path]]:
        """channel -> host -> folder. Replicated channels are downloaded once and shared by the hosts."""
        folders: dict[str, dict[str, Path]] = {}
        for channel in self.spec.channels:
            if channel.sharded:
                folders[channel.name] = {h.name: h.channel_dir(channel.name) for h in self.hosts}
                counts = [
                    self._download(channel, h.channel_dir(channel.name), (h.rank, len(self.hosts))) for h in self.hosts
                ]
                count = sum(counts)
            else:
                shared = self.work_dir / "data" / channel.name
                folders[channel.name] = {h.name: shared for h in self.hosts}
                count = self._download(channel, shared, (0, 1))
            if count == 0:
                raise JobFailed(
                    f'ClientError: No S3 objects found under S3 URL "{channel.s3_uri}" given in '
                    f"input data source. Please ensure that the bucket exists in the selected region "
                    f"({self.spec.region}), that objects exist under that S3 prefix, and that the "
                    f"role has permission to read them."
                )
        return folders

    def _download(self, channel: Channel, folder: Path, share: tuple[int, int]) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return download_prefix(self.s3, channel.s3_uri, folder, share)
        except JobFailed:
            raise
        except Exception as exc:
            raise JobFailed(
                f"ClientError: Data download failed: channel {channel.name!r} ({channel.s3_uri}): {exc}"
            ) from exc

    def _prepare_hosts(self) -> None:
        for host in self.hosts:
            host.reset()
            if self.checkpoints:
                self.checkpoints.download(host.checkpoint_dir)

    def _run_attempt(self, entry_point: list[str], channel_dirs: dict, attempt: int) -> str:
        """Start every host, supervise them; says how it ended: completed, failed, stopped, interrupted,
        MaxRuntimeExceeded or MaxWaitTimeExceeded."""
        self._start_hosts(entry_point, channel_dirs, attempt)
        started = time.monotonic()
        interrupt_at = started + self.spec.interruptions[attempt] if attempt < len(self.spec.interruptions) else None
        next_sync = started + CHECKPOINT_SYNC_S
        while True:
            self.observer.flush()
            codes = [r.process.poll() for r in self._running]
            if failed := [r for r, code in zip(self._running, codes, strict=True) if code not in (None, 0)]:
                self._first_failure = failed[0]  # before the others are stopped, which fails them too
                if any(code is not None and code < 0 for code in codes):
                    # Killed by a signal the run did not send: the local cloud signals its whole process group
                    # when it stops, so give its shutdown a moment to say so (abort) before calling it a failure.
                    self._stop_requested.wait(0.5)
                self._stop_processes()
                return "failed"
            if all(code == 0 for code in codes):
                self._join_readers()
                return "completed"
            now = time.monotonic()
            if ended := self._deadline_reached(now, interrupt_at):
                self._sync_checkpoints()
                self._stop_processes()
                self._sync_checkpoints()
                return ended
            if now >= next_sync:
                self._sync_checkpoints()
                next_sync = now + CHECKPOINT_SYNC_S
            self._stop_requested.wait(TICK_S)

    def _deadline_reached(self, now: float, interrupt_at: float | None) -> str | None:
        elapsed = time.time() - (self._training_start or time.time())
        if self._stop_requested.is_set():
            if not self._abort_reason:
                self.observer.secondary_status("Stopping", "Stopping the training job")
            return "stopped"
        if self.spec.max_runtime_s and elapsed >= self.spec.max_runtime_s:
            return "MaxRuntimeExceeded"
        if self.spec.max_wait_s and elapsed >= self.spec.max_wait_s:
            return "MaxWaitTimeExceeded"
        if interrupt_at is not None and now >= interrupt_at:
            self.observer.secondary_status(
                "Interrupted",
                f"The spot instances were reclaimed (simulated by the {INTERRUPT_TAG} tag); "
                "checkpoints were saved to S3",
            )
            for host in self.hosts:
                self.observer.log(host.name, "[labcloud] spot interruption: the instance is being reclaimed.")
            return "interrupted"
        return None

    def _start_hosts(self, entry_point: list[str], channel_dirs: dict, attempt: int) -> None:
        args = to_cmd_args(self.spec.user_hyperparameters)
        command = [*entry_point, *args]
        master_port = _free_port() if self.spec.distributed else 0
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SM_", "LABCLOUD_"))}
        cpu_share = max(1, (os.cpu_count() or 1) // len(self.hosts))
        self._running = []
        for host in self.hosts:
            env = {**base, **self.script_environment}
            env.update(
                container_environment(
                    self.spec, host, {n: d[host.name] for n, d in channel_dirs.items()}, self.code_dir
                )
            )
            if len(self.hosts) > 1:
                env.setdefault("OMP_NUM_THREADS", str(cpu_share))  # as torchrun does: no oversubscription
            if self.spec.distributed:
                env.update(distributed_environment(host, len(self.hosts), master_port, attempt))
            if host.rank == 0:
                self.observer.log(host.name, "Invoking script with the following command:")
                self.observer.log(host.name, " ".join([Path(command[0]).name, *command[1:]]))
            process = self.processes.spawn(
                command,
                cwd=self.code_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self._running.append(self._watch(host, process, command))

    def _watch(self, host: Host, process: subprocess.Popen, command: list[str]) -> _Running:
        running = _Running(host, process, command)
        for pipe, tail in ((process.stdout, None), (process.stderr, running.stderr_tail)):
            reader = threading.Thread(
                target=self._read, args=(host.name, pipe, tail), name=f"{self.spec.job_name}-{host.name}", daemon=True
            )
            reader.start()
            running.readers.append(reader)
        return running

    def _read(self, host: str, pipe, tail: deque | None) -> None:
        with pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.observer.log(host, line)
                if tail is not None:
                    tail.append(line)

    def _join_readers(self) -> None:
        deadline = time.monotonic() + 2.0  # a grandchild may hold a pipe open: never wait on it forever
        for running in self._running:
            for reader in running.readers:
                reader.join(max(0.0, deadline - time.monotonic()))

    def _stop_processes(self) -> None:
        alive = [r.process for r in self._running if r.process.poll() is None]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in alive:
            self.processes.stop(process, timeout=max(0.1, deadline - time.monotonic()))
        self._join_readers()

    def _kill_all(self) -> None:
        for running in self._running:
            if running.process.poll() is None:
                running.process.kill()
        self._join_readers()

    def _sync_checkpoints(self) -> None:
        if self.checkpoints:
            self.checkpoints.upload_changes([h.checkpoint_dir for h in self.hosts])

    # -- endings --

    def _failure_reason(self) -> str:
        failed = self._first_failure
        failure_file = failed.host.output_dir / "failure"
        if failure_file.is_file():  # SageMaker's convention: a script may explain its failure there
            return failure_file.read_text(errors="replace")[:FAILURE_REASON_MAX]
        code = failed.process.returncode
        command = " ".join(failed.command)
        head = f'AlgorithmError: ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "'
        tail = f'"\nCommand "{command}", exit code: {code}'
        message = "\n".join(failed.stderr_tail)
        room = FAILURE_REASON_MAX - len(head) - len(tail)
        if len(message) > room:
            message = message[len(message) - room :] if room > 0 else ""
        return (head + message + tail)[:FAILURE_REASON_MAX]

    def _failed(self, reason: str) -> Outcome:
        self.observer.secondary_status("Failed", "Training job failed")
        for host in self.hosts[:1]:
            self.observer.log(host.name, reason)
        return Outcome(
            status="Failed",
            secondary_status="Failed",
            message="Training job failed",
            failure_reason=reason,
            training_start=self._training_start,
            training_end=time.time(),
        )

    def _finish(self, ended: str) -> Outcome:
        self.observer.secondary_status("Uploading", "Uploading generated training model")
        self._sync_checkpoints()
        self.hosts[0].model_dir.mkdir(parents=True, exist_ok=True)  # stopped before the hosts were prepared
        model_uri = self._upload(self.hosts[0].model_dir, self.spec.model_artifact_uri)
        output_data = self.hosts[0].output_dir / "data"
        if output_data.is_dir() and any(output_data.iterdir()):
            self._upload(output_data, self.spec.output_artifact_uri)
        status, secondary, message = {
            "completed": ("Completed", "Completed", "Training job completed"),
            "stopped": ("Stopped", "Stopped", "The training job was stopped"),
            "MaxRuntimeExceeded": ("Stopped", "MaxRuntimeExceeded", "Training job ran past MaxRuntimeInSeconds"),
            "MaxWaitTimeExceeded": ("Stopped", "MaxWaitTimeExceeded", "Training job ran past MaxWaitTimeInSeconds"),
        }[ended]
        return Outcome(
            status=status,
            secondary_status=secondary,
            message=message,
            model_artifacts=model_uri,
            training_start=self._training_start,
            training_end=time.time(),
        )

    def _upload(self, folder: Path, uri: str) -> str:
        archive = pack(folder, self.work_dir / Path(uri).name)
        bucket, key = split_s3_uri(uri)
        try:
            self.s3.upload_file(str(archive), bucket, key)
        except Exception as exc:
            raise JobFailed(f"ClientError: could not upload {uri}: {exc}") from exc
        finally:
            archive.unlink(missing_ok=True)
        return uri


def _interpreter(program: str) -> list[str]:
    """How the toolkit starts an entry point: Python files with Python, shell scripts with sh."""
    if program.endswith(".py"):
        return [sys.executable, program]
    if program.endswith(".sh"):
        return ["/bin/sh", program]
    return [f"./{program}"]


__all__ = [
    "INTERRUPT_TAG",
    "CheckpointSync",
    "JobFailed",
    "Outcome",
    "TrainingRun",
    "TrainingSpec",
    "container_environment",
    "distributed_environment",
    "to_cmd_args",
    "visible_gpus",
]
