"""Cluster mode's webhook path: every replica appends verified deliveries, the slot owner publishes.

Receivers (every replica): a webhook's normalized event is appended to the ingress topic, keyed by
transfer, in the partition of its slot (``slot_of(key)``), by an idempotent ``acks=all`` producer;
the sender gets its 2xx once that append is acknowledged. Dead letters go straight to the DLQ as in
the single-process modes (they need no dedup).

Owner (the replica holding the slot): ``IngressConsumer`` reads the slot's partition
(``read_committed``), hands each event to the slot's exactly-once pipeline — dedup gate, then the
event and its dedup state in one transaction — and commits its consumer offset **in a later
transaction of the same transactional producer**, only past records whose outcome is final
(committed, or decided a repeat of a committed state, or dead-lettered).

Why this holds without putting the offset in the very transaction of its events: whatever an offset
covers has its state committed in Kafka, and that state is restored by the next owner; records after
the offset are read again and, being repeats of committed states, dropped by the gate. So no
delivery is lost and none is published twice. The offsets go through the slot's transactional
producer, so a fenced zombie can neither publish nor move the offset.

Every record carries its cluster's ``group_id`` (header ``cluster-group``) and an owner skips the
records of another group: the ingress topic's name is not derived from the group, so two
deployments on one Kafka cluster (or a group renamed for a new slot layout) may share it, and an
owner must publish only what its own replicas acknowledged. Records without the header (written
before it existed) are taken.

Parsing is pure and deterministic, so normalizing at the receiver (where the signature is checked)
gives the same event the owner would compute; the owner still validates what it reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import ValidationError

from bridge.contract.events import DeadLetter, Provider, TransferEvent, encode_event
from bridge.contract.jsonutil import loads_exact
from bridge.contract.timeutil import format_utc_ms
from bridge.delivery.dedup import DedupGate, MemoryStore
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher, Record
from bridge.delivery.publish_tx import FencedError, Offsets, TransactionalPublisher
from bridge.delivery.settings import PipelineSettings, TopicSettings
from bridge.delivery.slots import slot_of
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings

__all__ = ["IngressPublisher", "IngressConsumer", "build_ingress_pipeline", "decode_ingress", "ensure_topic"]

log = logging.getLogger(__name__)

GROUP_HEADER = "cluster-group"
"""Ingress record header: the ``cluster.group_id`` of the replica that appended it."""


async def ensure_topic(kafka: KafkaSettings, topic: str, partitions: int, replication: int, configs: dict[str, str]) -> int:
    """Create ``topic`` when missing; returns how many partitions it has."""
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka))
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication, topic_configs=configs)])
                log.info("created topic %s (%d partitions)", topic, partitions)
            except TopicAlreadyExistsError:
                pass  # another replica won the race
        for _ in range(50):  # a topic just created may not be in the metadata yet
            described = await admin.describe_topics([topic])
            found = len(described[0]["partitions"]) if described else 0
            if found:
                return found
            await asyncio.sleep(0.2)
        return 0
    finally:
        await admin.close()


class IngressPublisher(Publisher):
    """A receiver's publisher: events to the ingress topic (partition = slot), dead letters to the DLQ."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, *, ingress_topic: str, slots: int, group_id: str):
        super().__init__(kafka, topics, include_raw=True)
        self.ingress_topic = ingress_topic
        self.slots = slots
        self.headers = [("content-type", b"application/json"), (GROUP_HEADER, group_id.encode())]

    def event_record(self, event: TransferEvent) -> Record:
        return Record(
            topic=self.ingress_topic,
            key=event.key.encode(),
            value=encode_event(event, include_raw=True),
            headers=self.headers,
            partition=slot_of(event.key, self.slots),
        )


def build_ingress_pipeline(
    kafka: KafkaSettings, topics: TopicSettings, pipeline: PipelineSettings, *, ingress_topic: str, slots: int, group_id: str
) -> Pipeline:
    """The receivers' pipeline. Its gate is in memory only: it answers a repeat of a delivery this
    replica already appended at once (the exact dedup happens at the slot owner)."""
    return Pipeline(
        IngressPublisher(kafka, topics, ingress_topic=ingress_topic, slots=slots, group_id=group_id),
        DedupGate(MemoryStore(), retention_seconds=86400),
        max_in_flight=pipeline.max_in_flight,
        not_ready_after=pipeline.not_ready_after_seconds,
    )


def decode_ingress(value: bytes | None, provider: str) -> TransferEvent | DeadLetter:
    """An ingress record back to its event (numbers in ``raw`` kept exact); anything else is kept
    whole as a dead letter of ``provider`` (the record key's first part). A key that names no
    provider this version knows (none, garbled, or one added later) gives the contract's generic
    form, ``unknown``: the core names no provider by default, and a replay finds no parser for it
    instead of feeding the bytes to the wrong one."""
    try:
        if value is None:
            raise ValueError("empty ingress record")
        return TransferEvent.model_validate(loads_exact(value))
    except (ValidationError, ValueError) as exc:
        reason = f"ingress record not a transfer event: {exc.__class__.__name__}"
        try:
            origin = Provider(provider)
        except ValueError:
            origin = Provider.UNKNOWN
        return DeadLetter(origin, "ingress", reason, value or b"", format_utc_ms(datetime.now(UTC)))


class IngressConsumer:
    """The slot owner's consume-transform-produce loop over one ingress partition."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        partition: int,
        group_id: str,
        pipeline: Pipeline,
        *,
        cluster_group: str,
        commit_interval: float = 0.2,
    ):
        """``group_id``: where the offsets are committed; ``cluster_group``: the records taken (by header)."""
        if not isinstance(pipeline.publisher, TransactionalPublisher):
            raise TypeError("the ingress consumer needs the slot's transactional pipeline")
        self.kafka = kafka
        self.tp = TopicPartition(topic, partition)
        self.group_id = group_id
        self._ours = cluster_group.encode()
        self.pipeline = pipeline
        self.publisher: TransactionalPublisher = pipeline.publisher
        self.commit_interval = commit_interval
        self._pending: deque[tuple[int, asyncio.Future[Outcome]]] = deque()
        self._done_upto: int | None = None
        self._committed_upto: int | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.consumed = 0
        self.skipped = 0
        """Records appended by another group's replicas (a shared ingress topic), passed over."""

    async def run(self) -> None:
        """Until ``stop`` (or cancelled): read, hand over, commit offsets past finished records."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            group_id=self.group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.assign([self.tp])  # position: the committed offset of the ingress group, else the start
            last_commit = time.monotonic()
            while not self._stopping.is_set():
                batches = await consumer.getmany(self.tp, timeout_ms=200, max_records=500)
                for message in batches.get(self.tp, []):
                    if not self._is_ours(message.headers):
                        self._pending.append((message.offset, self._passed_over()))
                        continue
                    provider = message.key.decode(errors="replace").split(":", 1)[0] if message.key else ""
                    item = decode_ingress(message.value, provider)
                    self._pending.append((message.offset, await self.pipeline.offer(item)))
                    self.consumed += 1
                self._advance()
                if time.monotonic() - last_commit >= self.commit_interval:
                    await self._commit()
                    last_commit = time.monotonic()
        finally:
            self._consumer = None
            await consumer.stop()

    def _is_ours(self, headers: Any) -> bool:
        group = next((value for name, value in headers or () if name == GROUP_HEADER), None)
        return group is None or group == self._ours

    def _passed_over(self) -> asyncio.Future[Outcome]:
        self.skipped += 1
        if self.skipped == 1 or self.skipped % 1000 == 0:
            log.warning("ingress %s: %d records of another cluster group passed over (shared ingress topic?)", self.tp, self.skipped)
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        done.set_result(Outcome.DUPLICATE)
        return done

    def _advance(self) -> None:
        while self._pending and self._pending[0][1].done():
            offset, future = self._pending.popleft()
            error = None if future.cancelled() else future.exception()
            if isinstance(error, FencedError):
                raise error  # the slot has a new owner: it reads from our last committed offset
            if error is not None:
                log.error("ingress record %s@%d not published: %s", self.tp, offset, error.__class__.__name__)
            self._done_upto = offset

    async def _commit(self) -> Any:
        if self._done_upto is None or self._done_upto == self._committed_upto:
            return None
        upto = self._done_upto
        future = await self.publisher.commit_offsets(Offsets({self.tp: upto + 1}, self.group_id))
        self._committed_upto = upto
        future.add_done_callback(self._committed)
        return future

    def _committed(self, future: asyncio.Future[Any]) -> None:
        """A failed offset commit is simply made again with the next one (reading again is harmless:
        the gate drops what was committed); a fenced one ends the loop at its next commit."""
        if not future.cancelled() and future.exception() is not None:
            self._committed_upto = None

    async def drain(self, timeout: float) -> bool:
        """Stop reading, wait for what was handed over, commit the offset past it; False if time ran out."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            try:
                self._advance()
            except FencedError:
                return False
        try:
            self._advance()
            future = await self._commit()
            if future is not None:
                await asyncio.wait_for(future, max(0.1, deadline - time.monotonic()))
        except (FencedError, KafkaError, TimeoutError) as exc:
            log.warning("ingress offset of %s not committed at drain (%s)", self.tp, exc.__class__.__name__)
            return False
        return not self._pending
