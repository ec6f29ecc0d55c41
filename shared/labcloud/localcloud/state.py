"""The local cloud's state folder and the `server.json` file through which clients find the running process."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

INFO_FILE = "server.json"
LOG_FILE = "server.log"


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    state_dir: str
    started_at: float
    version: str
    tls_port: int | None = None  # the HTTPS listener (same services) for clients that insist on TLS

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def https_url(self) -> str | None:
        return f"https://{self.host}:{self.tls_port}" if self.tls_port else None


class StateDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def info_file(self) -> Path:
        return self.path / INFO_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def sub(self, name: str) -> Path:
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def read_info(self) -> ServerInfo | None:
        try:
            return ServerInfo(**json.loads(self.info_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_info(self, info: ServerInfo) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info), indent=2))
        os.replace(tmp, self.info_file)

    def clear_info(self, pid: int | None = None) -> None:
        """Remove server.json, but only if it still describes `pid` (a newer server may have replaced it)."""
        info = self.read_info()
        if info and (pid is None or info.pid == pid):
            self.info_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"
