"""The Google Cloud front door of the local cloud: REST routes to the service modules, Google's error shape.

Google's clients speak JSON over REST to paths that say the API (`/storage/v1/...`, `/bigquery/v2/...`,
`/v1/projects/.../locations/...` for Vertex AI). Services register routes with `gateway.route(method, pattern,
handler)`; the gateway also answers the OAuth token endpoint the local credentials point at.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

from ..context import CloudContext

log = logging.getLogger(__name__)

Response = tuple[int, list[tuple[str, str]], bytes]
TOKEN_PATH = "/oauth2/token"
LOCAL_TOKEN = "labcloud-local-token"  # the bearer token of the local credentials (not a secret: loopback only)
PROJECT = "labcloud-project"  # the default project on the local cloud (a notebook may name its own)

# Google's canonical status names, by HTTP status (google.rpc.Code as Google's REST APIs report them).
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}
_REASONS = {400: "invalid", 404: "notFound", 409: "duplicate", 500: "backendError", 501: "notImplemented"}


@dataclass
class GcpRequest:
    method: str
    path: str
    params: dict[str, str]  # the route's named groups
    query: dict[str, str]  # the query string, first value of each name
    environ: dict = field(repr=False)

    def body(self) -> bytes:
        return _read_body(self.environ)

    def json(self) -> dict:
        """The JSON body (an empty body is {}); GoogleError 400 when it is not a JSON object."""
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError as exc:
            raise GoogleError(400, f"Invalid JSON payload received. {exc}") from None
        if not isinstance(data, dict):
            raise GoogleError(400, "Invalid JSON payload received: expected an object.")
        return data

    @property
    def content_type(self) -> str:
        return self.environ.get("CONTENT_TYPE", "")


Handler = Callable[[GcpRequest], Response]


class GoogleError(Exception):
    """Raise in a handler to answer with Google's JSON error body."""

    def __init__(self, status: int, message: str, reason: str | None = None, status_name: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.reason = reason or _REASONS.get(status, "invalid")
        self.status_name = status_name or _STATUS_NAMES.get(status, "UNKNOWN")


def google_error(status: int, message: str, reason: str | None = None, status_name: str | None = None) -> Response:
    error = GoogleError(status, message, reason, status_name)
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": error.status_name,
            "errors": [{"message": message, "domain": "global", "reason": error.reason}],
        }
    }
    return json_response(body, status)


def json_response(data, status: int = 200) -> Response:
    return status, [("Content-Type", "application/json; charset=UTF-8")], json.dumps(data, default=str).encode()


class GcpGateway:
    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self.route("POST", TOKEN_PATH, _token)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Send `method` requests whose path matches `pattern` (a regex, anchored at both ends) to `handler`."""
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def handles(self, environ: dict) -> bool:
        """Whether a request is for Google Cloud: a path one of our routes knows, without an AWS signature."""
        if environ.get("HTTP_AUTHORIZATION", "").startswith("AWS4-") or "X-Amz-Credential" in environ.get(
            "QUERY_STRING", ""
        ):
            return False
        path = environ.get("PATH_INFO", "/")
        return any(pattern.match(path) for _, pattern, _ in self._routes)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        try:
            status, headers, body = self._dispatch(environ)
        except GoogleError as error:
            status, headers, body = google_error(error.status, error.message, error.reason, error.status_name)
        except Exception as exc:  # a bad request must never bring the local cloud down
            log.exception("GCP %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, headers, body = google_error(500, f"The local cloud could not handle this request: {exc}")
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
                    return handler(GcpRequest(method, path, match.groupdict(), query, environ))
        if known_path:
            raise GoogleError(405, f"Method {method} is not allowed on {path}.", "methodNotAllowed")
        raise GoogleError(404, f"Not found: {path}", "notFound")


def _read_body(environ: dict) -> bytes:
    if "labcloud.body" not in environ:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        environ["labcloud.body"] = environ["wsgi.input"].read(length) if length > 0 else b""
    return environ["labcloud.body"]


def _token(request: GcpRequest) -> Response:
    """The OAuth token endpoint of the local credentials: any refresh gets a local, short-lived bearer token."""
    return json_response({"access_token": LOCAL_TOKEN, "expires_in": 3600, "token_type": "Bearer"})


@dataclass(kw_only=True)
class GcpContext(CloudContext):
    cloud: str = "gcp"
    project: str = PROJECT
