"""Azure Blob storage on the local cloud: Azurite, Microsoft's own emulator, run as a child process.

Azurite (the npm package `azurite`, installed by the project's set-up into `node_modules/`) speaks Blob's real REST
protocol, shared keys and SAS included, so `azure-storage-blob` needs nothing but a connection string. The local
cloud starts it on a free loopback port when it starts, without waiting for it (node takes about a second), keeps
its data under the state folder (`azure/azurite/`), so blobs survive a restart, and stops it with itself.

How Azurite keeps an acknowledged blob: its bytes go to extent files at once, its metadata to a LokiJS database
that Azurite saves every 5 s and when it closes (its first SIGTERM or SIGINT; no other metadata store works
offline: the SQL one needs a MySQL server, `--inMemoryPersistence` keeps nothing). A `kill -9` of the local cloud
leaves Azurite running; the next start reaps it with SIGTERM (`processes.ChildRecords`), so it saves before the
new one loads, and every acknowledged blob survives. A SIGKILL of Azurite itself (the whole process group killed,
the OOM killer) loses the metadata of the blobs written in its last 5 seconds.

Its state is written to `azure/blob.json` in the state folder (status starting / ready / unavailable / failed,
port, reason), which `connect("local")` reads to set AZURE_STORAGE_CONNECTION_STRING. Without node or the package
the local cloud still starts: the status and the server log say that Blob storage is not available, and why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ....paths import PACKAGE_DIR

log = logging.getLogger(__name__)

STATUS_FILE = "blob.json"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key: public, documented by Microsoft, accepted only by emulators.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_VARIABLE = "LABCLOUD_AZURITE"  # a path to Azurite's blob main.js or an `azurite-blob` executable
READY_TIMEOUT_S = 30.0
START_ATTEMPTS = 3  # a port picked free can be taken before Azurite binds it: try another
_LISTENING = re.compile(r"successfully listens on https?://[^:]+:(\d+)")
_MAIN_JS = Path("node_modules", "azurite", "dist", "src", "blob", "main.js")
# Azurite saves its metadata when it closes, on its first SIGTERM or SIGINT (`process.once`); a second signal would
# kill node halfway through the save. `labcloud down` signals the whole process group and the server then stops
# Azurite itself, so Azurite gets two. This preload lets the first one through to Azurite's handler and ignores the
# rest; a signal that comes before Azurite has set up its handlers (still starting: nothing to save) ends it at once.
_SIGNAL_GUARD = """\
let closing = false;
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    if (closing) return;
    if (process.listenerCount(signal) > 1) { closing = true; return; }
    process.exit(0);
  });
}
"""


@dataclass
class BlobStatus:
    status: str  # starting | ready | unavailable | failed | stopped
    port: int = 0
    reason: str = ""
    pid: int = 0
    log: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )


def read_status(azure_state_dir: Path) -> BlobStatus | None:
    """The status the server wrote (None when there is none or it is unreadable)."""
    try:
        return BlobStatus(**json.loads((Path(azure_state_dir) / STATUS_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def ready(azure_state_dir: Path) -> BlobStatus:
    """Azurite's status while it serves; Azure's 503 otherwise (for the services that keep their data in it)."""
    from ..gateway import AzureError

    status = read_status(azure_state_dir)
    if status is None or status.status != "ready":
        reason = status.reason if status else "it has not started"
        raise AzureError(503, "ServiceUnavailable", f"Blob storage (Azurite) is not available: {reason}")
    return status


def service_client(azure_state_dir: Path):
    """An azure-storage-blob client for Azurite with the account key."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(ready(azure_state_dir).connection_string)


def container_client(azure_state_dir: Path, name: str, create: bool = False):
    """A container of Azurite, made first when `create` and it does not exist yet."""
    container = service_client(azure_state_dir).get_container_client(name)
    if create and not container.exists():
        container.create_container()
    return container


def azurite_command() -> tuple[list[str] | None, str]:
    """The command that starts Azurite's Blob service, or None and the reason it cannot be started."""
    configured = os.environ.get(AZURITE_VARIABLE)
    candidates = [Path(configured)] if configured else [PACKAGE_DIR.parents[1] / _MAIN_JS, Path.cwd() / _MAIN_JS]
    script = next((path for path in candidates if path.is_file()), None)
    if script is None and not configured and (installed := shutil.which("azurite-blob")):
        script = Path(installed).resolve()  # a global `npm install -g azurite`: npm links it to the package's main.js
    if script is None:
        where = configured or candidates[0]
        return None, f"Azurite is not installed ({where} not found): run `make lab` or `npm ci` in the course folder"
    if script.suffix != ".js":
        return [str(script)], ""
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed (Azurite, the Blob emulator, runs on Node.js 20 or later)"
    return [node, str(script)], ""


def _with_signal_guard(command: list[str], folder: Path) -> list[str]:
    """Run Azurite's script with the signal guard preloaded (not possible for an `azurite-blob` executable)."""
    if len(command) != 2:
        return command
    guard = folder / "azurite-signal-guard.cjs"
    guard.write_text(_SIGNAL_GUARD)
    return [command[0], "--require", str(guard), command[1]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Azurite:
    """One Azurite Blob service for the local cloud's lifetime (see the module docstring)."""

    def __init__(self, context):
        self._context = context
        self._folder = context.state_dir
        self._data = context.state_dir / "azurite"
        self._log_path = context.state_dir / "azurite.log"
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._stopping = False
        self.status = BlobStatus("stopped")

    def start(self) -> None:
        """Spawn Azurite and return at once; a watcher thread marks it ready (or failed) when it knows."""
        command, reason = azurite_command()
        if command is None:
            self._publish(BlobStatus("unavailable", reason=reason))
            log.warning("Azure Blob storage is not available on the local cloud: %s", reason)
            return
        self._data.mkdir(parents=True, exist_ok=True)
        command = _with_signal_guard(command, self._folder)
        self._spawn(command)
        self._context.in_background(self._watch, "azurite-watch", command)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            process = self._process
        if process is not None:
            self._context.children.stop(process)
        if self.status.status in ("starting", "ready"):
            self._publish(BlobStatus("stopped", self.status.port, "the local cloud stopped"))

    def _spawn(self, command: list[str]) -> None:
        port = free_port()
        arguments = [
            *command,
            *("--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(self._data)),
            "--skipApiVersionCheck",  # newer SDKs send API versions this Azurite release has not heard of
            "--loose",  # ignore headers Azurite does not implement instead of failing the request
            "--silent",  # no access log line per request
            "--disableTelemetry",  # Azurite reports usage to Microsoft unless told not to
            "--disableProductStyleUrl",  # the account is the first path segment, whatever the host
        ]
        with self._lock:
            if self._stopping:
                return
            with open(self._log_path, "ab") as log_file:
                self._log_start = log_file.tell()
                self._process = self._context.children.spawn(
                    arguments, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
        self._publish(BlobStatus("starting", port, pid=self._process.pid, log=str(self._log_path)))

    def _watch(self, command: list[str]) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            outcome = self._wait_until_listening()
            if outcome == "ready":
                self._publish(BlobStatus("ready", self.status.port, pid=self.status.pid, log=str(self._log_path)))
                log.info("Azure Blob storage (Azurite) on %s", self.status.endpoint)
                self._process.wait()  # an exit now is a crash unless the local cloud is stopping
                time.sleep(0.5)  # `labcloud down` signals Azurite and the server together: let the server say so
                if not self._stopping:
                    self._fail(f"Azurite exited (code {self._process.returncode})")
                return
            if self._stopping:
                return
            if "EADDRINUSE" in self._log_tail() and attempt < START_ATTEMPTS:
                self._spawn(command)
                continue
            self._fail(outcome)
            return

    def _wait_until_listening(self) -> str:
        """ "ready", or why not."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self._stopping:
            if _LISTENING.search(self._log_tail()):
                return "ready"
            if self._process.poll() is not None:
                return f"Azurite exited at start (code {self._process.returncode})"
            time.sleep(0.05)
        if self._stopping:
            return "the local cloud stopped"
        self._context.children.stop(self._process)
        return f"Azurite did not listen within {READY_TIMEOUT_S:.0f} s"

    def _log_tail(self) -> str:
        """What Azurite has written since it was last started."""
        try:
            with open(self._log_path, "rb") as log_file:
                log_file.seek(self._log_start)
                return log_file.read(64_000).decode(errors="replace")
        except OSError:
            return ""

    def _fail(self, reason: str) -> None:
        tail = " | ".join(self._log_tail().strip().splitlines()[-3:])
        self._publish(BlobStatus("failed", self.status.port, f"{reason}: {tail}" if tail else reason))
        log.error("Azure Blob storage is not available on the local cloud: %s (log: %s)", reason, self._log_path)

    def _publish(self, status: BlobStatus) -> None:
        self.status = status
        path = self._folder / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(status), indent=1))
        os.replace(tmp, path)


def register(gateway, context) -> None:
    azurite = Azurite(context)
    context.on_started(azurite.start)
    context.on_shutdown(azurite.stop)
