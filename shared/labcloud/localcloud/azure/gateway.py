"""The Azure front door of the local cloud: REST routes to the service modules, Azure's error shapes.

Azure OpenAI's data plane lives under `/openai/...` (`/openai/deployments/<name>/chat/completions?api-version=...`).
Services register routes with `gateway.route(method, pattern, handler)`. Local-only administration (deployments and
their quotas) lives under `/_labcloud/azure/`, beside the local cloud's own admin API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..context import CloudContext
from ..rest import Response, RestGateway, RestRequest

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_labcloud/azure"


class AzureRequest(RestRequest):
    pass


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


class AzureGateway(RestGateway):
    cloud = "Azure"
    request_type = AzureRequest
    error_type = AzureError

    def error_response(self, error: AzureError) -> Response:
        return error.response()

    def internal_error(self, exc: Exception) -> Response:
        return AzureError(
            500, "InternalServerError", f"The local cloud could not handle this request: {exc}"
        ).response()

    def not_found(self, path: str) -> Exception:
        return AzureError(404, "404", "Resource not found")

    def not_allowed(self, method: str, path: str) -> Exception:
        return AzureError(405, "MethodNotAllowed", f"The method {method} is not allowed on {path}.")


@dataclass(kw_only=True)
class AzureContext(CloudContext):
    cloud: str = "azure"  # the cloud the meter's lines are for
