"""Keep moto's in-memory AWS state on disk, so that what the learner stored survives `down`/`up`.

moto keeps every service's state in a module-level `BackendDict`. We pickle the dicts of the services that
changed (at most every `interval` seconds, and once more at shutdown) and load them back in place at start.
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
import weakref
from collections import defaultdict
from pathlib import Path

from moto.backends import get_backend

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


def _dumps(obj) -> bytes:
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


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

    def restore(self) -> list[str]:
        restored = []
        for file in sorted(self.folder.glob("*.pickle")):
            service = file.stem
            try:
                saved = pickle.loads(file.read_bytes())
                live = get_backend(service)
                live.clear()
                live.update(saved)
                restored.append(service)
            except Exception:  # a corrupt or outdated snapshot must not stop the cloud from starting
                log.exception("could not restore %s from %s; starting it empty", service, file)
        return restored

    def mark_dirty(self, service: str | None) -> None:
        if service:
            self._dirty.add(service)

    def save_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            for service in sorted(dirty):
                self._save(service)

    def _save(self, service: str) -> None:
        try:
            data = _dumps(get_backend(service))
        except Exception:
            log.exception("could not snapshot %s", service)
            return
        tmp = self.folder / f".{service}.pickle.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / f"{service}.pickle")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="moto-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.save_dirty()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._dirty:
                self.save_dirty()
