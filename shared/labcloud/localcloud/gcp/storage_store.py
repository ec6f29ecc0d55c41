"""Cloud Storage's objects on disk: the one store the GCS routes, BigQuery and Vertex AI all read and write.

Other GCP services use it in-process (no HTTP round trip)::

    from labcloud.localcloud.gcp import storage_store

    store = storage_store.for_context(context)          # one shared instance per state folder
    store.create_bucket("b")                            # -> bucket resource (dict); Conflict if it exists
    store.get_bucket("b")                               # -> bucket resource; NotFound
    store.list_buckets(prefix="")                       # -> [bucket resource, ...] sorted by name
    store.update_bucket("b", {"labels": {...}})         # -> bucket resource
    store.delete_bucket("b")                            # Conflict (409) when it still holds objects
    store.put_object("b", "a/x.csv", b"...", "text/csv", {"k": "v"})   # -> object resource (dict)
    store.put_object_file("b", "a/x.csv", path, ...)    # same, from a file (moved in when move=True)
    store.get_object("b", "a/x.csv")                    # -> object resource; NotFound "No such object: b/a/x.csv"
    store.read_object("b", "a/x.csv", start=0, end=None)  # -> bytes (end exclusive)
    store.object_path("b", "a/x.csv")                   # -> Path of the object's bytes (read only, e.g. for DuckDB)
    store.list_objects("b", prefix="a/", delimiter="/") # -> (objects, prefixes), both sorted
    store.delete_object("b", "a/x.csv")
    storage_store.parse_gs_url("gs://b/a/x.csv")        # -> ("b", "a/x.csv")

Object resources are GCS's JSON (`name`, `bucket`, `generation`, `size` as a string, `md5Hash` and `crc32c` in
base64, `contentType`, `timeCreated`, `updated`, `etag`, `metadata`), without the `selfLink`/`mediaLink` the
routes add. Errors are `GoogleError`s in GCS's words (`NotFound`, `Conflict`, `InvalidArgument`), so a service
that lets one through answers like GCS.

Layout: `<records("storage")>/buckets/<bucket>/bucket.json`, and per object `objects/<sha256 of name>.data`
beside its `.json` sidecar (names may hold any character and be 1024 bytes long, so they are not file names).
Storage is metered as GiB-months on the ledger as time passes (`accrue_storage`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import google_crc32c

from ...pricing.catalog import load_service_prices
from ...pricing.ledger import CostLine
from .gateway import GoogleError

STORAGE_PRICE_KEY = "gcp.gcs.storage_gb_month"
_GIB = 2**30
_MONTH_S = 730 * 3600  # Google bills a month as 730 hours
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_CHUNK = 1 << 20


class NotFound(GoogleError):
    def __init__(self, message: str):
        super().__init__(404, message, "notFound")


class Conflict(GoogleError):
    def __init__(self, message: str, reason: str = "conflict"):
        super().__init__(409, message, reason)


class InvalidArgument(GoogleError):
    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(400, message, reason)


class PreconditionFailed(GoogleError):
    def __init__(self):
        super().__init__(412, "At least one of the pre-conditions you specified did not hold.", "conditionNotMet")


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_gs_url(url: str) -> tuple[str, str]:
    """("bucket", "name") of a `gs://bucket/name` URL."""
    if not url.startswith("gs://"):
        raise InvalidArgument(f"Not a Cloud Storage URL: {url!r}")
    bucket, _, name = url[5:].partition("/")
    return bucket, name


def check_bucket_name(name: str) -> None:
    """GCS's bucket naming rules (the common ones): 3-63 characters per dot-separated part, lower case."""
    valid = (
        bool(_BUCKET_NAME.match(name))
        and all(0 < len(part) <= 63 for part in name.split("."))
        and (len(name) <= 63 or "." in name)
        and not name.startswith("goog")
        and "google" not in name
        and not _IP_ADDRESS.match(name)
    )
    if not valid:
        raise InvalidArgument(f"Invalid bucket name: '{name}'")


def file_hashes(path: Path) -> tuple[str, str, int]:
    """(md5 base64, crc32c base64, size) of a file, read in chunks."""
    md5, crc = hashlib.md5(), google_crc32c.Checksum()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            crc.update(chunk)
            size += len(chunk)
    return base64.b64encode(md5.digest()).decode(), base64.b64encode(crc.digest()).decode(), size


class ObjectStore:
    """Buckets and objects in a folder; an in-memory index of the sidecars, loaded once, guarded by one lock."""

    def __init__(self, root: Path, ledger=None):
        self.root = Path(root)
        self.ledger = ledger
        self._lock = threading.RLock()
        self._buckets: dict[str, dict] = {}
        self._objects: dict[str, dict[str, dict]] = {}
        self._bytes: dict[str, int] = {}  # bytes stored per bucket, for the storage meter
        self._last_generation = 0
        (self.root / "buckets").mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(exist_ok=True)
        self._load()
        self._accrued_at = self._read_meter_time()
        self._meter_saved_at = 0.0

    # ---- buckets
    def create_bucket(
        self, name: str, project: str = "", location: str = "US", storage_class: str = "STANDARD"
    ) -> dict:
        check_bucket_name(name)
        with self._lock:
            if name in self._buckets:
                raise Conflict(
                    "Your previous request to create the named bucket succeeded and you already own it.", "conflict"
                )
            now = time.time()
            resource = {
                "kind": "storage#bucket",
                "id": name,
                "name": name,
                "projectNumber": "0",
                "project": project,
                "metageneration": "1",
                "location": (location or "US").upper(),
                "locationType": "multi-region" if (location or "US").upper() in ("US", "EU", "ASIA") else "region",
                "storageClass": storage_class or "STANDARD",
                "timeCreated": rfc3339(now),
                "updated": rfc3339(now),
                "etag": "CAE=",
            }
            folder = self._bucket_dir(name)
            (folder / "objects").mkdir(parents=True, exist_ok=True)
            _write_json(folder / "bucket.json", resource)
            self._buckets[name], self._objects[name], self._bytes[name] = resource, {}, 0
            return dict(resource)

    def get_bucket(self, name: str) -> dict:
        with self._lock:
            if name not in self._buckets:
                raise NotFound("The specified bucket does not exist.")
            return dict(self._buckets[name])

    def list_buckets(self, prefix: str = "") -> list[dict]:
        with self._lock:
            return [dict(b) for n, b in sorted(self._buckets.items()) if n.startswith(prefix or "")]

    def update_bucket(self, name: str, changes: dict) -> dict:
        """Merge writable bucket fields (labels, versioning, ...); identity and timestamps stay the store's."""
        fixed = ("kind", "id", "name", "projectNumber", "timeCreated", "metageneration", "location", "locationType")
        with self._lock:
            resource = {**self.get_bucket(name), **{k: v for k, v in changes.items() if k not in fixed}}
            resource["metageneration"] = str(int(resource["metageneration"]) + 1)
            resource["updated"] = rfc3339(time.time())
            _write_json(self._bucket_dir(name) / "bucket.json", resource)
            self._buckets[name] = resource
            return dict(resource)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self.get_bucket(name)
            if self._objects[name]:
                raise Conflict("The bucket you tried to delete is not empty.")
            self.accrue_storage(save=False)
            shutil.rmtree(self._bucket_dir(name), ignore_errors=True)
            del self._buckets[name], self._objects[name], self._bytes[name]

    # ---- objects
    def put_object(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict | None = None,
        *,
        extra: dict | None = None,
        expect: dict | None = None,
    ) -> dict:
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return self.put_object_file(
                bucket, name, Path(tmp), content_type, metadata, move=True, extra=extra, expect=expect
            )
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_object_file(
        self,
        bucket: str,
        name: str,
        path: Path,
        content_type: str | None = None,
        metadata: dict | None = None,
        *,
        move: bool = False,
        extra: dict | None = None,
        expect: dict | None = None,
    ) -> dict:
        """Store the file at `path` as an object (a new generation); `extra` adds writable fields (cacheControl...).

        `expect` holds the `md5Hash`/`crc32c` the sender computed: a mismatch is GCS's 400, and nothing is stored.
        """
        self._check_name(name)
        self.get_bucket(bucket)
        md5, crc, size = file_hashes(path)
        for key, label, actual in (("crc32c", "CRC32C", crc), ("md5Hash", "MD5", md5)):
            if (expect or {}).get(key) and expect[key] != actual:
                raise InvalidArgument(f'Provided {label} "{expect[key]}" doesn\'t match calculated {label} "{actual}".')
        with self._lock:
            if bucket not in self._buckets:
                raise NotFound("The specified bucket does not exist.")
            self.accrue_storage(save=False)
            generation = self._next_generation()
            now = generation / 1e6
            resource = {
                **(extra or {}),
                "kind": "storage#object",
                "id": f"{bucket}/{name}/{generation}",
                "name": name,
                "bucket": bucket,
                "generation": str(generation),
                "metageneration": "1",
                "contentType": content_type or "application/octet-stream",
                "storageClass": "STANDARD",
                "size": str(size),
                "md5Hash": md5,
                "crc32c": crc,
                "etag": base64.b64encode(f"{generation}/1".encode()).decode(),
                "timeCreated": rfc3339(now),
                "updated": rfc3339(now),
                "timeStorageClassUpdated": rfc3339(now),
            }
            if metadata:
                resource["metadata"] = {str(k): str(v) for k, v in metadata.items()}
            data_path, sidecar = self._object_files(bucket, name)
            if move:
                os.replace(path, data_path)
            else:
                shutil.copyfile(path, data_path)
            _write_json(sidecar, resource)
            self._index(bucket, name, resource)
            return dict(resource)

    def get_object(self, bucket: str, name: str) -> dict:
        with self._lock:
            self.get_bucket(bucket)
            resource = self._objects[bucket].get(name)
            if resource is None:
                raise NotFound(f"No such object: {bucket}/{name}")
            return dict(resource)

    def update_object(self, bucket: str, name: str, changes: dict) -> dict:
        """Patch an object's writable metadata (metadata, contentType, cacheControl, ...); a new metageneration."""
        with self._lock:
            resource = self.get_object(bucket, name)
            for key, value in changes.items():
                if key == "metadata" and value is not None:
                    merged = {**resource.get("metadata", {}), **value}
                    resource["metadata"] = {k: str(v) for k, v in merged.items() if v is not None}
                elif value is None:
                    resource.pop(key, None)
                else:
                    resource[key] = value
            resource["metageneration"] = str(int(resource["metageneration"]) + 1)
            resource["updated"] = rfc3339(time.time())
            _write_json(self._object_files(bucket, name)[1], resource)
            self._objects[bucket][name] = resource
            return dict(resource)

    def object_path(self, bucket: str, name: str) -> Path:
        self.get_object(bucket, name)
        return self._object_files(bucket, name)[0]

    def read_object(self, bucket: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        """The object's bytes from `start` to `end` (exclusive; None = to the end)."""
        with open(self.object_path(bucket, name), "rb") as f:
            f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "") -> tuple[list[dict], list[str]]:
        """Objects under `prefix` and, with a delimiter, the 'folders' (prefixes) rolled up at the next delimiter."""
        prefix = prefix or ""
        with self._lock:
            self.get_bucket(bucket)
            names = sorted(n for n in self._objects[bucket] if n.startswith(prefix))
            objects, prefixes = [], set()
            for name in names:
                cut = name.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    prefixes.add(name[: cut + len(delimiter)])
                else:
                    objects.append(dict(self._objects[bucket][name]))
            return objects, sorted(prefixes)

    def delete_object(self, bucket: str, name: str) -> None:
        with self._lock:
            self.get_object(bucket, name)
            self.accrue_storage(save=False)
            for path in self._object_files(bucket, name):
                path.unlink(missing_ok=True)
            self._index(bucket, name, None)

    # ---- metering
    def accrue_storage(self, save: bool = True) -> None:
        """Put the GiB-months stored since the last accrual on the ledger, one line per bucket.

        The accrual time is saved at most once a minute (and at shutdown), not on every write: a crash may bill
        up to a minute twice, which is cheaper than a file write per upload.
        """
        if self.ledger is None:
            return
        with self._lock:
            now = time.time()
            elapsed, self._accrued_at = now - self._accrued_at, now
            price = _storage_price()
            for bucket, stored in self._bytes.items():
                if stored and elapsed > 0 and price is not None:
                    gib_months = stored / _GIB * elapsed / _MONTH_S
                    self.ledger.add(
                        CostLine(
                            cloud="gcp",
                            service="storage",
                            action="storage (Standard)",
                            resource=f"gs://{bucket}",
                            quantity=gib_months,
                            unit="GiB-month",
                            usd=gib_months * price,
                            price_key=STORAGE_PRICE_KEY,
                        )
                    )
            if save or now - self._meter_saved_at >= 60:
                _write_json(self.root / "meter.json", {"accrued_at": now})
                self._meter_saved_at = now

    # ---- internals
    def _index(self, bucket: str, name: str, resource: dict | None) -> None:
        """Record (or, with None, forget) an object in the index and the bucket's byte count."""
        old = self._objects[bucket].pop(name, None)
        change = (int(resource["size"]) if resource else 0) - (int(old["size"]) if old else 0)
        self._bytes[bucket] = self._bytes.get(bucket, 0) + change
        if resource is not None:
            self._objects[bucket][name] = resource

    def _next_generation(self) -> int:
        generation = max(time.time_ns() // 1000, self._last_generation + 1)
        self._last_generation = generation
        return generation

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or len(name.encode()) > 1024 or name in (".", "..") or "\n" in name or "\r" in name:
            raise InvalidArgument(f"Invalid object name: {name!r}")

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / "buckets" / bucket

    def _object_files(self, bucket: str, name: str) -> tuple[Path, Path]:
        stem = self._bucket_dir(bucket) / "objects" / hashlib.sha256(name.encode()).hexdigest()
        return stem.with_suffix(".data"), stem.with_suffix(".json")

    def _load(self) -> None:
        for bucket_json in (self.root / "buckets").glob("*/bucket.json"):
            name = bucket_json.parent.name
            self._buckets[name] = json.loads(bucket_json.read_text())
            self._objects[name], self._bytes[name] = {}, 0
            for sidecar in (bucket_json.parent / "objects").glob("*.json"):
                resource = json.loads(sidecar.read_text())
                if sidecar.with_suffix(".data").exists():
                    self._index(name, resource["name"], resource)
                    self._last_generation = max(self._last_generation, int(resource["generation"]))

    def _read_meter_time(self) -> float:
        try:
            return float(json.loads((self.root / "meter.json").read_text())["accrued_at"])
        except (OSError, ValueError, KeyError):
            return time.time()


def _storage_price() -> float | None:
    prices = load_service_prices()
    return prices[STORAGE_PRICE_KEY].usd if STORAGE_PRICE_KEY in prices else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


_stores: dict[Path, ObjectStore] = {}
_stores_lock = threading.Lock()


def for_context(context) -> ObjectStore:
    """The one store of this context's state folder (created on first use), metered on the context's ledger."""
    root = context.records("storage").resolve()
    with _stores_lock:
        if root not in _stores:
            _stores[root] = ObjectStore(root, getattr(context, "ledger", None))
        return _stores[root]
