"""connect("local") gives the Google clients default credentials that hold a local token and need no refresh, routes
only Google's requests to the Google gateway, and makes the clients fail fast when the local cloud is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import labcloud
from labcloud.localcloud.gcp.gateway import GcpGateway, GoogleError, google_error


def test_google_default_credentials_are_local_and_valid_without_a_refresh():
    # in a subprocess: connect() changes this process's environment, which other tests must not see
    script = """
import json, labcloud, google.auth
labcloud.connect("local")
credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
print(json.dumps({"token": credentials.token, "project": project, "valid": credentials.valid}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"token": "labcloud-local-token", "project": "labcloud-project", "valid": True}


def test_the_gateway_answers_in_googles_error_shape():
    status, headers, body = google_error(404, "Not found: Dataset p:d")
    error = json.loads(body)["error"]
    assert status == 404 and error["status"] == "NOT_FOUND" and error["errors"][0]["reason"] == "notFound"
    assert GoogleError(409, "exists").status_name == "ALREADY_EXISTS"


def test_requests_signed_for_aws_never_go_to_the_google_gateway():
    gateway = GcpGateway()
    token_request = {"PATH_INFO": "/oauth2/token", "REQUEST_METHOD": "POST"}
    assert gateway.handles(token_request)
    assert not gateway.handles({**token_request, "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=x"})
    assert not gateway.handles({"PATH_INFO": "/my-bucket/key.txt", "REQUEST_METHOD": "GET"})


def test_clients_fail_fast_when_the_local_cloud_is_down(own_cloud, tmp_path, saved_environment):
    from google.cloud import bigquery, storage

    from labcloud.localcloud import control
    from labcloud.wiring.gcp import LocalCloudUnreachable

    labcloud.connect("local")  # the test's own cloud (LABCLOUD_HOME)
    gcs, bq = storage.Client(), bigquery.Client()
    gcs.create_bucket("still-here")
    control.stop(tmp_path / "state")
    for call in (lambda: list(gcs.list_buckets()), lambda: bq.query("SELECT 1").result()):
        started = time.monotonic()
        with pytest.raises(LocalCloudUnreachable, match="does not answer"):
            call()
        assert time.monotonic() - started < 5  # not the clients' minutes of retries
    control.start(tmp_path / "state", port=0)
    labcloud.connect("local")
    assert "still-here" in [b.name for b in storage.Client().list_buckets()]
