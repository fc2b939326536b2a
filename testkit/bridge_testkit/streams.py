"""Waiting for stream sources to go quiet: what tests, scenario runners and the demo share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from bridge.delivery.pipeline import Pipeline
from bridge.ingest.stream import StreamSource

__all__ = ["settle"]


async def settle(sources: Sequence[StreamSource], pipeline: Pipeline, quiet: float = 0.3, timeout: float = 60.0) -> None:
    """Wait until no frame arrived for ``quiet`` seconds, nothing is held or undecided, and Kafka
    acknowledged everything."""
    deadline = time.monotonic() + timeout
    frames = -1
    while True:
        await asyncio.sleep(quiet)
        for source in sources:
            await source.settle(timeout=timeout)
        await pipeline.drain(timeout=timeout)
        now = sum(source.stats["frames"] for source in sources)
        if now == frames and not any(source.busy for source in sources) and not pipeline.in_flight:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"sources still busy after {timeout}s")
        frames = now
