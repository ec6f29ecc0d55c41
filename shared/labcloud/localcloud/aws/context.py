"""What the AWS services the local cloud makes real get to work with: the common context, plus moto.

Each service module (`sts`, `sagemaker_training`, ...) has `register(gateway, context)`, which hooks its
handlers into the gateway with `gateway.intercept(service, action, handler)`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..context import CloudContext
from .errors import Response

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account: a documentation placeholder, never a real account
LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY = "labcloud", "labcloud-local-only"


@dataclass(kw_only=True)
class AwsContext(CloudContext):
    cloud: str = "aws"
    lock: threading.RLock  # moto's lock: hold it to read or change moto's backends directly
    call_moto: Callable  # (request, environ) -> Response: let moto answer, e.g. to validate and store
    mark_dirty: Callable[[str], None]  # (moto service name): save it in the next snapshot, after a direct change

    def moto_backend(self, service: str, region: str):
        from moto.backends import get_backend

        return get_backend(service)[ACCOUNT_ID][region]

    def client(self, service: str, region: str = "us-east-1"):
        """A boto3 client for this local cloud itself, as the services' background work uses it."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
        )

    def sdk_environment(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment for a learner's process (a training script, a model server) to reach this cloud."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }


def json_response(data, status: int = 200, content_type: str = "application/x-amz-json-1.1") -> Response:
    return status, [("Content-Type", content_type)], json.dumps(data, default=str).encode()


def read_json(environ: dict) -> dict:
    """The JSON body of a request (an empty body is {}); ValueError when it is not a JSON object."""
    from .requests import read_body

    body = read_body(environ)
    data = json.loads(body or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    return data
