"""Cloud Storage's JSON API, as google-cloud-storage speaks it when `STORAGE_EMULATOR_HOST` points here.

Paths (object names are URL-encoded, `/` included, so they are read from the raw request URI):
`/storage/v1/b[/{bucket}]` (buckets), `/storage/v1/b/{bucket}/o[/{object}]` (metadata, list, delete, patch,
`copyTo`, `rewriteTo`, `compose`), `/upload/storage/v1/b/{bucket}/o?uploadType=media|multipart|resumable` (resumable
sessions continue with PUT `...&upload_id=`, `Content-Range` and a 308 + `Range` until the last byte), and
`/download/storage/v1/b/{bucket}/o/{object}?alt=media` (Range requests; `x-goog-hash` with crc32c and md5).
The objects live in `storage_store` (shared with BigQuery and Vertex AI). Every request is metered as a Class A
(writes, lists) or Class B (reads) operation; deletes are free, as on GCS.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from pathlib import Path
from urllib.parse import quote, unquote, urlencode

from ....pricing.catalog import load_service_prices
from ....pricing.ledger import CostLine
from .. import storage_store
from ..gateway import GcpRequest, GoogleError, Response, json_response
from ..storage_store import InvalidArgument, NotFound, ObjectStore, PreconditionFailed

CLASS_A = ("gcp.gcs.class_a_per_10000", 10_000, "Class A")
CLASS_B = ("gcp.gcs.class_b_per_10000", 10_000, "Class B")
_BUCKET = r"(?P<bucket>[^/]+)"
_OBJECT = r"(?P<object>.+)"
_WRITABLE = ("cacheControl", "contentDisposition", "contentEncoding", "contentLanguage", "customTime")
_CONTENT_RANGE = re.compile(r"^bytes (?:(?P<start>\d+)-(?P<end>\d+)|\*)/(?P<total>\d+|\*)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")


def register(gateway, context) -> None:
    api = StorageApi(storage_store.for_context(context), context.ledger)
    context.on_shutdown(api.store.accrue_storage)
    base, upload, download = "/storage/v1/b", "/upload/storage/v1/b", "/download/storage/v1/b"
    for method, pattern, handler in (
        ("GET", base, api.list_buckets),
        ("POST", base, api.create_bucket),
        ("GET", f"{base}/{_BUCKET}", api.get_bucket),
        ("PATCH", f"{base}/{_BUCKET}", api.patch_bucket),
        ("PUT", f"{base}/{_BUCKET}", api.patch_bucket),
        ("DELETE", f"{base}/{_BUCKET}", api.delete_bucket),
        ("GET", f"{base}/{_BUCKET}/o", api.list_objects),
        ("GET", f"{base}/{_BUCKET}/o/{_OBJECT}", api.get_object),
        ("PATCH", f"{base}/{_BUCKET}/o/{_OBJECT}", api.patch_object),
        ("PUT", f"{base}/{_BUCKET}/o/{_OBJECT}", api.patch_object),
        ("DELETE", f"{base}/{_BUCKET}/o/{_OBJECT}", api.delete_object),
        ("POST", f"{base}/{_BUCKET}/o/{_OBJECT}", api.object_action),
        ("POST", f"{upload}/{_BUCKET}/o", api.upload),
        ("PUT", f"{upload}/{_BUCKET}/o", api.resumable_chunk),
        ("DELETE", f"{upload}/{_BUCKET}/o", api.cancel_resumable),
        ("GET", f"{download}/{_BUCKET}/o/{_OBJECT}", api.download),
    ):
        gateway.route(method, pattern, handler)


def raw_object_path(request: GcpRequest) -> str:
    """The part after `/o/` of the request's path as the client sent it (still URL-encoded)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or quote(request.path)
    path = raw.split("?", 1)[0]
    _, _, rest = path.partition(f"/b/{quote(request.params['bucket'], safe='')}/o/")
    if not rest:
        _, _, rest = path.partition("/o/")
    return rest


def object_name(request: GcpRequest) -> str:
    return unquote(raw_object_path(request))


def host_url(request: GcpRequest) -> str:
    environ = request.environ
    return f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', 'localhost')}"


class StorageApi:
    def __init__(self, store: ObjectStore, ledger):
        self.store, self.ledger = store, ledger
        self.uploads = store.root / "uploads"
        self.uploads.mkdir(exist_ok=True)

    # ---- metering
    def meter(self, operation: tuple[str, int, str], action: str) -> None:
        """One operation at its class's price; the storage held so far is accrued at the same time."""
        self.store.accrue_storage(save=False)
        key, per, label = operation
        prices = load_service_prices()
        if self.ledger is None or key not in prices:
            return
        self.ledger.add(
            CostLine(
                cloud="gcp",
                service="storage",
                action=f"{action} ({label})",
                resource="requests",
                quantity=1,
                unit=f"{label} operation",
                usd=prices[key].usd / per,
                price_key=key,
            )
        )

    # ---- resources as GCS returns them
    def bucket_resource(self, request: GcpRequest, bucket: dict) -> dict:
        return {**bucket, "selfLink": f"{host_url(request)}/storage/v1/b/{bucket['name']}"}

    def object_resource(self, request: GcpRequest, obj: dict) -> dict:
        path = f"b/{obj['bucket']}/o/{quote(obj['name'], safe='')}"
        host = host_url(request)
        return {
            **obj,
            "selfLink": f"{host}/storage/v1/{path}",
            "mediaLink": f"{host}/download/storage/v1/{path}?generation={obj['generation']}&alt=media",
        }

    # ---- buckets
    def list_buckets(self, request: GcpRequest) -> Response:
        self.meter(CLASS_A, "buckets.list")
        buckets = self.store.list_buckets(request.query.get("prefix", ""))
        page, token = paginate([(b["name"], b) for b in buckets], request.query)
        body = {"kind": "storage#buckets", "items": [self.bucket_resource(request, b) for _, b in page]}
        return json_response(with_token(body, token))

    def create_bucket(self, request: GcpRequest) -> Response:
        self.meter(CLASS_A, "buckets.insert")
        spec = request.json()
        if not spec.get("name"):
            raise InvalidArgument("Required parameter: name", "required")
        project = request.query.get("project", "")
        bucket = self.store.create_bucket(spec["name"], project, spec.get("location", "US"), spec.get("storageClass"))
        return json_response(self.bucket_resource(request, bucket))

    def get_bucket(self, request: GcpRequest) -> Response:
        self.meter(CLASS_B, "buckets.get")
        return json_response(self.bucket_resource(request, self.store.get_bucket(request.params["bucket"])))

    def patch_bucket(self, request: GcpRequest) -> Response:
        """Labels, versioning, lifecycle and the like are kept as given (none of them changes how objects behave)."""
        self.meter(CLASS_A, "buckets.patch")
        bucket = self.store.update_bucket(request.params["bucket"], request.json())
        return json_response(self.bucket_resource(request, bucket))

    def delete_bucket(self, request: GcpRequest) -> Response:
        self.store.delete_bucket(request.params["bucket"])
        return 204, [], b""

    # ---- objects: metadata
    def list_objects(self, request: GcpRequest) -> Response:
        self.meter(CLASS_A, "objects.list")
        query = request.query
        objects, prefixes = self.store.list_objects(
            request.params["bucket"], query.get("prefix", ""), query.get("delimiter", "")
        )
        start, end = query.get("startOffset", ""), query.get("endOffset", "")
        entries = [(o["name"], o) for o in objects] + [(p, None) for p in prefixes]
        entries = sorted((e for e in entries if e[0] >= start and (not end or e[0] < end)), key=lambda e: e[0])
        page, token = paginate(entries, query)
        body = {
            "kind": "storage#objects",
            "items": [self.object_resource(request, o) for _, o in page if o is not None],
            "prefixes": [name for name, o in page if o is None],
        }
        return json_response(with_token(body, token))

    def get_object(self, request: GcpRequest) -> Response:
        if request.query.get("alt") == "media":
            return self.download(request)
        self.meter(CLASS_B, "objects.get")
        obj = self.store.get_object(request.params["bucket"], object_name(request))
        check_preconditions(request.query, obj)
        return json_response(self.object_resource(request, obj))

    def patch_object(self, request: GcpRequest) -> Response:
        self.meter(CLASS_A, "objects.patch")
        bucket, name = request.params["bucket"], object_name(request)
        check_preconditions(request.query, self.store.get_object(bucket, name))
        allowed = ("metadata", "contentType", *_WRITABLE)
        changes = {k: v for k, v in request.json().items() if k in allowed}
        return json_response(self.object_resource(request, self.store.update_object(bucket, name, changes)))

    def delete_object(self, request: GcpRequest) -> Response:
        bucket, name = request.params["bucket"], object_name(request)
        check_preconditions(request.query, self.store.get_object(bucket, name))
        self.store.delete_object(bucket, name)
        return 204, [], b""

    def object_action(self, request: GcpRequest) -> Response:
        """POST on an object path: `{src}/copyTo/b/{bucket}/o/{dst}`, `.../rewriteTo/...` or `{dst}/compose`."""
        raw = raw_object_path(request)
        if raw.endswith("/compose"):
            return self.compose(request, unquote(raw[: -len("/compose")]))
        match = re.match(r"^(?P<src>.+?)/(?P<verb>copyTo|rewriteTo)/b/(?P<bucket>[^/]+)/o/(?P<dst>.+)$", raw)
        if match is None:
            raise GoogleError(404, f"Not found: {request.path}", "notFound")
        self.meter(CLASS_A, f"objects.{match['verb'][:-2]}")
        source = self.store.get_object(request.params["bucket"], unquote(match["src"]))
        changes = request.json()
        obj = self.store.put_object_file(
            unquote(match["bucket"]),
            unquote(match["dst"]),
            self.store.object_path(source["bucket"], source["name"]),
            changes.get("contentType") or source["contentType"],
            changes.get("metadata", source.get("metadata")),
            extra={k: source[k] for k in _WRITABLE if k in source},
        )
        resource = self.object_resource(request, obj)
        if match["verb"] == "copyTo":
            return json_response(resource)
        size = obj["size"]
        rewrite = {"kind": "storage#rewriteResponse", "totalBytesRewritten": size, "objectSize": size, "done": True}
        return json_response({**rewrite, "resource": resource})

    def compose(self, request: GcpRequest, name: str) -> Response:
        self.meter(CLASS_A, "objects.compose")
        bucket, spec = request.params["bucket"], request.json()
        sources = [self.store.object_path(bucket, s["name"]) for s in spec.get("sourceObjects", [])]
        if not sources:
            raise InvalidArgument("Required parameter: sourceObjects", "required")
        destination = spec.get("destination", {})
        data = b"".join(path.read_bytes() for path in sources)
        obj = self.store.put_object(bucket, name, data, destination.get("contentType"), destination.get("metadata"))
        return json_response(self.object_resource(request, obj))

    # ---- uploads
    def upload(self, request: GcpRequest) -> Response:
        self.meter(CLASS_A, "objects.insert")
        kind = request.query.get("uploadType", "media")
        if kind == "resumable":
            return self.start_resumable(request)
        if kind == "multipart":
            spec, data, content_type = parse_multipart(request)
        elif kind == "media":
            spec, data, content_type = {}, request.body(), request.content_type
        else:
            raise InvalidArgument(f"Invalid upload type: {kind}")
        return self.finish_upload(request, spec, data, content_type)

    def finish_upload(self, request: GcpRequest, spec: dict, data: bytes | Path, content_type: str | None) -> Response:
        bucket, name = request.params["bucket"], spec.get("name") or request.query.get("name")
        if not name:
            raise InvalidArgument("Required parameter: name", "required")
        self.store.get_bucket(bucket)
        check_preconditions(request.query, self.current(bucket, name))
        content_type = spec.get("contentType") or content_type or None
        fields = {"extra": {k: spec[k] for k in _WRITABLE if k in spec}, "expect": spec}
        if isinstance(data, Path):
            obj = self.store.put_object_file(
                bucket, name, data, content_type, spec.get("metadata"), move=True, **fields
            )
        else:
            obj = self.store.put_object(bucket, name, data, content_type, spec.get("metadata"), **fields)
        return json_response(self.object_resource(request, obj))

    def current(self, bucket: str, name: str) -> dict | None:
        try:
            return self.store.get_object(bucket, name)
        except NotFound:
            return None

    def start_resumable(self, request: GcpRequest) -> Response:
        spec = request.json()
        spec.setdefault("name", request.query.get("name"))
        if not spec["name"]:
            raise InvalidArgument("Required parameter: name", "required")
        self.store.get_bucket(request.params["bucket"])
        upload_id = uuid.uuid4().hex
        session = {
            "bucket": request.params["bucket"],
            "spec": spec,
            "query": {k: v for k, v in request.query.items() if k.startswith("if")},
            "content_type": request.environ.get("HTTP_X_UPLOAD_CONTENT_TYPE", ""),
        }
        folder = self.uploads / upload_id
        folder.mkdir()
        (folder / "data").touch()
        (folder / "session.json").write_text(json.dumps(session))
        query = urlencode({"uploadType": "resumable", "upload_id": upload_id})
        location = f"{host_url(request)}/upload/storage/v1/b/{quote(session['bucket'], safe='')}/o?{query}"
        return 200, [("Location", location), ("X-GUploader-UploadID", upload_id), ("Content-Length", "0")], b""

    def session(self, request: GcpRequest) -> tuple[Path, dict]:
        upload_id = request.query.get("upload_id", "")
        folder = self.uploads / upload_id
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id) or not (folder / "session.json").exists():
            raise GoogleError(404, f"No such upload session: {upload_id}", "notFound")
        return folder, json.loads((folder / "session.json").read_text())

    def resumable_chunk(self, request: GcpRequest) -> Response:
        """One PUT of a resumable session: append the chunk; 308 with the Range received, or the object at the end."""
        folder, session = self.session(request)
        data_path = folder / "data"
        match = _CONTENT_RANGE.match(request.environ.get("HTTP_CONTENT_RANGE", "bytes */*").strip())
        if match is None:
            raise InvalidArgument("Invalid Content-Range header.")
        received = data_path.stat().st_size
        if match["start"] is not None:
            start = int(match["start"])
            if start > received:
                raise InvalidArgument(f"Chunk starts at {start} but {received} bytes were received.")
            with open(data_path, "r+b") as f:
                f.seek(start)
                copy_body(request, f)
                f.truncate()
                received = f.tell()
        total = match["total"]
        if total == "*" or int(total) != received:
            headers = [("Content-Length", "0")] + ([("Range", f"bytes=0-{received - 1}")] if received else [])
            return 308, headers, b""
        request.query.update(session["query"])
        request.params["bucket"] = session["bucket"]
        spec = {**session["spec"], **sent_hashes(request)}
        response = self.finish_upload(request, spec, data_path, session["content_type"])
        shutil.rmtree(folder, ignore_errors=True)
        return response

    def cancel_resumable(self, request: GcpRequest) -> Response:
        folder, _ = self.session(request)
        shutil.rmtree(folder, ignore_errors=True)
        return 499, [("Content-Length", "0")], b""

    # ---- downloads
    def download(self, request: GcpRequest) -> Response:
        self.meter(CLASS_B, "objects.download")
        bucket, name = request.params["bucket"], object_name(request)
        obj = self.store.get_object(bucket, name)
        if "generation" in request.query and request.query["generation"] != obj["generation"]:
            raise NotFound(f"No such object: {bucket}/{name}")
        check_preconditions(request.query, obj)
        size = int(obj["size"])
        headers = [
            ("Content-Type", obj["contentType"]),
            ("X-Goog-Hash", f"crc32c={obj['crc32c']},md5={obj['md5Hash']}"),
            ("X-Goog-Generation", obj["generation"]),
            ("X-Goog-Metageneration", obj["metageneration"]),
            ("X-Goog-Stored-Content-Length", str(size)),
            ("X-Goog-Stored-Content-Encoding", obj.get("contentEncoding", "identity")),
            ("X-Goog-Storage-Class", obj["storageClass"]),
            ("ETag", obj["etag"]),
            ("Accept-Ranges", "bytes"),
        ]
        headers += [
            (h, obj[k])
            for h, k in (("Content-Encoding", "contentEncoding"), ("Cache-Control", "cacheControl"))
            if k in obj
        ]
        byte_range = requested_range(request.environ.get("HTTP_RANGE", ""), size)
        if byte_range is None:
            return 200, headers, self.store.read_object(bucket, name)
        start, end = byte_range
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        return 206, headers, self.store.read_object(bucket, name, start, end)


def copy_body(request: GcpRequest, target) -> None:
    """Write the request body to a file in 1 MiB pieces (a resumable chunk may be 100 MiB)."""
    try:
        remaining = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InvalidArgument("Invalid Content-Length.") from None
    stream = request.environ["wsgi.input"]
    while remaining > 0:
        piece = stream.read(min(remaining, 1 << 20))
        if not piece:
            break
        target.write(piece)
        remaining -= len(piece)


def requested_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a `Range: bytes=a-b` header; None for the whole object; 416 when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if not header or match is None or size == 0:
        return None
    if match["start"] == "":
        if not match["end"]:
            return None
        start, end = max(0, size - int(match["end"])), size
    else:
        start = int(match["start"])
        end = min(size, int(match["end"]) + 1) if match["end"] else size
    if start >= size:
        raise GoogleError(416, "The requested range cannot be satisfied.", "requestedRangeNotSatisfiable")
    if start == 0 and end == size:
        return None
    return start, end


def paginate(entries: list[tuple[str, object]], query: dict) -> tuple[list[tuple[str, object]], str | None]:
    """One page of name-sorted entries after the page token (the last name of the page before, base64)."""
    try:
        after = base64.urlsafe_b64decode(query.get("pageToken", "").encode()).decode()
        size = max(1, min(int(query.get("maxResults") or 1000), 1000))
    except ValueError:
        raise InvalidArgument("Invalid pageToken or maxResults.") from None
    entries = [e for e in entries if e[0] > after] if after else entries
    page = entries[:size]
    more = len(entries) > size
    return page, base64.urlsafe_b64encode(page[-1][0].encode()).decode() if more else None


def with_token(body: dict, token: str | None) -> dict:
    return {**body, "nextPageToken": token} if token else body


def check_preconditions(query: dict, obj: dict | None) -> None:
    """ifGenerationMatch (0 = must not exist), ifGenerationNotMatch, ifMetagenerationMatch/NotMatch."""
    generation = obj["generation"] if obj else "0"
    metageneration = obj["metageneration"] if obj else None
    tests = (
        ("ifGenerationMatch", lambda v: v == generation),
        ("ifGenerationNotMatch", lambda v: v != generation),
        ("ifMetagenerationMatch", lambda v: v == metageneration),
        ("ifMetagenerationNotMatch", lambda v: v != metageneration),
    )
    for name, holds in tests:
        if name in query and not holds(query[name]):
            raise PreconditionFailed()


def parse_multipart(request: GcpRequest) -> tuple[dict, bytes, str]:
    """(metadata, data, data's content type) of a `multipart/related` upload: a JSON part, then the media part."""
    match = re.search(r'boundary="?([^";]+)"?', request.content_type)
    if match is None:
        raise InvalidArgument("Missing multipart boundary.")
    parts = request.body().split(b"--" + match.group(1).encode())
    if len(parts) < 3:
        raise InvalidArgument("A multipart upload needs a metadata part and a media part.")
    head, _, meta = parts[1].partition(b"\r\n\r\n")
    media_head, _, data = parts[2].partition(b"\r\n\r\n")
    try:
        spec = json.loads(meta.strip() or b"{}")
    except ValueError:
        raise InvalidArgument("The metadata part of a multipart upload is not JSON.") from None
    content_type = ""
    for line in media_head.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-type":
            content_type = value.strip()
    return spec, data[:-2] if data.endswith(b"\r\n") else data, content_type


def sent_hashes(request: GcpRequest) -> dict:
    """The `x-goog-hash: crc32c=...,md5=...` a resumable upload's last chunk carries, as resource fields."""
    fields = {}
    for item in request.environ.get("HTTP_X_GOOG_HASH", "").split(","):
        kind, _, value = item.strip().partition("=")
        if kind in ("crc32c", "md5") and value:
            fields["crc32c" if kind == "crc32c" else "md5Hash"] = value
    return fields
