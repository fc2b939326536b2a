"""Recovering from Kafka failures, for the pipeline: paced retries, producer replacement, watchdog.

Split out of ``pipeline`` by job: the pipeline decides, orders and acknowledges items; this mixin
keeps the producer usable while the broker fails (backoff cut short by the first ack, a new producer
when the idempotent session is lost or no progress is made, readiness from a periodic probe).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from aiokafka.errors import KafkaError

from bridge.delivery.dedup import DedupGate
from bridge.delivery.publish import Publisher
from bridge.observability import metrics

__all__ = ["Recovery"]

log = logging.getLogger("bridge.delivery.pipeline")


class Recovery:
    """State it shares with ``Pipeline`` (which sets it up in ``__init__``)."""

    publisher: Publisher
    gate: DedupGate
    _in_flight: int
    _last_progress: float
    _failing_since: float | None
    _stuck_after: float
    _broker_ok: bool
    _rebuilding: asyncio.Task[None] | None
    _closing: bool
    _progress: asyncio.Event
    _pausing: int

    async def _pause(self, delay: float) -> None:
        """Back off before a retry: ``delay`` with jitter (retries of thousands of held items do not
        fire together), cut short as soon as Kafka acknowledges anything or the producer was replaced
        (backoffs grown during a long outage do not delay the recovery)."""
        self._pausing += 1
        try:
            async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):  # not wait_for: no task per pause
                await self._progress.wait()
        except TimeoutError:
            pass
        finally:
            self._pausing -= 1

    def _wake_retries(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _note_failure(self, error: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("kafka produce failing (%s); holding events and retrying", error.__class__.__name__)
        metrics.PRODUCE_RETRIES.labels(error.__class__.__name__).inc()

    def _replace_producer(self, error: BaseException, generation: int) -> None:
        """The producer lost its idempotent session: replace it now, not after the watchdog's wait.

        Only once per producer: the errors its other records still bring (``generation`` older than
        the publisher's) are retried on the new one. The transactional publisher replaces its
        producer after every failed transaction by itself."""
        if self.publisher.transactional or self._closing or generation != self.publisher.generation:
            return
        if self._rebuilding is not None and not self._rebuilding.done():
            return
        log.warning(
            "Kafka producer lost its idempotent session (%s); replacing it", error.__class__.__name__,
            extra={"error": error.__class__.__name__},
        )
        self._rebuilding = asyncio.get_running_loop().create_task(self._rebuild(), name="producer-rebuild")

    async def _rebuild(self) -> None:
        """Replace the producer, retrying while the broker cannot take a new one yet."""
        delay = 0.2
        while not self._closing:
            try:
                await self.publisher.rebuild()
            except (KafkaError, OSError) as exc:
                if delay == 0.2:
                    log.warning("producer rebuild failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            metrics.PRODUCER_REBUILDS.inc()
            self._wake_retries()
            if self._failing_since is not None:
                self._failing_since = time.monotonic()  # the watchdog's patience starts over
            return

    async def _watch(self) -> None:
        """Probe the broker for readiness; rebuild a producer that stopped making progress."""
        while True:
            await asyncio.sleep(1.0)
            probe_started = time.monotonic()
            reachable = await self.publisher.probe()
            self._broker_ok = reachable or self._last_progress > probe_started  # a later ack outranks a failed probe
            metrics.DEDUP_TRANSFERS.set(self.gate.size)
            metrics.DEDUP_UNPERSISTED.set(self.gate.unpersisted)
            if self._broker_ok and not self._in_flight:
                self._failing_since = None
            if (
                self._broker_ok
                and self._failing_since is not None
                and self._in_flight
                and time.monotonic() - max(self._failing_since, self._last_progress) > self._stuck_after
            ):
                # Broker answers metadata but our sends still fail: the producer may be wedged.
                if self._rebuilding is not None and not self._rebuilding.done():
                    continue
                log.warning("producer made no progress for %.0fs with the broker up; rebuilding", self._stuck_after)
                self._rebuilding = asyncio.get_running_loop().create_task(self._rebuild(), name="producer-rebuild")
