"""The processes the local cloud starts for learners' code: training scripts, model servers, Lambda workers.

They stay in the local cloud's process group (no new session), so `labcloud down`, which signals the group,
stops them with it; `stop_all` stops them on an orderly shutdown too.
"""

from __future__ import annotations

import logging
import subprocess
import threading

log = logging.getLogger(__name__)


class ChildProcesses:
    def __init__(self):
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()

    def spawn(self, args: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start a child (Popen arguments as usual); it is stopped with the local cloud."""
        process = subprocess.Popen(args, **popen_kwargs)
        with self._lock:
            self._running = {p for p in self._running if p.poll() is None}
            self._running.add(process)
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

    def stop_all(self, timeout: float = 5.0) -> None:
        with self._lock:
            running = list(self._running)
        for process in running:
            self.stop(process, timeout)
        if running:
            log.info("stopped %d child process(es)", len(running))
