"""After a broker outage under load, publishing resumes within seconds of the broker's return.

aiokafka fails a batch whose partition has no leader once it is older than ``request_timeout_ms``
— after its idempotent sequence number was assigned. Then the broker sees a gap, and every later
batch of that producer is refused with ``OutOfOrderSequenceNumber``, however often it is retried.
The adversarial run (30 s broker stop, default timeouts) saw the pipeline stuck on it for 45 s,
until the watchdog replaced the producer: 75 s of 503s. Here the outage outlasts a short request
timeout (the same mechanism, in seconds) while events keep coming.

Both dedup modes: embedded (the idempotent producer, where the fault was) and exactly-once (the
transactional producer, which the deployment's base configuration runs).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.delivery.assemble import build_pipeline
from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.observability import metrics
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from tests.resources.flood import deposit

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REQUEST_TIMEOUT_MS = 3000
OUTAGE = 8.0  # longer than the request timeout: queued batches expire while no leader is known
TARGET = 5.0  # broker back → first acknowledged record


def retries_by_error() -> dict[str, float]:
    return {
        sample.labels["error"]: sample.value
        for family in metrics.PRODUCE_RETRIES.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


@pytest.fixture(params=["sqlite", "kafka"])
async def pipeline(own_broker: LocalKafka, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"rr.{suffix}.deposit", withdrawal=f"rr.{suffix}.withdrawal", dead_letter=f"rr.{suffix}.dlq", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2, request_timeout_ms=REQUEST_TIMEOUT_MS)
    if request.param == "kafka":
        dedup = DedupSettings(store="kafka", state_topic=f"rr.{suffix}.state", transactional_id=f"rr-{suffix}")
        pipeline = build_pipeline(kafka, topics, dedup, PipelineSettings(max_in_flight=5000))
    else:
        pipeline = Pipeline(Publisher(kafka, topics), DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3")), max_in_flight=5000)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        if not own_broker.running:
            own_broker.start()
        await pipeline.close(timeout=10)


async def test_publishing_resumes_within_seconds_of_the_broker_returning_under_load(
    own_broker: LocalKafka, pipeline: Pipeline
) -> None:
    acked: list[float] = []
    futures: list[asyncio.Future[Outcome]] = []

    def on_done(future: asyncio.Future[Outcome]) -> None:
        if not future.cancelled() and future.exception() is None:
            acked.append(time.monotonic())

    async def load() -> None:
        n = 0
        while True:
            future = await pipeline.offer(deposit(n, tag="restart", raw_bytes=200))
            future.add_done_callback(on_done)
            futures.append(future)
            n += 1
            await asyncio.sleep(0.004)  # ~250 events/s

    producer = asyncio.create_task(load())
    try:
        await asyncio.sleep(2.0)
        assert acked, "nothing published before the outage"
        before = retries_by_error()
        rebuilds_before = metrics.PRODUCER_REBUILDS._value.get()
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(own_broker.start)
        back = time.monotonic()
        deadline = back + 60
        while not any(at > back for at in acked) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first = min((at for at in acked if at > back), default=None)
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)

    retried = {error: count - before.get(error, 0) for error, count in retries_by_error().items() if count > before.get(error, 0)}
    recovery = None if first is None else first - back
    print(f"\nbroker back → first ack: {recovery if recovery is None else round(recovery, 2)} s; retries during the outage and after: {retried}; "
          f"producer rebuilds: {metrics.PRODUCER_REBUILDS._value.get() - rebuilds_before:.0f}")
    assert recovery is not None and recovery <= TARGET, f"first ack {recovery} s after the broker returned; retries {retried}"
    outcomes = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert outcomes == [Outcome.PUBLISHED] * len(futures), "every accepted event is published"
    records = await read_topic(own_broker.bootstrap, pipeline.publisher.topics.deposit, expect=len(futures), timeout=30)
    assert {r.key for r in records} == {f"okx:deposit:restart-{n}".encode() for n in range(len(futures))}
