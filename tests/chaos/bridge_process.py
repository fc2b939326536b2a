"""The bridge under chaos: the real service shell in a separate process the suite can ``kill -9``.

``python -m tests.chaos.bridge_process CONFIG.json`` builds ``ServiceSettings`` from the file and
runs ``BridgeApp`` — the same start-up, supervision, webhook route and shutdown as production, so
what survives the chaos run is what the deployed service does, not a test assembly. It prints
``READY`` once the dedup state is restored, Kafka answered, the webhook route listens and every
source runs; it then runs until killed, or until SIGTERM (exit code of the app).

``BridgeProcess`` is the orchestrator's handle on that child: start and wait for ``READY``,
``kill9``, ``terminate``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridge.observability.logs import configure_logging
from bridge.service.app import BridgeApp, ServiceSettings


async def run(config: dict[str, Any]) -> int:
    """Run the service; ``READY`` on stdout tells the orchestrator when faults may resume."""
    settings = ServiceSettings(**config)
    configure_logging(settings.log.level, settings.log.format, settings.log.levels)
    app = BridgeApp(settings)
    runner = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        print("READY", flush=True)
    else:
        started.cancel()
    return int(await runner)


REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port for the webhook routes that stays the same across restarts of the bridge."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reveal(value: Any) -> Any:
    """Config for a child process: secrets in clear (the file lives in a private temp dir)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [reveal(v) for v in value]
    return value


class BridgeProcess:
    """The bridge as a child process of the orchestrator, run from ``config_path``."""

    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 120.0) -> float:
        """Start and wait for READY; returns seconds to ready."""
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.bridge_process", str(self.config_path)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)
        if line.strip() != b"READY":
            raise RuntimeError(f"bridge did not start: {line!r}; see {self.log_path}")
        return time.monotonic() - started

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def terminate(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        return await asyncio.to_thread(self.process.wait, 60)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        raise SystemExit(asyncio.run(run(json.load(handle))))
