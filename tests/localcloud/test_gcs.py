"""Cloud Storage on the local cloud, through the unmodified google-cloud-storage client: buckets, uploads (multipart,
resumable, large files), downloads with ranges and checksums, listings with folders and pages, copies, metadata,
GCS's errors, the meter, and objects that survive a restart."""

import base64
import hashlib
import io
import os
import uuid
from pathlib import Path

import google_crc32c
import pytest
import requests
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage import blob as blob_module

from labcloud.localcloud import control
from labcloud.localcloud.gcp import storage_store
from labcloud.pricing.ledger import CostLedger


@pytest.fixture
def client(connection):
    return storage.Client()


@pytest.fixture
def bucket(client):
    return client.create_bucket(f"gcs-test-{uuid.uuid4().hex[:8]}")


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_buckets_are_created_found_listed_and_deleted(client):
    name = f"gcs-buckets-{uuid.uuid4().hex[:8]}"
    created = client.create_bucket(name)
    assert created.name == name and created.location == "US" and created.time_created is not None
    assert client.bucket(name).exists() and not client.bucket(f"{name}-nope").exists()
    assert client.get_bucket(name).name == name
    assert name in [b.name for b in client.list_buckets()]
    assert [b.name for b in client.list_buckets(prefix=name)] == [name]
    created.labels = {"course": "lab"}
    created.patch()
    assert client.get_bucket(name).labels == {"course": "lab"}
    client.bucket(name).delete()
    assert not client.bucket(name).exists()


def test_bucket_errors_are_gcs_errors(client, bucket):
    with pytest.raises(exceptions.Conflict, match="you already own it"):
        client.create_bucket(bucket.name)
    for bad in ("Upper-Case", "ab", "bad!name", "goog-bucket", "my-google-bucket", "192.168.1.1"):
        with pytest.raises(exceptions.BadRequest, match="Invalid bucket name"):
            client.create_bucket(bad)
    with pytest.raises(exceptions.NotFound, match="The specified bucket does not exist."):
        client.get_bucket(f"missing-{uuid.uuid4().hex[:8]}")
    bucket.blob("keep.txt").upload_from_string("x")
    with pytest.raises(exceptions.Conflict, match="not empty"):
        bucket.delete()
    bucket.blob("keep.txt").delete()
    bucket.delete()


def test_upload_download_metadata_and_delete(bucket, tmp_path):
    data = b"x,y\n1,2\n3,4\n"
    blob = bucket.blob("data/train.csv")
    blob.upload_from_string(data, content_type="text/csv")
    assert bucket.blob("data/train.csv").download_as_bytes() == data
    fetched = bucket.blob("data/train.csv")
    fetched.reload()
    assert fetched.size == len(data) and fetched.content_type == "text/csv"
    assert fetched.md5_hash == b64(hashlib.md5(data).digest())
    assert fetched.crc32c == b64(google_crc32c.Checksum(data).digest())
    assert fetched.updated is not None and fetched.generation > 0

    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(5000))
    bucket.blob("models/model.bin").upload_from_filename(str(source))
    target = tmp_path / "back.bin"
    bucket.blob("models/model.bin").download_to_filename(str(target))
    assert target.read_bytes() == source.read_bytes()

    assert blob.exists()
    blob.delete()
    assert not blob.exists()
    with pytest.raises(exceptions.NotFound, match=f"No such object: {bucket.name}/data/train.csv"):
        blob.download_as_bytes()
    with pytest.raises(exceptions.NotFound):
        blob.delete()


def test_resumable_uploads_in_chunks_and_of_a_large_file(bucket, tmp_path, monkeypatch):
    def no_multipart(*args, **kwargs):
        raise AssertionError("expected a resumable upload")

    monkeypatch.setattr(blob_module.Blob, "_do_multipart_upload", no_multipart)
    chunked = os.urandom(1024 * 1024 + 17)
    blob = bucket.blob("chunked.bin")
    blob.chunk_size = 256 * 1024
    blob.upload_from_file(io.BytesIO(chunked), content_type="application/x-test")
    assert blob.size == len(chunked) and blob.content_type == "application/x-test"
    assert bucket.blob("chunked.bin").download_as_bytes() == chunked

    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(9 * 1024 * 1024))  # over the client's 8 MiB multipart limit
    bucket.blob("large.bin").upload_from_filename(str(large))
    assert bucket.get_blob("large.bin").md5_hash == b64(hashlib.md5(large.read_bytes()).digest())


def test_file_like_reads_and_writes_stream_in_chunks(bucket):
    lines = [f"row {i}\n" for i in range(40_000)]
    with bucket.blob("stream.txt").open("w", chunk_size=256 * 1024) as writer:
        writer.writelines(lines)
    with bucket.blob("stream.txt").open("r", chunk_size=64 * 1024) as reader:
        assert reader.readline() == lines[0]
        reader.seek(len(lines[0]) * 10)
        assert reader.read() == "".join(lines[10:])


def test_range_downloads_and_the_hashes_the_client_checks(bucket, connection):
    data = bytes(range(256)) * 10
    blob = bucket.blob("ranged.bin")
    blob.upload_from_string(data)
    assert blob.download_as_bytes(start=10, end=19) == data[10:20]
    assert blob.download_as_bytes(start=2550) == data[2550:]

    url = f"{connection.server.url}/download/storage/v1/b/{bucket.name}/o/ranged.bin?alt=media"
    whole = requests.get(url, timeout=5)
    crc, md5 = b64(google_crc32c.Checksum(data).digest()), b64(hashlib.md5(data).digest())
    assert whole.status_code == 200 and whole.headers["x-goog-hash"] == f"crc32c={crc},md5={md5}"
    tail = requests.get(url, headers={"Range": "bytes=-6"}, timeout=5)
    assert tail.status_code == 206 and tail.content == data[-6:]
    assert tail.headers["Content-Range"] == f"bytes {len(data) - 6}-{len(data) - 1}/{len(data)}"
    assert requests.get(url, headers={"Range": "bytes=9999-"}, timeout=5).status_code == 416


def test_listing_with_folders_prefixes_and_pages(client, bucket):
    names = [f"logs/2024/{i:02d}.txt" for i in range(5)] + ["logs/readme.md", "data/a.csv", "top.txt"]
    for name in names:
        bucket.blob(name).upload_from_string(name)
    assert [b.name for b in client.list_blobs(bucket)] == sorted(names)
    root = bucket.list_blobs(delimiter="/")
    assert [b.name for b in root] == ["top.txt"] and root.prefixes == {"logs/", "data/"}
    logs = bucket.list_blobs(prefix="logs/", delimiter="/")
    assert [b.name for b in logs] == ["logs/readme.md"] and logs.prefixes == {"logs/2024/"}

    assert [b.name for b in bucket.list_blobs(prefix="logs/2024/", max_results=3)] == names[:3]
    pages = list(bucket.list_blobs(prefix="logs/2024/", page_size=2).pages)
    assert [[b.name for b in page] for page in pages] == [names[0:2], names[2:4], names[4:5]]
    first = bucket.list_blobs(prefix="logs/", page_size=4)
    page = next(first.pages)
    rest = bucket.list_blobs(prefix="logs/", page_token=first.next_page_token)
    assert [b.name for b in page] + [b.name for b in rest] == sorted(n for n in names if n.startswith("logs/"))


def test_names_with_odd_characters_copy_rewrite_and_metadata(client, bucket):
    name = "dir/a b+c%2F?#=é.txt"
    blob = bucket.blob(name)
    blob.metadata = {"owner": "lab"}
    blob.upload_from_string("odd", content_type="text/plain")
    assert [b.name for b in bucket.list_blobs(prefix="dir/")] == [name]
    assert bucket.get_blob(name).metadata == {"owner": "lab"}

    other = client.create_bucket(f"gcs-copy-{uuid.uuid4().hex[:8]}")
    copied = bucket.copy_blob(blob, other, "copies/odd.txt")
    assert copied.download_as_text() == "odd" and copied.content_type == "text/plain"
    rewritten = other.blob("rewritten.txt")
    token, done, total = rewritten.rewrite(blob)
    assert token is None and done == total == 3 and rewritten.download_as_text() == "odd"

    blob.metadata = {"stage": "prod"}
    blob.patch()
    fresh = bucket.get_blob(name)
    assert fresh.metadata == {"owner": "lab", "stage": "prod"} and fresh.metageneration == 2


def test_preconditions_and_checksum_mismatches_are_refused(bucket, connection):
    blob = bucket.blob("once.txt")
    blob.upload_from_string("first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("once.txt").upload_from_string("second", if_generation_match=0)
    assert blob.download_as_text() == "first"

    url = f"{connection.server.url}/upload/storage/v1/b/{bucket.name}/o?uploadType=multipart"
    metadata = b'{"name": "once.txt", "md5Hash": "AAAAAAAAAAAAAAAAAAAAAA=="}'
    body = (
        b"--XX\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n" + metadata + b"\r\n"
        b"--XX\r\ncontent-type: text/plain\r\n\r\nhello\r\n--XX--"
    )
    answer = requests.post(url, data=body, headers={"Content-Type": 'multipart/related; boundary="XX"'}, timeout=5)
    assert answer.status_code == 400 and "doesn't match calculated MD5" in answer.json()["error"]["message"]
    assert blob.download_as_text() == "first"  # a corrupt upload leaves what was there


def test_operations_are_metered_as_class_a_and_class_b(connection, client):
    bucket = client.create_bucket(f"gcs-meter-{uuid.uuid4().hex[:8]}")
    bucket.blob("m.txt").upload_from_string("m")
    bucket.blob("m.txt").download_as_bytes()
    list(bucket.list_blobs())
    costs = connection.costs()
    gcs = costs[costs["service"] == "storage"].set_index("action")
    assert gcs.loc["objects.insert (Class A)", "usd"] == pytest.approx(0.05 / 10_000)
    assert gcs.loc["objects.list (Class A)", "quantity"] == 1
    assert gcs.loc["objects.download (Class B)", "usd"] == pytest.approx(0.004 / 10_000)
    assert (gcs["price_key"] == "gcp.gcs.class_a_per_10000").sum() >= 3


def test_objects_survive_a_restart(own_cloud):
    def client_for(info) -> storage.Client:
        options = {"api_endpoint": info.url}
        return storage.Client(project="labcloud-project", credentials=AnonymousCredentials(), client_options=options)

    bucket = client_for(own_cloud).create_bucket("kept-bucket")
    bucket.blob("kept/model.bin").upload_from_string(b"weights", content_type="application/x-model")
    before = bucket.get_blob("kept/model.bin")

    control.stop(Path(own_cloud.state_dir))
    info = control.start(Path(own_cloud.state_dir), port=0)
    after = client_for(info).get_bucket("kept-bucket").get_blob("kept/model.bin")
    assert after.download_as_bytes() == b"weights" and after.content_type == "application/x-model"
    assert (after.generation, after.md5_hash) == (before.generation, before.md5_hash)
    assert after.media_link.startswith(info.url)


def test_the_store_other_services_use_in_process_meters_storage(tmp_path):
    ledger = CostLedger(tmp_path / "costs.json")
    store = storage_store.ObjectStore(tmp_path / "storage", ledger)
    store.create_bucket("exports")
    store.put_object("exports", "t/part-0.csv", b"a\n" * 512, "text/csv", {"job": "j1"})
    store.put_object("exports", "t/part-1.csv", b"b\n", "text/csv")
    objects, prefixes = store.list_objects("exports", prefix="t/")
    assert [o["name"] for o in objects] == ["t/part-0.csv", "t/part-1.csv"] and prefixes == []
    assert store.list_objects("exports", delimiter="/") == ([], ["t/"])
    assert store.read_object("exports", "t/part-0.csv", 0, 4) == b"a\na\n"
    assert store.object_path("exports", "t/part-1.csv").read_bytes() == b"b\n"
    assert store.get_object("exports", "t/part-0.csv")["metadata"] == {"job": "j1"}
    assert storage_store.parse_gs_url("gs://exports/t/part-0.csv") == ("exports", "t/part-0.csv")

    store._accrued_at -= 730 * 3600  # a month passes
    store.accrue_storage()
    (line,) = [row for row in ledger.lines() if row["action"] == "storage (Standard)"]
    assert line["resource"] == "gs://exports" and line["price_key"] == "gcp.gcs.storage_gb_month"
    assert line["quantity"] == pytest.approx(1026 / 2**30, rel=1e-3)
    assert line["usd"] == pytest.approx(1026 / 2**30 * 0.020, rel=1e-3)

    store.delete_object("exports", "t/part-1.csv")
    reopened = storage_store.ObjectStore(tmp_path / "storage")  # what a restart sees
    assert [o["name"] for o in reopened.list_objects("exports")[0]] == ["t/part-0.csv"]
    with pytest.raises(storage_store.NotFound, match="No such object: exports/t/part-1.csv"):
        reopened.get_object("exports", "t/part-1.csv")
