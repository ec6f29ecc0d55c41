"""Snapshots of moto's state are spaced by how long they take, so that a large store does not spend its time in them."""

import threading
import time
from itertools import pairwise

from labcloud.localcloud.aws import persistence
from labcloud.localcloud.aws.persistence import MotoSnapshots

SNAPSHOT_S = 0.02


def test_the_next_snapshot_waits_spacing_times_as_long_as_the_last_took(tmp_path, monkeypatch):
    snapshots = MotoSnapshots(tmp_path, threading.RLock(), interval=0.01)
    ended: list[float] = []

    def slow_save() -> None:
        time.sleep(SNAPSHOT_S)
        ended.append(time.monotonic())
        snapshots.mark_dirty("s3")  # always more to save: only the spacing holds the next one back

    monkeypatch.setattr(snapshots, "save_dirty", slow_save)
    snapshots.mark_dirty("s3")
    snapshots.start()
    time.sleep(1.5)
    snapshots.stop()
    ended.pop()  # the one stop() saves at once
    gaps = [later - earlier for earlier, later in pairwise(ended)]
    assert gaps, "at least two snapshots in 1.5 s"
    # each gap is the wait (at least SPACING x the snapshot's duration) plus the next snapshot itself
    assert min(gaps) >= persistence.SNAPSHOT_SPACING * SNAPSHOT_S
    assert len(ended) <= 1.5 / (persistence.SNAPSHOT_SPACING * SNAPSHOT_S) + 1
