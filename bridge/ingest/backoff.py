"""Reconnect pacing shared by every source: jittered exponential backoff with a minimum uptime.

A plain "reset after a successful open" backoff turns into a tight loop against a venue that
accepts a connection and closes it at once (bad login, bad subscribe). Here the delay only resets
once a connection stayed up for ``min_uptime`` seconds.
"""

from __future__ import annotations

import asyncio
import random
import time

__all__ = ["Backoff"]

_JITTER = random.Random()
"""One generator for every backoff without its own: a ``random.Random`` holds 2.5 KB of state, which
a source per account paid per connection for a few draws per reconnect."""


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        min_uptime: float = 10.0,
        rng: random.Random | None = None,
    ):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.min_uptime = min_uptime
        self._rng = rng or _JITTER
        self._attempt = 0
        self._ceiling = initial
        self._connected_at: float | None = None

    @property
    def attempt(self) -> int:
        return self._attempt

    def connected(self) -> None:
        """Call when a connection is fully up (logged in and subscribed)."""
        self._connected_at = time.monotonic()

    def next_delay(self) -> float:
        """Delay before the next attempt ("full jitter" over the exponential ceiling)."""
        if self._connected_at is not None and time.monotonic() - self._connected_at >= self.min_uptime:
            self._attempt = 0
        self._connected_at = None
        # The ceiling grows by ``factor`` per attempt until ``maximum``; computed step by step because
        # ``initial * factor ** attempt`` overflows a float after about a thousand attempts.
        ceiling = self.initial if self._attempt == 0 else min(self.maximum, self._ceiling * self.factor)
        self._ceiling = ceiling = min(self.maximum, ceiling)
        self._attempt += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def wait(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay
