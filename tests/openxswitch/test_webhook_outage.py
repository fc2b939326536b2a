"""Broker down: the sender gets 503, never 2xx; once the broker is back its retry lands once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import orjson
import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from tests.conftest import PipelineFactory
from tests.openxswitch.conftest import SECRET, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalKafka]:
    """A broker this module may stop and restart without disturbing the session's broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TRANSFER_BRIDGE_NO_LOCAL_KAFKA"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is an external cluster and local brokers are disabled: nothing to stop")
    broker = LocalKafka()
    broker.start()
    yield broker
    broker.cleanup()


async def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_with_the_broker_down_the_sender_gets_503_and_its_retry_is_published_once_it_returns(
    own_broker: LocalKafka, make_pipeline: PipelineFactory, topics: TopicSettings
) -> None:
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2, request_timeout_ms=5_000)
    pipeline = await make_pipeline(kafka=kafka)
    webhook = OpenXSwitchWebhook(OpenXSwitchConfig(enabled=True, secrets=[SECRET], ack_timeout_seconds=1.0), pipeline)
    async with webhook.serve() as url:
        sim = OpenXSwitchSimulator(url, SECRET, retry_interval=0.3, retry_window=120.0, request_timeout=10.0)
        transfer = sim.withdrawal()
        before = sim.delivery(transfer, 0)
        assert (await sim.send([before])).acked == 1

        await asyncio.to_thread(own_broker.stop)
        during = sim.delivery(transfer, 1)
        sending = asyncio.create_task(sim.send([during]))
        assert await _until(lambda: len(during.attempts) >= 2, timeout=20), "the sender was not answered"
        assert set(during.attempts) == {503}, "while Kafka is down: 503, never 2xx"
        assert not during.acked

        await asyncio.to_thread(own_broker.restart)
        report = await asyncio.wait_for(sending, timeout=90)

    assert report.acked == 1 and during.attempts[-1] == 200
    assert set(during.attempts[:-1]) == {503}
    assert webhook.stats["timeout"] >= 2
    records = await read_all(own_broker.bootstrap, topics.withdrawal)
    published = [orjson.loads(r.value)["event_id"] for r in records]
    assert published == [s.event.event_id for s in transfer.states], "each state once, in order"
