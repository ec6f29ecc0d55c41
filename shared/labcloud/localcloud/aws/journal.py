"""A write-ahead journal of the requests that change moto's state, so that a crash loses nothing acknowledged.

`MotoSnapshots` pickles a changed service at most every half second; a request acknowledged in between would be
lost if the local cloud were killed (`kill -9`, a crash, the machine's OOM killer). So every request that may change
a moto backend is appended to `journal.bin` (beside the snapshots) before its answer goes back: its WSGI environ
(method, path, query, headers; never a session token) and body, in one `os.write`. That reaches the operating
system, not the disk (no fsync): it survives the process, not a power cut. At start, the requests journaled after
each service's last snapshot are sent to moto again, in order; a snapshot drops the records it covers.

Every record has a sequence number and every snapshot the number of the last record it covers, so a record is
replayed once even when the local cloud dies between writing its snapshots and truncating the journal. A record cut
short at the end of the file (the process died while writing it, so its answer never went back) is ignored.

Replay is only as deterministic as moto, and here it differs from the first run:
- Ids: moto draws its ids (SQS message ids and receipt handles, S3 version ids, IAM role ids...) from one seedable
  random generator. It is seeded afresh from os.urandom before each journaled request and the seed is journaled,
  so a replayed request draws the same ids. S3 multipart upload ids come from os.urandom instead: the journal
  keeps the id the client was given and the replay renames the upload back to it. Values moto draws from elsewhere
  are new after a replay: KMS key material, STS session tokens, SageMaker pipeline execution ids.
- Time: a replayed request runs at restore time, so its timestamps (S3 LastModified, SQS SentTimestamp, creation
  times) are those of the restart, and an outcome that depended on time can differ: a message that was received
  again after its visibility timeout may be received once more after a crash (SQS promises at-least-once delivery).
- Requests moto refused (an error answer) and a ReceiveMessage that handed out no message changed nothing and are
  not journaled (replaying a long poll would wait for it).
- Changes the local cloud's own handlers make to moto's records directly, not through a request (training and
  Lambda log events, alarm states and history, endpoint statuses mirrored from their records) are not journaled:
  they are saved with the next snapshot. A journaled request that depended on one of them fails again at replay;
  the failure is logged.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from moto.backends import get_backend
from moto.moto_api._internal import mock_random

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.bin"
REWRITE_BYTES = 64 * 2**20  # while a service's snapshot fails: past this, the others' records are dropped from the file
_HEADER = struct.Struct(">QQ")  # the lengths of the record's pickled entry (without its body) and of its body
_NOT_JOURNALED_HEADERS = ("HTTP_X_AMZ_SECURITY_TOKEN",)  # a session token never goes to disk
_UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")

# (moto's WSGI environ) -> (status, body): how a replayed request reaches moto.
Replay = Callable[[dict], tuple[int, bytes]]


@dataclass
class Entry:
    """One request that may change a moto backend, captured before moto sees it."""

    seq: int
    service: str
    action: str | None
    seed: int
    environ: dict
    body: bytes
    upload_id: str | None = None  # an S3 multipart upload's id, which moto draws outside its seeded random

    @property
    def creates_multipart_upload(self) -> bool:
        names = [part.split("=", 1)[0] for part in self.environ.get("QUERY_STRING", "").split("&")]
        return self.service == "s3" and self.environ.get("REQUEST_METHOD") == "POST" and "uploads" in names


def _replay_environ(entry: Entry) -> dict:
    environ = dict(entry.environ)
    environ.pop("HTTP_TRANSFER_ENCODING", None)  # the body is whole now
    environ.update(
        {
            "CONTENT_LENGTH": str(len(entry.body)),
            "wsgi.input": io.BytesIO(entry.body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
    )
    return environ


def _changed_nothing(entry: Entry, status: int, answer: bytes) -> bool:
    """An error changed nothing (moto checks before it stores), nor did a receive that handed out no message."""
    if status >= 400:
        return True
    return entry.service == "sqs" and entry.action == "ReceiveMessage" and b"ReceiptHandle" not in answer


def _keep_upload_id(replayed_answer: bytes, original_id: str) -> None:
    """Give the upload a replay just created the id its client was given (moto drew a new one from os.urandom)."""
    match = _UPLOAD_ID.search(replayed_answer)
    if not match:
        return
    new_id = match.group(1).decode()
    for account in get_backend("s3").values():
        for bucket in account["aws"].buckets.values():
            if new_id in bucket.multiparts:
                upload = bucket.multiparts.pop(new_id)
                upload.id = original_id
                bucket.multiparts[original_id] = upload
                return


class MotoJournal:
    """The journal file of one state folder. Call every method under the lock that serialises requests into moto."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / JOURNAL_FILE
        self.last_seq = 0
        self._services: set[str] = set()  # those with records in the file
        self._fd: int | None = None

    # -- while serving --

    def begin(self, service: str, action: str | None, environ: dict, body: bytes) -> Entry:
        """Capture a request (its `body` already read, `http.buffer_body`) before moto handles it, and seed moto's
        random so that a replay draws the same ids."""
        seed = int.from_bytes(os.urandom(8), "big")
        mock_random.seed(seed)
        kept = {k: v for k, v in environ.items() if isinstance(v, str) and k not in _NOT_JOURNALED_HEADERS}
        return Entry(0, service, action, seed, kept, body)

    def append(self, entry: Entry, status: int, answer: bytes) -> bool:
        """Write the request moto has just answered; False when it changed nothing and was not written."""
        if _changed_nothing(entry, status, answer):
            return False
        if entry.creates_multipart_upload and (match := _UPLOAD_ID.search(answer)):
            entry.upload_id = match.group(1).decode()
        self.last_seq += 1
        entry.seq = self.last_seq
        self._write(entry)
        self._services.add(entry.service)
        return True

    def _write(self, entry: Entry) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        body, entry.body = entry.body, b""
        try:
            meta = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            entry.body = body
        parts = [_HEADER.pack(len(meta), len(body)), meta, body]
        written = os.writev(self._fd, parts)  # one system call, and no copy of a large body
        total = sum(map(len, parts))
        if written < total:  # a regular file takes it all at once, but for a full disk or a signal
            rest = memoryview(b"".join(parts))[written:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]

    # -- snapshots --

    def compact(self, snapshot_seqs: dict[str, int]) -> None:
        """Drop the records that the snapshots cover (`service -> last seq in its snapshot`)."""
        if not self._services:
            return
        behind = {s for s in self._services if snapshot_seqs.get(s, 0) < self.last_seq}
        if not behind:
            self._truncate()
            return
        # A service whose snapshot failed keeps its records. The others' are skipped at replay by their seq, so
        # the file is only rewritten without them once it is large.
        if self._fd is None or os.fstat(self._fd).st_size < REWRITE_BYTES:
            return
        kept = [e for e in self.entries() if e.seq > snapshot_seqs.get(e.service, 0)]
        self._truncate()
        for entry in kept:
            self._write(entry)
        self._services = {e.service for e in kept}

    def _truncate(self) -> None:
        if self._fd is None:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
        self._services = set()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- at start --

    def entries(self) -> Iterator[Entry]:
        """The records in the file, in order; a record cut short at the end (never acknowledged) ends them."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            meta_length, body_length = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            body_start, end = start + meta_length, start + meta_length + body_length
            if end > len(data):
                log.warning("the journal ends with a record cut short (%d bytes): ignored", len(data) - offset)
                return
            try:
                entry = pickle.loads(data[start:body_start])
            except Exception:
                log.exception("unreadable journal record at byte %d: the journal is read up to it", offset)
                return
            entry.body = data[body_start:end]
            yield entry
            offset = end

    def replay(self, snapshot_seqs: dict[str, int], send: Replay) -> dict[str, int]:
        """Send moto the records its snapshots lack; how many per service. Moto's random is reseeded afterwards."""
        replayed: dict[str, int] = {}
        for entry in self.entries():
            self.last_seq = max(self.last_seq, entry.seq)
            self._services.add(entry.service)
            if entry.seq <= snapshot_seqs.get(entry.service, 0):
                continue
            self._replay_one(entry, send)
            replayed[entry.service] = replayed.get(entry.service, 0) + 1
        mock_random.seed()  # back to fresh randomness for what comes next
        return replayed

    @staticmethod
    def _replay_one(entry: Entry, send: Replay) -> None:
        mock_random.seed(entry.seed)
        try:
            status, answer = send(_replay_environ(entry))
        except Exception:
            log.exception("replaying %s %s (journal record %d) failed", entry.service, entry.action, entry.seq)
            return
        if status >= 400:  # it succeeded the first time
            log.warning(
                "replaying %s %s (journal record %d) answered %d: %s",
                entry.service,
                entry.action,
                entry.seq,
                status,
                answer[:300].decode("utf-8", "replace"),
            )
        if entry.upload_id and status < 300:
            _keep_upload_id(answer, entry.upload_id)
