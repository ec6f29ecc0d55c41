"""The cost ledger: what each action the local cloud executed would have cost on the real cloud.

Small, frequent charges (an S3 GET) are aggregated per (cloud, service, action); big-ticket items (a training
job, an endpoint) are recorded one line each by the services that run them.

Kept in memory and saved as JSON in the state folder (`costs.json`, at shutdown and whenever the journal grows
long). So that a crash loses no charge, each change is also appended at once to `costs.journal` (JSON lines, to the
operating system, not fsynced): the line's new totals, not the amount added, so replaying a line twice is harmless.
At start the journal's lines replace those of costs.json; saving costs.json empties the journal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

COMPACT_AFTER_LINES = 2000  # journal lines: then costs.json is written and the journal emptied


@dataclass
class CostLine:
    cloud: str
    service: str
    action: str
    resource: str
    quantity: float
    unit: str
    usd: float
    price_key: str
    first_at: float = field(default_factory=time.time)
    last_at: float = field(default_factory=time.time)


class CostLedger:
    """Aggregated cost lines, kept in memory and saved as JSON in the state folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.journal_path = self.path.with_suffix(".journal")
        self._lock = threading.Lock()
        self._dirty = False
        self._lines: dict[tuple[str, str, str, str], CostLine] = {}
        self._journal_fd: int | None = None
        self._journal_lines = 0
        if self.path.exists():
            for row in json.loads(self.path.read_text()):
                self._put(CostLine(**row))
        self._replay_journal()

    @staticmethod
    def _key(line: CostLine) -> tuple[str, str, str, str]:
        return line.cloud, line.service, line.action, line.resource

    def _put(self, line: CostLine) -> None:
        self._lines[self._key(line)] = line

    def _replay_journal(self) -> None:
        try:
            text = self.journal_path.read_text()
        except FileNotFoundError:
            return
        for number, row in enumerate(text.splitlines(), 1):
            try:
                self._put(CostLine(**json.loads(row)))
            except (ValueError, TypeError):  # the last line, cut short by a crash before it was complete
                log.warning("cost journal %s line %d is unreadable: ignored", self.journal_path, number)
        self._journal_lines = len(text.splitlines())
        self._dirty = True

    def add(self, line: CostLine) -> None:
        with self._lock:
            existing = self._lines.get(self._key(line))
            if existing is None:
                self._put(line)
                existing = line
            else:
                existing.quantity += line.quantity
                existing.usd += line.usd
                existing.last_at = line.last_at
            self._dirty = True
            self._journal(existing)
            compact = self._journal_lines >= COMPACT_AFTER_LINES
        if compact:
            self.save()

    def _journal(self, line: CostLine) -> None:
        if self._journal_fd is None:
            self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._journal_fd, (json.dumps(asdict(line)) + "\n").encode())
        self._journal_lines += 1

    def lines(self) -> list[dict]:
        with self._lock:
            return [asdict(line) for line in self._lines.values()]

    def save(self) -> None:
        with self._lock:  # held while writing: a line added meanwhile must not be dropped from the journal
            if not self._dirty:
                return
            rows = [asdict(line) for line in self._lines.values()]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rows, indent=1))
            os.replace(tmp, self.path)
            self._empty_journal()
            self._dirty = False

    def _empty_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)  # reopened by the next add
            self._journal_fd = None
        self.journal_path.unlink(missing_ok=True)
        self._journal_lines = 0
