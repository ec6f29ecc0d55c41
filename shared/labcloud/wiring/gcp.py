"""Point the unmodified Google Cloud clients at the local cloud, inside this kernel.

- Credentials: an `authorized_user` credentials file holding a local access token that expires in 2099, so every
  client's normal `google.auth.default()` works and never needs a refresh (google-auth always sends the refresh
  of such credentials to Google's own token endpoint, whatever the file says); a default project.
- Cloud Storage: `STORAGE_EMULATOR_HOST`, which google-cloud-storage honours.
- BigQuery and Vertex AI: see `_wire_bigquery` and `_wire_vertex`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..localcloud.gcp.gateway import LOCAL_TOKEN, PROJECT, TOKEN_PATH

CREDENTIALS_FILE = "gcp-credentials.json"
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
    os.environ.update(env)
    return env


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
    `{host}/upload/bigquery/v2/...`) when it is set; credentials stay the local ones."""
    return {"BIGQUERY_EMULATOR_HOST": url}


def _wire_vertex(url: str) -> dict[str, str]:
    """Vertex AI (`aiplatform`, `vertexai`): its global config gets the local cloud as API endpoint, over REST (plain
    http is kept), as soon as the SDK is imported; the learner's own `aiplatform.init(project=..., location=...)`
    leaves both alone. Credentials are the local ones (GOOGLE_APPLICATION_CREDENTIALS). No variable is needed."""
    from .aws import _after_import

    def patch(initializer) -> None:
        # read at import time: a later connect() may have started another local cloud
        initializer.global_config._api_endpoint = os.environ.get("LABCLOUD_URL", url)
        initializer.global_config._api_transport = "rest"

    _after_import("google.cloud.aiplatform.initializer", patch)
    return {}
