"""JupyterLab opens the course's jupytext files as notebooks: the contents API serves labs/*.py as notebooks
(jupytext's contents manager), and the settings `make lab` installs make a double click open them that way."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labcloud.notebooks import install_jupyter_settings
from labcloud.paths import course_root

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory):
    port, token = _free_port(), secrets.token_hex(16)
    runtime = tmp_path_factory.mktemp("jupyter-runtime")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "NO_PROXY": "127.0.0.1,localhost"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course_root()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(url, "/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.3)
        yield url, token
    finally:
        server.terminate()
        server.wait(timeout=20)


def _get(url: str, path: str, token: str) -> dict:
    request = urllib.request.Request(url + path, headers={"Authorization": f"token {token}"})
    with _opener.open(request, timeout=10) as response:
        return json.load(response)


def test_a_lab_in_jupytext_format_is_served_as_a_notebook(jupyter_lab):
    url, token = jupyter_lab
    model = _get(url, "/api/contents/labs/01_platforms.py?type=notebook&content=1", token)
    cells = model["content"]["cells"]
    assert model["type"] == "notebook" and len(cells) > 20
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"].startswith("# Lab 01")
    assert any("raise NotImplementedError" in c["source"] for c in cells if c["cell_type"] == "code")


def test_python_files_open_with_the_notebook_viewer_by_default(jupyter_lab):
    assert Path(install_jupyter_settings()).exists()
    url, token = jupyter_lab
    plugin = _get(url, "/lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
    default_viewers = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert default_viewers.get("python") == "Jupytext Notebook"
