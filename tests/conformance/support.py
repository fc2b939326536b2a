"""Helpers of the conformance suite: the service on a harness's section, Kafka read back, the
pipeline's counters, and a parse function broken once."""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from bridge.delivery.settings import TopicSettings
from bridge.ingest.plugins import plugin_for
from bridge.ingest.source import Source
from bridge.kafka.settings import KafkaSettings
from bridge.service.app import BridgeApp
from bridge_testkit.conformance import ProviderHarness, eventually
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from tests.service.support import Running, running, service_settings

__all__ = [
    "Bridge",
    "Topics",
    "PipelineCounts",
    "FailOnce",
    "FailAfterFirstPage",
    "published_states",
    "partitions_per_key",
    "state_count",
    "source_of",
    "restarts",
]


class Bridge:
    """``async with bridge(section, **core_sections) as service``: the real service shell
    (``BridgeApp`` with its configured sources) running the harness's provider on the test's topics."""

    def __init__(self, harness: ProviderHarness, tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings):
        self.harness = harness
        self.tmp_path = tmp_path
        self.kafka = kafka
        self.topics = topics

    @contextlib.asynccontextmanager
    async def __call__(self, section: dict[str, Any], *, linger_ms: int | None = None, **core: Any) -> AsyncIterator[Running]:
        """``linger_ms`` slows Kafka's acks down; ``core`` sections override the service's defaults."""
        kafka = self.kafka if linger_ms is None else self.kafka.model_copy(update={"linger_ms": linger_ms})
        settings = service_settings(self.tmp_path, kafka, self.topics, **{self.harness.name: section}, **core)
        async with running(settings) as service:
            yield service


class Topics:
    """The test's topics read back: sizes from the end offsets (one consumer for the whole test),
    records with ``read_topic``."""

    def __init__(self, bootstrap: str, topics: TopicSettings):
        self.bootstrap = bootstrap
        self.names = {"deposit": topics.deposit, "withdrawal": topics.withdrawal, "dead_letter": topics.dead_letter}
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Topics:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def size(self, role: str) -> int:
        """Records in one topic (``deposit``, ``withdrawal``, ``dead_letter``); 0 while it does not exist."""
        assert self._consumer is not None
        topic = self.names[role]
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()  # no public API; the topic may be brand new
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                return 0
        ends = await self._consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())

    async def sizes(self) -> dict[str, int]:
        return {role: await self.size(role) for role in self.names}

    async def events_count(self) -> int:
        return await self.size("deposit") + await self.size("withdrawal")

    async def wait_for(self, *, events: int = 0, dead_letters: int = 0, timeout: float = 20.0) -> None:
        """Until the event topics hold at least ``events`` records and the DLQ ``dead_letters``."""

        async def enough() -> bool:
            return await self.events_count() >= events and await self.size("dead_letter") >= dead_letters

        await eventually(enough, timeout, f"{events} events and {dead_letters} dead letters in Kafka")

    async def read(self, role: str) -> list[ConsumedRecord]:
        """Everything the topic holds (read up to its size, so nothing extra can hide)."""
        size = await self.size(role)
        if not size:
            return []
        records = await read_topic(self.bootstrap, self.names[role], expect=size, timeout=15)
        assert len(records) == size, f"read {len(records)} of the {size} records of {role}"
        return records

    async def events(self) -> list[ConsumedRecord]:
        return await self.read("deposit") + await self.read("withdrawal")

    async def dead_letters(self) -> list[ConsumedRecord]:
        return await self.read("dead_letter")


def state_count(truth: Mapping[str, Sequence[Hashable]]) -> int:
    return sum(len(states) for states in truth.values())


def published_states(harness: ProviderHarness, records: Sequence[ConsumedRecord]) -> dict[str, list[Hashable]]:
    """Per event key, the states Kafka holds in partition order (all of a key are on one partition:
    ``partitions_per_key``); comparable with ``harness.truth()``."""
    states: dict[str, list[Hashable]] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        value = json.loads(record.value)
        assert record.key == value["key"].encode(), (record.key, value["key"])
        states.setdefault(value["key"], []).append(harness.state_of(value))
    return states


def partitions_per_key(records: Sequence[ConsumedRecord]) -> dict[str, set[tuple[str, int]]]:
    found: dict[str, set[tuple[str, int]]] = {}
    for record in records:
        assert record.key is not None
        found.setdefault(record.key.decode(), set()).add((record.topic, record.partition))
    return found


def source_of(app: BridgeApp, harness: ProviderHarness) -> Source:
    [source] = [s for s in app.sources if s.name == harness.source_name]
    return source


def restarts(app: BridgeApp) -> int:
    """How often the supervisor restarted any source."""
    assert app.supervisor is not None
    return sum(int(view["supervisor"]["restarts"]) for view in app.supervisor.snapshot(0.0).values())


@dataclass(frozen=True)
class PipelineCounts:
    """The pipeline's event counters for one provider (``bridge_events_*_total``), to take deltas."""

    received: float
    published: float
    deduplicated: float

    @classmethod
    def now(cls, plugin_name: str) -> PipelineCounts:
        provider = plugin_for(plugin_name).provider.value

        def total(name: str) -> float:
            return sum(
                sample.value
                for metric in REGISTRY.collect()
                if metric.name == name
                for sample in metric.samples
                if sample.name == f"{name}_total" and sample.labels.get("provider") == provider
            )

        return cls(total("bridge_events_received"), total("bridge_events_published"), total("bridge_events_deduplicated"))

    def __sub__(self, earlier: PipelineCounts) -> PipelineCounts:
        return PipelineCounts(self.received - earlier.received, self.published - earlier.published, self.deduplicated - earlier.deduplicated)


class FailOnce:
    """Wraps a function: its first call raises ``RuntimeError``, every later call is the original."""

    def __init__(self, original: Callable[..., Any]):
        self.original = original
        self.calls = 0
        self.raised = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if not self.raised:
            self.raised += 1
            raise RuntimeError("injected by the conformance suite")
        return self.original(*args, **kwargs)

    @classmethod
    def patch(cls, monkeypatch: pytest.MonkeyPatch, module: str, attribute: str) -> FailOnce:
        """Replace ``module.attribute`` (the name the source looks up when it calls it)."""
        target = importlib.import_module(module)
        broken = cls(getattr(target, attribute))
        monkeypatch.setattr(target, attribute, broken)
        return broken


class FailAfterFirstPage:
    """Wraps a poll (an async generator function of pages): its first call yields the first page,
    then raises ``RuntimeError`` in the middle of the cycle; every later call is the original."""

    def __init__(self, original: Callable[..., AsyncGenerator[Any]]):
        self.original = original
        self.calls = 0
        self.raised = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.calls += 1
        if self.raised:
            async for page in self.original(*args, **kwargs):
                yield page
            return
        pages = self.original(*args, **kwargs)
        try:
            async for page in pages:
                yield page
                break
        finally:
            await pages.aclose()
        self.raised += 1
        raise RuntimeError("injected by the conformance suite")
