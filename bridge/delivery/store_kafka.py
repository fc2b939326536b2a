"""Kafka-backed dedup store for stateless replicas (exactly-once mode).

The dedup state of each transfer is a record in a compacted topic, keyed like the events and
written **in the same Kafka transaction** as the event it accounts for (see
``bridge.delivery.publish_tx``). So the state can never claim an event that did not commit, and an event
can never commit without its state: after any crash, the restored state is exactly what Kafka has.

Value layout: 8-byte big-endian ``final_at`` epoch ms (0 = not final), then the gate's state bytes.
A tombstone (null value) forgets an expired final transfer.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.contract.events import short_hash
from bridge.delivery.dedup import DedupStoreError, Row
from bridge.delivery.publish import Record
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings

__all__ = ["KafkaStateStore", "encode_state", "decode_state"]

log = logging.getLogger(__name__)
_FINAL_AT = struct.Struct(">q")


def encode_state(state: bytes, final_at: int | None) -> bytes:
    return _FINAL_AT.pack(final_at or 0) + state


def decode_state(value: bytes) -> tuple[bytes, int | None]:
    (final_at,) = _FINAL_AT.unpack_from(value)
    return value[_FINAL_AT.size :], final_at or None


class KafkaStateStore:
    """Blocking ``DedupStore`` facade; each call runs its own short-lived event loop in the
    worker thread the gate already uses for store I/O."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        partitions: int = 6,
        replication_factor: int = 1,
        partition: int | None = None,
    ):
        """``partition``: cluster mode, one slot's store: its states are written to and restored
        from that partition only (the topic needs more partitions than the slot's number)."""
        self.kafka = kafka
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.partition = partition
        self._finals: dict[int, tuple[str, int]] = {}

    def state_record(self, key: str, state: bytes, final_at: int | None) -> Record:
        return Record(
            topic=self.topic, key=key.encode(), value=encode_state(state, final_at), headers=[], partition=self.partition
        )

    # -- DedupStore ----------------------------------------------------------------------------

    def load(self) -> Iterable[tuple[int, bytes]]:
        return asyncio.run(self._load())

    def save(self, rows: list[Row]) -> None:
        """Nothing to do: the state was committed with its event."""

    def expire(self, final_before_ms: int) -> list[int]:
        expired = [(h, key) for h, (key, at) in self._finals.items() if at < final_before_ms]
        if expired:
            asyncio.run(self._tombstones([key for _, key in expired]))
            for h, _ in expired:
                del self._finals[h]
        return [h for h, _ in expired]

    def close(self) -> None:
        pass

    # -- internals -----------------------------------------------------------------------------

    async def ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            if self.topic not in set(await admin.list_topics()):
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                self.topic,
                                self.partitions,
                                self.replication_factor,
                                topic_configs={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
                            )
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    async def _load(self) -> list[tuple[int, bytes]]:
        await self.ensure_topic()
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        states: dict[int, bytes] = {}
        try:
            await consumer._client.force_metadata_update()  # no public call for manual assignment
            found = sorted(consumer.partitions_for_topic(self.topic) or ())
            if self.partition is not None:
                if self.partition not in found:
                    raise DedupStoreError(
                        f"{self.topic}: has {len(found)} partitions, cluster slot {self.partition} needs its own "
                        "(give the state topic at least cluster.slots partitions)"
                    )
                found = [self.partition]
            partitions = [TopicPartition(self.topic, p) for p in found]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            # read_committed end = last stable offset: everything committed before we started.
            ends = await consumer.end_offsets(partitions)
            remaining = {tp for tp in partitions if ends[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=50_000)
                for messages in batches.values():
                    for m in messages:
                        key_hash = short_hash(m.key.decode())
                        if m.value is None:
                            states.pop(key_hash, None)
                            self._finals.pop(key_hash, None)
                            continue
                        state, final_at = decode_state(m.value)
                        states[key_hash] = state
                        if final_at:
                            self._finals[key_hash] = (m.key.decode(), final_at)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        where = self.topic if self.partition is None else f"{self.topic} partition {self.partition}"
        log.info("restored dedup state of %d transfers from %s", len(states), where)
        return list(states.items())

    def remember_final(self, key: str, final_at: int | None) -> None:
        if final_at:
            self._finals[short_hash(key)] = (key, final_at)

    async def _tombstones(self, keys: list[str]) -> None:
        producer = AIOKafkaProducer(**kafka_client_options(self.kafka), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for key in keys:
                await producer.send(self.topic, key=key.encode(), value=None, partition=self.partition)
            await producer.flush()
        finally:
            await producer.stop()
