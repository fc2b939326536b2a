"""Handing items to the pipeline without waiting for Kafka, and counting how each one ended.

``Pipeline.offer`` waits only for room (backpressure); the Kafka outcome arrives later on a future.
A source keeps those futures here, so it can count outcomes by path (``push.published``,
``backfill.duplicate``, …), say whether anything is still undecided, and drain at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any

from bridge.contract.events import Via
from bridge.contract.parsing import ParseResult
from bridge.delivery.pipeline import Outcome, Pipeline

__all__ = ["Intake"]


class Intake:
    def __init__(self, pipeline: Pipeline, stats: Counter[str], log: logging.Logger, who: str):
        self.pipeline = pipeline
        self.stats = stats
        self._log = log
        self._who = who
        self.pending: set[asyncio.Future[Any]] = set()

    async def offer(self, item: ParseResult, via: Via) -> None:
        future = await self.pipeline.offer(item)
        self.pending.add(future)
        future.add_done_callback(partial(self._on_outcome, via))

    async def offer_batch(self, items: Sequence[ParseResult], via: Via) -> None:
        """A frame's or page's items in one hand-over: one future and one callback for all of them."""
        future = await self.pipeline.offer_batch(items)
        self.pending.add(future)
        future.add_done_callback(partial(self._on_outcomes, via))

    def _on_outcomes(self, via: Via, future: asyncio.Future[list[Outcome | BaseException | None]]) -> None:
        self.pending.discard(future)
        if future.cancelled():
            return
        for outcome in future.result():
            if isinstance(outcome, Outcome):
                self.stats[f"{via.value}.{outcome.value}"] += 1
            elif outcome is not None and not isinstance(outcome, asyncio.CancelledError):
                self.stats["failed"] += 1
                self._log.error("%s: item not delivered: %s", self._who, outcome.__class__.__name__)

    def _on_outcome(self, via: Via, future: asyncio.Future[Outcome]) -> None:
        self.pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.stats["failed"] += 1
            self._log.error("%s: item not delivered: %s", self._who, error.__class__.__name__)
            return
        self.stats[f"{via.value}.{future.result().value}"] += 1

    async def settle(self, timeout: float) -> bool:
        """Wait until every offered item has its outcome; False if time ran out first."""
        pending = list(self.pending)
        if not pending:
            return True
        done, _ = await asyncio.wait(pending, timeout=timeout)
        return len(done) == len(pending)
