"""``dlq`` reading when the broker goes away mid-scan: the scan ends with a Kafka error (the
command's exit 3) instead of waiting for records forever."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bridge.kafka.settings import KafkaSettings
from bridge.service.dlq.records import Filter, consumer_for, scan, stop_consumer
from bridge_testkit.kafka_broker import LocalKafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOPIC = "dlq-broker-lost.dlq.v1"
RECORDS = 60
PAYLOAD = b"x" * 200_000
"""60 × 200 kB: more than one fetch (4 MiB per partition), so the scan needs the broker again."""


async def _fill(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_000_000)
    await producer.start()
    try:
        for _ in range(RECORDS):
            await producer.send_and_wait(TOPIC, PAYLOAD, headers=[("dlq_provider", b"okx")])
    finally:
        await producer.stop()


async def test_a_scan_whose_broker_is_lost_midway_ends_with_a_kafka_error(own_broker: LocalKafka) -> None:
    await _fill(own_broker.bootstrap)
    consumer = consumer_for(KafkaSettings(bootstrap_servers=own_broker.bootstrap, request_timeout_ms=3000))
    await consumer.start()
    read = 0
    try:
        with pytest.raises(KafkaError):
            async with asyncio.timeout(120):  # the guard of this test only: a hang fails it here
                async for batch in scan(consumer, TOPIC, Filter(), batch=5, idle_timeout=3.0):
                    if not read:
                        await asyncio.to_thread(own_broker.kill9)
                    read += len(batch)
    finally:
        await stop_consumer(consumer)  # must not raise once the broker is gone
        own_broker.restart()
    assert 0 < read < RECORDS
