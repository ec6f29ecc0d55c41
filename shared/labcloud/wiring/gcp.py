"""Point the unmodified Google Cloud clients at the local cloud, inside this kernel.

- Credentials: an `authorized_user` credentials file holding a local access token that expires in 2099, so every
  client's normal `google.auth.default()` works and never needs a refresh (google-auth always sends the refresh
  of such credentials to Google's own token endpoint, whatever the file says); a default project.
- Cloud Storage: `STORAGE_EMULATOR_HOST`, which google-cloud-storage honours.
- BigQuery and Vertex AI: see `_wire_bigquery` and `_wire_vertex`.
- Failing fast: the Google clients retry a refused connection for minutes; to the local cloud, it fails at once
  with `LocalCloudUnreachable` (see `_fail_fast_when_down`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from ..localcloud.gcp.gateway import LOCAL_TOKEN, PROJECT, TOKEN_PATH
from .aws import FastTime, is_local
from .on_import import after_import

CREDENTIALS_FILE = "gcp-credentials.json"
DEFAULT_STAGING_BUCKET = "labcloud-staging"
FAST_POLL_S = 0.1  # the first and shortest wait between two polls of a Vertex operation or training pipeline
WIRED_VARIABLES = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
)


def wire(url: str, state_dir: Path) -> dict[str, str]:
    """Install the kernel-side wiring; returns the environment variables it set."""
    credentials = Path(state_dir) / CREDENTIALS_FILE
    _write_if_changed(credentials, json.dumps(local_credentials(url), indent=2))
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "STORAGE_EMULATOR_HOST": url,
    }
    env.update(_wire_bigquery(url))
    env.update(_wire_vertex(url))
    after_import("google.auth.transport.requests", _fail_fast_when_down)
    os.environ.update(env)
    return env


class LocalCloudUnreachable(RuntimeError):
    """The local cloud does not answer. A RuntimeError: no Google client retries it (they retry ConnectionError)."""


def _fail_fast_when_down(module) -> None:
    """Every Google client sends its requests through google-auth's AuthorizedSession: a refused connection to the
    local cloud becomes LocalCloudUnreachable, with what to do, instead of minutes of silent retries."""
    import requests

    original = module.AuthorizedSession.request
    if getattr(original, "labcloud_fail_fast", False):
        return

    def request(self, method, url, *args, **kwargs):
        try:
            return original(self, method, url, *args, **kwargs)
        except requests.exceptions.ConnectionError:
            local = os.environ.get("LABCLOUD_URL")
            if local and str(url).startswith(local):
                raise LocalCloudUnreachable(
                    f"the local cloud at {local} does not answer. Start it again with labcloud.connect('local') "
                    "(or `labcloud up` in a terminal); what it stored is kept."
                ) from None
            raise

    request.labcloud_fail_fast = True
    module.AuthorizedSession.request = request


def local_credentials(url: str) -> dict:
    """Credentials in the `authorized_user` format; token and secrets are placeholders only the local cloud takes."""
    return {
        "type": "authorized_user",
        "token": LOCAL_TOKEN,
        "expiry": "2099-01-01T00:00:00Z",
        "client_id": "labcloud-local.apps.local",
        "client_secret": "labcloud-local-only",
        "refresh_token": "labcloud-local-only",
        "token_uri": url + TOKEN_PATH,  # ignored by google-auth today; kept so the file says where it belongs
        "quota_project_id": PROJECT,
    }


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _wire_bigquery(url: str) -> dict[str, str]:
    """google-cloud-bigquery sends every request to BIGQUERY_EMULATOR_HOST (`{host}/bigquery/v2/...`, uploads to
    `{host}/upload/bigquery/v2/...`) when it is set; credentials stay the local ones. The local cloud serves no
    BigQuery Storage Read API, so the client's warning that it reads results over REST is silenced."""
    warnings.filterwarnings("ignore", message="BigQuery Storage module not found")
    return {"BIGQUERY_EMULATOR_HOST": url}


def _wire_vertex(url: str) -> dict[str, str]:
    """Vertex AI (`aiplatform`, `vertexai`): its global config gets the local cloud as API endpoint, over REST (plain
    http is kept), as soon as the SDK is imported; the learner's own `aiplatform.init(project=..., location=...)`
    leaves both alone. Credentials are the local ones (GOOGLE_APPLICATION_CREDENTIALS). No variable is needed.

    - Without a staging bucket of the learner's, `gs://labcloud-staging` is the default (created on the local
      cloud when the SDK is imported); `init(staging_bucket=...)` replaces it, as on Vertex.
    - The SDK waits 5 s between two polls of a training pipeline and 1 s (growing) between two polls of an
      operation; on the local cloud jobs and deployments take seconds, so both start at FAST_POLL_S while the
      local backend is connected (LABCLOUD_FAST_POLL=0 keeps the SDK's own timing)."""
    after_import("google.cloud.aiplatform.initializer", _point_vertex_here)
    if os.environ.get("LABCLOUD_FAST_POLL", "1") != "0":
        after_import("google.cloud.aiplatform.training_jobs", _fast_pipeline_polls)
        after_import("google.api_core.operation", _fast_operation_polls)
    return {}


# What _point_vertex_here put into aiplatform's global config, so that unwire() takes back only that.
_vertex_settings: dict[str, object] = {}


def _point_vertex_here(initializer) -> None:
    """aiplatform's global config -> the local cloud (read when the SDK is imported: a later connect() may have
    started another local cloud, or connected a real one, in between)."""
    if not is_local():
        return
    local_url = os.environ["LABCLOUD_URL"]
    settings = {"_api_endpoint": local_url, "_api_transport": "rest"}
    default = f"gs://{DEFAULT_STAGING_BUCKET}"
    if initializer.global_config._staging_bucket in (None, default):  # the learner's own bucket stays
        settings["_staging_bucket"] = default
        _create_bucket(local_url, DEFAULT_STAGING_BUCKET)
    for name, value in settings.items():
        setattr(initializer.global_config, name, value)
    _vertex_settings.update(settings)


def unwire() -> None:
    """Undo what `wire` left in this process besides environment variables (which connect() puts back): aiplatform's
    global config loses the local endpoint, transport and staging bucket, and the local credentials and project it
    may have cached from the local environment; what the learner set themselves stays."""
    module = sys.modules.get("google.cloud.aiplatform.initializer")
    if module is not None:
        config = module.global_config
        for name, value in _vertex_settings.items():
            if getattr(config, name, None) == value:
                setattr(config, name, None)
        if getattr(config._credentials, "token", None) == LOCAL_TOKEN:
            config._credentials = None
        if config._project == PROJECT:
            config._project = None
    _vertex_settings.clear()


def _create_bucket(url: str, name: str) -> None:
    """Create a bucket on the local cloud unless it exists (a failure here shows up, clearly, at first use)."""
    import requests

    with contextlib.suppress(requests.RequestException):
        requests.post(
            f"{url}/storage/v1/b",
            params={"project": PROJECT},
            json={"name": name},
            headers={"Authorization": f"Bearer {LOCAL_TOKEN}"},
            timeout=10,
        )


def _fast_pipeline_polls(module) -> None:
    """training_jobs' `time` becomes one whose sleeps are short while the local backend is connected (its clock
    counts them in full, so the SDK's log lines stay as far apart as it meant)."""
    if getattr(module, "time", None) is time:
        module.time = FastTime()


def _fast_operation_polls(module) -> None:
    """Operations the Vertex SDK waits on poll from FAST_POLL_S (growing as the SDK's do) on the local cloud."""
    from google.api_core.future import polling

    original = module.from_gapic
    if getattr(original, "labcloud_fast", False):
        return
    fast = polling.DEFAULT_POLLING.with_delay(initial=FAST_POLL_S, maximum=2.0, multiplier=1.5)

    def from_gapic(operation, operations_client, result_type, grpc_metadata=None, **kwargs):
        if is_local() and "polling" not in kwargs:
            kwargs["polling"] = fast
        return original(operation, operations_client, result_type, grpc_metadata=grpc_metadata, **kwargs)

    from_gapic.labcloud_fast = True
    module.from_gapic = from_gapic
