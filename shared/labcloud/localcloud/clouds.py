"""Which cloud a request is for, told by what it carries, for the requests no route of the local cloud matches.

All three clouds share one port, so a request that no Google or Azure route knows must still reach the right
cloud's answer: a Google path the local cloud does not serve gets Google's error, not moto's. The signs, in order:

- AWS: a SigV4 (or SigV2) `Authorization` header, a presigned URL's `X-Amz-*` query, or `X-Amz-*` headers. An
  AWS-signed request is AWS's whatever its path says (an S3 bucket named "subscriptions" or "openai" stays S3's).
- Azure: an `api-version` query parameter (every ARM, Azure ML and Azure OpenAI call has one), `x-ms-*` headers
  (azure-core sends `x-ms-client-request-id` on every call), an `api-key` header (Azure OpenAI), or an Azure path:
  ARM's `/subscriptions/`, `/providers/`, `/tenants`, Azure ML's `/mferp/`, `/history/`, `/data/v1.0/`, and
  `/openai/`.
- Google: a Google API path (`/storage/v1`, `/upload/storage`, `/bigquery/v2`, `/v1/projects/...`, the `/ui/`
  prefix Vertex polls operations under, `/oauth2/`), `x-goog-*` headers (`x-goog-api-client` on every Google
  client call), or an OAuth bearer token (checked after Azure's signs: Azure ML sends bearer tokens too).
- Anything else is AWS's: moto decides (an unsigned request without any sign is S3's there, as on moto).

How it differs from the clouds: each real cloud has its own hosts, so none of them has to guess; here an unsigned
request to an S3 path that looks like another cloud's (an anonymous GET of a public bucket named "openai") is read
as that cloud's.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

AWS, GOOGLE, AZURE = "aws", "gcp", "azure"

_AWS_QUERY = re.compile(r"(?:^|&)(?:X-Amz-Credential|X-Amz-Signature|AWSAccessKeyId)=", re.IGNORECASE)
_AZURE_PATH = re.compile(r"^/(?:subscriptions/|providers/|tenants(?:/|$)|mferp/|history/|data/v1\.0/|openai/)")
_GOOGLE_PATH = re.compile(
    r"^/(?:(?:upload/|download/|batch/)?storage/v1(?:/|$)|(?:upload/)?bigquery/v2(?:/|$)"
    r"|(?:[a-z]+/)?v\d+(?:(?:alpha|beta)\d*)?/projects/|ui/|oauth2/)"
)


def aws_signed(environ: dict) -> bool:
    """Whether a request carries an AWS signature (or AWS's own headers): then it is AWS's, whatever its path."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if authorization.startswith(("AWS4-", "AWS ")):
        return True
    if _AWS_QUERY.search(environ.get("QUERY_STRING", "")):
        return True
    return "HTTP_X_AMZ_TARGET" in environ or "HTTP_X_AMZ_DATE" in environ


def cloud_of(environ: dict) -> str:
    """AWS, GOOGLE or AZURE: the cloud whose error shape an unrouted request should be answered in."""
    if aws_signed(environ):
        return AWS
    if _looks_azure(environ):
        return AZURE
    if _looks_google(environ):
        return GOOGLE
    return AWS


def _looks_azure(environ: dict) -> bool:
    if "api-version" in parse_qs(environ.get("QUERY_STRING", "")):
        return True
    if _AZURE_PATH.match(environ.get("PATH_INFO", "")):
        return True
    return "HTTP_API_KEY" in environ or any(name.startswith("HTTP_X_MS_") for name in environ)


def _looks_google(environ: dict) -> bool:
    if _GOOGLE_PATH.match(environ.get("PATH_INFO", "")):
        return True
    if environ.get("HTTP_AUTHORIZATION", "").startswith("Bearer "):
        return True
    return any(name.startswith("HTTP_X_GOOG_") for name in environ)
