"""The local cloud's own API under `/_labcloud/`: health for clients and tests, and the cost ledger."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from ..pricing.ledger import CostLedger

PREFIX = "/_labcloud/"


class AdminApi:
    def __init__(self, state_dir: str, ledger: CostLedger, services: Callable[[], list[str]]):
        self._state_dir = state_dir
        self._ledger = ledger
        self._services = services
        self._started = time.time()

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        route = environ.get("PATH_INFO", "")[len(PREFIX) :].strip("/")
        if route == "health":
            return self._json(start_response, 200, self.health())
        if route == "costs":
            return self._json(start_response, 200, {"lines": self._ledger.lines()})
        return self._json(start_response, 404, {"error": f"no admin route {route!r}"})

    def health(self) -> dict:
        from .. import __version__

        return {
            "status": "ok",
            "pid": os.getpid(),
            "state_dir": self._state_dir,
            "version": __version__,
            "uptime_s": round(time.time() - self._started, 3),
            "services": self._services(),
        }

    @staticmethod
    def _json(start_response, status: int, payload: dict) -> list[bytes]:
        body = json.dumps(payload).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Not Found'}", [("Content-Type", "application/json")])
        return [body]
