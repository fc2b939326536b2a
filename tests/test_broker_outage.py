"""With the broker stopped the pipeline waits, reports not-ready, and delivers everything after."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery.pipeline import Outcome
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.test_pipeline_kafka import withdrawal

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    """A broker this module may stop and start without disturbing the session's broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TRANSFER_BRIDGE_NO_LOCAL_KAFKA"):
        pytest.skip("local broker disabled; cannot stop an external cluster")
    broker = LocalKafka()
    broker.start()
    yield broker
    broker.cleanup()


async def _wait_until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_with_the_broker_down_the_pipeline_holds_reports_not_ready_and_delivers_once_back(
    own_broker: LocalKafka, make_pipeline: PipelineFactory, topics, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2, request_timeout_ms=15_000)
    pipeline = await make_pipeline(kafka=kafka, not_ready_after=2.0)
    assert await pipeline.submit(withdrawal(transfer_id="before")) is Outcome.PUBLISHED
    assert pipeline.ready

    await asyncio.to_thread(own_broker.stop)
    events = [withdrawal(transfer_id=f"during-{n}", confirmations=n % 3) for n in range(50)]
    futures = [await pipeline.offer(e) for e in events]
    assert await _wait_until(lambda: not pipeline.ready, timeout=10), "pipeline never reported not-ready"
    await asyncio.sleep(1.0)
    assert not any(f.done() for f in futures), "nothing can be acknowledged while the broker is down"
    assert pipeline.in_flight == 50

    await asyncio.to_thread(own_broker.restart)
    outcomes = await asyncio.wait_for(asyncio.gather(*futures), timeout=90)
    assert outcomes == [Outcome.PUBLISHED] * 50
    assert await _wait_until(lambda: pipeline.ready, timeout=10)

    records = await read_topic(own_broker.bootstrap, topics.withdrawal, expect=51, timeout=20)
    keys = sorted(r.key.decode() for r in records)
    assert len(set(keys)) == 51, "every event delivered"
    assert len(keys) == 51, "and none twice"
