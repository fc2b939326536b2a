"""Floods while the broker is stalled (SIGSTOP: connections stay open, nothing is answered).

A stalled broker is worse than a dead one for a client: writes are accepted by the kernel and
requests simply never return. Two floods: events offered straight into the pipeline, and an OKX
provider pushing as fast as its WebSocket takes them into the real OKX source. Either way memory
stays bounded (the pipeline window holds the producer, the source stops reading, TCP pushes back
on the provider), and once the broker resumes every accepted event is published once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.sources.okx.service import build_okx_sources
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from tests.resources.conftest import frozen
from tests.resources.figures import mib, record, rss_bytes
from tests.resources.flood import Flood, Peaks, deposit

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MAX_IN_FLIGHT = 500
STALL_SECONDS = 4.0
RSS_BOUND = 160 * 2**20


@pytest.fixture
async def pipeline(own_broker: LocalKafka, tmp_path: Path) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"s.{suffix}.deposit", withdrawal=f"s.{suffix}.withdrawal", dead_letter=f"s.{suffix}.dlq", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2, request_timeout_ms=2000, retry_backoff_ms=100)
    pipeline = Pipeline(
        Publisher(kafka, topics), DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3")), max_in_flight=MAX_IN_FLIGHT, stuck_after=5.0
    )
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.close(timeout=15)


async def test_a_flood_while_the_broker_is_stalled_stays_within_the_window_and_loses_nothing(
    own_broker: LocalKafka, pipeline: Pipeline
) -> None:
    assert await pipeline.submit(deposit(-1, tag="warm-up")) is Outcome.PUBLISHED
    flood = Flood(pipeline, lambda n: deposit(n, tag="stall"))
    with frozen(own_broker):
        flood.start()
        await flood.run_for(STALL_SECONDS)
        accepted_while_stalled, peaks = flood.accepted, flood.peaks
    await flood.stop()
    outcomes = await flood.outcomes()
    record(
        f"flood, broker stalled {STALL_SECONDS:.0f}s: accepted {accepted_while_stalled} (max_in_flight {MAX_IN_FLIGHT}), "
        f"peak in-flight {peaks.in_flight}, peak RSS {mib(peaks.rss)} (+{mib(peaks.rss_growth)}), "
        f"peak asyncio tasks {peaks.tasks}; after resume {outcomes.count(Outcome.PUBLISHED)}/{len(outcomes)} published"
    )
    assert peaks.in_flight <= MAX_IN_FLIGHT and accepted_while_stalled <= MAX_IN_FLIGHT
    assert peaks.rss_growth < RSS_BOUND
    assert peaks.tasks <= MAX_IN_FLIGHT + 100
    assert outcomes == [Outcome.PUBLISHED] * len(outcomes)
    records = await read_topic(own_broker.bootstrap, pipeline.publisher.topics.deposit, expect=len(outcomes) + 1, timeout=30)
    assert len(records) == len(outcomes) + 1


def push(n: int) -> str:
    """A push of realistic size that does not compress to nothing (permessage-deflate is on: a
    repetitive memo would shrink each frame to a few bytes on the wire)."""
    item = {
        "actualDepBlkConfirm": "2", "amt": "1.5", "ccy": "USDT", "chain": "USDT-TRC20", "depId": f"flood-{n}",
        "from": "", "fromWdId": "", "pTime": "1674103661147", "state": "0", "subAcct": "", "to": "T" * 34,
        "ts": "1674103661123", "txId": os.urandom(32).hex(), "uid": "44711200000001", "memo": os.urandom(300).hex(),
    }  # fmt: skip
    return orjson.dumps({"arg": {"channel": "deposit-info", "uid": "44711200000001"}, "data": [item]}).decode()


async def test_a_provider_flood_while_the_broker_is_stalled_is_held_back_by_the_socket(
    own_broker: LocalKafka, pipeline: Pipeline
) -> None:
    assert await pipeline.submit(deposit(-1, tag="warm-up")) is Outcome.PUBLISHED
    async with OkxSimulator(idle_timeout=60.0) as sim:
        config = scenario_config(sim, accounts=[sim.accounts["main"].okx_account()], backfill_enabled=False)
        [source] = build_okx_sources(config, pipeline)
        task = asyncio.create_task(source.run())
        try:
            await sim.wait_subscribed("main")
            sent = 0
            counter = itertools.count()
            stop = asyncio.Event()

            async def provider() -> None:
                nonlocal sent
                while not stop.is_set():  # send_raw waits while the socket's write buffer is full
                    sent += await sim.send_raw(push(next(counter)), "main")

            peaks = Peaks(baseline_rss=rss_bytes())
            with frozen(own_broker):
                flooding = asyncio.create_task(provider())
                for _ in range(int(STALL_SECONDS / 0.02)):
                    peaks.in_flight = max(peaks.in_flight, pipeline.in_flight)
                    peaks.rss = max(peaks.rss, rss_bytes())
                    peaks.tasks = max(peaks.tasks, len(asyncio.all_tasks()))
                    await asyncio.sleep(0.02)
                stop.set()
                sent_while_stalled, read_while_stalled = sent, source.stats["frames"]
            await asyncio.wait_for(flooding, 30)  # its last send completes once the source reads again
            deadline = asyncio.get_running_loop().time() + 60
            while source.stats["push.published"] < sent:
                assert asyncio.get_running_loop().time() < deadline, f"{source.stats['push.published']}/{sent} published"
                assert not task.done(), task
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    record(
        f"provider flood (OKX simulator -> OKX source), broker stalled {STALL_SECONDS:.0f}s: provider sent {sent_while_stalled} "
        f"pushes, source read {read_while_stalled}, peak in-flight {peaks.in_flight} (max {MAX_IN_FLIGHT}), "
        f"peak RSS {mib(peaks.rss)} (+{mib(peaks.rss_growth)}), peak asyncio tasks {peaks.tasks}; "
        f"after resume {source.stats['push.published']}/{sent} published"
    )
    assert peaks.in_flight <= MAX_IN_FLIGHT
    assert peaks.rss_growth < RSS_BOUND
    records = await read_topic(own_broker.bootstrap, pipeline.publisher.topics.deposit, expect=sent + 1, timeout=30)
    flooded = [json.loads(r.value)["transfer_id"] for r in records if b'"flood-' in r.value]
    assert len(flooded) == len(set(flooded)) == sent
