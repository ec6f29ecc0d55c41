"""STS and the execution role: the learner's identity on the local cloud is an assumed SageMaker role.

On a SageMaker notebook instance, `sagemaker.get_execution_role()` finds the notebook's role from the caller
identity, an `assumed-role` ARN. moto answers with a plain user, for which the SDK refuses; so GetCallerIdentity
answers as that role, and the role exists in IAM from the start (created once, then kept with IAM's state).
"""

from __future__ import annotations

import json
import uuid
from xml.sax.saxutils import escape

from ..context import ACCOUNT_ID, AwsContext
from ..requests import AwsRequest

EXECUTION_ROLE = "SageMakerExecutionRole"
SESSION_NAME = "labcloud-learner"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": ["sagemaker.amazonaws.com", "lambda.amazonaws.com"]},
            "Action": "sts:AssumeRole",
        }
    ],
}


def register(gateway, context: AwsContext) -> None:
    context.on_started(lambda: _ensure_execution_role(context))
    gateway.intercept("sts", "GetCallerIdentity", _get_caller_identity)


def _ensure_execution_role(context: AwsContext) -> None:
    with context.lock:
        iam = context.moto_backend("iam", "global")
        if not any(role.name == EXECUTION_ROLE for role in iam.roles.values()):
            iam.create_role(
                role_name=EXECUTION_ROLE,
                assume_role_policy_document=json.dumps(TRUST_POLICY),
                path="/",
                permissions_boundary=None,
                description="The learner's SageMaker and Lambda execution role on the local cloud",
                tags=[],
                max_session_duration="3600",
            )
            context.mark_dirty("iam")


def _get_caller_identity(request: AwsRequest, environ: dict):
    arn = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{EXECUTION_ROLE}/{SESSION_NAME}"
    xml = (
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
        f"<Arn>{escape(arn)}</Arn><UserId>AROALOCALCLOUD:{SESSION_NAME}</UserId><Account>{ACCOUNT_ID}</Account>"
        f"</GetCallerIdentityResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>"
    )
    return 200, [("Content-Type", "text/xml")], xml.encode()
