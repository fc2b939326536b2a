"""Follow the exactly-once state topic while a command runs beside the service.

``dlq replay`` and ``reconcile --repair`` publish through a gate of their own, in their own process.
In exactly-once mode the service commits each transfer's state to ``dedup.state_topic`` in the
transaction of its event; this follower reads that topic (``read_committed``, every partition)
from the beginning and keeps on reading until closed, so the command's gate decides each event
against the latest committed state it has seen (``DedupGate(peer=…)``), not only against what was
committed when the command started.

**The window that remains** (README, *Dead letters and replay*): a state the service commits less
than the follower's lag before the command's decision (one fetch, ``FETCH_WAIT_MS`` at most, plus
the broker's commit-to-fetch delay), or between the command's decision and the commit of the
command's own transaction, is not seen. And the service does not follow the topic (it would read
back every record it writes): it learns of the command's states at its next start.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.contract.events import short_hash
from bridge.delivery.dedup import DedupStoreError, merged
from bridge.delivery.store_kafka import decode_state
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings

__all__ = ["StateFollower", "FETCH_WAIT_MS"]

log = logging.getLogger(__name__)

FETCH_WAIT_MS = 50
"""Longest a fetch waits for new records: the follower's lag behind a committed state, past the
broker's own delay."""


class StateFollower:
    """A ``Peer`` over the state topic: key hash → merged state of every record read so far."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, catch_up_timeout: float = 60.0):
        self.kafka = kafka
        self.topic = topic
        self.catch_up_timeout = catch_up_timeout
        self.states: dict[int, bytes] = {}
        self.read = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()

    async def start(self) -> None:
        """Assign every partition from the beginning and return once caught up with the committed end."""
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            deadline = time.monotonic() + self.catch_up_timeout
            found: set[int] = set()
            while not found:  # a topic created a moment ago may not be in the metadata yet
                await consumer._client.force_metadata_update()  # no public call for manual assignment
                found = consumer.partitions_for_topic(self.topic) or set()
                if not found:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.topic}: no partitions found for the state topic")
                    await asyncio.sleep(0.2)
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
            consumer.assign(self._partitions)
            await consumer.seek_to_beginning(*self._partitions)
            self._task = asyncio.create_task(self._follow(), name="dedup-state-follower")
            await self.caught_up(timeout=self.catch_up_timeout)
        except BaseException:
            await self.close()
            raise

    def lookup(self, key: int) -> bytes | None:
        """The latest state read for ``key``. ``DedupStoreError`` once the follower stopped: a
        decision on a view that no longer moves would be the silent race this exists to close."""
        if self._task is not None and self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise DedupStoreError(f"{self.topic}: the state follower stopped ({error!r}); the command stops too")
        return self.states.get(key)

    async def caught_up(self, *, timeout: float = 30.0) -> None:
        """Wait until everything committed to the topic before this call has been read
        (``TimeoutError`` after ``timeout``)."""
        consumer = self._consumer
        if consumer is None or not self._partitions:
            return
        ends = await consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await consumer.position(tp) for tp in self._partitions}
            if all(positions[tp] >= ends[tp] for tp in self._partitions):
                return
            if self._task is not None and self._task.done():
                self._task.result()  # the follower failed: say why
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.topic}: the state follower did not catch up within {timeout:.0f}s")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, 0.2))
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        states = self.states
        while True:
            batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS * 4, max_records=10_000)
            for messages in batches.values():
                for m in messages:
                    if m.key is None:
                        continue
                    key = short_hash(m.key.decode("utf-8", "replace"))
                    if m.value is None:  # an expired final transfer, forgotten by its writer too
                        states.pop(key, None)
                        continue
                    state, _ = decode_state(m.value) if len(m.value) > 8 else (b"", None)
                    if not state:  # not a state record (the restore would fail on it first)
                        log.warning("%s: record at %d:%d is not a dedup state; skipped", self.topic, m.partition, m.offset)
                        continue
                    known = states.get(key)
                    states[key] = state if known is None else merged(known, state)
                    self.read += 1
            self._progress.set()
