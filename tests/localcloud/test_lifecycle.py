"""The local cloud process: start, health, stop, port conflicts, stale state files and restarts."""

import os
import socket
import time

import pytest

from labcloud.localcloud import control
from labcloud.localcloud.state import ServerInfo, StateDir


def test_start_is_healthy_on_loopback_and_idempotent(own_cloud):
    assert own_cloud.host == "127.0.0.1"
    health = control.health(own_cloud)
    assert health["status"] == "ok" and health["pid"] == own_cloud.pid
    again = control.start(own_cloud.state_dir)
    assert again.pid == own_cloud.pid  # found running, not started twice


def test_stop_ends_the_process_and_status_says_so(tmp_path):
    info = control.start(tmp_path, port=0)
    assert control.status(tmp_path) is not None
    assert control.stop(tmp_path) is True
    assert control.status(tmp_path) is None
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    assert not StateDir(tmp_path).info_file.exists()
    assert control.stop(tmp_path) is False  # nothing to stop


def test_port_conflict_takes_a_free_port(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        info = control.start(tmp_path, port=taken)
        try:
            assert info.port != taken
            assert control.health(info)["status"] == "ok"
        finally:
            control.stop(tmp_path)


def test_stale_server_file_is_ignored(tmp_path):
    # A server.json left by a crashed process (pid that does not exist) must not fool start/status.
    StateDir(tmp_path).write_info(ServerInfo(999_999, "127.0.0.1", 1, str(tmp_path), time.time(), "0"))
    assert control.status(tmp_path) is None
    info = control.start(tmp_path, port=0)
    try:
        assert info.pid != 999_999 and control.health(info)
    finally:
        control.stop(tmp_path)


def test_a_server_that_cannot_start_fails_fast_with_its_log(tmp_path):
    (tmp_path / "aws").write_text("a file where the server keeps its AWS state folder")
    started = time.monotonic()
    with pytest.raises(control.LocalCloudError, match="exited at start") as error:
        control.start(tmp_path, port=0)
    assert "aws" in str(error.value)  # the log's last lines say what went wrong
    assert time.monotonic() - started < 15


def test_an_unusable_state_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    with pytest.raises(control.LocalCloudError, match="LABCLOUD_HOME"):
        control.start(blocker / "state", port=0)
