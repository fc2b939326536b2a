"""Resource tests: a broker of their own to stop and freeze, and a summary of what they measured."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from bridge_testkit.kafka_broker import LocalKafka
from tests.resources.figures import FIGURES


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("resources: measured")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    """A broker these tests may stop, kill and freeze: never the shared one."""
    broker = LocalKafka()
    broker.start()
    try:
        yield broker
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(broker_pid(broker), signal.SIGCONT)
        broker.cleanup()


def broker_pid(broker: LocalKafka) -> int:
    return int((broker.directory / "kafka.pid").read_text().strip())


@contextlib.contextmanager
def frozen(broker: LocalKafka) -> Iterator[None]:
    """SIGSTOP the broker JVM (a stalled broker: connections stay open, nothing is answered)."""
    pid = broker_pid(broker)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
