"""Fixtures for the contract tests: one real schema registry per session, unique subjects per test.

The registry is the user's own when ``SCHEMA_REGISTRY_URL`` is set (any Confluent-compatible base
URL), else a local Apicurio Registry from ``deploy/local/registry.sh``, started once (about 2-3 s
warm) and stopped at the end of the session. Subjects a test registers are deleted afterwards,
so a shared registry is left as it was found.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.registry import RegistryClient, subject_name
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge_testkit.registry import registry_url_for_session

_registry_log: Callable[[], str] | None = None


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    global _registry_log
    url, stop, log_tail = registry_url_for_session()
    _registry_log = log_tail
    try:
        yield url
    finally:
        stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """When a test fails on the registry, show the registry's log next to the failure."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _registry_log is not None and call.excinfo is not None:
        text = f"{call.excinfo.typename} {call.excinfo.value}"
        if any(word in text for word in ("Registry", "registry", "HTTP 5")):
            report.sections.append(("schema registry log (tail)", _registry_log()))


@pytest.fixture
def registry_settings(schema_registry_url: str) -> SchemaRegistrySettings:
    return SchemaRegistrySettings(url=schema_registry_url, timeout_seconds=10, startup_timeout_seconds=5)


@pytest.fixture
def event_topics() -> list[str]:
    """Two fresh event topic names (deposit, withdrawal); only their subjects are used."""
    suffix = uuid.uuid4().hex[:10]
    return [f"t.{suffix}.deposit.v1", f"t.{suffix}.withdrawal.v1"]


@pytest.fixture
async def registry(schema_registry_url: str, event_topics: list[str], topics: TopicSettings) -> AsyncIterator[RegistryClient]:
    """A client; afterwards the subjects of this test's topics are deleted."""
    async with RegistryClient(schema_registry_url) as client:
        yield client
        for topic in (*event_topics, topics.deposit, topics.withdrawal):
            await client.delete_subject(subject_name(topic))


PipelineFactory = Callable[..., Awaitable[Pipeline]]


@pytest.fixture
async def make_wire_pipeline(
    kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path, registry_settings: SchemaRegistrySettings
) -> AsyncIterator[PipelineFactory]:
    """Like ``make_pipeline``, with the registry configured: values go out in the wire format."""
    started: list[Pipeline] = []

    async def factory(*, registry: SchemaRegistrySettings | None = None, **options: object) -> Pipeline:
        gate = DedupGate(SQLiteStore(tmp_path / f"wire-dedup-{len(started)}.sqlite3"))
        publisher = Publisher(kafka_settings, topics, schema_registry=registry or registry_settings)
        pipeline = Pipeline(publisher, gate, **options)  # type: ignore[arg-type]
        await pipeline.start()
        started.append(pipeline)
        return pipeline

    yield factory
    for pipeline in started:
        if not pipeline._closing:
            await pipeline.close(timeout=10)
