"""A producer that offers events to a pipeline as fast as it takes them, and what that cost.

While it runs, in-flight items, this process's RSS and its asyncio task count are sampled every
20 ms. ``stop`` lets the producer finish the offer it is blocked in (it is never cancelled mid-
offer) and returns once it has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.contract.events import Account, Direction, Provider, Source, Status, TransferEvent, build_event
from bridge.delivery.pipeline import Outcome, Pipeline
from tests.resources.figures import rss_bytes

__all__ = ["Flood", "Peaks", "deposit"]

RECEIVED = "2026-11-22T10:00:00.000Z"


def deposit(n: int, *, tag: str = "flood", raw_bytes: int = 1000) -> TransferEvent:
    """One event of about the size of a real push (``raw`` ~ ``raw_bytes``)."""
    transfer_id = f"{tag}-{n}"
    return build_event(
        provider=Provider.OKX,
        direction=Direction.DEPOSIT,
        transfer_id=transfer_id,
        status=Status.PENDING,
        provider_status="0",
        amount="0.00000001",
        asset="USDT",
        occurred_at="2026-11-22T09:59:59.000Z",
        received_at=RECEIVED,
        source=Source(channel="deposit-info"),
        account=Account(id="289320000060975104"),
        raw={"depId": transfer_id, "memo": "x" * raw_bytes},
    )


@dataclass
class Peaks:
    in_flight: int = 0
    rss: int = 0
    tasks: int = 0
    baseline_rss: int = 0
    samples: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss - self.baseline_rss


@dataclass
class Flood:
    pipeline: Pipeline
    make_item: Callable[[int], Any] = deposit
    futures: list[asyncio.Future[Outcome]] = field(default_factory=list)
    peaks: Peaks = field(default_factory=Peaks)
    _stopping: bool = False
    _producer: asyncio.Task[None] | None = None
    _sampler: asyncio.Task[None] | None = None

    @property
    def accepted(self) -> int:
        return len(self.futures)

    async def _produce(self) -> None:
        n = 0
        while not self._stopping:
            self.futures.append(await self.pipeline.offer(self.make_item(n)))
            n += 1
            if n % 64 == 0:
                await asyncio.sleep(0)  # offers that never wait must still let the loop breathe

    async def _sample(self) -> None:
        while True:
            self.peaks.in_flight = max(self.peaks.in_flight, self.pipeline.in_flight)
            self.peaks.rss = max(self.peaks.rss, rss_bytes())
            self.peaks.tasks = max(self.peaks.tasks, len(asyncio.all_tasks()))
            self.peaks.samples += 1
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.peaks.baseline_rss = rss_bytes()
        self._producer = asyncio.create_task(self._produce(), name="flood")
        self._sampler = asyncio.create_task(self._sample(), name="flood-sampler")

    async def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._producer is not None and self._producer.done():
                self._producer.result()  # surface an error in the producer at once
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 60.0) -> None:
        self._stopping = True
        try:
            if self._producer is not None and not self._producer.cancelled():
                await asyncio.wait_for(self._producer, timeout)
        finally:
            if self._sampler is not None:
                self._sampler.cancel()
                await asyncio.gather(self._sampler, return_exceptions=True)

    async def outcomes(self, timeout: float = 90.0) -> list[Any]:
        return list(await asyncio.wait_for(asyncio.gather(*self.futures, return_exceptions=True), timeout))
