import os

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


@pytest.fixture
def saved_environment():
    """os.environ as it was before the test (connect() writes it), put back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def connection(saved_environment):
    """This process's clients pointed at the session's local cloud, as a notebook does; the environment is restored."""
    import labcloud

    return labcloud.connect("local")


@pytest.fixture
def vertex(connection):
    """The Vertex SDK wired the way a notebook is, after the learner's own `init`; its global config is restored."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    aiplatform.init(project="my-project", location="us-central1")  # the learner's own init keeps the wiring
    yield aiplatform
    initializer.global_config._api_endpoint = None
    initializer.global_config._api_transport = None


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """No AWS credentials anywhere botocore looks: no AWS_* variables, no config files, no instance metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # botocore must not probe the instance metadata
    monkeypatch.setenv("BOTO_CONFIG", str(tmp_path / "no-boto-config"))
