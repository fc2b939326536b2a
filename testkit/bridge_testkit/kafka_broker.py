"""A real Kafka broker for tests, the demo and benchmarks, without Docker.

``LocalKafka`` drives ``deploy/local/kafka.sh``: Apache Kafka from Maven Central as a single-node
KRaft broker on 127.0.0.1, in a directory of its own and on a free port, so any number of test
sessions can run side by side. Nothing is mocked: what passes here passes against a real broker.

``kafka_bootstrap_for_session`` picks the broker a test session uses: the user's cluster
(``KAFKA_BOOTSTRAP_SERVERS``), else testcontainers' Kafka when a Docker engine answers, else a
``LocalKafka``.

Only the standard library is needed (testcontainers is imported when it is used).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["LocalKafka", "kafka_bootstrap_for_session", "SCRIPT"]

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"

# Runs detached next to every LocalKafka: it blocks reading a pipe whose other end only the owning
# Python process holds. When that process ends in any way (even SIGKILL, or a CI timeout) the read
# returns, and the broker is stopped: no half-gigabyte JVM outlives the test run that started it.
_WATCHDOG = r"""
import os, shutil, subprocess, sys
fd, script, directory, remove = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
try:
    while os.read(fd, 64):
        pass
except OSError:
    pass
subprocess.run([script, "stop", "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if remove:
    shutil.rmtree(directory, ignore_errors=True)
"""


class LocalKafka:
    """One broker process with its own data directory; ``restart`` keeps port and data.

    ``directory=None`` uses a fresh temporary directory, removed by ``cleanup()`` (unless
    ``keep_data``). ``port=0`` lets the script pick a free port; ``start()`` returns the bootstrap
    string and sets ``bootstrap`` and ``port``. With ``stop_with_owner`` (default) the broker is
    also stopped when this Python process dies without calling ``stop()``.

    ``sasl_ssl_port`` (0 = any free port) adds a SASL_SSL listener (PLAIN, SCRAM-SHA-256/512) with
    the keystore in ``tls_dir`` and the users of ``scram_users`` (see ``kafka.sh``); its address is
    ``sasl_ssl_bootstrap`` after ``start()``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        directory: Path | None = None,
        keep_data: bool = False,
        stop_with_owner: bool = True,
        sasl_ssl_port: int | None = None,
        tls_dir: Path | None = None,
        scram_users: Path | None = None,
    ) -> None:
        self._own_dir = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="transfer-bridge-kafka-"))
        self.directory = Path(directory)
        self.port = port
        self.keep_data = keep_data
        self.stop_with_owner = stop_with_owner
        self.bootstrap = ""
        self.sasl_ssl_port = sasl_ssl_port
        self.tls_dir = tls_dir
        self.scram_users = scram_users
        self.sasl_ssl_bootstrap = ""
        self._guard_fd: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- script calls --------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 600) -> str:
        command = [str(SCRIPT), args[0], "--dir", str(self.directory), *args[1:]]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"kafka.sh {args[0]} timed out after {timeout:.0f}s\n{self.log_tail(60)}") from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"kafka.sh {args[0]} failed (exit {done.returncode}) in {self.directory}:\n{done.stderr[-6000:]}"
            )
        return done.stdout.strip()

    def start(self) -> str:
        """Start the broker (or reuse the one running in ``directory``) and wait until it is ready.

        The first call on a machine downloads Kafka with Maven (about 50 MB); later ones do not.
        """
        secure: list[str] = []
        if self.sasl_ssl_port is not None:
            secure = ["--sasl-ssl-port", str(self.sasl_ssl_port), "--tls-dir", str(self.tls_dir)]
            secure += ["--scram-users", str(self.scram_users)]
        output = self._run("start", "--port", str(self.port), *secure)
        self._set_bootstrap(output)
        self._guard()
        return self.bootstrap

    def stop(self) -> None:
        """Graceful stop (SIGTERM, SIGKILL after 20 s). Data stays; ``start()`` or ``restart()`` resume it."""
        self._run("stop", timeout=60)

    def kill9(self) -> None:
        """SIGKILL the broker, as a crash would. ``restart()`` brings it back with its data."""
        self._run("kill9", timeout=30)

    def restart(self) -> str:
        """Stop (if running) and start again on the same port with the same data."""
        self._set_bootstrap(self._run("restart"))
        self._guard()
        return self.bootstrap

    @property
    def running(self) -> bool:
        done = subprocess.run(
            [str(SCRIPT), "status", "--dir", str(self.directory)], capture_output=True, text=True, timeout=30
        )
        return done.returncode == 0

    def log_tail(self, lines: int = 80) -> str:
        """The last ``lines`` lines of the broker's log (for failure reports)."""
        log = self.directory / "logs" / "server.log"
        if not log.exists():
            return f"(no broker log at {log})"
        with log.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 400 * lines - 4096))
            text = handle.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cleanup(self) -> None:
        """Stop the broker and, for a temporary directory, delete its data."""
        try:
            self.stop()
        finally:
            self._unguard()
            if self._own_dir and not self.keep_data:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.bootstrap!r}, directory={str(self.directory)!r})"

    # -- internals -----------------------------------------------------------------------------

    def _set_bootstrap(self, output: str) -> None:
        lines = output.splitlines()
        if not lines or ":" not in lines[-1]:
            raise RuntimeError(f"kafka.sh printed no bootstrap address: {output!r}")
        self.bootstrap = lines[-1].strip()
        self.port = int(self.bootstrap.rsplit(":", 1)[1])
        secure = self.directory / "sasl_ssl.env"
        if secure.exists():
            for line in secure.read_text().splitlines():
                if line.startswith("SASL_SSL_PORT="):
                    self.sasl_ssl_port = int(line.split("=", 1)[1])
                    self.sasl_ssl_bootstrap = f"127.0.0.1:{self.sasl_ssl_port}"

    def _guard(self) -> None:
        if not self.stop_with_owner or self._watchdog is not None:
            return
        read_end, write_end = os.pipe()  # both non-inheritable: only the watchdog gets read_end
        remove = "1" if self._own_dir and not self.keep_data else "0"
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(read_end), str(SCRIPT), str(self.directory), remove],
                pass_fds=(read_end,),
                start_new_session=True,  # a Ctrl-C aimed at the test run does not kill the watchdog
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._guard_fd = write_end

    def _unguard(self) -> None:
        if self._guard_fd is not None:
            os.close(self._guard_fd)  # the watchdog wakes up, finds the broker stopped, exits
            self._guard_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self._watchdog = None


def _docker_available() -> bool:
    """True when a Docker engine answers within a few seconds (not merely when the CLI exists)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kafka_bootstrap_for_session() -> tuple[str, Callable[[], None], Callable[[], str]]:
    """``(bootstrap, stop, log_tail)`` for the broker a whole test session shares.

    In order: ``KAFKA_BOOTSTRAP_SERVERS`` (your cluster; nothing is started or stopped), a
    testcontainers Kafka when a Docker engine is reachable (the usual CI setup), else a
    ``LocalKafka`` (no Docker needed, only java, mvn and python3). ``stop`` releases whatever
    was started; ``log_tail`` returns the broker log's end for failure reports.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external, lambda: None, lambda: f"(external cluster {external}: no local broker log)"
    if _docker_available():
        try:
            from testcontainers.community.kafka import KafkaContainer  # current testcontainers
        except ImportError:
            from testcontainers.kafka import KafkaContainer  # older 4.x

        container = KafkaContainer().with_kraft()
        container.start()

        def container_log_tail(lines: int = 80) -> str:
            stdout, stderr = container.get_logs()
            text = (stdout + stderr).decode(errors="replace")
            return "\n".join(text.splitlines()[-lines:])

        return container.get_bootstrap_server(), container.stop, container_log_tail
    broker = LocalKafka()
    broker.start()
    return broker.bootstrap, broker.cleanup, broker.log_tail
