"""Shared fixtures: one real Kafka broker per test session, unique topics per test.

The broker is, in order: ``KAFKA_BOOTSTRAP_SERVERS`` (your cluster), testcontainers' Kafka when a
Docker engine is reachable, or the local KRaft broker from ``deploy/local/kafka.sh``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401  imported up front: see the note below
import pytest

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_broker import kafka_bootstrap_for_session

# Note: CPython 3.11.7 can fail compiling a module ("AST constructor recursion depth mismatch") when
# a finalizer runs mid-compile; hypothesis' pytest plugin would otherwise import (and compile) its
# package lazily at the end of the session, after many Kafka clients were garbage-collected.

_broker_log: Callable[[], str] | None = None



@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what a command under test did to logging (``configure_logging`` replaces the root
    handlers and sets levels): a later test that captures DEBUG records must still see them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name in levels:
            # A logger first made during the test keeps its level: a module imported then may have
            # pinned it (the provider wire loggers stay at INFO so frame dumps never show secrets).
            logger.setLevel(levels[name])
    logging.captureWarnings(False)

@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    global _broker_log
    bootstrap, stop, log_tail = kafka_bootstrap_for_session()
    _broker_log = log_tail
    try:
        yield bootstrap
    finally:
        stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """When a test fails on a Kafka connection, show the broker's log next to the failure."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _broker_log is not None and call.excinfo is not None:
        text = f"{call.excinfo.typename} {call.excinfo.value}"
        if any(word in text for word in ("Kafka", "Connection", "connect", "Timeout")):
            report.sections.append(("kafka broker log (tail)", _broker_log()))


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=2)


@pytest.fixture
def topics() -> TopicSettings:
    """Fresh topic names per test, so tests never see each other's records."""
    suffix = uuid.uuid4().hex[:10]
    return TopicSettings(
        deposit=f"t.{suffix}.deposit.v1",
        withdrawal=f"t.{suffix}.withdrawal.v1",
        dead_letter=f"t.{suffix}.dlq.v1",
        partitions=3,
    )


PipelineFactory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def make_pipeline(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> AsyncIterator[PipelineFactory]:
    """Build started pipelines on the test's topics and a SQLite store in ``tmp_path``."""
    started: list[Pipeline] = []

    async def factory(*, store_path: Path | None = None, kafka: KafkaSettings | None = None, **options: object) -> Pipeline:
        gate = DedupGate(SQLiteStore(store_path or tmp_path / "dedup.sqlite3"))
        pipeline = Pipeline(Publisher(kafka or kafka_settings, topics), gate, **options)  # type: ignore[arg-type]
        await pipeline.start()
        started.append(pipeline)
        return pipeline

    yield factory
    for pipeline in started:
        if not pipeline._closing:
            await pipeline.close(timeout=10)
