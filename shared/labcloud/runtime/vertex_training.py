"""One Vertex AI custom training run on this machine: a `python_package_spec` run as Vertex's training container does.

The SDK's `CustomTrainingJob.run` packages the learner's script as an sdist (`aiplatform_custom_trainer_script`,
module `.task`) in the staging bucket and names it in the pipeline's worker pool specs. `TrainingRun`:

1. copies each `package_uris` sdist from the local Cloud Storage and unpacks it into the job's folder (nothing is
   installed and nothing is downloaded: the folder goes on PYTHONPATH);
2. checks the package's requirements (`install_requires`, which the SDK fills from `requirements=[...]`) against
   the course environment. Vertex would pip-install them; the local cloud cannot download packages, so a
   requirement that is not installed FAILS the job before it starts, with a message naming each one (a job that
   silently ran without them would fail later, further from the cause, or not at all where the cloud would). A
   requirement installed at a version outside its specifier only gets a warning in the job log;
3. runs `python -m <python_module> <args>` once per replica of every worker pool (at most MAX_LOCAL_PROCESSES),
   with Vertex's environment: AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (gs:// URIs under
   the base output directory, which scripts write with google-cloud-storage, wired to the local cloud here),
   CLUSTER_SPEC, TF_CONFIG for TensorFlow images, MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK for PyTorch images,
   CLOUD_ML_PROJECT_ID/REGION/JOB_ID and the spec's own `env`. Every replica's output goes to the job log,
   prefixed with its name;
4. succeeds when every replica exits 0; otherwise it fails like Vertex ("The replica workerpool0-0 exited with a
   non-zero status of 1") with the tail of the log.

Machine types and accelerators are simulated: a replica "on" a2-highgpu-8g with 8 A100s runs on this machine
(with whatever GPU it has). Only the python_package_spec form runs; a `container_spec` (custom container) is
refused with a clear error, since there is no container runtime.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..localcloud.gcp.storage_store import parse_gs_url

MAX_LOCAL_PROCESSES = 8
LOG_TAIL_LINES = 30
PYTORCH_MASTER_PORT = 29500


class JobFailed(Exception):
    """The job cannot run or did not succeed; the message is the pipeline's error message."""


class JobCancelled(Exception):
    pass


@dataclass
class Replica:
    pool: int
    index: int
    spec: dict  # the worker pool spec (snake_case keys)

    @property
    def name(self) -> str:
        return f"workerpool{self.pool}-{self.index}"


@dataclass
class TrainingSpec:
    """What the run needs from the pipeline: its worker pools, where outputs go, who and where it runs."""

    job_id: str
    project: str
    location: str
    worker_pools: list[dict]  # snake_case keys, as the SDK writes the trainingTaskInputs struct
    base_output_dir: str  # gs://...
    timeout_s: float | None = None

    @property
    def model_dir(self) -> str:
        return self.base_output_dir.rstrip("/") + "/model/"

    @property
    def checkpoint_dir(self) -> str:
        return self.base_output_dir.rstrip("/") + "/checkpoints/"

    @property
    def tensorboard_dir(self) -> str:
        return self.base_output_dir.rstrip("/") + "/logs/"

    def replicas(self) -> list[Replica]:
        replicas = [
            Replica(pool, index, spec)
            for pool, spec in enumerate(self.worker_pools)
            if spec
            for index in range(int(spec.get("replica_count") or 1))
        ]
        if len(replicas) > MAX_LOCAL_PROCESSES:
            raise JobFailed(
                f"This job asks for {len(replicas)} replicas; the local cloud runs at most {MAX_LOCAL_PROCESSES}."
            )
        return replicas


def snake(spec):
    """A struct with camelCase keys (REST) turned into the SDK's snake_case ones (the API accepts both)."""
    if isinstance(spec, dict):
        return {_snake_key(k): (v if k in ("env",) else snake(v)) for k, v in spec.items()}
    if isinstance(spec, list):
        return [snake(v) for v in spec]
    return spec


def _snake_key(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


@dataclass
class TrainingRun:
    """Runs one job. `read_object(bucket, name) -> Path` reads the local Cloud Storage; `spawn` starts a child."""

    spec: TrainingSpec
    folder: Path
    local_url: str
    read_object: Callable[[str, str], Path]
    spawn: Callable[..., subprocess.Popen]
    stop: Callable[[subprocess.Popen], None]
    log_path: Path = field(init=False)
    tail: deque = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    cancelled: threading.Event = field(default_factory=threading.Event)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "job.log"
        self._log_lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._log_lock, self.log_path.open("a") as f:
            f.write(line + "\n")
        self.tail.append(line)

    def prepare(self) -> dict[str, Path]:
        """Fetch, unpack and check each worker pool's package; the package root per pool."""
        roots = {}
        for pool, spec in enumerate(self.spec.worker_pools):
            if not spec:
                continue
            if "python_package_spec" not in spec:
                raise JobFailed(
                    f"workerPoolSpecs[{pool}] has no pythonPackageSpec: the local cloud runs Python packages only "
                    "(a custom container needs a container runtime)."
                )
            roots[pool] = self._unpack(pool, spec["python_package_spec"])
            self._check_requirements(roots[pool])
        return roots

    def run(self) -> None:
        """Run every replica to the end; JobFailed or JobCancelled when they do not all succeed."""
        try:
            roots = self.prepare()
            replicas = self.spec.replicas()
        except JobFailed as failure:  # in the job log too, where a learner looks for why nothing ran
            self.log(f"[labcloud] the job cannot start: {failure}")
            raise
        self._describe(replicas)
        started = [(replica, self._start(replica, roots[replica.pool], replicas)) for replica in replicas]
        readers = [self._follow(replica, process) for replica, process in started]
        self._wait(started)
        for reader in readers:
            reader.join(timeout=5)
        if self.cancelled.is_set():
            raise JobCancelled()
        for replica, process in started:
            if process.returncode != 0:
                raise JobFailed(
                    f"The replica {replica.name} exited with a non-zero status of {process.returncode}. "
                    f"The job log ({self.log_path}) ends:\n" + "\n".join(self.tail)
                )

    def cancel(self) -> None:
        self.cancelled.set()
        for process in self.processes:
            self.stop(process)

    # ---- packages and requirements

    def _unpack(self, pool: int, package_spec: dict) -> Path:
        root = self.folder / f"package-{pool}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        uris = package_spec.get("package_uris") or []
        if not uris or not package_spec.get("python_module"):
            raise JobFailed("pythonPackageSpec needs packageUris and pythonModule.")
        for uri in uris:
            bucket, name = parse_gs_url(uri)
            try:
                archive = self.read_object(bucket, name)
            except Exception as exc:  # the store's NotFound, in Google's words
                raise JobFailed(f"Cannot read the training package {uri}: {getattr(exc, 'message', exc)}") from None
            self.log(f"[labcloud] unpacking {uri}")
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
        return _source_root(root)

    def _check_requirements(self, root: Path) -> None:
        from packaging.requirements import InvalidRequirement, Requirement

        missing = []
        for line in _requirements(root):
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                raise JobFailed(f"Invalid requirement in the training package: {line!r}") from None
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            try:
                installed = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(line)
                continue
            if requirement.specifier and installed not in requirement.specifier:
                self.log(f"[labcloud] warning: {requirement.name} {installed} is installed, not {requirement}.")
        if missing:
            raise JobFailed(
                "These requirements are not installed in the course environment, and the local cloud cannot "
                f"download packages: {', '.join(missing)}. Install them into the environment (pip install ...) "
                "or remove them from requirements=[...]."
            )

    # ---- processes

    def _describe(self, replicas: list[Replica]) -> None:
        for pool, spec in enumerate(self.spec.worker_pools):
            if spec:
                machine = spec.get("machine_spec") or {}
                count = machine.get("accelerator_count") or 0
                accelerator = f" + {count} x {machine.get('accelerator_type')}" if count else ""
                self.log(
                    f"[labcloud] workerpool{pool}: {spec.get('replica_count') or 1} x "
                    f"{machine.get('machine_type', 'n1-standard-4')}{accelerator}, simulated: it runs on this machine."
                )

    def _start(self, replica: Replica, root: Path, replicas: list[Replica]) -> subprocess.Popen:
        package = replica.spec["python_package_spec"]
        command = [sys.executable, "-m", package["python_module"], *[str(a) for a in package.get("args") or []]]
        self.log(f"[labcloud] {replica.name}: {' '.join(command[1:])}")
        process = self.spawn(
            command,
            cwd=root,
            env=self._environment(replica, root, replicas),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def _environment(self, replica: Replica, root: Path, replicas: list[Replica]) -> dict[str, str]:
        package = replica.spec["python_package_spec"]
        image = package.get("executor_image_uri") or ""
        env = {
            **os.environ,
            **self._gcs_wiring(),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "AIP_MODEL_DIR": self.spec.model_dir,
            "AIP_CHECKPOINT_DIR": self.spec.checkpoint_dir,
            "AIP_TENSORBOARD_LOG_DIR": self.spec.tensorboard_dir,
            "CLOUD_ML_PROJECT_ID": self.spec.project,
            "CLOUD_ML_REGION": self.spec.location,
            "CLOUD_ML_JOB_ID": self.spec.job_id,
            "CLUSTER_SPEC": json.dumps(cluster_spec(replicas, replica)),
        }
        if "tf" in image.rsplit("/", 1)[-1] or "tensorflow" in image:
            env["TF_CONFIG"] = json.dumps(tf_config(replicas, replica, self.spec.job_id))
        if "pytorch" in image:
            env.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(PYTORCH_MASTER_PORT),
                WORLD_SIZE=str(len(replicas)),
                RANK=str(replicas.index(replica)),
            )
        env.update({e["name"]: str(e.get("value", "")) for e in package.get("env") or [] if "name" in e})
        return env

    def _gcs_wiring(self) -> dict[str, str]:
        """google-cloud-storage in the script reaches the local cloud, with the local credentials."""
        from ..localcloud.gcp.gateway import PROJECT
        from ..wiring.gcp import local_credentials

        credentials = self.folder / "gcp-credentials.json"
        credentials.write_text(json.dumps(local_credentials(self.local_url)))
        return {
            "STORAGE_EMULATOR_HOST": self.local_url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": os.environ.get("GOOGLE_CLOUD_PROJECT", PROJECT),
        }

    def _follow(self, replica: Replica, process: subprocess.Popen) -> threading.Thread:
        def read():
            for raw in iter(process.stdout.readline, b""):
                self.log(f"{replica.name}: {raw.decode('utf-8', 'replace').rstrip()}")

        thread = threading.Thread(target=read, name=f"log {replica.name}", daemon=True)
        thread.start()
        return thread

    def _wait(self, started: list[tuple[Replica, subprocess.Popen]]) -> None:
        """Until all exit; one failing (or the timeout) stops the others, as Vertex ends a failed job."""
        deadline = time.monotonic() + self.spec.timeout_s if self.spec.timeout_s else None
        while any(process.poll() is None for _, process in started):
            failed = any(process.poll() not in (None, 0) for _, process in started)
            if failed or self.cancelled.is_set():
                break
            if deadline and time.monotonic() > deadline:
                self.log(f"[labcloud] the job ran past its timeout of {self.spec.timeout_s:.0f} s: stopping it.")
                break
            time.sleep(0.05)
        for _, process in started:
            self.stop(process)


def cluster_spec(replicas: list[Replica], replica: Replica) -> dict:
    """Vertex's CLUSTER_SPEC: every pool's replica addresses (loopback ports here) and this replica's task."""
    cluster: dict[str, list[str]] = {}
    for other in replicas:
        cluster.setdefault(f"workerpool{other.pool}", []).append(f"127.0.0.1:{2222 + replicas.index(other)}")
    return {
        "cluster": cluster,
        "environment": "cloud",
        "task": {"type": f"workerpool{replica.pool}", "index": replica.index},
    }


_TF_ROLES = ("chief", "worker", "ps", "evaluator")


def tf_config(replicas: list[Replica], replica: Replica, job_id: str) -> dict:
    """TF_CONFIG as Vertex sets it for TensorFlow images: pool 0 is the chief, 1 workers, 2 ps, 3 evaluator."""
    cluster: dict[str, list[str]] = {}
    for other in replicas:
        cluster.setdefault(_TF_ROLES[other.pool], []).append(f"127.0.0.1:{2222 + replicas.index(other)}")
    return {
        "cluster": cluster,
        "task": {"type": _TF_ROLES[replica.pool], "index": replica.index, "trial": ""},
        "environment": "cloud",
        "job": {"job_name": job_id},
    }


def _source_root(root: Path) -> Path:
    """The unpacked sdist's top folder (`aiplatform_custom_trainer_script-0.1/`), where its modules are."""
    entries = [p for p in root.iterdir() if p.is_dir()]
    return entries[0] if len(entries) == 1 and not (root / "setup.py").exists() else root


def _requirements(root: Path) -> list[str]:
    """The package's install_requires, from the sdist's egg-info (setuptools writes `requires.txt` there)."""
    lines = []
    for requires in root.glob("*.egg-info/requires.txt"):
        for line in requires.read_text().splitlines():
            line = line.strip()
            if line.startswith("["):  # extras and conditional sections follow: not installed by default
                break
            if line and not line.startswith("#"):
                lines.append(line)
    return lines
