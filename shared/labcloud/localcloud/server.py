"""The local cloud process: one process on loopback that serves the clouds' wire protocols.

Run by `labcloud up` (through `control.start`) as `python -m labcloud.localcloud.server --state DIR`.
It binds the asked port, or a free one when that is taken, writes `server.json` for clients, restores the
saved state, and on SIGTERM saves the state, stops its children and exits. After a crash of the previous run, the
start reaps the children it left running (`processes.ChildRecords`), replays moto's journal (`aws/journal.py`) and
fails the jobs that were running (`CloudContext.end_interrupted`), before it answers. Both listeners (plain HTTP,
and HTTPS for the Azure SDKs) speak HTTP/1.1 with keep-alive through `http.py`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from .. import __version__
from ..pricing.catalog import load_catalog, load_service_prices
from ..pricing.ledger import CostLedger
from .admin import PREFIX, AdminApi
from .aws import services as aws_services
from .aws.context import AwsContext
from .aws.gateway import AwsGateway
from .aws.persistence import MotoSnapshots
from .azure import services as azure_services
from .azure.gateway import AzureContext, AzureGateway
from .clouds import AZURE, GOOGLE, cloud_of
from .context import register_services
from .gcp import services as gcp_services
from .gcp.gateway import GcpContext, GcpGateway
from .http import HttpServer
from .processes import ChildProcesses, ChildRecords
from .state import ServerInfo, StateDir
from .tls import LocalTls

log = logging.getLogger("labcloud.localcloud")

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 4570
TLS_THREADS = 16  # the HTTPS listener serves only the Azure SDKs, which make few calls at once


def bind_socket(host: str, port: int, strict: bool = False) -> socket.socket:
    """Bind `port` on loopback; if it is taken, a free port (unless `strict`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        if strict or exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        log.warning("port %s is taken; using a free port instead", port)
        sock.bind((host, 0))
    sock.listen(128)
    return sock


class LocalCloud:
    def __init__(self, state_dir: Path, host: str = LOOPBACK, port: int = DEFAULT_PORT, strict_port: bool = False):
        self.state = StateDir(state_dir)
        self.state.path.mkdir(parents=True, exist_ok=True)
        self.host, self.port, self.strict_port = host, port, strict_port
        self.children = ChildRecords(self.state.path)  # every cloud's children, for a reap
        self._moto_lock = threading.RLock()
        self.snapshots = MotoSnapshots(self.state.sub("aws"), self._moto_lock)
        self.ledger = CostLedger(self.state.path / "costs.json")
        self.aws = AwsGateway(self.snapshots, self.ledger, load_service_prices(), self._moto_lock)
        self.aws_context = AwsContext(
            state_dir=self.state.sub("aws-services"),
            lock=self._moto_lock,
            ledger=self.ledger,
            catalog=load_catalog(),
            children=ChildProcesses(self.children),
            call_moto=self.aws.call_moto,
            mark_dirty=self.snapshots.mark_dirty,
        )
        self.aws_services = register_services(aws_services, self.aws, self.aws_context)
        self.gcp = GcpGateway()
        self.gcp_context = GcpContext(
            state_dir=self.state.sub("gcp"),
            ledger=self.ledger,
            catalog=self.aws_context.catalog,
            children=ChildProcesses(self.children),
        )
        self.gcp_services = register_services(gcp_services, self.gcp, self.gcp_context)
        self.azure = AzureGateway()
        self.azure_context = AzureContext(
            state_dir=self.state.sub("azure"),
            ledger=self.ledger,
            catalog=self.aws_context.catalog,
            children=ChildProcesses(self.children),
        )
        self.azure_services = register_services(azure_services, self.azure, self.azure_context)
        self.admin = AdminApi(str(self.state.path), self.ledger, self._services)
        self._server = None
        self._tls_server = None
        self._restored: list[str] = []

    def _services(self) -> list[str]:
        return ["aws", *(["gcp"] if self.gcp_services else []), *(["azure"] if self.azure_services else [])]

    def app(self, environ: dict, start_response):
        if self.azure.handles(environ):  # before the admin API: Azure's local admin routes live under its prefix
            return self.azure(environ, start_response)
        if environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.admin(environ, start_response)
        if self.gcp.handles(environ):
            return self.gcp(environ, start_response)
        # No Azure or Google route has this path: the cloud the request is for answers in its own error shape
        cloud = cloud_of(environ)
        if cloud == AZURE:
            return self.azure(environ, start_response)
        if cloud == GOOGLE:
            return self.gcp(environ, start_response)
        return self.aws(environ, start_response)

    def start(self) -> ServerInfo:
        self.children.reap_previous()  # before anything starts: a second Azurite on the same folder loses blobs
        self._restored = self.snapshots.restore(self.aws.replay)
        for context in self._contexts():
            context.end_interrupted()
        sock = bind_socket(self.host, self.port, self.strict_port)
        self._server = HttpServer(self.app, sock, name="http")
        self.snapshots.start()
        info = ServerInfo(
            pid=os.getpid(),
            host=self.host,
            port=self._server.server_address[1],
            state_dir=str(self.state.path),
            started_at=time.time(),
            version=__version__,
            tls_port=self._start_tls(),
        )
        for context in self._contexts():
            context.started(info.url)  # Azure's starts Azurite without waiting for it
        self._server.start()  # only now: a request for a service must find it started
        self.state.write_info(info)
        log.info("local cloud on %s (state %s; restored %s)", info.url, info.state_dir, self._restored or "nothing")
        return info

    def _start_tls(self) -> int:
        """A second listener serving the same services over HTTPS with the local CA (`tls.py`), on a free port: the
        Azure ML SDK refuses to send bearer tokens over plain http."""
        tls = LocalTls(self.state.sub("tls")).ensure()
        sock = bind_socket(self.host, 0)
        self._tls_server = HttpServer(self.app, sock, tls=tls.server_files, threads=TLS_THREADS, name="https").start()
        return self._tls_server.server_address[1]

    def serve_forever(self) -> None:
        """Block until `stop` has stopped the listeners (a signal handler calls it while this waits)."""
        self._server.wait()

    def _contexts(self) -> tuple:
        return self.aws_context, self.gcp_context, self.azure_context

    def stop(self) -> None:
        """Stop the learners' processes, save everything and stop serving. Safe to call from a signal handler."""
        for context in self._contexts():
            context.shutdown()
        self.children.clear()  # an orderly stop leaves nothing to reap
        self.snapshots.stop()
        self.ledger.save()
        self.state.clear_info(os.getpid())
        for server in (self._server, self._tls_server):
            if server is not None:
                server.stop()  # returns at once; the listener stops in a thread of its own


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="labcloud-server", description=__doc__)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--host", default=LOOPBACK, help="loopback only; the local cloud is never exposed")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--strict-port", action="store_true", help="fail instead of taking a free port")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host != "localhost":
        parser.error("the local cloud listens on loopback only")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cloud = LocalCloud(args.state, args.host, args.port, args.strict_port)
    cloud.start()

    def on_signal(signum, frame):
        log.info("signal %s: saving state and stopping", signum)
        cloud.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cloud.serve_forever()
    log.info("stopped")


if __name__ == "__main__":
    main()
