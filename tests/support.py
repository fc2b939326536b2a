"""Helpers tests share that are not fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.ingest.stream import StreamSource
from bridge_testkit.conformance import eventually
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from bridge_testkit.streams import settle

__all__ = [
    "FIXTURES",
    "RECEIVED",
    "fixture_bytes",
    "eventually",
    "running_sources",
    "settled",
    "events",
    "expected",
    "values",
    "serve_app",
]

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = "2026-11-22T10:00:00.000Z"


def fixture_bytes(relative: str) -> bytes:
    """A provider payload from ``tests/fixtures/<provider>/``, byte for byte."""
    return (FIXTURES / relative).read_bytes()


# -- stream sources run by hand, read back from Kafka (the provider-specific end-to-end tests) -----

S = TypeVar("S", bound=StreamSource)


@contextlib.asynccontextmanager
async def running_sources(sources: Sequence[S]) -> AsyncIterator[Sequence[S]]:
    """Each source's ``run`` in its own task; on exit they are cancelled, and a source must only
    ever end by being cancelled."""
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    try:
        yield sources
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            assert isinstance(result, asyncio.CancelledError), result


async def settled(sources: Sequence[StreamSource], pipeline: Pipeline, *, quiet: float = 0.25, timeout: float = 15.0) -> None:
    """``settle`` with the shorter pace the end-to-end tests use."""
    await settle(sources, pipeline, quiet=quiet, timeout=timeout)


async def events(bootstrap: str, topics: TopicSettings, *, deposits: int = 0, withdrawals: int = 0) -> list[ConsumedRecord]:
    """Both event topics, each until its expected count arrived (that nothing more was published
    is checked on the sources' outcomes, which are Kafka acks)."""
    records = await read_topic(bootstrap, topics.deposit, expect=deposits, timeout=10) if deposits else []
    return records + (await read_topic(bootstrap, topics.withdrawal, expect=withdrawals, timeout=10) if withdrawals else [])


def expected(truth: Mapping[str, Sequence[object]]) -> dict[str, int]:
    """Per event topic, how many states a simulator generated (keys are ``provider:direction:id``)."""
    deposits = sum(len(states) for key, states in truth.items() if key.split(":")[1] == "deposit")
    return {"deposits": deposits, "withdrawals": sum(map(len, truth.values())) - deposits}


def values(records: Sequence[ConsumedRecord]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app on a free loopback port for the block; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
