"""`labcloud.connect(backend)`: the one call a notebook makes before it uses a cloud SDK.

- "local": start (or find) the local cloud and point this kernel's SDKs at it, with fake credentials.
- "aws" / "gcp" / "azure": change no endpoint; check that credentials exist (saying what is missing) and arm
  the cost guard for that cloud with the notebook's budget (DEFAULT_BUDGET_USD unless given).

Connecting again in the same kernel replaces the previous connection: any armed guard is disarmed first (so a
connect that fails leaves none armed), and a real cloud after "local" gets back what the local wiring replaced:
the environment variables as they were before the first connect("local") (the learner's own AWS_PROFILE or
REQUESTS_CA_BUNDLE, say) and aiplatform's global config without the local endpoint (`wiring.gcp.unwire`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .localcloud import control
from .localcloud.aws.context import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY
from .localcloud.state import ServerInfo
from .pricing.guard import CostGuard, arm
from .wiring.aws import WIRED_VARIABLES as AWS_WIRED_VARIABLES
from .wiring.aws import wire as wire_aws
from .wiring.azure import WIRED_VARIABLES as AZURE_WIRED_VARIABLES
from .wiring.azure import azure_environment
from .wiring.azure import wire as wire_azure
from .wiring.gcp import WIRED_VARIABLES as GCP_WIRED_VARIABLES
from .wiring.gcp import unwire as unwire_gcp
from .wiring.gcp import wire as wire_gcp

BACKENDS = ("local", "aws", "gcp", "azure")
DEFAULT_REGION = "us-east-1"
DEFAULT_BUDGET_USD = 10.0

# Variables that would send a kernel's SDK calls somewhere other than where `connect` says.
_AWS_OVERRIDES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# The variables that point a kernel's SDKs at the local cloud (and nowhere else), and every variable connect("local")
# may set or remove.
_LOCAL_POINTERS = (
    "LABCLOUD_BACKEND",
    "LABCLOUD_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    *AWS_WIRED_VARIABLES,  # the local cloud's SageMaker defaults
    *GCP_WIRED_VARIABLES,  # the local credentials and emulator hosts
    *AZURE_WIRED_VARIABLES,  # the local Azure OpenAI endpoint and key, Azurite, Azure ML's URL, identity and CA
)
_LOCAL_VARIABLES = (*_LOCAL_POINTERS, "AWS_DEFAULT_REGION", "AWS_REGION", "NO_PROXY", "no_proxy", *_AWS_OVERRIDES)
# What connect("local") replaced: name -> (its value before the first connect("local"), the value the wiring left);
# None is unset. A real cloud's connect puts back the first where the second is still in place.
_replaced: dict[str, tuple[str | None, str | None]] = {}


_METER_COLUMNS = ["cloud", "service", "action", "resource", "quantity", "unit", "usd", "price_key"]


def _meter_lines(server: ServerInfo) -> list[dict]:
    with control._opener.open(f"{server.url}/_labcloud/costs", timeout=5) as response:
        return json.load(response)["lines"]


def _meter_key(line: dict) -> tuple:
    return tuple(line[c] for c in _METER_COLUMNS if c not in ("quantity", "usd"))


class CredentialsMissing(RuntimeError):
    pass


@dataclass
class Connection:
    backend: str
    region: str
    env: dict[str, str] = field(default_factory=dict)
    server: ServerInfo | None = None
    guard: CostGuard | None = None
    # The meter's totals when this connection was made: costs() shows what this notebook spent, not earlier runs.
    baseline: dict[tuple, tuple[float, float]] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.backend == "local"

    def costs(self, since_connect: bool = True):
        """What the actions would have cost on the real cloud, as a DataFrame: since this connection was made,
        or everything the local cloud has metered with `since_connect=False`."""
        import pandas as pd

        if self.server is None:
            rows = [e.__dict__ for e in (self.guard.allowed if self.guard else [])]
            return pd.DataFrame(rows, columns=["action", "usd", "detail"])
        rows = []
        for line in _meter_lines(self.server):
            quantity, usd = line["quantity"], line["usd"]
            if since_connect:
                before_quantity, before_usd = self.baseline.get(_meter_key(line), (0, 0.0))
                quantity, usd = quantity - before_quantity, usd - before_usd
            if quantity > 0:
                rows.append({**line, "quantity": quantity, "usd": usd})
        return pd.DataFrame(rows, columns=_METER_COLUMNS)

    def __repr__(self) -> str:
        where = self.server.url if self.server else "the real cloud"
        budget = f", budget ${self.guard.budget_usd:,.2f}" if self.guard else ""
        return f"<labcloud {self.backend!r} at {where}, region {self.region}{budget}>"


def connect(backend: str = "local", *, budget_usd: float | None = None, region: str = DEFAULT_REGION) -> Connection:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    arm(None)  # whatever happens next, the previous connection's guard no longer watches
    if backend == "local":
        return _connect_local(region, budget_usd)
    _forget_local_wiring()
    check = {
        "aws": _aws_credentials_problem,
        "gcp": _gcp_credentials_problem,
        "azure": _azure_credentials_problem,
    }
    if problem := check[backend]():
        raise CredentialsMissing(f"connect({backend!r}): {problem}")
    guard = CostGuard(DEFAULT_BUDGET_USD if budget_usd is None else budget_usd)
    arm(guard, clouds=(backend,))
    return Connection(backend, region, guard=guard)


def local_environment(server: ServerInfo, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The environment that points the SDKs at the local cloud (also what `labcloud env` prints)."""
    no_proxy = ",".join(sorted({*filter(None, os.environ.get("NO_PROXY", "").split(",")), "127.0.0.1", "localhost"}))
    return {
        "LABCLOUD_BACKEND": "local",
        "LABCLOUD_URL": server.url,
        "AWS_ENDPOINT_URL": server.url,
        # Fake credentials: the local cloud accepts any, and they can never reach a real account.
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        # Azure OpenAI's endpoint and key, and Azurite's connection string once it has a port
        **azure_environment(server.url, Path(server.state_dir), server.https_url),
    }


def _connect_local(region: str, budget_usd: float | None) -> Connection:
    server = control.start()
    env = local_environment(server, region)
    if os.environ.get("LABCLOUD_BACKEND") != "local":  # not wired now: what was replaced before no longer applies
        _replaced.clear()
    before = {name: os.environ.get(name) for name in _LOCAL_VARIABLES}
    for name in _AWS_OVERRIDES:
        os.environ.pop(name, None)
    os.environ.update(env)
    env.update(wire_aws(Path(server.state_dir)))
    env.update(wire_gcp(server.url, Path(server.state_dir)))
    for name in AZURE_WIRED_VARIABLES:  # wire_azure decides them: Blob storage only once Azurite is ready
        env.pop(name, None)
    env.update(wire_azure(server.url, Path(server.state_dir), server.https_url))
    for name in _LOCAL_VARIABLES:  # a second connect("local") keeps the values from before the first
        first = _replaced[name][0] if name in _replaced else before[name]
        _replaced[name] = (first, os.environ.get(name))
    guard = CostGuard(budget_usd) if budget_usd is not None else None  # opt-in locally, to practise with
    arm(guard)  # every cloud's SDKs: the local cloud serves all three
    baseline = {_meter_key(line): (line["quantity"], line["usd"]) for line in _meter_lines(server)}
    return Connection("local", region, env=env, server=server, guard=guard, baseline=baseline)


def _forget_local_wiring() -> None:
    """Put back what connect("local") changed in this kernel, where it is still as the wiring left it (a variable
    the learner set since stays); nothing if the kernel is not wired to the local cloud."""
    unwire_gcp()
    if os.environ.get("LABCLOUD_BACKEND") != "local":
        _replaced.clear()
        return
    # wired before this kernel started (`labcloud env` in its shell): nothing to put back, the pointers to drop
    replaced = dict(_replaced) or {name: (None, os.environ.get(name)) for name in _LOCAL_POINTERS}
    _replaced.clear()
    for name, (before, wired) in replaced.items():
        if os.environ.get(name) != wired:
            continue
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _aws_credentials_problem() -> str | None:
    import boto3

    session = boto3.Session()
    if session.get_credentials() is None:
        return (
            "no AWS credentials found. Run `aws configure` or `aws sso login`, or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), then connect again."
        )
    if session.region_name is None:
        return "no AWS region set. Set AWS_DEFAULT_REGION (e.g. us-east-1) or a region in your AWS profile."
    return None


def _gcp_credentials_problem() -> str | None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        return (
            "no Google Cloud credentials found. Run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file."
        )
    if not (project or os.environ.get("GOOGLE_CLOUD_PROJECT")):
        return "no Google Cloud project set. Set GOOGLE_CLOUD_PROJECT or run `gcloud config set project ID`."
    return None


def _azure_credentials_problem() -> str | None:
    missing = [name for name in ("AZURE_SUBSCRIPTION_ID",) if not os.environ.get(name)]
    has_service_principal = all(os.environ.get(n) for n in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID"))
    has_cli = shutil.which("az") is not None
    if not (has_service_principal or has_cli or os.environ.get("IDENTITY_ENDPOINT")):
        missing.append("a credential (run `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)")
    if missing:
        return "missing " + " and ".join(missing) + "."
    return None
