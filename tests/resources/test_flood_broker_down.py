"""A flood of events into a pipeline whose broker was just killed: bounded, then nothing lost.

The pipeline accepts at most ``max_in_flight`` items that Kafka has not acknowledged; past that,
``offer`` waits, which is what slows a provider connection down instead of growing memory. Here a
producer offers as fast as the pipeline takes while the broker is dead, then the broker comes
back and every accepted event must be published exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.observability import metrics
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from tests.resources.figures import mib, record
from tests.resources.flood import Flood, deposit

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FLOOD_SECONDS = 4.0
RSS_BOUND = 160 * 2**20  # generous: an unbounded queue at this offer rate grows by gigabytes


def retries() -> float:
    return sum(sample.value for family in metrics.PRODUCE_RETRIES.collect() for sample in family.samples if sample.name.endswith("_total"))


@pytest.fixture(params=[200, 5000], ids=lambda n: f"max_in_flight={n}")
async def pipeline(own_broker: LocalKafka, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"r.{suffix}.deposit", withdrawal=f"r.{suffix}.withdrawal", dead_letter=f"r.{suffix}.dlq", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2, request_timeout_ms=3000, retry_backoff_ms=100)
    pipeline = Pipeline(
        Publisher(kafka, topics), DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3")), max_in_flight=request.param, stuck_after=5.0
    )
    await pipeline.start()
    try:
        yield pipeline
    finally:
        if not own_broker.running:  # a failed test must not leave the next one a dead broker
            own_broker.restart()
        await pipeline.close(timeout=10)


async def test_a_flood_while_the_broker_is_dead_stays_within_the_window_and_loses_nothing(
    own_broker: LocalKafka, pipeline: Pipeline
) -> None:
    """Held either by the window (small ``max_in_flight``) or, before it fills, by the producer's
    own buffer (aiokafka waits for room per partition); never by memory running out."""
    window = pipeline._max_in_flight
    assert await pipeline.submit(deposit(-1, tag="warm-up")) is Outcome.PUBLISHED
    retries_before = retries()
    own_broker.kill9()
    flood = Flood(pipeline)
    flood.start()
    await flood.run_for(FLOOD_SECONDS - 1)
    accepted_before_last_second = flood.accepted
    await flood.run_for(1)
    accepted_while_down, peaks = flood.accepted, flood.peaks
    retried = retries() - retries_before
    own_broker.restart()
    await flood.stop()
    outcomes = await flood.outcomes()

    record(
        f"flood, broker dead {FLOOD_SECONDS:.0f}s: accepted {accepted_while_down} (max_in_flight {window}), "
        f"peak in-flight {peaks.in_flight}, peak RSS {mib(peaks.rss)} (+{mib(peaks.rss_growth)} over "
        f"{mib(peaks.baseline_rss)}), peak asyncio tasks {peaks.tasks}, produce retries {retried:.0f}; "
        f"after restart {outcomes.count(Outcome.PUBLISHED)}/{len(outcomes)} published"
    )
    assert peaks.in_flight <= window and accepted_while_down <= window
    assert accepted_while_down == accepted_before_last_second, "the producer is held, not accepted without bound"
    assert accepted_while_down >= min(window, 200)  # it did flood
    assert peaks.rss_growth < RSS_BOUND, f"RSS grew {mib(peaks.rss_growth)}"
    assert peaks.tasks <= window + 100, "retries must not multiply tasks"
    assert retried <= accepted_while_down * (FLOOD_SECONDS / 0.5 + 1), "retries are paced, not spinning"
    assert outcomes == [Outcome.PUBLISHED] * len(outcomes)
    records = await read_topic(own_broker.bootstrap, pipeline.publisher.topics.deposit, expect=len(outcomes) + 1, timeout=30)
    assert len(records) == len(outcomes) + 1
    assert len({r.value for r in records}) == len(records)


async def test_a_producer_cancelled_while_blocked_in_offer_leaves_the_books_balanced(
    own_broker: LocalKafka, pipeline: Pipeline
) -> None:
    """Sources are cancelled while they wait in ``offer`` (supervisor restarts, shutdown, the OKX
    notice handover). An item cancelled half-way must give its window slot back (or be delivered):
    otherwise ``in_flight`` never returns to zero, ``drain`` never completes and readiness stays
    false for good."""
    assert await pipeline.submit(deposit(-1, tag="warm-up")) is Outcome.PUBLISHED
    own_broker.kill9()
    flood = Flood(pipeline, lambda n: deposit(n, tag="cancelled"))
    flood.start()
    await flood.run_for(3)
    assert flood._producer is not None
    flood._producer.cancel()  # blocked in offer, as a cancelled source would be
    await asyncio.gather(flood._producer, return_exceptions=True)
    await flood.stop()
    own_broker.restart()
    drained = await pipeline.drain(timeout=30)
    record(f"cancelled while blocked in offer: accepted {flood.accepted}, left in flight after recovery {pipeline.in_flight}")
    assert drained, f"{pipeline.in_flight} item(s) left in flight for good"
    assert await pipeline.submit(deposit(10_000, tag="after")) is Outcome.PUBLISHED
    assert pipeline.ready, pipeline.health()
