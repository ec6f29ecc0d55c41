"""Tell which AWS service and action a raw HTTP request is for, the way the real front door does.

The service comes from the signature's credential scope (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`,
in the Authorization header or a presigned URL's query string); the action from `X-Amz-Target` (JSON
protocols), the `Action` form field (query protocol), or the method and path (REST protocols).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

_SCOPE = re.compile(r"Credential=[^/\s,]+/\d{8}/([^/\s,]+)/([^/\s,]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"X-Amz-Credential=[^&]*?(?:/|%2F)\d{8}(?:/|%2F)([^/&%]+)(?:/|%2F)([^/&%]+)")

# Signing names that differ from the botocore service name.
_SIGNING_TO_SERVICE = {"monitoring": "cloudwatch", "email": "ses"}

# S3 REST actions by (method, addressed to an object?); path-style addressing, which the local endpoint gets.
_S3_ACTIONS = {
    ("GET", True): "GetObject",
    ("HEAD", True): "HeadObject",
    ("PUT", True): "PutObject",
    ("POST", True): "PostObject",
    ("DELETE", True): "DeleteObject",
    ("GET", False): "ListObjects",
    ("HEAD", False): "HeadBucket",
    ("PUT", False): "CreateBucket",
    ("POST", False): "DeleteObjects",
    ("DELETE", False): "DeleteBucket",
}


def _s3_action(method: str, path: str) -> str | None:
    segments = [s for s in path.split("/") if s]
    if not segments:
        return "ListBuckets" if method == "GET" else None
    return _S3_ACTIONS.get((method, len(segments) > 1))


# REST-JSON operations the local cloud makes real, by signing name, method and path (from botocore's models).
# sagemaker-runtime signs as "sagemaker" and bedrock-runtime as "bedrock", so the path tells them apart.
# A Bedrock model id may be an ARN, whose "/" arrives decoded in PATH_INFO: those ids match up to the last segment.
_REST_ROUTES = [
    (service, method, re.compile(pattern), action)
    for service, method, pattern, action in [
        ("sagemaker", "POST", r"^/endpoints/(?P<EndpointName>[^/]+)/invocations$", "InvokeEndpoint"),
        ("bedrock", "POST", r"^/model/(?P<modelId>.+)/invoke$", "InvokeModel"),
        ("bedrock", "POST", r"^/model/(?P<modelId>.+)/converse$", "Converse"),
        ("bedrock", "GET", r"^/foundation-models$", "ListFoundationModels"),
        ("bedrock", "GET", r"^/foundation-models/(?P<modelIdentifier>.+)$", "GetFoundationModel"),
        ("lambda", "POST", r"^/2015-03-31/functions$", "CreateFunction"),
        ("lambda", "DELETE", r"^/2015-03-31/functions/(?P<FunctionName>[^/]+)$", "DeleteFunction"),
        ("lambda", "POST", r"^/2015-03-31/functions/(?P<FunctionName>[^/]+)/invocations$", "Invoke"),
        ("lambda", "PUT", r"^/2015-03-31/functions/(?P<FunctionName>[^/]+)/code$", "UpdateFunctionCode"),
        (
            "lambda",
            "PUT",
            r"^/2019-09-30/functions/(?P<FunctionName>[^/]+)/provisioned-concurrency$",
            "PutProvisionedConcurrencyConfig",
        ),
        (
            "lambda",
            "GET",
            r"^/2019-09-30/functions/(?P<FunctionName>[^/]+)/provisioned-concurrency$",
            "GetProvisionedConcurrencyConfig",
        ),
        (
            "lambda",
            "DELETE",
            r"^/2019-09-30/functions/(?P<FunctionName>[^/]+)/provisioned-concurrency$",
            "DeleteProvisionedConcurrencyConfig",
        ),
    ]
]


@dataclass(frozen=True)
class AwsRequest:
    service: str | None
    action: str | None
    protocol: str  # json | query | rest-xml | rest-json
    region: str
    method: str
    path: str
    path_params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def mutating(self) -> bool:
        """Whether the request may change stored state (and so the state must be saved again)."""
        if self.protocol in ("rest-xml", "rest-json"):
            return self.method not in ("GET", "HEAD", "OPTIONS")
        return not (self.action or "").startswith(("Get", "List", "Describe", "Head"))


def read_body(environ: dict) -> bytes:
    """Read the request body once and put it back, so that the next WSGI app can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def classify(environ: dict) -> AwsRequest:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    region, signing_name = _credential_scope(environ)
    service = _SIGNING_TO_SERVICE.get(signing_name, signing_name)

    if target := environ.get("HTTP_X_AMZ_TARGET"):
        return AwsRequest(service, target.rsplit(".", 1)[-1], "json", region, method, path)

    content_type = environ.get("CONTENT_TYPE", "")
    if method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(read_body(environ).decode("utf-8", "replace"))
        if "Action" in form:
            return AwsRequest(service, form["Action"][0], "query", region, method, path)

    if service == "s3":
        return AwsRequest(service, _s3_action(method, path), "rest-xml", region, method, path)
    for route_service, route_method, pattern, action in _REST_ROUTES:
        if route_service == service and route_method == method and (match := pattern.match(path)):
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            return AwsRequest(service, action, "rest-json", region, method, path, params)
    return AwsRequest(service, None, "rest-json", region, method, path)


def _credential_scope(environ: dict) -> tuple[str, str | None]:
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", "")) or _QUERY_SCOPE.search(environ.get("QUERY_STRING", ""))
    if not match:
        return "us-east-1", None
    return match.group(1), match.group(2)
