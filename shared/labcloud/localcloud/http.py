"""Serving the local cloud's WSGI app over HTTP/1.1 on a socket it has already bound: cheroot, with keep-alive.

`HttpServer(app, sock).start()` serves in a thread of its own; `wait()` blocks until `stop()` has finished;
`stop()` returns at once, so it is safe from a signal handler. `tls=(certificate chain, private key)` serves HTTPS
with the standard library's ssl through cheroot's builtin adapter (the local CA's files, see `tls.py`).

Why cheroot: it was measured side by side with werkzeug's development server (what served before), waitress and
uvicorn + a2wsgi, serving this app on 2 loaded cores. werkzeug answers every request with `Connection: close`, so
each SDK call opened a new TCP connection and, on the HTTPS listener, made a new TLS handshake (13 ms a call against
0.3 ms on cheroot's kept connection), and it drops request headers whose names contain `_`, which the Azure SDK
sends (`x-ms-meta-upload_status`). waitress drops those headers too, has no TLS, did not stop on a signal with a
connection open, and fell to 50-280 requests/s under 50 clients (cheroot 340-490). uvicorn needs an ASGI bridge with
its own thread pool and was 2-3x slower per small request (0.6-0.9 ms against 0.2-0.35 ms). Nothing is simulated
here: it is a real HTTP/1.1 server; the differences from a cloud's front end are in the list below.

How it is configured, and why:
- The socket comes bound and listening (`server.bind_socket` picks the port, with its fallback to a free one);
  cheroot is handed that socket instead of binding one itself. TCP_NODELAY is set on it, as cheroot does on the
  sockets it binds (accepted connections inherit it): without it a kept connection waits ~40 ms per response for
  the peer's delayed ACK (Nagle).
- A fixed pool of `threads` workers serves requests; an idle keep-alive connection holds no thread (cheroot parks
  it in a selector). Requests beyond the pool wait in a queue, they are not refused. Moto's calls are serialised
  under one lock anyway; the pool is for what runs at the same time: model-server proxying, long polls, uploads.
- cheroot writes no access log; its error log goes to the `labcloud.localcloud.http` logger.
- Headers with `_` reach the app, but WSGI names them all `HTTP_<NAME>` with `-` and `_` both written `_`, so a
  handler cannot tell `upload_status` from `upload-status`. The server also records each header's name as the
  client sent it, in environ[SENT_HEADER_NAMES]; `header_name` reads it (the Azure Blob proxy forwards by it). moto
  reads headers from the WSGI keys too, except the names listed in its own environ key (`aws/gateway.py` fills it
  for S3 metadata from these).
- PATH_INFO is wholly percent-decoded, `%2F` included, as werkzeug did (cheroot on its own leaves `%2F` encoded);
  a handler that needs the path as sent reads REQUEST_URI, or RAW_URI (the same, under werkzeug's name).
- Starting the pool costs about 0.5 ms a thread; it runs in the serving thread, and connections made meanwhile
  wait in the listen backlog. A stop is seen within `expiration_interval` (0.2 s, werkzeug's poll interval here).
"""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote_to_bytes

from cheroot import server, wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger("labcloud.localcloud.http")

DEFAULT_THREADS = 64
LISTEN_BACKLOG = 128  # cheroot's default (5) overflows when 50 clients connect at once: their SYNs wait 1 s
IDLE_TIMEOUT_S = 10  # a kept connection idle this long is closed; also the read timeout within a request
STOP_GRACE_S = 5  # in-flight requests get this long to finish at stop


SENT_HEADER_NAMES = "labcloud.header_names"  # environ key: {CGI key: the header's name as the client sent it}
_NOT_PREFIXED = {"CONTENT_TYPE", "CONTENT_LENGTH"}  # the two headers WSGI names without HTTP_


def cgi_key(name: str) -> str:
    """The environ key WSGI gives a request header: `x-ms-meta-upload_status` -> HTTP_X_MS_META_UPLOAD_STATUS."""
    key = name.upper().replace("-", "_")
    return key if key in _NOT_PREFIXED else "HTTP_" + key


def header_name(environ: dict, key: str) -> str:
    """The request header behind environ's `key`, named as the client sent it (`x-ms-meta-upload_status`), where
    the server recorded it; else as WSGI's key reads (`X-Ms-Meta-Upload-Status`). A proxy forwards by this name:
    WSGI writes `-` and `_` alike as `_`, and Azure Blob metadata names keep both, and their case."""
    if sent := environ.get(SENT_HEADER_NAMES, {}).get(key):
        return sent
    return "-".join(part.capitalize() for part in key.removeprefix("HTTP_").split("_"))


def buffer_body(environ: dict) -> bytes:
    """The whole request body, read from the socket and put back in memory so that it can be read again (chunked
    bodies too); reading it again returns the same bytes."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = stream.read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


class _NameRecordingHeaderReader(server.HeaderReader):
    """cheroot's header reader, which title-cases the names it keeps (cheroot looks its own headers up so); this
    one also records each name as sent. `_transform_key` is the hook cheroot's own `DropUnderscoreHeaderReader`
    customises its reading through."""

    def __init__(self):
        self.sent: list[str] = []

    def _transform_key(self, key_name):
        self.sent.append(key_name.strip().decode("ISO-8859-1"))
        return super()._transform_key(key_name)


class _Request(server.HTTPRequest):
    def read_request_headers(self):
        self.header_reader = _NameRecordingHeaderReader()  # one per request: the names are that request's
        return super().read_request_headers()


class _Connection(server.HTTPConnection):
    RequestHandlerClass = _Request


class _Gateway(wsgi.Gateway_10):
    def get_environ(self):
        environ = super().get_environ()
        environ[SENT_HEADER_NAMES] = {cgi_key(name): name for name in self.req.header_reader.sent}
        # the request target as it arrived, under the name werkzeug's and gunicorn's servers give it: moto matches
        # S3 keys against it (a key with an encoded `?` or `/` is cut or split by the decoded PATH_INFO)
        environ.setdefault("RAW_URI", environ["REQUEST_URI"])
        environ["PATH_INFO"] = decoded_path(environ["REQUEST_URI"])
        return environ


def decoded_path(target: str) -> str:
    """PATH_INFO for a request target, wholly percent-decoded (as PEP 3333 and werkzeug do; cheroot leaves `%2F`
    encoded), as WSGI's latin-1 string of the bytes."""
    path = target.split("?", 1)[0]
    if "://" in path:  # the absolute form a proxy sends: http://host/path
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return unquote_to_bytes(path).decode("latin-1")


class _AdoptingServer(wsgi.Server):
    """cheroot's WSGI server on a socket bound elsewhere; cheroot's `prepare` calls `bind`, which takes it over."""

    ConnectionClass = _Connection

    def __init__(self, app, sock: socket.socket, threads: int):
        self._adopted = sock
        super().__init__(
            sock.getsockname(),
            app,
            numthreads=threads,
            server_name=sock.getsockname()[0],
            request_queue_size=LISTEN_BACKLOG,
            timeout=IDLE_TIMEOUT_S,
            shutdown_timeout=STOP_GRACE_S,
        )
        self.gateway = _Gateway

    def bind(self, family, type, proto=0):
        self._adopted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = self._adopted
        self.bind_addr = self._adopted.getsockname()
        return self._adopted

    expiration_interval = 0.2  # how often the connection selector wakes: idle expiry, and how soon a stop is seen

    def error_log(self, msg="", level=logging.INFO, traceback=False):
        log.log(level, "%s", msg, exc_info=traceback)


class HttpServer:
    """One listener: `start()` serves `app` on `sock` in a thread, `stop()` ends it, `wait()` waits for that."""

    def __init__(
        self,
        app: Callable,
        sock: socket.socket,
        tls: tuple[Path, Path] | None = None,
        threads: int = DEFAULT_THREADS,
        name: str = "http",
    ):
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self.name = name
        self._server = _AdoptingServer(app, sock, threads)
        if tls is not None:
            certificate, private_key = tls
            self._server.ssl_adapter = BuiltinSSLAdapter(str(certificate), str(private_key))
        self._prepared = threading.Event()  # set once cheroot is ready to serve, or has failed to get ready
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stopped = threading.Event()

    def start(self) -> HttpServer:
        # cheroot's threads are not daemons; made from this daemon thread, they are (threads inherit it), so a
        # worker stuck in a handler cannot keep the process alive after `stop`.
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            try:
                self._server.prepare()
            finally:
                self._prepared.set()
            self._server.serve()
        except Exception:
            log.exception("the %s listener on %s:%s failed", self.name, *self.server_address)
        finally:
            if not self._stopping:  # it failed, rather than being stopped: nothing is left to wait for
                self._stopped.set()

    def stop(self) -> None:
        """Stop accepting, close idle connections and let in-flight requests finish (up to STOP_GRACE_S). Returns
        at once: the work happens in a thread, so a signal handler can call this while the main thread waits."""
        self._stopping = True
        if self._thread is None:  # never started: nothing to stop
            self._stopped.set()
            return
        threading.Thread(target=self._stop, name=f"{self.name}-stop", daemon=True).start()

    def _stop(self) -> None:
        self._prepared.wait()  # a stop that arrives while cheroot is getting ready must not be lost
        try:
            self._server.stop()
        finally:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the listener has stopped (True), or `timeout` passed (False)."""
        return self._stopped.wait(timeout)
