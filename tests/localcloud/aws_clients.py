"""boto3 clients for a given local cloud (not the session's environment), for tests that start their own."""

import boto3

from labcloud.connect import local_environment


def clients(info, *names):
    env = local_environment(info)
    kwargs = dict(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return [boto3.client(name, **kwargs) for name in names]
