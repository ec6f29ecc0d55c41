"""Keep moto's in-memory AWS state on disk, so that what the learner stored survives `down`/`up` and a crash.

moto keeps every service's state in a module-level `BackendDict`. We pickle the dicts of the services that
changed (at most every `interval` seconds, and once more at shutdown) and load them back in place at start.
A snapshot pickles a whole service under the request lock, so its cost grows with what is stored (thousands of S3
objects take tens of milliseconds): the next one waits at least SNAPSHOT_SPACING times as long as the last took,
which keeps snapshots under a twentieth of the lock's time however much is stored. The journal makes a later
snapshot safe; it only means more records to replay after a crash.
Between two snapshots, each request that changes a service is in the write-ahead journal (`journal.py`, which says
what a replay reproduces and what it does not) before it is answered; at start the journal's newer requests are
replayed on top of the snapshots, so a `kill -9` loses nothing that was acknowledged. Each snapshot file holds the
journal's sequence number it covers, and the journal is compacted after the snapshots are written.
Locks and conditions inside moto's models cannot be pickled; they are stored as fresh ones. Weak-valued
dicts are stored with their current items (their values are kept alive elsewhere in the same backend), and a
defaultdict whose factory is a lambda returning an empty dict, list or set as one with that type as factory.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import threading
import time
import weakref
from collections import defaultdict
from pathlib import Path

from moto.backends import get_backend

from .journal import Entry, MotoJournal, Replay

log = logging.getLogger(__name__)

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, _LOCK):
            return threading.Lock, ()
        if isinstance(obj, _RLOCK):
            return threading.RLock, ()
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if isinstance(obj, threading.Event):
            return threading.Event, ()
        if isinstance(obj, weakref.WeakValueDictionary):  # moto's Lambda index of functions by ARN
            return weakref.WeakValueDictionary, (dict(obj),)
        if isinstance(obj, defaultdict) and getattr(obj.default_factory, "__name__", "") == "<lambda>":
            empty = obj.default_factory()  # e.g. moto's defaultdict(lambda: {}): store it as defaultdict(dict)
            if type(empty) in (dict, list, set) and not empty:
                return defaultdict, (type(empty), dict(obj))
        return NotImplemented


SNAPSHOT_SPACING = 20  # the wait after a snapshot, in multiples of how long it took

_FORMAT = "labcloud-moto-snapshot-2"  # (format, journal seq, backend); a bare backend is the first format


def _dumps(obj) -> bytes:
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _loads(data: bytes) -> tuple[int, object]:
    """(the last journal record the snapshot covers, the backend)."""
    saved = pickle.loads(data)
    if isinstance(saved, tuple) and len(saved) == 3 and saved[0] == _FORMAT:
        return saved[1], saved[2]
    return 0, saved


class MotoSnapshots:
    """Saves and restores moto backends, one pickle file per service, under `folder`."""

    def __init__(self, folder: Path, lock: threading.RLock, interval: float = 0.5):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = lock  # the same lock that serialises requests into moto
        self._dirty: set[str] = set()
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._journal = MotoJournal(folder)
        self._snapshot_seqs: dict[str, int] = {}  # service -> the last journal record its snapshot covers

    def restore(self, replay: Replay) -> list[str]:
        """Load the snapshots, then replay the journal's newer requests with `replay`; the services restored."""
        with self._lock:
            restored = list(self._load_snapshots())
            replayed = self._journal.replay(self._snapshot_seqs, replay)
            if replayed:
                log.info("replayed from the journal (requests after the last snapshot): %s", replayed)
                self._dirty.update(replayed)
            return sorted(set(restored) | set(replayed))

    def _load_snapshots(self):
        for file in sorted(self.folder.glob("*.pickle")):
            service = file.stem
            try:
                seq, saved = _loads(file.read_bytes())
                live = get_backend(service)
                live.clear()
                live.update(saved)
                self._snapshot_seqs[service] = seq
                yield service
            except Exception:  # a corrupt or outdated snapshot must not stop the cloud from starting
                log.exception("could not restore %s from %s; starting it empty", service, file)

    def mark_dirty(self, service: str | None) -> None:
        if service:
            self._dirty.add(service)

    def begin(self, service: str, action: str | None, environ: dict, body: bytes) -> Entry:
        """Capture a request that may change `service` before moto sees it (call under the lock)."""
        self._dirty.add(service)
        return self._journal.begin(service, action, environ, body)

    def acknowledge(self, entry: Entry, status: int, answer: bytes) -> None:
        """Journal the request moto has answered, before the answer goes back (call under the lock)."""
        self._journal.append(entry, status, answer)

    def save_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            seq = self._journal.last_seq
            for service in sorted(dirty):
                if self._save(service, seq):
                    self._snapshot_seqs[service] = seq
            self._journal.compact(self._snapshot_seqs)

    def _save(self, service: str, seq: int) -> bool:
        try:
            data = _dumps((_FORMAT, seq, get_backend(service)))
        except Exception:  # its journal records are kept until a snapshot of it succeeds
            log.exception("could not snapshot %s", service)
            return False
        tmp = self.folder / f".{service}.pickle.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / f"{service}.pickle")
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="moto-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.save_dirty()
        with self._lock:
            self._journal.close()

    def _run(self) -> None:
        wait = self._interval
        while not self._stop.wait(wait):
            if self._dirty:
                started = time.monotonic()
                self.save_dirty()
                wait = max(self._interval, SNAPSHOT_SPACING * (time.monotonic() - started))
