"""The processes the local cloud starts for learners' code: training scripts, model servers, Lambda workers, Azurite.

They stay in the local cloud's process group (no new session), so `labcloud down`, which signals the group,
stops them with it; `stop_all` stops them on an orderly shutdown too.

A local cloud that is killed (`kill -9`, a crash) cannot stop them: they keep running, and a second Azurite on the
same folder would overwrite the first one's blobs. So every child is recorded in `children.json` in the state
folder (pid and start time, which tell it from a later process that got the same pid), with the server's own pid
and start time. The next start reaps what the dead run left: its recorded children that still run, and the rest of
its process group (their own children: torchrun's workers, a job's shell command), SIGTERM first (Azurite saves
its blobs' metadata then), SIGKILL after a grace period; the server log lists them. The group is trusted only while
no other process holds the dead server's pid; the one case not caught is a reused pid whose new owner made its own
group and then died, leaving processes behind, all in the lifetime of one state folder's orphans.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

CHILDREN_FILE = "children.json"
REAP_GRACE_S = 10.0  # Azurite takes a few seconds to save and close
_SAME_START_S = 0.05  # psutil's start times of one process agree far closer than this


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _state(pid: int, started: float) -> str:
    """ "running" while `pid` is the process that started at `started`; "exited" once it ended (or is a zombie);
    "other" when the pid now belongs to a later process."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) >= _SAME_START_S:
            return "other"
        return "exited" if process.status() == psutil.STATUS_ZOMBIE else "running"
    except psutil.ZombieProcess:
        return "exited"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "exited"


class ChildRecords:
    """`children.json`: this run's server and the children it started, for the next start to reap after a crash."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / CHILDREN_FILE
        self._lock = threading.Lock()
        self._children: dict[int, dict] = {}
        self._server = {"pid": os.getpid(), "started": _start_time(os.getpid())}

    def reap_previous(self) -> list[str]:
        """Stop what the previous run left running; then this run's record starts. What was reaped, in words."""
        reaped = reap_left_behind(self.state_dir)
        with self._lock:
            self._write()
        return reaped

    def started(self, process: subprocess.Popen, args: list[str]) -> None:
        started = _start_time(process.pid)
        if started is None:  # it has already exited
            return
        with self._lock:
            self._children[process.pid] = {"started": started, "command": " ".join(map(str, args))[:300]}
            self._write()

    def ended(self, processes: list[subprocess.Popen]) -> None:
        with self._lock:
            if any(self._children.pop(p.pid, None) for p in processes):
                self._write()

    def clear(self) -> None:
        """After an orderly stop (every child stopped): the next start has nothing to look for."""
        with self._lock:
            self._children.clear()
            self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        data = {"server": self._server, "children": {str(pid): record for pid, record in self._children.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)


def reap_left_behind(state_dir: Path) -> list[str]:
    """Stop what a dead local cloud of `state_dir` left running (at the next start, or `labcloud down`)."""
    path = Path(state_dir) / CHILDREN_FILE
    try:
        previous = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        log.warning("%s is unreadable: no process of the previous run is reaped", path)
        return []
    server = previous.get("server") or {}
    if not server.get("pid") or server.get("started") is None:
        return []
    server_state = _state(server["pid"], server["started"])
    if server_state == "running":
        log.warning("the previous local cloud (pid %s) still runs: its processes are left alone", server["pid"])
        return []
    # Its process group is known to be its own unless its pid (the group's id) has gone to another process.
    reaped = _reap(_orphans(server, previous.get("children") or {}, group_is_its_own=server_state == "exited"))
    path.unlink(missing_ok=True)  # nothing of that run is left to look for
    return reaped


def _reap(orphans: list[psutil.Process], grace_s: float = REAP_GRACE_S) -> list[str]:
    """SIGTERM, and SIGKILL for those still running after `grace_s`; what was stopped, in words."""
    if not orphans:
        return []
    described = [f"pid {p.pid} ({_command(p)})" for p in orphans]
    for process in orphans:
        _signal(process.terminate)
    _, alive = psutil.wait_procs(orphans, timeout=grace_s)
    for process in alive:
        _signal(process.kill)
    psutil.wait_procs(alive, timeout=grace_s)
    log.info("reaped %d process(es) the previous run left: %s", len(described), "; ".join(described))
    return described


def _orphans(server: dict, children: dict, group_is_its_own: bool) -> list[psutil.Process]:
    """The recorded children that still run, and the other members of the dead server's process group."""
    found = {int(pid): r for pid, r in children.items() if _state(int(pid), r["started"]) == "running"}
    group = server["pid"]
    if group_is_its_own:
        for process in psutil.process_iter(["pid", "create_time", "status"]):
            if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if process.info["create_time"] >= server["started"] - _SAME_START_S:
                try:
                    if os.getpgid(process.pid) == group:
                        found.setdefault(process.pid, {})
                except (ProcessLookupError, PermissionError):
                    continue
    processes = []
    for pid in found:
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return processes


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:160] or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "exited"


def _signal(send) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        send()


class ChildProcesses:
    def __init__(self, records: ChildRecords | None = None):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._records = records

    def spawn(self, args: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start a child (Popen arguments as usual); it is stopped with the local cloud."""
        process = subprocess.Popen(args, **popen_kwargs)
        with self._lock:
            exited = [p for p in self._running if p.poll() is not None]
            self._running.difference_update(exited)
            self._running.add(process)
        if self._records is not None:
            self._records.ended(exited)
            self._records.started(process, args)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 5.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with self._lock:
            self._running.discard(process)
        if self._records is not None:
            self._records.ended([process])

    def stop_all(self, timeout: float = 5.0) -> None:
        with self._lock:
            running = list(self._running)
        for process in running:
            self.stop(process, timeout)
        if running:
            log.info("stopped %d child process(es)", len(running))
