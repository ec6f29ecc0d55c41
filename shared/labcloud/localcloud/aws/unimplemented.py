"""AWS operations the local cloud does not implement: telling them from moto's real answers, and naming them.

A request reaches moto when none of the local cloud's handlers takes it. moto cannot serve it in three ways:
- a service moto does not have (Kendra, CodeArtifact, App Runner): its dispatcher finds no backend for the signing
  name and fails on it (`MotoCoverage.serves` asks the dispatcher first, once per signing name);
- a service moto has, an action it does not: moto raises NotImplementedError;
- a REST path that no route of moto's service matches: its Flask app answers 404 with its HTML "Not Found" page, or
  its dispatcher answers 404 with an empty body (`is_unrouted_answer`).
Each is answered with `errors.not_implemented` in the request's protocol, naming the operation the way botocore's
model does ("lambda GetFunctionRecursionConfig (GET /2024-08-31/functions/f/recursion-config)"), and logged as a
warning in the server log. moto's real answers (validation errors, not-found errors with a body) pass unchanged.

How it differs from AWS: AWS knows every operation, so it never answers this; for an unknown JSON target or query
action AWS answers the same codes, for an unknown REST path usually 404 or 403 (`UnknownOperationException`,
`MissingAuthenticationToken`), where the local cloud says 501 so that the learner reads what is missing.
"""

from __future__ import annotations

import logging
from functools import cache

from botocore.session import get_session
from moto.core.request import Request
from moto.core.routing import get_service_router
from moto.core.utils import get_service_model
from werkzeug.exceptions import HTTPException

from .errors import Response, not_implemented
from .requests import AwsRequest

log = logging.getLogger(__name__)

REST_PROTOCOLS = ("rest-json", "rest-xml")


class MotoCoverage:
    """Which signing names moto serves, asked of moto's own dispatcher the way it picks a backend for a request."""

    def __init__(self, dispatcher):
        self._dispatcher = dispatcher  # moto's DomainDispatcherApplication
        self._serves: dict[str, bool] = {}

    def serves(self, request: AwsRequest, environ: dict) -> bool:
        if request.service is None:  # unsigned: moto picks a service itself (S3 when nothing says otherwise)
            return True
        if request.service not in self._serves:
            self._serves[request.service] = self._has_backend(environ)
        return self._serves[request.service]

    def _has_backend(self, environ: dict) -> bool:
        try:
            host = self._dispatcher.infer_service_region_host(environ, environ.get("PATH_INFO", ""))
            return host is not None and self._dispatcher.get_backend_for_host(host) is not None
        except Exception:  # moto's own guess failed: let moto answer as it would
            log.debug("cannot tell whether moto serves %s", environ.get("PATH_INFO"), exc_info=True)
            return True


def is_unrouted_answer(request: AwsRequest, status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether moto's answer to a REST request says it has no route for it (not a real error of the service)."""
    if request.protocol not in REST_PROTOCOLS or request.method == "HEAD" or status != 404:
        return False
    content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
    return not body.strip() or content_type.startswith("text/html")


def unimplemented_answer(request: AwsRequest, environ: dict, detail: str = "") -> Response:
    """The answer to an operation the local cloud does not implement, in the request's protocol, naming it."""
    operation, protocol = describe_operation(request, environ)
    log.warning("AWS: the local cloud does not implement %s%s", operation, f" ({detail})" if detail else "")
    return not_implemented(protocol, operation)


def describe_operation(request: AwsRequest, environ: dict) -> tuple[str, str]:
    """The operation as botocore's model names it, and the protocol to answer in (REST: the service model's)."""
    service = request.service or "AWS"
    if request.action and request.protocol not in REST_PROTOCOLS:
        return f"{service} {request.action}", request.protocol
    where = f"{request.method} {request.path}"
    match = _rest_operation(request.service, environ) if request.service else None
    if match is None:
        return f"{service} {where}", request.protocol
    name, operation, protocol = match
    return f"{name} {operation} ({where})", protocol if protocol in REST_PROTOCOLS else request.protocol


def _rest_operation(signing_name: str, environ: dict) -> tuple[str, str, str] | None:
    """(service, operation, protocol) of the botocore service signing as `signing_name` with a route for this
    request, or None. Several services share a signing name (bedrock, bedrock-runtime, bedrock-agent-runtime)."""
    request = Request(dict(environ))  # a copy: werkzeug caches its parsing in the environ
    for name in _services_signing_as(signing_name):
        try:
            operation, _ = get_service_router(name).match(request)
        except HTTPException:
            continue
        return name, operation.name, get_service_model(name).protocol
    return None


@cache
def _services_signing_as(signing_name: str) -> tuple[str, ...]:
    """botocore's services that sign as `signing_name`; only those whose names start with it are loaded."""
    names = [n for n in get_session().get_available_services() if n == signing_name or n.startswith(signing_name + "-")]
    return tuple(n for n in names if n == signing_name or _signing_name(n) == signing_name)


def _signing_name(service: str) -> str:
    metadata = get_service_model(service).metadata
    return metadata.get("signingName") or metadata.get("endpointPrefix", service)
