"""Shared fixtures: pytest-playwright pointed at Debian's Chromium, and the explorer's server.

Playwright cannot download its own browser on these machines; ``/usr/bin/chromium`` is used instead
(see the notes on browser tests). The explorer runs in a subprocess,
``.venv/bin/python -m pgvar.explorer --port P --no-browser [--mdp FILE]``, on a free port; it is ready
when it serves a static file (requesting the app page would start a session).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY_PATH = "/static/js/bokeh.min.js"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1150}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class ExplorerServer:
    """A ``python -m pgvar.explorer`` subprocess on 127.0.0.1."""

    def __init__(self, *args: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log_dir / f"explorer-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log_file = open(self.log, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [_python(), "-m", "pgvar.explorer", "--port", str(self.port), "--no-browser", *args],
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"explorer exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url.rstrip("/") + READY_PATH, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"explorer not ready after {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text()

    def interrupt(self, timeout: float = 15.0) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def explorer_server(tmp_path_factory):
    """The explorer on the lesson's MDP, shared by the browser tests (sessions are independent)."""
    server = ExplorerServer(log_dir=tmp_path_factory.mktemp("explorer"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.interrupt()


@pytest.fixture
def start_explorer(tmp_path):
    """Start another explorer with extra arguments (e.g. ``--mdp FILE``); stopped after the test."""
    servers = []

    def start(*args: str) -> ExplorerServer:
        server = ExplorerServer(*args, log_dir=tmp_path)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.interrupt()
