"""The Azure front door of the local cloud: REST routes to the service modules, Azure's error shapes.

Azure OpenAI's data plane lives under `/openai/...` (`/openai/deployments/<name>/chat/completions?api-version=...`).
Services register routes with `gateway.route(method, pattern, handler)`. Local-only administration (deployments and
their quotas) lives under `/_labcloud/azure/`, beside the local cloud's own admin API.

An Azure request no route serves (`localcloud/clouds.py` tells Azure's requests from the others') gets ARM's error
body `{"error": {"code", "message"}}` naming the operation, with an `x-ms-request-id` as every Azure answer has:
501 NotImplemented when it is for an API the local cloud serves (Azure ML's workspace API, run history and data
API, Azure OpenAI) but an operation it does not implement, 404 ResourceNotFound for a path no API it serves has
(ARM's own resource groups, providers, other resource types). azure-core does not retry either (it retries 408,
429, 500, 502, 503 and 504); the openai client retries every 5xx, so these answers say `x-should-retry: false`,
the header it obeys. Azure itself answers an unknown path with 404; an operation missing from an API it
serves happens only here.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..context import CloudContext
from ..rest import Response, RestGateway, RestRequest, served_apis

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_labcloud/azure"

# The Azure APIs the local cloud serves, by the paths their clients call.
SERVED_APIS = served_apis(
    [
        (r"^/mferp/managementfrontend/subscriptions/", "Azure Machine Learning"),
        (r"^/history/v1\.0/", "Azure Machine Learning run history"),
        (r"^/data/v1\.0/", "Azure Machine Learning data"),
        (r"^/openai/", "Azure OpenAI"),
    ]
)


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
    provider = platform = "Azure"
    served_apis = SERVED_APIS
    request_type = AzureRequest
    error_type = AzureError

    def error_response(self, error: AzureError) -> Response:
        return error.response()

    def internal_error(self, exc: Exception) -> Response:
        return AzureError(
            500, "InternalServerError", f"The local cloud could not handle this request: {exc}"
        ).response()

    def unknown_path(self, message: str) -> AzureError:
        return AzureError(404, "ResourceNotFound", message, _unrouted_headers())

    def unimplemented(self, message: str) -> AzureError:
        return AzureError(501, "NotImplemented", message, _unrouted_headers())


def _unrouted_headers() -> list[tuple[str, str]]:
    # x-should-retry: the openai client retries every 5xx unless the answer says not to (azure-core ignores it)
    return [("x-ms-request-id", str(uuid.uuid4())), ("x-should-retry", "false")]


@dataclass(kw_only=True)
class AzureContext(CloudContext):
    cloud: str = "azure"  # the cloud the meter's lines are for
