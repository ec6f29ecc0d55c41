"""AWS error responses, in the shape each wire protocol's SDK parser expects."""

from __future__ import annotations

import json
import uuid
from xml.sax.saxutils import escape

Response = tuple[int, list[tuple[str, str]], bytes]


def aws_error(protocol: str, status: int, code: str, message: str) -> Response:
    request_id = str(uuid.uuid4())
    headers = [("x-amzn-RequestId", request_id)]
    if protocol in ("json", "rest-json"):
        body = json.dumps({"__type": code, "message": message}).encode()
        return (
            status,
            [*headers, ("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)],
            body,
        )
    if protocol == "query":
        fault = "Sender" if status < 500 else "Receiver"
        xml = (
            f"<ErrorResponse><Error><Type>{fault}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return status, [*headers, ("Content-Type", "text/xml")], xml.encode()
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>"
    )
    return status, [*headers, ("Content-Type", "application/xml")], xml.encode()


def not_implemented(protocol: str, operation: str) -> Response:
    """The answer to an operation the local cloud does not implement, as AWS answers one it does not know: JSON
    protocols `UnknownOperationException` (400), the query protocol `InvalidAction` (400), REST protocols 501
    `NotImplemented`. botocore retries none of them (it retries throttling, 500, 502, 503 and 504)."""
    message = f"The local cloud does not implement {operation}."
    if protocol == "json":
        return aws_error(protocol, 400, "UnknownOperationException", message)
    if protocol == "query":
        return aws_error(protocol, 400, "InvalidAction", message)
    return aws_error(protocol, 501, "NotImplemented", message)
