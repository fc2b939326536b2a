"""Exactly-once publishing: events and their dedup state committed in one Kafka transaction.

Records handed to ``send`` are grouped into short transactions (up to ``max_batch`` records or
whatever arrived while the previous commit ran). Each future resolves only once its transaction
committed; an aborted or failed transaction fails all its futures and the pipeline sends them
again in a new one. A stable ``transactional_id`` per instance makes a restarted instance fence
its predecessor, so a zombie can never commit after its replacement started.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from bridge.delivery.publish import Publisher, Record, stop_producer
from bridge.delivery.settings import TopicSettings
from bridge.kafka.client import kafka_client_options, pace_metadata_updates
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings

__all__ = ["TransactionalPublisher", "FencedError", "Offsets"]

log = logging.getLogger(__name__)


class FencedError(RuntimeError):
    """Another instance with our transactional id started: this one must stop."""


@dataclass(frozen=True, slots=True)
class Offsets:
    """Consumer offsets to commit in the next transaction (cluster mode's ingress consumer)."""

    offsets: dict[TopicPartition, int]
    group_id: str


_Entry = tuple[Record | Offsets, Record | None, asyncio.Future[Any]]


class TransactionalPublisher(Publisher):
    transactional = True

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        *,
        transactional_id: str,
        include_raw: bool = True,
        schema_registry: SchemaRegistrySettings | None = None,
        max_batch: int = 2000,
        commit_timeout: float = 30.0,
    ):
        super().__init__(kafka, topics, include_raw=include_raw, schema_registry=schema_registry)
        self.transactional_id = transactional_id
        self.max_batch = max_batch
        self.commit_timeout = commit_timeout
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self.fenced = False

    def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **kafka_client_options(self.kafka),
            acks="all",
            enable_idempotence=True,
            transactional_id=self.transactional_id,
            linger_ms=self.kafka.linger_ms,
            max_batch_size=self.kafka.max_batch_size,
            max_request_size=self.kafka.max_request_size,
            compression_type=self.kafka.compression_type,
        )
        pace_metadata_updates(producer.client, initial=self.kafka.retry_backoff_ms / 1000)
        return producer

    async def start(self, *, timeout: float = 60.0) -> None:
        await super().start(timeout=timeout)
        self._committer = asyncio.create_task(self._commit_loop(), name="kafka-transactions")

    async def send(self, record: Record, state: Record | None = None) -> asyncio.Future[Any]:
        if self.fenced:
            raise FencedError(f"producer {self.transactional_id!r} was fenced by a newer instance")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, state, future))
        return future

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.wait_for(self._commit(batch), self.commit_timeout)
            except ProducerFenced:
                self.fenced = True
                log.error("transactional id %r fenced by a newer instance; stopping publishing", self.transactional_id)
                error: BaseException = FencedError("fenced by a newer instance")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("transaction of %d records failed (%s); will retry", len(batch), exc.__class__.__name__)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, KafkaError) else KafkaError(str(exc)))
                await self._recover()
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def commit_offsets(self, offsets: Offsets) -> asyncio.Future[Any]:
        """Commit consumer offsets in a transaction queued after everything sent so far: it resolves
        once committed; a zombie's (fenced) commit fails like its records."""
        if self.fenced:
            raise FencedError(f"producer {self.transactional_id!r} was fenced by a newer instance")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((offsets, None, future))
        return future

    async def _commit(self, batch: list[_Entry]) -> None:
        producer = self._producer
        if producer is None:
            raise KafkaError("producer not started")
        async with producer.transaction():
            acks = []
            for record, state, _ in batch:
                if isinstance(record, Offsets):
                    await producer.send_offsets_to_transaction(record.offsets, record.group_id)
                    continue
                acks.append(
                    await producer.send(
                        record.topic, value=record.value, key=record.key, headers=record.headers, partition=record.partition
                    )
                )
                if state is not None:
                    acks.append(await producer.send(state.topic, value=state.value, key=state.key, partition=state.partition))
            results = await asyncio.gather(*acks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def rebuild(self) -> None:
        """Stop, then start: with the same transactional id the new producer fences the old one, so
        they must not overlap."""
        old, self._producer = self._producer, None
        if old is not None:
            await stop_producer(old, timeout=10.0)
        producer = self._new_producer()
        try:
            await producer.start()
        except BaseException:
            await stop_producer(producer, timeout=2.0)
            raise
        self._producer = producer
        self.generation += 1

    async def _recover(self) -> None:
        """A failed transaction may leave the producer mid-transaction: start a fresh one
        (re-initialising aborts whatever the old one left open)."""
        try:
            await self.rebuild()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("producer rebuild failed (%s); retrying shortly", exc.__class__.__name__)
            await asyncio.sleep(1.0)

    async def stop(self, *, timeout: float = 10.0) -> None:
        if self._committer is not None:
            self._committer.cancel()
            try:
                await self._committer
            except (asyncio.CancelledError, Exception):
                pass
            self._committer = None
        await super().stop(timeout=timeout)
