"""The local cloud's HTTP serving (localcloud/http.py): headers with `_`, keep-alive, concurrency, stop.

Some tests serve a small WSGI app of their own on `HttpServer`, to see what a handler receives; the others go
through the session's local cloud with the real SDKs and http.client, on both listeners.
"""

import http.client
import json
import os
import shutil
import ssl
import threading
import uuid
from pathlib import Path

import pytest
from aws_clients import clients

from labcloud.localcloud import control
from labcloud.localcloud.http import HttpServer, header_name
from labcloud.localcloud.server import LOOPBACK, bind_socket
from labcloud.localcloud.tls import LocalTls

CONCURRENT = 8
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def echo_headers(environ, start_response):
    """Answers the request's headers as the handler saw them, without reading the body."""
    body = json.dumps({k: v for k, v in environ.items() if k.startswith("HTTP_")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve():
    """serve(app) -> (host, port) of an HttpServer of the test's own; every one is stopped afterwards."""
    servers = []

    def start(app):
        sock = bind_socket(LOOPBACK, 0)
        servers.append(HttpServer(app, sock, name="test").start())
        return servers[-1].server_address

    yield start
    for server in servers:
        server.stop()
        assert server.wait(timeout=30)


def get_json(connection: http.client.HTTPConnection, path: str, headers=None, body=None) -> dict:
    connection.request("POST" if body else "GET", path, body=body, headers=headers or {})
    response = connection.getresponse()
    assert response.status == 200
    return json.loads(response.read())


def test_a_header_with_an_underscore_reaches_the_handler(serve):
    connection = http.client.HTTPConnection(*serve(echo_headers), timeout=30)
    seen = get_json(connection, "/", headers={"x-ms-meta-upload_status": "done"})
    assert seen["HTTP_X_MS_META_UPLOAD_STATUS"] == "done"


def test_a_body_the_handler_left_unread_does_not_spoil_the_next_request(serve):
    connection = http.client.HTTPConnection(*serve(echo_headers), timeout=30)
    get_json(connection, "/", body=b"x" * 100_000, headers={"x-first": "1"})
    assert get_json(connection, "/", headers={"x-second": "2"})["HTTP_X_SECOND"] == "2"


def test_requests_are_served_at_the_same_time(serve):
    # Each handler waits until CONCURRENT of them are inside at once: served one after another, the barrier breaks.
    barrier = threading.Barrier(CONCURRENT, timeout=30)

    def meet(environ, start_response):
        barrier.wait()
        start_response("200 OK", [("Content-Length", "3")])
        return [b"met"]

    address = serve(meet)
    statuses = []

    def call():
        connection = http.client.HTTPConnection(*address, timeout=60)
        connection.request("GET", "/")
        statuses.append(connection.getresponse().status)

    callers = [threading.Thread(target=call) for _ in range(CONCURRENT)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=90)
    assert statuses == [200] * CONCURRENT


def test_stop_closes_kept_connections_and_wait_returns(serve):
    sock = bind_socket(LOOPBACK, 0)
    server = HttpServer(echo_headers, sock, name="test").start()
    connection = http.client.HTTPConnection(*server.server_address, timeout=30)
    get_json(connection, "/")  # the connection stays open, idle, as an SDK's pool keeps it
    server.stop()
    assert server.wait(timeout=30)
    with pytest.raises(OSError):
        http.client.HTTPConnection(*server.server_address, timeout=5).request("GET", "/")


def test_a_server_never_started_stops_at_once():
    server = HttpServer(echo_headers, bind_socket(LOOPBACK, 0), name="test")
    server.stop()
    assert server.wait(timeout=1)


@pytest.fixture(scope="module")
def session_cloud():
    info = control.status()
    assert info is not None, "the test session's local cloud is not running"
    return info


def one_connection(session_cloud, scheme: str) -> http.client.HTTPConnection:
    if scheme == "http":
        return http.client.HTTPConnection(session_cloud.host, session_cloud.port, timeout=30)
    ca = LocalTls(Path(session_cloud.state_dir) / "tls").ca
    context = ssl.create_default_context(cafile=str(ca))
    return http.client.HTTPSConnection(session_cloud.host, session_cloud.tls_port, context=context, timeout=30)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_two_requests_go_over_one_connection(session_cloud, scheme):
    connection = one_connection(session_cloud, scheme)
    local_ports = []
    for _ in range(2):
        health = get_json(connection, "/_labcloud/health")
        assert health["pid"] == session_cloud.pid
        # http.client drops its socket after a `Connection: close` answer and opens a new one for the next request
        local_ports.append(connection.sock.getsockname()[1])
    assert local_ports[0] == local_ports[1]
    connection.close()


def test_header_names_reach_the_app_as_the_client_sent_them(serve):
    def names(environ, start_response):
        body = json.dumps({key: header_name(environ, key) for key in environ if key.startswith("HTTP_X")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    connection = http.client.HTTPConnection(*serve(names), timeout=30)
    sent = get_json(connection, "/", headers={"x-ms-meta-upload_status": "done", "X-Ms-Meta-Owner": "ada"})
    assert sent == {
        "HTTP_X_MS_META_UPLOAD_STATUS": "x-ms-meta-upload_status",
        "HTTP_X_MS_META_OWNER": "X-Ms-Meta-Owner",
    }


def test_the_path_is_decoded_and_the_raw_target_kept(serve):
    def paths(environ, start_response):
        body = json.dumps({key: environ[key] for key in ("PATH_INFO", "QUERY_STRING", "RAW_URI")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    connection = http.client.HTTPConnection(*serve(paths), timeout=30)
    target = "/bucket/folder%2Fa%3Fb%20c%E2%82%AC?list-type=2"
    seen = get_json(connection, target)
    # WSGI's PATH_INFO is the decoded bytes as latin-1 (werkzeug's too): the euro sign's UTF-8 bytes
    assert seen == {"PATH_INFO": "/bucket/folder/a?b c\xe2\x82\xac", "QUERY_STRING": "list-type=2", "RAW_URI": target}


def test_s3_keys_and_metadata_names_arrive_as_sent(session_cloud):
    (s3,) = clients(session_cloud, "s3")
    s3.create_bucket(Bucket="http-serving")
    key = "raw/a%2Fb?c=d e"
    s3.put_object(Bucket="http-serving", Key=key, Body=b"a,b\n", Metadata={"upload_status": "done", "Owner": "ada"})
    head = s3.head_object(Bucket="http-serving", Key=key)
    assert head["Metadata"] == {"upload_status": "done", "owner": "ada"}  # S3 answers metadata names in lower case
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="http-serving", Prefix="raw/")["Contents"]] == [key]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (Azurite)")
def test_the_azure_sdk_uploads_a_data_folder_once(connection, tmp_path):
    """azure-ai-ml marks a finished upload with blob metadata `upload_status` and skips folders that have it."""
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Data
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    ml_client = MLClient(DefaultAzureCredential(), SUBSCRIPTION, "rg-ai", "ai-workspace")
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "rows.csv").write_text(f"{uuid.uuid4()}\n")  # content of its own: the upload path is its hash
    name = f"http-serving-{uuid.uuid4().hex[:8]}"
    first = ml_client.data.create_or_update(Data(name=name, version="1", type="uri_folder", path=str(folder)))
    prefix = first.path.split("/paths/", 1)[1].strip("/")
    service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    container = service.get_container_client("workspaceblobstore")

    def uploaded() -> dict[str, tuple[str, dict]]:
        blobs = container.list_blobs(name_starts_with=prefix, include=["metadata"])
        return {blob.name: (blob.etag, blob.metadata) for blob in blobs}

    before = uploaded()
    assert any(metadata.get("upload_status") == "completed" for _, metadata in before.values()), before
    again = ml_client.data.create_or_update(Data(name=name, version="2", type="uri_folder", path=str(folder)))
    assert again.path == first.path
    assert uploaded() == before  # same etags: nothing was written again
