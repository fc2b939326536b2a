"""Glue of the data path: event → dedup gate → publisher → Kafka ack → dedup store.

Guarantees kept here:

* **Order per key.** States of one transfer are sent one after the other: the next waits for the
  previous one's ack (a short per-key queue), so a retry after a failed produce can never let a
  later state overtake an earlier one, and "stale after final" is decided on acked truth.
* **Marked only after ack.** The gate records a state once Kafka acknowledged it.
* **Never dropped, bounded.** A failed produce is retried until it succeeds, each record backing
  off on its own (doubling, jittered, capped at ``RETRY_MAX``) and all of them woken by the first ack;
  at most ``max_in_flight`` items are accepted and not yet acked — past that, ``offer`` waits,
  which slows the source down (backpressure) instead of growing memory.
* **Nothing acknowledged that could be forgotten.** While the dedup store cannot write (a full
  disk), acknowledged states wait in memory; past ``dedup.max_unpersisted`` of them a new state is
  not sent (``offer`` waits, a webhook answers 503 after its ack timeout) until the store catches up,
  and readiness fails meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from bridge.contract.events import DeadLetter, Status, TransferEvent
from bridge.contract.timeutil import to_epoch_ms
from bridge.delivery.batch import BatchFate, Outcome, Settle, Slot, Window
from bridge.delivery.dedup import Decision, DedupGate, DedupStoreError
from bridge.delivery.publish import Publisher, Record
from bridge.delivery.publish_tx import FencedError
from bridge.delivery.recovery import Recovery
from bridge.observability import metrics

__all__ = ["Outcome", "Pipeline", "Item"]

log = logging.getLogger(__name__)

Item = TransferEvent | DeadLetter


_DECISION_OUTCOME = {Decision.DUPLICATE: Outcome.DUPLICATE, Decision.STALE: Outcome.STALE}

RETRY_MAX = 10.0
"""Longest pause between two attempts at one record (doubling from 0.1 s / 0.5 s, with jitter)."""

PRODUCER_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)
"""Errors after which an idempotent producer refuses everything it sends (its sequence or epoch no
longer matches the broker's): retrying on it is futile, a new producer (a new id) is the fix. aiokafka
reports ``InvalidProducerEpoch`` of a non-transactional producer as ``ProducerFenced``."""


_labelled = metrics.labelled

_LIVE: weakref.WeakSet[Pipeline] = weakref.WeakSet()
# Read at scrape time, summed over every pipeline (cluster mode runs one per slot), not counted per item.
metrics.IN_FLIGHT.set_function(lambda: sum(pipeline.in_flight for pipeline in list(_LIVE)))


class Pipeline(Recovery):
    def __init__(
        self,
        publisher: Publisher,
        gate: DedupGate,
        *,
        max_in_flight: int = 20_000,
        not_ready_after: float = 5.0,
        stuck_after: float = 45.0,
        state_records: Callable[[TransferEvent, bytes, int | None], Record] | None = None,
    ):
        self.publisher = publisher
        self.gate = gate
        _LIVE.add(self)
        self._max_in_flight = max_in_flight
        self._window = Window(max_in_flight)
        self._chains: dict[str, deque[tuple[TransferEvent, Settle]]] = {}
        self._next: deque[tuple[TransferEvent, Settle]] = deque()  # chained states whose turn came
        self._next_running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight = 0
        self._last_progress = time.monotonic()
        self._failing_since: float | None = None
        self._not_ready_after = not_ready_after
        self._stuck_after = stuck_after
        self._broker_ok = True
        self._watchdog: asyncio.Task[None] | None = None
        self._rebuilding: asyncio.Task[None] | None = None
        self._closing = False
        self._progress = asyncio.Event()  # set (and replaced) on an ack while retries are pausing
        self._pausing = 0
        self.fenced = False
        self.store_failure: str | None = None
        """Set by ``close`` when the dedup store could not persist every acknowledged state."""
        self.state_records = state_records
        """Exactly-once mode: builds the dedup state record that joins each event's transaction."""

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, timeout: float = 60.0, publisher_first: bool = False) -> None:
        """Load the dedup state and connect; ``ConnectionError`` if Kafka is unreachable for ``timeout``.

        ``publisher_first`` (a cluster slot taken over): the transactional producer starts first, which
        fences the previous owner and aborts its open transaction, so the state read after it is final."""
        if publisher_first:
            await self.publisher.start(timeout=timeout)
        await self.gate.open()
        metrics.DEDUP_TRANSFERS.set(self.gate.size)
        if not publisher_first:
            await self.publisher.start(timeout=timeout)
        self._watchdog = asyncio.create_task(self._watch(), name="pipeline-watchdog")

    async def close(self, *, timeout: float = 30.0) -> bool:
        """Stop accepting, wait for every accepted item to be acked, persist the dedup state."""
        self._closing = True
        deadline = time.monotonic() + timeout
        drained = await self.drain(timeout=timeout)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._rebuilding is not None and not self._rebuilding.done():
            self._rebuilding.cancel()
            await asyncio.gather(self._rebuilding, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await self.publisher.stop(timeout=max(1.0, deadline - time.monotonic()))
        try:
            await self.gate.close()
        except DedupStoreError as exc:
            self.store_failure = str(exc)
        return drained

    async def drain(self, *, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight; False if the timeout came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._in_flight:
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- health --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        """Events waiting behind an earlier, unacknowledged state of the same transfer."""
        return sum(len(chain) for chain in self._chains.values())

    @property
    def ready(self) -> bool:
        """Kafka reachable and making progress on what we gave it, and the dedup store writing."""
        if self.fenced or not self._broker_ok or self._failing_since is not None or not self.gate.persisting:
            return False
        stalled = self._in_flight and time.monotonic() - self._last_progress > self._not_ready_after
        return not stalled

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "broker_reachable": self._broker_ok,
            "in_flight": self._in_flight,
            "seconds_since_progress": round(time.monotonic() - self._last_progress, 3),
            "failing": self._failing_since is not None,
            "dedup_transfers": self.gate.size,
            "dedup": self.gate.health(),
        }

    # -- intake --------------------------------------------------------------------------------

    async def submit(self, item: Item) -> Outcome:
        """Offer one item and wait until it is acked by Kafka or decided by the gate."""
        return await (await self.offer(item))

    async def submit_all(self, items: Iterable[Item]) -> list[Outcome]:
        futures = [await self.offer(item) for item in items]
        return list(await asyncio.gather(*futures))

    async def submit_batch(self, items: Sequence[Item]) -> list[Outcome | BaseException | None]:
        """Offer a batch and wait until every item is acked or decided (each outcome or its error)."""
        return await (await self.offer_batch(items))

    async def offer_batch(self, items: Sequence[Item]) -> asyncio.Future[list[Outcome | BaseException | None]]:
        """Accept a frame's, page's or request's items together, in order; one future for all.

        The same guarantees as ``offer`` item by item (order per key, window, ack before mark), without
        a future, a callback and two coroutines per item: the gate decides each item on the spot and
        the records go to the producer in one pass. Waits only for room (window, dedup store)."""
        if self._closing:
            raise RuntimeError("pipeline is shutting down")
        fate = BatchFate(len(items), asyncio.get_running_loop())
        if self.state_records is not None or self.publisher.transactional:  # state record built at send time
            for index, item in enumerate(items):
                (await self.offer(item)).add_done_callback(partial(fate.settle_from, index))
            return fate.future
        sends: list[tuple[Item, Settle, Record]] = []
        accepted = 0
        try:
            for index, item in enumerate(items):
                if not self._window.take_now():
                    sends = await self._send_all(sends)  # what holds the window goes out before we wait
                    await self._window.take()
                accepted = index + 1
                self._in_flight += 1
                slot = Slot(fate, index)
                if not self._accept(item, slot, sends):  # dedup store behind, or not encodable: the long way
                    assert isinstance(item, TransferEvent)
                    sends = await self._send_all(sends)
                    await self._guarded(self._start_event(item, slot), item, slot)
            await self._send_all(sends)
        except asyncio.CancelledError:
            fate.abandon(accepted)  # what was accepted still goes out (see _guarded, _send_all)
            raise
        return fate.future

    def _accept(self, item: Item, slot: Slot, sends: list[tuple[Item, Settle, Record]]) -> bool:
        """``offer`` and ``_start_event`` without awaiting; False when the item needs to wait."""
        if isinstance(item, DeadLetter):
            sends.append((item, slot, self.publisher.dead_letter_record(item)))
            return True
        _labelled(metrics.EVENTS_RECEIVED, item.provider.value, item.direction.value).inc()
        chain = self._chains.get(item.key)
        if chain is not None:
            chain.append((item, slot))
            return True
        self._chains[item.key] = deque()
        return self._decide(item, slot, sends)

    def _decide(self, event: TransferEvent, slot: Settle, sends: list[tuple[Item, Settle, Record]]) -> bool:
        """``_start_event`` without awaiting: decided, or its record added to ``sends``; False when it
        has to take the long way (the dedup store is behind, or it is not encodable)."""
        decision = self.gate.check(event)
        if decision is not Decision.PUBLISH:
            _labelled(metrics.EVENTS_DEDUPLICATED, event.provider.value, event.direction.value, decision.value).inc()
            self._finish(slot, _DECISION_OUTCOME[decision])
            self._advance(event.key)
            return True
        if not self.gate.has_room:
            return False
        try:
            record = self.publisher.event_record(event)
        except (TypeError, ValueError):
            return False  # _start_event turns it into a dead letter
        self.gate.claim()
        sends.append((event, slot, record))
        return True

    async def _send_all(self, sends: list[tuple[Item, Settle, Record]]) -> list[tuple[Item, Settle, Record]]:
        """Hand accepted records to the producer in order; cancelled half way, the rest still goes
        (cancellation lands only before a record entered the producer, as in ``_guarded``)."""
        for position, (item, slot, record) in enumerate(sends):
            try:
                await self._send(item, slot, record)
            except asyncio.CancelledError:
                self._spawn(self._send_all(sends[position:]))
                raise
        return []

    async def offer(self, item: Item) -> asyncio.Future[Outcome]:
        """Accept an item (waiting for room when the window is full); the future tells its fate."""
        if self._closing:
            raise RuntimeError("pipeline is shutting down")
        await self._window.take()
        self._in_flight += 1
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if isinstance(item, DeadLetter):
            await self._guarded(self._send(item, future, self.publisher.dead_letter_record(item)), item, future)
            return future
        _labelled(metrics.EVENTS_RECEIVED, item.provider.value, item.direction.value).inc()
        chain = self._chains.get(item.key)
        if chain is not None:
            chain.append((item, future))
            return future
        self._chains[item.key] = deque()
        await self._guarded(self._start_event(item, future), item, future)
        return future

    async def _guarded(self, sending: Any, item: Item, future: Settle) -> None:
        """Run the first send of an accepted item; if the caller is cancelled meanwhile, finish it anyway.

        The send waits while aiokafka's buffer is full; a source cancelled there (supervisor restart,
        shutdown, the OKX notice handover) must neither keep the item's window slot nor leave its
        transfer's key blocked for good. Cancellation can only land before the record entered the
        producer, so sending it again in the background is the same send, not a second one.
        """
        try:
            await sending
        except asyncio.CancelledError:
            if not future.done():
                if isinstance(item, DeadLetter):
                    self._spawn(self._send(item, future, self.publisher.dead_letter_record(item)))
                else:
                    self._spawn(self._start_event(item, future))
            raise

    # -- internals -----------------------------------------------------------------------------

    async def _start_event(self, event: TransferEvent, future: Settle) -> None:
        decision = self.gate.check(event)
        if decision is not Decision.PUBLISH:
            _labelled(metrics.EVENTS_DEDUPLICATED, event.provider.value, event.direction.value, decision.value).inc()
            self._finish(future, _DECISION_OUTCOME[decision])
            self._advance(event.key)
            return
        if not self.gate.has_room:  # the store is behind (full disk): send nothing it could forget
            await self.gate.wait_for_room()
        self.gate.claim()
        claimed = True
        try:
            state = None
            if self.state_records is not None:  # exactly-once: the dedup state rides in the same transaction
                state = self.state_records(event, *self.gate.state_after(event))
            try:
                record = self.publisher.event_record(event)
            except (TypeError, ValueError) as exc:  # unencodable: keep it, as a dead letter, and free the key
                self.gate.release()
                claimed = False
                letter = DeadLetter(event.provider, event.source.channel, f"event not encodable: {exc}"[:500],
                                    repr(event.raw).encode("utf-8", "backslashreplace"), event.received_at, event.account.id)
                await self._send(letter, future, self.publisher.dead_letter_record(letter))
                self._advance(event.key)
                return
            await self._send(event, future, record, state)
        except asyncio.CancelledError:
            # Only before the record entered the producer (see _guarded): it is started again from
            # the top, which claims again.
            if claimed and not future.done():
                self.gate.release()
            raise

    async def _send(
        self, item: Item, future: Settle, record: Record, state: Record | None = None, attempt: int = 0
    ) -> None:
        backoff = min(0.1 * 2**attempt, RETRY_MAX)
        while True:
            if self._rebuilding is not None and not self._rebuilding.done():
                await asyncio.wait({self._rebuilding})  # the producer is being replaced: send on the new one
            generation = self.publisher.generation
            try:
                ack = await self.publisher.send(record, state)
                break
            except MessageSizeTooLargeError as exc:
                self._reject_oversized(item, future, exc)
                return
            except FencedError as exc:
                self.fenced = True
                self._unclaim(item)
                self._finish(future, None, exc)
                return
            except (KafkaError, RuntimeError, OSError) as exc:
                self._note_failure(exc)
                if isinstance(exc, PRODUCER_LOST):
                    self._replace_producer(exc, generation)
                await self._pause(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
        ack.add_done_callback(partial(self._on_ack, item, future, record, state, time.perf_counter(), generation, attempt))

    def _on_ack(
        self,
        item: Item,
        future: Settle,
        record: Record,
        state: Record | None,
        sent_at: float,
        generation: int,
        attempt: int,
        ack: asyncio.Future[Any],
    ) -> None:
        error = ack.exception() if not ack.cancelled() else asyncio.CancelledError()
        if error is not None:
            if isinstance(error, MessageSizeTooLargeError):
                self._reject_oversized(item, future, error)
                return
            if isinstance(error, FencedError):
                self.fenced = True
                self._unclaim(item)
                self._finish(future, None, error)
                return
            self._note_failure(error)
            if isinstance(error, PRODUCER_LOST):
                self._replace_producer(error, generation)
            self._spawn(self._retry(item, future, record, state, attempt + 1))
            return
        now = time.perf_counter()
        self._last_progress = time.monotonic()
        self._failing_since = None
        self._broker_ok = True  # an ack proves the broker reachable, whatever the last probe said
        if self._pausing:
            self._wake_retries()
        metrics.PRODUCE_LATENCY.observe(now - sent_at)
        if isinstance(item, DeadLetter):
            metrics.EVENTS_DEAD_LETTERED.labels(item.provider.value, item.channel).inc()
            self._finish(future, Outcome.DEAD_LETTERED)
            return
        self.gate.mark(item, claimed=True)
        provider = item.provider.value
        _labelled(metrics.EVENTS_PUBLISHED, provider, item.direction.value).inc()
        if item.status is Status.UNKNOWN:
            metrics.EVENTS_UNKNOWN_STATUS.labels(provider, item.direction.value).inc()
        _labelled(metrics.END_TO_END_LATENCY, provider).observe(max(0.0, time.time() - to_epoch_ms(item.occurred_at) / 1000))
        self._finish(future, Outcome.PUBLISHED)
        self._advance(item.key)

    async def _retry(
        self, item: Item, future: Settle, record: Record, state: Record | None, attempt: int
    ) -> None:
        await self._pause(min(0.5 * 2 ** (attempt - 1), RETRY_MAX))
        if isinstance(item, TransferEvent) and self.state_records is not None:
            # Recompute: the state must describe what Kafka has after *this* transaction.
            state = self.state_records(item, *self.gate.state_after(item))
        await self._send(item, future, record, state, attempt)

    def _reject_oversized(self, item: Item, future: Settle, error: Exception) -> None:
        """Too large for the topic: an event goes to the DLQ instead; a dead letter fails loudly."""
        if isinstance(item, TransferEvent):
            self.gate.release()
            letter = DeadLetter(
                provider=item.provider,
                channel=item.source.channel,
                reason=f"event too large for Kafka ({error.__class__.__name__}); raw payload attached",
                raw=item.model_dump_json(include={"raw"}).encode(),
                received_at=item.received_at,
                account_id=item.account.id,
            )
            self._spawn(self._send(letter, future, self.publisher.dead_letter_record(letter)))
            self._advance(item.key)
            return
        if len(item.raw) > 65_536:
            # Keep the head of the payload rather than nothing; the header says it was cut.
            cut = DeadLetter(item.provider, item.channel, item.reason, item.raw[:65_536], item.received_at,
                             item.account_id, {**item.headers, "truncated_from_bytes": str(len(item.raw))})
            self._spawn(self._send(cut, future, self.publisher.dead_letter_record(cut)))
            return
        log.error("dead letter too large for Kafka, provider=%s reason=%s", item.provider, item.reason)
        self._finish(future, None, error)

    def _unclaim(self, item: Item) -> None:
        if isinstance(item, TransferEvent):
            self.gate.release()

    def _finish(self, future: Settle, outcome: Outcome | None, error: BaseException | None = None) -> None:
        self._in_flight -= 1
        self._window.release()
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outcome)  # type: ignore[arg-type]

    def _advance(self, key: str) -> None:
        chain = self._chains.get(key)
        if chain is None:
            return
        if not chain:
            del self._chains[key]
            return
        event, future = chain.popleft()
        if self.state_records is not None or self.publisher.transactional:  # state record built when sent
            self._spawn(self._start_event(event, future))
            return
        self._next.append((event, future))  # started with the others this round of acks freed
        if not self._next_running:
            self._next_running = True
            self._spawn(self._start_next())

    async def _start_next(self) -> None:
        """Next states of transfers whose previous state was just acknowledged: decided and sent
        together by one task, not a task each."""
        try:
            while self._next:
                sends: list[tuple[Item, Settle, Record]] = []
                while self._next:
                    event, future = self._next.popleft()
                    if not self._decide(event, future, sends):
                        sends = await self._send_all(sends)
                        await self._start_event(event, future)
                await self._send_all(sends)
        finally:
            self._next_running = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
