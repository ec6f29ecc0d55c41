import pytest

from labcloud.localcloud import control


@pytest.fixture
def own_cloud(tmp_path, monkeypatch):
    """A local cloud of this test's own (fresh state folder, free port), stopped afterwards."""
    state = tmp_path / "state"
    monkeypatch.setenv("LABCLOUD_HOME", str(state))
    info = control.start(state, port=0)
    yield info
    control.stop(state)
