"""Test-session wiring shared by the unit tests and the nbval notebook tests.

Every test session gets its own local cloud on a free port with a temporary state folder, never the
learner's: `LABCLOUD_HOME` points there before any notebook kernel starts, so the kernels inherit it.
"""

import os
import shutil
import tempfile

from labcloud.localcloud import control

_session_home = None


def pytest_configure(config):
    global _session_home
    if getattr(config, "workerinput", None) is not None or _session_home is not None:
        return
    _session_home = tempfile.mkdtemp(prefix="labcloud-test-")
    os.environ["LABCLOUD_HOME"] = _session_home
    os.environ["LABCLOUD_PORT"] = "0"  # any free port
    os.environ.setdefault("MPLBACKEND", "Agg")
    control.start()


def pytest_unconfigure(config):
    if _session_home is not None:
        control.stop()
        shutil.rmtree(_session_home, ignore_errors=True)
