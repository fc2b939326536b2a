"""The out-of-order rule: a state older (by ``lastUpdated``) than the newest one already accepted
for the same key is dropped, not published.

Why drop rather than publish with the provider's time: consumers of the contract read "the last
record of a key" as the transfer's current state, so a late ``PENDING_SIGNATURE`` published after
``BROADCASTING`` would make a transfer go backwards for every consumer that does not re-sort by
``occurred_at``; the dedup gate already drops a non-final state after a final one, and this extends
the same protection to non-final vs non-final. What is lost is only an intermediate state the
stream has already moved past (its successor was published); a final state is never lost this way,
because nothing is newer than the last state of a transfer.

The memory is small and in process: per key the newest ``lastUpdated`` accepted, bounded
(least-recently-seen keys are forgotten first). Across a restart (a kill -9 included) it is
refilled before deliveries are taken: the receiver holds them until its start-up backfill pass
has read every transaction created within ``backfill_initial_lookback`` in its *current* state,
which is never older than what an earlier process published (``WarmUp``).
What is left open: a transaction created before that window, a key evicted from the memory, a
start whose backfill pass did not complete within ``ordering_warmup_seconds`` (or no backfill
configured), and a REST API lagging behind its own webhooks. Such a late older state is
published; it keeps its ``occurred_at`` (= ``lastUpdated``), so consumers can still order by it,
and the dedup gate still drops it when it repeats a published state or follows a final one.
Equal times are not older (a repeat decides the dedup gate).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["Newest", "WarmUp"]


class Newest:
    """Newest ``lastUpdated`` accepted per key, bounded to ``capacity`` keys (0 disables the rule)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._seen)

    def accept(self, key: str, updated_ms: int | None) -> bool:
        """True if the state may be published (and remember it); False when it is older."""
        if self.capacity <= 0 or updated_ms is None:
            return True
        newest = self._seen.get(key)
        if newest is not None and updated_ms < newest:
            self.dropped += 1
            return False
        self._seen[key] = updated_ms if newest is None else max(newest, updated_ms)
        self._seen.move_to_end(key)
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


class WarmUp:
    """Holds a delivery until the start-up backfill pass has refilled the ordering memory.

    The memory of the newest ``lastUpdated`` per key is in process: without this, a delivery
    older than a state a previous process published (a late re-delivery after a kill -9) would be
    published after it. The pass reads every transaction created within
    ``backfill_initial_lookback`` in its current state — never older than what was published — and
    ``Newest.accept`` remembers it. Bounded by ``per_request`` (``ack_timeout_seconds``; then 503:
    Fireblocks retries) and by ``limit`` in all (``ordering_warmup_seconds``; then deliveries pass
    without it and ``on_give_up`` is called once, so a REST outage cannot stop the webhooks)."""

    def __init__(self, *, needed: bool, limit: float, per_request: float, on_give_up: Callable[[], None]):
        self.limit = limit
        self.per_request = per_request
        self._on_give_up = on_give_up
        self._started = time.monotonic()
        self._open = asyncio.Event()
        if not needed:
            self._open.set()

    @property
    def open(self) -> bool:
        """Deliveries are decided at once (warm, not needed, or given up)."""
        return self._open.is_set()

    def done(self) -> None:
        """The memory is refilled (a complete pass), or no pass of ours will ever refill it."""
        self._open.set()

    async def wait(self) -> bool:
        """True once a delivery may be decided; False: not yet (answer 503, the sender retries)."""
        if self._open.is_set():
            return True
        left = self._started + self.limit - time.monotonic()
        if left > 0:
            try:
                await asyncio.wait_for(self._open.wait(), min(self.per_request, left))
                return True
            except TimeoutError:
                if time.monotonic() < self._started + self.limit:
                    return False
        if not self._open.is_set():
            self._open.set()
            self._on_give_up()
        return True
