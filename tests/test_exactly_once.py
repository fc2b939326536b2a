"""Exactly-once mode: event and dedup state in one transaction, state restored from Kafka."""

from __future__ import annotations

import uuid

import pytest

from bridge.delivery.assemble import build_pipeline
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish_tx import FencedError
from bridge.delivery.settings import DedupSettings, TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_io import read_topic
from tests.test_pipeline_kafka import withdrawal

pytestmark = pytest.mark.kafka


@pytest.fixture
def dedup() -> DedupSettings:
    suffix = uuid.uuid4().hex[:10]
    return DedupSettings(store="kafka", state_topic=f"t.{suffix}.state", transactional_id=f"bridge-{suffix}")


async def _started(kafka: KafkaSettings, topics: TopicSettings, dedup: DedupSettings) -> Pipeline:
    pipeline = build_pipeline(kafka, topics, dedup)
    await pipeline.start()
    return pipeline


async def test_each_event_commits_together_with_its_dedup_state(
    kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings, dedup: DedupSettings
) -> None:
    pipeline = await _started(kafka_settings, topics, dedup)
    try:
        assert await pipeline.submit_all([withdrawal(), withdrawal("success", confirmations=20)]) == [
            Outcome.PUBLISHED,
            Outcome.PUBLISHED,
        ]
    finally:
        await pipeline.close()
    events = await read_topic(kafka_bootstrap, topics.withdrawal, expect=2)
    states = await read_topic(kafka_bootstrap, dedup.state_topic, expect=2)
    assert len(events) == 2 and len(states) == 2
    assert {s.key for s in states} == {b"openxswitch:withdrawal:wd-1"}


async def test_a_new_instance_restores_the_state_from_kafka_and_drops_repeats(
    kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings, dedup: DedupSettings
) -> None:
    first = await _started(kafka_settings, topics, dedup)
    assert await first.submit(withdrawal("success", confirmations=20)) is Outcome.PUBLISHED
    await first.close()

    second = await _started(kafka_settings, topics, dedup)
    try:
        assert await second.submit(withdrawal("success", confirmations=20)) is Outcome.DUPLICATE
        assert await second.submit(withdrawal("pending")) is Outcome.STALE
    finally:
        await second.close()
    assert len(await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)) == 1


async def test_a_restarted_instance_fences_its_predecessor(
    kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings, dedup: DedupSettings
) -> None:
    zombie = await _started(kafka_settings, topics, dedup)
    assert await zombie.submit(withdrawal(transfer_id="a")) is Outcome.PUBLISHED
    successor = await _started(kafka_settings, topics, dedup)
    try:
        with pytest.raises(FencedError):
            await zombie.submit(withdrawal(transfer_id="b"))
        assert not zombie.ready
        assert await successor.submit(withdrawal(transfer_id="b")) is Outcome.PUBLISHED
    finally:
        await successor.close()
        await zombie.close(timeout=2)
    keys = [r.key for r in await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)]
    assert sorted(keys) == [b"openxswitch:withdrawal:a", b"openxswitch:withdrawal:b"]
