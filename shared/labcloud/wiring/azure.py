"""Point the unmodified Azure clients at the local cloud, inside this kernel.

- Azure OpenAI: `AZURE_OPENAI_ENDPOINT` (the local cloud's URL) and `AZURE_OPENAI_API_KEY` (a placeholder only the
  local cloud accepts), which `openai.AzureOpenAI` reads, as a notebook does for the real service. No
  `OPENAI_API_VERSION`: the notebook names its api-version, as it must on Azure.
- Blob storage: `AZURE_STORAGE_CONNECTION_STRING`, the development-storage connection string for the Azurite
  process the local cloud runs (`BlobServiceClient.from_connection_string(...)`). Azurite needs about a second to
  start, so `wire` waits for it once; when it is not available, the variable is left unset and a warning says why.
- Azure Machine Learning (`azure-ai-ml`): `AZUREML_DEV_URL_MFE`, the SDK's own switch for its API's base URL,
  points at the local cloud's HTTPS listener (the SDK sends bearer tokens over HTTPS only); `IDENTITY_ENDPOINT` and
  `IDENTITY_HEADER` let the unmodified `DefaultAzureCredential()` get a local token the way a managed identity does;
  `REQUESTS_CA_BUNDLE` and `SSL_CERT_FILE` name a bundle of the usual public roots plus the local CA, so this
  kernel trusts the local cloud's certificate and real services exactly as before. `jobs.stream` polls the run
  history every 2 s or more (growing to minutes); on the local cloud, where jobs take seconds, every FAST_POLL_S
  (LABCLOUD_FAST_POLL=0 keeps the SDK's own timing).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
import warnings
from pathlib import Path

from ..localcloud.azure.gateway import ADMIN_PREFIX
from ..localcloud.azure.services.blob import read_status
from ..localcloud.azure.services.machine_learning import LOCAL_IDENTITY_HEADER, MFE, TOKEN_PATH
from ..localcloud.azure.services.openai import LOCAL_API_KEY
from ..localcloud.tls import LocalTls
from .on_import import after_import

OPENAI_VARIABLES = ("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")
STORAGE_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
ML_VARIABLES = ("AZUREML_DEV_URL_MFE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
WIRED_VARIABLES = (*OPENAI_VARIABLES, STORAGE_VARIABLE, *ML_VARIABLES)
BLOB_WAIT_S = 20.0
FAST_POLL_S = 0.25

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


class BlobStorageUnavailable(UserWarning):
    pass


# Messages of the Azure ML SDK about itself that a learner can do nothing about: "Class AutoDeleteSettingSchema: This
# is an experimental class" for schema classes the SDK builds internally on every job submit, and "Proceeding with no
# tenant id appended to studio URL" (INFO, shown once the SageMaker SDK has turned INFO on for the whole process),
# and OpenTelemetry's "Invalid type <class 'type'> for attribute value" for a span attribute the SDK sets itself.
QUIET_SDK_LOGGERS = {
    "opentelemetry.attributes": logging.ERROR,
    "azure.ai.ml._utils._experimental": logging.ERROR,
    "azure.ai.ml.operations._job_operations": logging.WARNING,
}


def machine_learning_environment(https_url: str | None, state_dir: Path) -> dict[str, str]:
    """Azure ML's variables for the local cloud's HTTPS listener (none when it has none)."""
    if not https_url:
        return {}
    bundle = str(LocalTls(Path(state_dir) / "tls").bundle)
    return {
        "AZUREML_DEV_URL_MFE": f"{https_url}{MFE}/",
        "IDENTITY_ENDPOINT": f"{https_url}{TOKEN_PATH}",
        "IDENTITY_HEADER": LOCAL_IDENTITY_HEADER,
        "REQUESTS_CA_BUNDLE": bundle,
        "SSL_CERT_FILE": bundle,
    }


def azure_environment(url: str, state_dir: Path, https_url: str | None = None) -> dict[str, str]:
    """The Azure variables for the local cloud at `url`, without waiting (what `labcloud env` prints)."""
    env = dict(zip(OPENAI_VARIABLES, (url, LOCAL_API_KEY), strict=True))
    env.update(machine_learning_environment(https_url, state_dir))
    blob = read_status(Path(state_dir) / "azure")
    if blob is not None and blob.status in ("starting", "ready"):
        env[STORAGE_VARIABLE] = blob.connection_string
    return env


def wire(url: str, state_dir: Path, https_url: str | None = None) -> dict[str, str]:
    """Set the Azure variables in this kernel (waiting for Blob storage if it is still starting); returns them."""
    env = dict(zip(OPENAI_VARIABLES, (url, LOCAL_API_KEY), strict=True))
    env.update(machine_learning_environment(https_url, state_dir))
    for logger_name, level in QUIET_SDK_LOGGERS.items():
        logging.getLogger(logger_name).setLevel(level)
    if os.environ.get("LABCLOUD_FAST_POLL", "1") != "0":
        after_import("azure.ai.ml.operations._job_ops_helper", _fast_stream_polls)
    blob = _wait_for_blob(Path(state_dir) / "azure")
    if blob is not None and blob.status == "ready":
        env[STORAGE_VARIABLE] = blob.connection_string
    else:
        os.environ.pop(STORAGE_VARIABLE, None)
        reason = blob.reason if blob is not None else "the local cloud has not reported on it"
        warnings.warn(
            f"Azure Blob storage is not available on the local cloud: {reason}. {STORAGE_VARIABLE} is not set.",
            BlobStorageUnavailable,
            stacklevel=3,
        )
    os.environ.update(env)
    return env


def _fast_stream_polls(module) -> None:
    """`jobs.stream` sleeps `_wait_before_polling(...)` s between polls: briefly while the local backend is on."""
    from .aws import is_local

    original = module._wait_before_polling
    if getattr(original, "labcloud_fast", False):
        return

    def wait(current_seconds: float):
        return FAST_POLL_S if is_local() else original(current_seconds)

    wait.labcloud_fast = True
    module._wait_before_polling = wait


def _wait_for_blob(azure_state: Path):
    deadline = time.monotonic() + BLOB_WAIT_S
    blob = read_status(azure_state)
    while blob is not None and blob.status == "starting" and time.monotonic() < deadline:
        time.sleep(0.05)
        blob = read_status(azure_state)
    return blob


def set_openai_deployment(
    name: str,
    model: str,
    tokens_per_minute: int = 10_000,
    requests_per_minute: int | None = None,
    window_seconds: float = 60.0,
    url: str | None = None,
) -> dict:
    """Create or change a deployment of the local Azure OpenAI resource and its quota (local cloud only: on Azure
    this is a deployment you create in the portal, the CLI or ARM). Returns the deployment as the local cloud has
    it. `requests_per_minute` defaults to Azure's 6 per 1,000 TPM; `window_seconds` is how long the local rate
    limit's "minute" lasts."""
    url = url or os.environ.get("LABCLOUD_URL")
    if not url:
        raise RuntimeError('set_openai_deployment needs the local cloud: call labcloud.connect("local") first')
    body = {"model": model, "tokens_per_minute": tokens_per_minute, "window_seconds": window_seconds}
    if requests_per_minute is not None:
        body["requests_per_minute"] = requests_per_minute
    request = urllib.request.Request(
        f"{url}{ADMIN_PREFIX}/openai/deployments/{name}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with _opener.open(request, timeout=10) as response:
        return json.load(response)
