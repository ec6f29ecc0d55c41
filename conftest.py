"""Test-session wiring shared by the unit tests and the nbval notebook tests.

Every test session gets its own local cloud on a free port with a temporary state folder, never the
learner's: `LABCLOUD_HOME` points there before any notebook kernel starts, so the kernels inherit it.
"""

from labcloud.localcloud import control

_session_cloud = None


def pytest_configure(config):
    global _session_cloud
    if getattr(config, "workerinput", None) is not None or _session_cloud is not None:
        return
    _session_cloud = control.scratch_cloud(prefix="labcloud-test-")
    _session_cloud.__enter__()


def pytest_unconfigure(config):
    global _session_cloud
    if _session_cloud is not None:
        _session_cloud.__exit__(None, None, None)
        _session_cloud = None
