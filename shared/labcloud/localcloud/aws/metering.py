"""What an AWS API request would have cost: request-priced services (S3, SQS, CloudWatch) only.

Compute (training jobs, endpoints, Lambda duration) is metered by the services that run it.
"""

from __future__ import annotations

from ...pricing.catalog import ServicePrices
from ...pricing.ledger import CostLine
from .requests import AwsRequest

# price key -> how many requests the price is quoted for
_S3_WRITE = ("aws.s3.put_per_1000", 1000)
_S3_READ = ("aws.s3.get_per_1000", 1000)
_SQS = ("aws.sqs.requests_per_million", 1_000_000)
_CW_PUT = ("aws.cloudwatch.put_metric_data_per_1000", 1000)


def _price_ref(request: AwsRequest) -> tuple[str, int] | None:
    if request.service == "s3":
        if request.method == "DELETE":
            return None  # S3 does not charge for DELETE requests
        return _S3_READ if request.method in ("GET", "HEAD") else _S3_WRITE
    if request.service == "sqs":
        return _SQS
    if request.service == "cloudwatch" and request.action == "PutMetricData":
        return _CW_PUT
    return None


def request_cost(request: AwsRequest, prices: ServicePrices) -> CostLine | None:
    ref = _price_ref(request)
    if ref is None or ref[0] not in prices:
        return None
    key, per = ref
    price = prices[key]
    return CostLine(
        cloud="aws",
        service=request.service or "",
        action=request.action or request.method,
        resource="requests",
        quantity=1,
        unit="request",
        usd=price.usd / per,
        price_key=key,
    )
