"""What the REST front doors of the local cloud (Google Cloud, Azure) share: routes by method and path regex, the
request a handler gets, and the rule that a bad request never brings the local cloud down. Each cloud's gateway
says how its errors look (`error_response`, `not_found`, `not_allowed`).

A request no route matches is answered by the gateway's `not_found` (no route has its path) or `not_allowed` (a
route has its path, for other methods), in that cloud's error shape, naming the operation; each one is logged as a
warning in the server log, so a learner can see what the local cloud does not implement."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

from .clouds import aws_signed

log = logging.getLogger(__name__)

Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class RestRequest:
    method: str
    path: str
    params: dict[str, str]  # the route's named groups
    query: dict[str, str]  # the query string, first value of each name
    environ: dict = field(repr=False)

    def body(self) -> bytes:
        """The request body, read once (a handler and a wrapper may both ask)."""
        if "labcloud.body" not in self.environ:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            self.environ["labcloud.body"] = self.environ["wsgi.input"].read(length) if length > 0 else b""
        return self.environ["labcloud.body"]

    def header(self, name: str) -> str:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"), "")

    @property
    def content_type(self) -> str:
        return self.environ.get("CONTENT_TYPE", "")


class RestGateway:
    """Routes requests to handlers; a subclass names its request type, its error type and how errors look."""

    cloud = "REST"
    request_type: type[RestRequest] = RestRequest
    error_type: type[Exception] = Exception
    # How an unrouted request is named: "no <provider> API it serves has this path", or "(<API name>)" for a path
    # under an API the local cloud serves in part (`served_apis`: (path regex, API name)), else "(<platform>)".
    provider = "REST"
    platform = "REST"
    served_apis: list[tuple[re.Pattern, str]] = []

    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Callable]] = []

    def route(self, method: str, pattern: str, handler: Callable) -> None:
        """Send `method` requests whose path matches `pattern` (a regex, anchored at both ends) to `handler`."""
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def handles(self, environ: dict) -> bool:
        """Whether a request is for this cloud: a path one of its routes knows, without an AWS signature (an S3
        bucket that happens to share a path stays S3's)."""
        if aws_signed(environ):
            return False
        path = environ.get("PATH_INFO", "/")
        return any(pattern.match(path) for _, pattern, _ in self._routes)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        try:
            status, headers, body = self._dispatch(environ)
        except self.error_type as error:
            status, headers, body = self.error_response(error)
        except Exception as exc:  # a bad request must never bring the local cloud down
            log.exception("%s %s %s failed", self.cloud, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, headers, body = self.internal_error(exc)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def _dispatch(self, environ: dict) -> Response:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        known_path = False
        for route_method, pattern, handler in self._routes:
            if match := pattern.match(path):
                known_path = True
                if route_method == method:
                    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
                    return handler(self.request_type(method, path, match.groupdict(), query, environ))
        error = self.not_allowed(method, path) if known_path else self.not_found(method, path)
        log.warning("%s: %s", self.cloud, error)  # the learner's clue in the server log: what is not implemented
        raise error

    # how this cloud's errors look -------------------------------------------------------------------------
    def error_response(self, error) -> Response:
        raise NotImplementedError

    def internal_error(self, exc: Exception) -> Response:
        raise NotImplementedError

    def unknown_path(self, message: str) -> Exception:
        """The error for a path under none of the APIs this cloud serves (a 404)."""
        raise NotImplementedError

    def unimplemented(self, message: str) -> Exception:
        """The error for an operation of a served API that the local cloud does not implement (a 501)."""
        raise NotImplementedError

    # unrouted requests, named the same way on every cloud ------------------------------------------------------
    def served_api(self, path: str) -> str | None:
        """The name of the API the local cloud serves under `path`, or None when it serves none there."""
        return next((name for pattern, name in self.served_apis if pattern.match(path)), None)

    def not_found(self, method: str, path: str) -> Exception:
        api = self.served_api(path)
        if api is None:
            return self.unknown_path(
                f"The local cloud does not implement {method} {path}: no {self.provider} API it serves has this path."
            )
        return self.unimplemented(f"The local cloud does not implement {method} {path} ({api}).")

    def not_allowed(self, method: str, path: str) -> Exception:
        api = self.served_api(path) or self.platform
        return self.unimplemented(f"The local cloud does not implement {method} {path} ({api}).")


def served_apis(patterns: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    """`RestGateway.served_apis` from (path regex, API name) pairs."""
    return [(re.compile(pattern), name) for pattern, name in patterns]
