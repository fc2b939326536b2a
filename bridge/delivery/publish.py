"""The Kafka side: producer settings, topics, record shape (key, value, CloudEvents headers), DLQ.

The publisher only turns events into records and hands them to an idempotent ``acks=all``
producer; retrying, ordering per key and backpressure are the pipeline's job.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from bridge.contract.events import DeadLetter, Direction, TransferEvent, encode_event
from bridge.contract.schema import schema_text
from bridge.delivery.settings import TopicSettings
from bridge.kafka import headers as h
from bridge.kafka import wire
from bridge.kafka.client import kafka_client_options, pace_metadata_updates
from bridge.kafka.registry import resolve_schema_ids
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings

__all__ = ["Record", "Publisher", "DATASCHEMA", "WIRE_CONTENT_TYPE"]

log = logging.getLogger(__name__)

DATASCHEMA: str = TransferEvent.model_config["json_schema_extra"]["$id"]  # type: ignore[index,assignment]
"""CloudEvents ``dataschema`` of plain JSON values: the contract schema's ``$id``, an absolute URI."""
WIRE_CONTENT_TYPE = b"application/octet-stream"
"""``content-type`` of a registry wire-format value: five bytes of schema id precede the JSON, so the
value is not ``application/json`` (a CloudEvents reader would fail to decode it as such);
``ce_dataschema`` names the registered schema."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None
    """None: the producer's partitioner picks by key; cluster mode pins state and ingress records to their slot."""


class _AuthFailureWatch(logging.Handler):
    """aiokafka reports a refused SASL login only as "unable to bootstrap"; its log says why."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if "SaslAuthenticationFailed" in record.getMessage():
            self.seen = True


_header_bytes = h.header_bytes


async def stop_producer(producer: AIOKafkaProducer, *, timeout: float) -> bool:
    """Stop ``producer``, giving its flush ``timeout`` seconds; False if records were abandoned.

    Abandoned records were never acknowledged, so nothing that depends on an ack (dedup marks,
    webhook 2xx) was given for them: the provider's redelivery or the backfill brings them again.
    """
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    flushed = bool(done)
    if not flushed:
        log.warning("Kafka producer did not flush within %.0f s; closing it with unacknowledged records", timeout)
        sender = getattr(getattr(producer, "_sender", None), "sender_task", None)
        if sender is not None:
            sender.cancel()  # stop() waits on the sender or a flush; ending the sender ends the wait
        done, _ = await asyncio.wait({stopping}, timeout=5.0)
        if not done:
            stopping.cancel()
            return False
    if not flushed:
        # A cancelled sender fails nothing it held: fail those records now, so whoever waits on
        # them (the pipeline, to send them again) is not left waiting forever.
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            accumulator.fail_all(KafkaConnectionError("producer closed before the broker acknowledged"))
    try:
        stopping.result()
    except (KafkaError, OSError, asyncio.CancelledError) as exc:
        log.warning("Kafka producer stopped with %s", exc.__class__.__name__)
    return flushed


class Publisher:
    transactional = False
    """True when events and their dedup state must travel in one transaction (exactly-once mode)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        *,
        include_raw: bool = True,
        schema_registry: SchemaRegistrySettings | None = None,
    ):
        self.kafka = kafka
        self.topics = topics
        self.include_raw = include_raw
        self.schema_registry = schema_registry if schema_registry is not None and schema_registry.url else None
        self.schema_ids: dict[str, int] = {}
        self._wire_prefix: dict[Direction, bytes] | None = None  # None: plain JSON values
        self._dataschema: dict[Direction, bytes] = dict.fromkeys(Direction, DATASCHEMA.encode())
        self._content_type = b"application/json"
        self._producer: AIOKafkaProducer | None = None
        self.generation = 0
        """Counts producers replaced by ``rebuild``: tells an error of the current producer from a late
        one of its predecessor."""
        self._retiring: set[asyncio.Task[bool]] = set()
        self._topic_by_direction = {Direction.DEPOSIT: topics.deposit, Direction.WITHDRAWAL: topics.withdrawal}

    # -- records -------------------------------------------------------------------------------

    def topic_for(self, direction: Direction) -> str:
        return self._topic_by_direction[direction]

    def event_record(self, event: TransferEvent) -> Record:
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event.event_id.encode()),
            ("ce_source", h.ce_source(event.provider.value, event.account.id)),
            ("ce_type", f"transfer.{event.direction.value}.v1".encode()),
            ("ce_time", event.occurred_at.encode()),
            ("ce_subject", _header_bytes(event.key)),
            ("ce_dataschema", self._dataschema[event.direction]),
            ("content-type", self._content_type),
        ]
        value = encode_event(event, include_raw=self.include_raw)
        if self._wire_prefix is not None:
            value = self._wire_prefix[event.direction] + value
        return Record(topic=self.topic_for(event.direction), key=event.key.encode(), value=value, headers=headers)

    def dead_letter_record(self, letter: DeadLetter) -> Record:
        headers = [
            (h.DLQ_PROVIDER, letter.provider.value.encode()),
            (h.DLQ_CHANNEL, _header_bytes(letter.channel)),
            (h.DLQ_REASON, h.reason_bytes(letter.reason)),
            (h.DLQ_RECEIVED_AT, letter.received_at.encode()),
        ]
        if letter.account_id:
            headers.append((h.DLQ_ACCOUNT, _header_bytes(letter.account_id)))
        headers.extend((f"dlq_{k}", _header_bytes(v)) for k, v in letter.headers.items())
        headers.extend(h.connect_headers(letter.provider.value, letter.channel, letter.reason, connector=self.kafka.client_id))
        return Record(
            topic=self.topics.dead_letter,
            key=f"{letter.provider.value}:".encode() + _header_bytes(letter.channel),
            value=letter.raw,
            headers=headers,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def producer_options(self) -> dict[str, Any]:
        """Every option the producer is built with (benchmarks give a bare producer the same)."""
        return {
            **kafka_client_options(self.kafka),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self.kafka.linger_ms,
            "max_batch_size": self.kafka.max_batch_size,
            "max_request_size": self.kafka.max_request_size,
            "compression_type": self.kafka.compression_type,
        }

    def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self.producer_options())
        pace_metadata_updates(producer.client, initial=self.kafka.retry_backoff_ms / 1000)
        return producer

    async def start(self, *, timeout: float = 60.0) -> None:
        """Connect and create missing topics; retries until ``timeout`` so a slow broker is no crash."""
        if self.schema_registry is not None and self._wire_prefix is None:
            await self.resolve_schema_ids()
        deadline = asyncio.get_running_loop().time() + timeout
        refused = _AuthFailureWatch()
        logging.getLogger("aiokafka").addHandler(refused)
        try:
            await self._start_until(deadline, timeout, refused)
        finally:
            logging.getLogger("aiokafka").removeHandler(refused)

    async def _start_until(self, deadline: float, timeout: float, refused: _AuthFailureWatch) -> None:
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                if self.topics.create:
                    await self.ensure_topics()
                self._producer = producer
                return
            except KafkaError as exc:
                await producer.stop()
                if refused.seen:
                    # The broker answered and said no: retrying does not fix credentials.
                    raise ConnectionError(
                        f"Kafka authentication failed for user {self.kafka.sasl_username!r} with "
                        f"{self.kafka.sasl_mechanism or 'PLAIN'} at {self.kafka.bootstrap_servers}"
                    ) from None
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError(
                        f"Kafka at {self.kafka.bootstrap_servers} not reachable within {timeout:.0f}s: {exc}"
                    ) from None
                log.warning("kafka not reachable yet (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(1.0)

    async def resolve_schema_ids(self) -> None:
        """Wire format: the schema id of each event topic, looked up once; records reuse the prefix."""
        assert self.schema_registry is not None
        topics = {direction: self.topic_for(direction) for direction in Direction}
        self.schema_ids = await resolve_schema_ids(self.schema_registry, list(topics.values()), schema_text())
        self._wire_prefix = {direction: wire.prefix(self.schema_ids[topic]) for direction, topic in topics.items()}
        url = self.schema_registry.url or ""
        self._dataschema = {d: h.registry_schema_url(url, self.schema_ids[t]).encode() for d, t in topics.items()}
        self._content_type = WIRE_CONTENT_TYPE

    async def ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(**kafka_client_options(self.kafka))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [self.topics.deposit, self.topics.withdrawal, self.topics.dead_letter]
            missing = [t for t in dict.fromkeys(wanted) if t not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(t, self.topics.partitions, self.topics.replication_factor)
                            for t in missing
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass  # another replica won the race
                log.info("created topics %s", ", ".join(missing))
        finally:
            await admin.close()

    async def send(self, record: Record, state: Record | None = None) -> asyncio.Future[Any]:
        """Enqueue one record; the returned future resolves when Kafka acknowledged it.

        ``state`` (the dedup state record) is only used by the transactional publisher."""
        if self._producer is None:
            raise RuntimeError("publisher is not started")
        # aiokafka is untyped: send() resolves to the future of the record's RecordMetadata.
        delivery: asyncio.Future[Any] = await self._producer.send(
            record.topic, value=record.value, key=record.key, headers=record.headers, partition=record.partition
        )
        return delivery

    async def probe(self, timeout: float = 3.0) -> bool:
        """Is any broker answering right now? (for readiness when no traffic flows)"""
        if self._producer is None:
            return False
        client = self._producer.client
        nodes = [broker.nodeId for broker in client.cluster.brokers()]
        if not nodes:  # not bootstrapped yet: the full request goes to the bootstrap servers too
            try:
                await asyncio.wait_for(client.fetch_all_metadata(), timeout)
                return True
            except (TimeoutError, KafkaError, OSError):
                return False
        # Brokers only, no topic: the whole cluster's metadata (every topic and partition, thousands
        # on a shared cluster) decoded every second cost the hot path more than the probe tells.
        deadline = asyncio.get_running_loop().time() + timeout
        random.shuffle(nodes)
        for node in nodes:
            try:
                remaining = deadline - asyncio.get_running_loop().time()
                await asyncio.wait_for(client.send(node, MetadataRequest([], allow_auto_topic_creation=False)), max(remaining, 0.01))
                return True
            except (TimeoutError, KafkaError, OSError):
                continue
        return False

    async def rebuild(self) -> None:
        """Replace the producer: one that lost its idempotent sequence (``OutOfOrderSequenceNumber``
        after a broker outage) or stopped making progress.

        The new producer is started first (``KafkaError``/``OSError`` if the broker is still away:
        the old one stays), then takes over; the old one is stopped in the background and whatever
        it still held fails, so the pipeline sends it again on the new one."""
        producer = self._new_producer()
        try:
            await producer.start()
        except BaseException:
            await stop_producer(producer, timeout=2.0)
            raise
        old, self._producer = self._producer, producer
        self.generation += 1
        if old is not None:
            retiring = asyncio.ensure_future(stop_producer(old, timeout=5.0))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Flush and close, bounded: with the broker gone, aiokafka's own stop() waits forever."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await stop_producer(producer, timeout=timeout)
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=6.0)
