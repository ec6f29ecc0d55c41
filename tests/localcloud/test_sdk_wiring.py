"""What connect("local") does for the unmodified SageMaker SDK v2: the execution role, the SDK's regional STS
URL sent to the local cloud, telemetry opted out, and waiter sleeps cut short."""

from __future__ import annotations

import time

import boto3
import pytest

from labcloud import connect


@pytest.fixture(scope="module")
def wired():
    return connect("local")


def test_get_execution_role_is_the_learners_assumed_role(wired):
    import sagemaker

    assert sagemaker.get_execution_role() == "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
    session = sagemaker.Session()
    assert session.account_id() == "123456789012"
    assert session.default_bucket() == "sagemaker-us-east-1-123456789012"


def test_clients_built_for_a_regional_aws_url_reach_the_local_cloud(wired):
    # the SDK builds its STS client this way; AWS_ENDPOINT_URL alone would not redirect it
    sts = boto3.client("sts", endpoint_url="https://sts.us-east-1.amazonaws.com")
    assert sts.meta.endpoint_url == wired.server.url
    assert ":assumed-role/SageMakerExecutionRole/" in sts.get_caller_identity()["Arn"]
    other = boto3.client("s3", endpoint_url="http://127.0.0.1:9")  # a URL that is not AWS's is left alone
    assert other.meta.endpoint_url == "http://127.0.0.1:9"


def test_the_sdk_is_opted_out_of_telemetry(wired):
    import sagemaker
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.utils import resolve_value_from_config

    session = sagemaker.Session()
    assert resolve_value_from_config(config_path=TELEMETRY_OPT_OUT_PATH, sagemaker_session=session) is True


def test_the_sdks_waiter_sleeps_are_short_locally_and_its_clock_counts_them_whole(wired):
    import sagemaker.session

    clock = sagemaker.session.time
    before_wall, before_clock = time.perf_counter(), clock.time()
    clock.sleep(5)  # a training-job poll
    assert time.perf_counter() - before_wall < 1.0
    assert clock.time() - before_clock >= 5  # so the log tail's 30 s status checks come after three polls


def test_the_sdks_status_messages_are_plain_stdout_lines_and_its_warnings_stay_on_stderr(wired, capsys):
    import logging

    import sagemaker.experiments  # noqa: F401  (it calls logging.basicConfig at INFO, as in a notebook)

    logging.getLogger("sagemaker").info("Creating model with name: %s", "lab02-current")
    logging.getLogger("sagemaker.image_uris").info("image_uri is not presented, retrieving image_uri ...")
    logging.getLogger("sagemaker.session").warning("something to fix")
    out, err = capsys.readouterr()
    assert out == "Creating model with name: lab02-current\n"
    assert err == "WARNING:sagemaker.session:something to fix\n"
