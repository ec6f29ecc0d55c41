"""The Azure front door of the local cloud: REST routes to the service modules, Azure's error shapes.

Azure OpenAI's data plane lives under `/openai/...` (`/openai/deployments/<name>/chat/completions?api-version=...`).
Services register routes with `gateway.route(method, pattern, handler)`. Local-only administration (deployments and
their quotas) lives under `/_labcloud/azure/`, beside the local cloud's own admin API.
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
ADMIN_PREFIX = "/_labcloud/azure"


@dataclass
class AzureRequest:
    method: str
    path: str
    params: dict[str, str]  # the route's named groups
    query: dict[str, str]  # the query string, first value of each name
    environ: dict = field(repr=False)

    def body(self) -> bytes:
        if "labcloud.body" not in self.environ:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            self.environ["labcloud.body"] = self.environ["wsgi.input"].read(length) if length > 0 else b""
        return self.environ["labcloud.body"]

    def header(self, name: str) -> str:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"), "")


Handler = Callable[[AzureRequest], Response]


class AzureError(Exception):
    """Raise in a handler to answer with Azure's error body `{"error": {"code": ..., "message": ...}}`."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return json_response(body, self.status, self.headers)


class InvalidRequest(AzureError):
    """A request the model API rejects: Azure passes on OpenAI's validation error shape (type, param, code)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(400, code or "", message)
        self.param, self.validation_code = param, code

    def response(self) -> Response:
        error = {"message": self.message, "type": "invalid_request_error", "param": self.param}
        return json_response({"error": {**error, "code": self.validation_code}}, 400)


def json_response(data, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, [("Content-Type", "application/json"), *(headers or [])], json.dumps(data).encode()


class AzureGateway:
    def __init__(self):
        self._routes: list[tuple[str, re.Pattern, Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Send `method` requests whose path matches `pattern` (a regex, anchored at both ends) to `handler`."""
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def handles(self, environ: dict) -> bool:
        """Whether a request is for Azure: a path one of our routes knows, without an AWS signature (an S3 bucket
        named `openai` stays S3's)."""
        if environ.get("HTTP_AUTHORIZATION", "").startswith("AWS4-") or "X-Amz-Credential" in environ.get(
            "QUERY_STRING", ""
        ):
            return False
        path = environ.get("PATH_INFO", "/")
        return any(pattern.match(path) for _, pattern, _ in self._routes)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        try:
            status, headers, body = self._dispatch(environ)
        except AzureError as error:
            status, headers, body = error.response()
        except Exception as exc:  # a bad request must never bring the local cloud down
            log.exception("Azure %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, headers, body = AzureError(
                500, "InternalServerError", f"The local cloud could not handle this request: {exc}"
            ).response()
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
                    return handler(AzureRequest(method, path, match.groupdict(), query, environ))
        if known_path:
            raise AzureError(405, "MethodNotAllowed", f"The method {method} is not allowed on {path}.")
        raise AzureError(404, "404", "Resource not found")


@dataclass(kw_only=True)
class AzureContext(CloudContext):
    cloud: str = "azure"  # the cloud the meter's lines are for
