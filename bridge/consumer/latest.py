"""The latest state of every transfer on the event topics, as a ``read_committed`` consumer sees it.

For ``transfer-bridge reconcile``: a snapshot scan, not a subscription. Every partition of the
topics is read from the first record written at or after ``since_ms - skew_ms`` (a transfer's
records are all written after it was created, so nothing of a transfer created in the window is
earlier; ``skew_ms`` allows for clocks) up to the end offsets taken at the start (the last stable
offset: an open transaction is not waited for, an aborted one is never seen). Records come out in
partition order, so the last one per key is that transfer's latest state.

Only what the comparison needs is read out of each value (orjson, no schema validation): at a
million records the typed consumer's validation would cost more than the rest of the scan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.timeutil import to_epoch_ms
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings
from bridge.kafka.wire import WireFormatError
from bridge.kafka.wire import decode as wire_decode

__all__ = ["KafkaState", "TopicScan", "state_of"]


@dataclass(frozen=True, slots=True)
class KafkaState:
    """One record's view of its transfer: enough to compare it with the provider's."""

    key: str
    provider: str
    status: str
    is_final: bool
    provider_status: str | None
    created_ms: int
    """``created_at``, or ``occurred_at`` for a provider that gives no creation time."""
    topic: str
    partition: int
    offset: int


def state_of(record: ConsumerRecord[bytes, bytes]) -> KafkaState:
    """The comparison's fields of one event record; ``ValueError`` if it is not one."""
    if record.value is None:
        raise ValueError("tombstone")
    _, payload = wire_decode(record.value)
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:  # e.g. a raw number past what orjson reads: read it exactly
        data = loads_exact(payload)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        created = data.get("created_at") or data["occurred_at"]
        return KafkaState(
            key=str(data["key"]),
            provider=str(data["provider"]),
            status=str(data["status"]),
            is_final=bool(data["is_final"]),
            provider_status=data.get("provider_status"),
            created_ms=to_epoch_ms(created),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a transfer event ({exc.__class__.__name__}: {exc})") from None


class TopicScan:
    """``async for batch in TopicScan(kafka, topics, since_ms=…).batches(): …``"""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        since_ms: int,
        skew_ms: int = 3_600_000,
        batch: int = 5_000,
        idle_timeout: float = 30.0,
        partition_timeout: float = 10.0,
    ):
        self.kafka = kafka
        self.topics = list(topics)
        self.start_ms = since_ms - skew_ms
        self.batch = batch
        self.idle_timeout = idle_timeout
        self.partition_timeout = partition_timeout
        self.records = 0
        self.unreadable = 0
        """Records that are not transfer events (counted, not compared)."""

    async def batches(self) -> AsyncIterator[list[KafkaState]]:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            starts = await consumer.offsets_for_times({tp: max(self.start_ms, 0) for tp in partitions})
            for tp in partitions:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else end[tp])
            remaining = {tp for tp in partitions if await consumer.position(tp) < end[tp]}
            progress = time.monotonic()
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=500, max_records=self.batch)
                out = [state for tp, records in fetched.items() for state in self._states(records, end[tp])]
                if fetched:
                    progress = time.monotonic()
                if out:
                    yield out
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
                if remaining and time.monotonic() - progress > self.idle_timeout:
                    raise TimeoutError(f"no records from {len(remaining)} partitions for {self.idle_timeout:.0f}s before their end offsets")
        finally:
            await consumer.stop()

    def _states(self, records: list[ConsumerRecord[bytes, bytes]], end: int) -> list[KafkaState]:
        out: list[KafkaState] = []
        for record in records:
            if record.offset >= end:  # written after the scan began: not part of this snapshot
                continue
            self.records += 1
            try:
                out.append(state_of(record))
            except (ValueError, JSONError, WireFormatError):
                self.unreadable += 1
        return out

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found: list[TopicPartition] = []
        deadline = time.monotonic() + self.partition_timeout
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                if time.monotonic() > deadline:
                    raise LookupError(f"topic {topic} not found within {self.partition_timeout:.0f}s")
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            found.extend(TopicPartition(topic, p) for p in sorted(partitions))
        return found
