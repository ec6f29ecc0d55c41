"""The cost ledger: what each action the local cloud executed would have cost on the real cloud.

Small, frequent charges (an S3 GET) are aggregated per (cloud, service, action); big-ticket items (a training
job, an endpoint) are recorded one line each by the services that run them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
        self._lock = threading.Lock()
        self._dirty = False
        self._lines: dict[tuple[str, str, str, str], CostLine] = {}
        if self.path.exists():
            for row in json.loads(self.path.read_text()):
                line = CostLine(**row)
                self._lines[self._key(line)] = line

    @staticmethod
    def _key(line: CostLine) -> tuple[str, str, str, str]:
        return line.cloud, line.service, line.action, line.resource

    def add(self, line: CostLine) -> None:
        with self._lock:
            existing = self._lines.get(self._key(line))
            if existing is None:
                self._lines[self._key(line)] = line
            else:
                existing.quantity += line.quantity
                existing.usd += line.usd
                existing.last_at = line.last_at
            self._dirty = True

    def lines(self) -> list[dict]:
        with self._lock:
            return [asdict(line) for line in self._lines.values()]

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            rows = [asdict(line) for line in self._lines.values()]
            self._dirty = False
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, self.path)
