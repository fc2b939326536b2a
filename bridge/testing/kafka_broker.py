"""A real Kafka broker for tests, the demo and benchmarks, without Docker.

Wraps ``deploy/local/kafka.sh`` (Apache Kafka from Maven Central, single-node KRaft on 127.0.0.1).
``kafka_bootstrap_for_session`` picks the broker a test session uses: the user's cluster
(``KAFKA_BOOTSTRAP_SERVERS``), else testcontainers' Kafka when a Docker engine answers, else a
local broker started here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["LocalKafka", "kafka_bootstrap_for_session", "SCRIPT"]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"


class LocalKafka:
    """One broker process with its own data directory; ``restart`` keeps port and data."""

    def __init__(self, *, port: int = 0, directory: Path | None = None, keep_data: bool = False):
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="transfer-bridge-kafka-"))
        self.port = port
        self.keep_data = keep_data
        self.bootstrap = ""

    def _run(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [str(SCRIPT), *args, "--dir", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {args[0]} failed:\n{done.stderr[-4000:]}")
        return done.stdout.strip()

    def start(self) -> str:
        output = self._run("start", "--port", str(self.port))
        self.bootstrap = output.splitlines()[-1]
        self.port = int(self.bootstrap.rsplit(":", 1)[1])
        return self.bootstrap

    def stop(self) -> None:
        self._run("stop", timeout=60)

    def kill9(self) -> None:
        self._run("kill9", timeout=30)

    def restart(self) -> str:
        self.bootstrap = self._run("restart").splitlines()[-1]
        return self.bootstrap

    def log_tail(self, lines: int = 80) -> str:
        log = self.directory / "logs" / "server.log"
        if not log.exists():
            return "(no broker log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir and not self.keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "LocalKafka":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kafka_bootstrap_for_session() -> tuple[str, Callable[[], None], Callable[[], str]]:
    """(bootstrap, stop, log_tail) for the broker a whole test session shares."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external, lambda: None, lambda: f"(external cluster {external}: no local log)"
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
        return (
            container.get_bootstrap_server(),
            container.stop,
            lambda: "\n".join(container.get_logs()[0].decode(errors="replace").splitlines()[-80:]),
        )
    broker = LocalKafka()
    broker.start()
    return broker.bootstrap, broker.cleanup, broker.log_tail
