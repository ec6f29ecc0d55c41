"""Start, find, check and stop the local cloud process from the outside (CLI, notebooks, tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import state_home
from .processes import reap_left_behind
from .server import DEFAULT_PORT
from .state import ServerInfo, StateDir

# Loopback must never go through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalCloudError(RuntimeError):
    """The local cloud could not be started, found or stopped; the message says why and what to do."""


def health(info: ServerInfo, timeout: float = 1.0) -> dict | None:
    """The server's health document, or None when nothing healthy answers at `info.url`."""
    try:
        with _opener.open(f"{info.url}/_labcloud/health", timeout=timeout) as response:
            payload = json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    # A different process may have taken the port since server.json was written.
    return payload if payload.get("pid") == info.pid else None


def status(state_dir: Path | None = None) -> ServerInfo | None:
    """The running, healthy local cloud for this state folder, or None."""
    info = StateDir(state_dir or state_home()).read_info()
    return info if info and health(info) else None


def start(state_dir: Path | None = None, port: int | None = None, timeout: float = 30.0) -> ServerInfo:
    """Start the local cloud for `state_dir` unless it already runs; wait until it answers its health check."""
    state = StateDir(state_dir or state_home())
    if running := status(state.path):
        return running
    _stop_stale(state)
    if port is None:
        port = int(os.environ.get("LABCLOUD_PORT", DEFAULT_PORT))
    command = [
        sys.executable,
        "-m",
        "labcloud.localcloud.server",
        "--state",
        str(state.path),
        "--port",
        str(port),
    ]
    try:
        state.path.mkdir(parents=True, exist_ok=True)
        with open(state.log_file, "ab") as log:
            # A session of its own: `stop` ends the server and every child it started with one signal.
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    except OSError as exc:
        raise LocalCloudError(
            f"Cannot use {state.path} as the local cloud's state folder ({exc}). "
            "Set LABCLOUD_HOME to a folder you can write to."
        ) from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalCloudError(
                f"The local cloud exited at start (code {process.returncode}). Its log ({state.log_file}):\n"
                + state.log_tail()
            )
        info = state.read_info()
        if info and info.pid == process.pid and health(info, timeout=0.5):
            return info
        time.sleep(0.05)
    _kill_group(process.pid, signal.SIGKILL)
    raise LocalCloudError(
        f"The local cloud did not answer within {timeout:.0f} s. Its log ({state.log_file}):\n" + state.log_tail()
    )


@contextlib.contextmanager
def scratch_cloud(prefix: str = "labcloud-scratch-"):
    """A local cloud of its own, on a free port with a temporary state folder, for tests and reference runs.

    LABCLOUD_HOME and LABCLOUD_PORT point at it while the block runs, so notebook kernels started inside
    inherit it and never touch the learner's cloud; it is stopped and its folder removed afterwards.
    """
    import shutil
    import tempfile

    saved = {name: os.environ.get(name) for name in ("LABCLOUD_HOME", "LABCLOUD_PORT")}
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(LABCLOUD_HOME=str(home), LABCLOUD_PORT="0")
    try:
        yield start(home)
    finally:
        stop(home)
        shutil.rmtree(home, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop(state_dir: Path | None = None, timeout: float = 15.0) -> bool:
    """Stop the local cloud and all its children, saving its state first. False when none was running (what a
    crashed one left running is stopped then)."""
    state = StateDir(state_dir or state_home())
    info = state.read_info()
    if info is None or not _alive(info.pid):
        state.clear_info()
        reap_left_behind(state.path)
        return False
    _kill_group(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_group(info.pid, signal.SIGKILL)  # children that ignored SIGTERM, or a server that hung
    state.clear_info(info.pid)
    return True


def _stop_stale(state: StateDir) -> None:
    """A server.json whose process is alive but unhealthy (hung) is stopped before a new start."""
    info = state.read_info()
    if info is not None:
        if _alive(info.pid):
            stop(state.path, timeout=5)
        state.clear_info(info.pid)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
