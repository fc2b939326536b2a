"""Reading topics back, the way a downstream consumer would (``read_committed``), for tests and the demo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["ConsumedRecord", "read_topic"]


@dataclass(frozen=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 10.0,
    idle: float = 1.0,
    **client_options: object,
) -> list[ConsumedRecord]:
    """Everything in ``topic`` from the beginning; stops at ``expect`` records, or when nothing
    new arrived for ``idle`` seconds (only once ``timeout`` is reached if ``expect`` is given)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **client_options,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = asyncio.get_running_loop().time() + timeout
        while not partitions:
            if asyncio.get_running_loop().time() > deadline:
                return []
            await consumer._client.force_metadata_update()  # no public API; topic may be brand new
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumedRecord] = []
        last_new = asyncio.get_running_loop().time()
        while True:
            now = asyncio.get_running_loop().time()
            if expect is not None and len(records) >= expect:
                break
            if now > deadline:
                break
            if expect is None and now - last_new > idle:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    records.append(
                        ConsumedRecord(m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ()))
                    )
                    last_new = asyncio.get_running_loop().time()
        return records
    finally:
        await consumer.stop()
