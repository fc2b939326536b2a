"""A real schema registry for tests, without Docker: Apicurio Registry via ``deploy/local/registry.sh``.

``registry_url_for_session`` picks the registry a test session uses: the user's own
(``SCHEMA_REGISTRY_URL``, any Confluent-compatible base URL: Confluent, Karapace, or Apicurio's
``…/apis/ccompat/v7``), else a local Apicurio started here on a free loopback port and stopped
at the end. The process belongs to this Python process (``registry.sh run`` execs Java), so
stopping it never depends on pid files.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from yarl import URL

__all__ = ["LocalRegistry", "registry_url_for_session", "SCRIPT"]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "registry.sh"
API_PATH = "/apis/ccompat/v7"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRegistry:
    """One Apicurio Registry (in-memory storage) on 127.0.0.1; ``url`` is its ccompat base URL."""

    def __init__(self, *, port: int = 0, log_path: Path | None = None, start_timeout: float = 120.0):
        self.port = port
        self.start_timeout = start_timeout
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="transfer-bridge-registry-", suffix=".log")[1])
        self.url = ""
        self.download_seconds = 0.0
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def fetch(self) -> Path:
        """Download and unpack Apicurio into the cache once (a no-op when it is there)."""
        began = time.monotonic()
        done = subprocess.run([str(SCRIPT), "fetch"], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"registry.sh fetch failed:\n{done.stderr[-4000:]}")
        self.download_seconds = time.monotonic() - began
        return Path(done.stdout.strip().splitlines()[-1])

    def start(self) -> str:
        self.fetch()
        for attempt in range(3):
            port = self.port or _free_port()
            try:
                self._launch(port)
                return self.url
            except _PortTaken:
                if self.port or attempt == 2:
                    raise RuntimeError(f"port {port} is taken; log: {self.log_path}") from None
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        began = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(SCRIPT), "run", "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in pytest does not kill it before teardown runs
            )
        url = f"http://127.0.0.1:{port}{API_PATH}"
        deadline = began + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self.log_tail()
                self._process = None
                if "already in use" in tail or "Address already" in tail:
                    raise _PortTaken()
                raise RuntimeError(f"schema registry exited during start-up; log tail:\n{tail}")
            if _answers(url):
                self.port, self.url = port, url
                self.startup_seconds = time.monotonic() - began
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"schema registry not ready after {self.start_timeout:.0f}s; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no registry log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"(full log: {self.log_path})", *text])

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(Exception):
    pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def registry_url_for_session() -> tuple[str, Callable[[], None], Callable[[], str]]:
    """(url, stop, log_tail) for the registry a whole test session shares."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        shown = URL(external).with_user(None)  # never print credentials embedded in the URL
        return external.rstrip("/"), lambda: None, lambda: f"(external registry {shown}: no local log)"
    registry = LocalRegistry()
    registry.start()
    return registry.url, registry.stop, registry.log_tail
