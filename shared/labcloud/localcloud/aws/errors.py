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
