"""The Google Cloud front door of the local cloud: REST routes to the service modules, Google's error shape.

Google's clients speak JSON over REST to paths that say the API (`/storage/v1/...`, `/bigquery/v2/...`,
`/v1/projects/.../locations/...` for Vertex AI). Services register routes with `gateway.route(method, pattern,
handler)`; the gateway also answers the OAuth token endpoint the local credentials point at.

A Google request no route serves (`localcloud/clouds.py` tells Google's requests from the others') gets Google's
JSON error naming the operation: 501 UNIMPLEMENTED (reason `notImplemented`) when it is for an API the local cloud
serves (Cloud Storage, BigQuery, Vertex AI) but a method it does not implement, 404 NOT_FOUND for a path no API it
serves has. No Google client retries either: Cloud Storage retries 408, 429, 500, 502, 503 and 504, BigQuery by
reason (`backendError`, `rateLimitExceeded`, `internalError`, `badGateway`), Vertex AI's generated clients not at
all. Google itself answers an unknown path with 404; an API method that is missing happens only here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..context import CloudContext
from ..rest import Response, RestGateway, RestRequest, served_apis

log = logging.getLogger(__name__)

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

# The Google APIs the local cloud serves, by the paths their clients call (Vertex polls operations under /ui/).
SERVED_APIS = served_apis(
    [
        (r"^/(?:upload/|download/|batch/)?storage/v1(?:/|$)", "Cloud Storage JSON API"),
        (r"^/(?:upload/)?bigquery/v2(?:/|$)", "BigQuery API"),
        (r"^/(?:ui/|v1(?:beta1)?/projects/[^/]+/locations/)", "Vertex AI API"),
    ]
)


class GcpRequest(RestRequest):
    def json(self) -> dict:
        """The JSON body (an empty body is {}); GoogleError 400 when it is not a JSON object."""
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError as exc:
            raise GoogleError(400, f"Invalid JSON payload received. {exc}") from None
        if not isinstance(data, dict):
            raise GoogleError(400, "Invalid JSON payload received: expected an object.")
        return data


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


class GcpGateway(RestGateway):
    cloud = "GCP"
    provider, platform = "Google", "Google Cloud"
    served_apis = SERVED_APIS
    request_type = GcpRequest
    error_type = GoogleError

    def __init__(self):
        super().__init__()
        self.route("POST", TOKEN_PATH, _token)

    def error_response(self, error: GoogleError) -> Response:
        return google_error(error.status, error.message, error.reason, error.status_name)

    def internal_error(self, exc: Exception) -> Response:
        return google_error(500, f"The local cloud could not handle this request: {exc}")

    def unknown_path(self, message: str) -> GoogleError:
        return GoogleError(404, message, "notFound")

    def unimplemented(self, message: str) -> GoogleError:
        return GoogleError(501, message, "notImplemented")


def _token(request: GcpRequest) -> Response:
    """The OAuth token endpoint of the local credentials: any refresh gets a local, short-lived bearer token."""
    return json_response({"access_token": LOCAL_TOKEN, "expires_in": 3600, "token_type": "Bearer"})


@dataclass(kw_only=True)
class GcpContext(CloudContext):
    cloud: str = "gcp"
    project: str = PROJECT
