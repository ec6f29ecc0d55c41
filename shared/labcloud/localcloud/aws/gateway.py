"""The AWS front door of the local cloud: moto for what it does well, our own handlers for what it does not.

Later services register handlers with `intercept(service, action, handler)` for the calls they make real
(training jobs that run, endpoints that serve, Lambdas that cold-start); every other request goes to moto.
What neither implements (a service moto lacks, an action it has not) gets AWS's answer to an unknown operation
in the request's protocol, naming it (`unimplemented.py`), not a 500 that botocore would retry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cache
from http import HTTPStatus

from moto.backends import get_backend
from moto.core.request import PRESERVED_HEADER_NAMES_ENVIRON_KEY, should_preserve_original_header_name
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from ...pricing.catalog import ServicePrices
from ...pricing.ledger import CostLedger
from ..http import SENT_HEADER_NAMES, buffer_body
from .errors import Response, aws_error
from .metering import request_cost
from .persistence import MotoSnapshots
from .requests import AwsRequest, classify
from .unimplemented import MotoCoverage, is_unrouted_answer, unimplemented_answer

log = logging.getLogger(__name__)

Handler = Callable[[AwsRequest, dict], Response]


@cache
def has_moto_backend(service: str | None) -> bool:
    """Whether moto keeps state for this signing name (so it is snapshotted)."""
    try:
        return service is not None and get_backend(service) is not None
    except (ImportError, AttributeError):
        return False


def keep_metadata_names(environ: dict) -> None:
    """Tell moto the names of S3 metadata headers with `_` as the client sent them (`x-amz-meta-upload_status`),
    which WSGI cannot tell from `-`: moto's own server does the same (its `moto.preserved_header_names`)."""
    sent = environ.get(SENT_HEADER_NAMES, {})
    names = {key: name for key, name in sent.items() if should_preserve_original_header_name(name)}
    if names:
        environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names


class AwsGateway:
    def __init__(self, snapshots: MotoSnapshots, ledger: CostLedger, prices: ServicePrices, lock: threading.RLock):
        self._moto = DomainDispatcherApplication(create_backend_app)
        self._moto_coverage = MotoCoverage(self._moto)
        self._snapshots = snapshots
        self._ledger = ledger
        self._prices = prices
        self._lock = lock
        self._handlers: dict[tuple[str, str], Handler] = {}

    def intercept(self, service: str, action: str, handler: Handler) -> None:
        self._handlers[(service, action)] = handler

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        keep_metadata_names(environ)
        request = classify(environ)
        try:
            status, headers, body = self._dispatch(request, environ)
        except NotImplementedError as exc:  # moto's (or a handler's) "this action has not been implemented"
            status, headers, body = unimplemented_answer(request, environ, str(exc))
        except Exception as exc:  # a bad request must never bring the local cloud down
            log.exception("AWS %s %s failed", request.service, request.action)
            status, headers, body = aws_error(
                request.protocol,
                500,
                "InternalFailure",
                f"The local cloud could not handle this request: {exc}",
            )
        if status < 400:
            self._meter(request)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def _dispatch(self, request: AwsRequest, environ: dict) -> Response:
        handler = self._handlers.get((request.service or "", request.action or ""))
        if handler is not None:
            return handler(request, environ)
        if not self._moto_coverage.serves(request, environ):
            return unimplemented_answer(request, environ, f"moto has no {request.service} service")
        status, headers, body = self._call_moto(request, environ)
        if is_unrouted_answer(request, status, headers, body):
            return unimplemented_answer(request, environ, "moto has no route for it")
        return status, headers, body

    def call_moto(self, request: AwsRequest, environ: dict) -> Response:
        """moto's answer to a request (handlers use it to validate and store, then add what moto lacks)."""
        return self._call_moto(request, environ)

    def _call_moto(self, request: AwsRequest, environ: dict) -> Response:
        body = buffer_body(environ)  # off the socket before the lock: a slow sender must not hold up every request
        with self._lock:  # moto's models are not thread-safe, and snapshots must see a consistent state
            changes = request.mutating and has_moto_backend(request.service)
            entry = self._snapshots.begin(request.service, request.action, environ, body) if changes else None
            status, headers, body = self._moto_answer(environ)
            if entry is not None:  # in the journal before the answer goes back: a crash cannot lose it
                self._snapshots.acknowledge(entry, status, body)
        return status, headers, body

    def replay(self, environ: dict) -> tuple[int, bytes]:
        """moto's answer to a request replayed from the journal at start (not journaled again, not metered)."""
        with self._lock:
            status, _, body = self._moto_answer(environ)
        return status, body

    def _moto_answer(self, environ: dict) -> Response:
        captured: dict = {}

        def capture(status: str, headers: list, exc_info=None):
            captured["status"], captured["headers"] = int(status.split()[0]), headers

        chunks = self._moto(environ, capture)
        body = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return captured["status"], captured["headers"], body

    def _meter(self, request: AwsRequest) -> None:
        line = request_cost(request, self._prices)
        if line is not None:
            self._ledger.add(line)
