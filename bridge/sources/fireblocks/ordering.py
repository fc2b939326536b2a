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
which is never older than what an earlier process published (``FireblocksWebhook._warm_up``).
What is left open: a transaction created before that window, a key evicted from the memory, a
start whose backfill pass did not complete within ``ordering_warmup_seconds`` (or no backfill
configured), and a REST API lagging behind its own webhooks. Such a late older state is
published; it keeps its ``occurred_at`` (= ``lastUpdated``), so consumers can still order by it,
and the dedup gate still drops it when it repeats a published state or follows a final one.
Equal times are not older (a repeat decides the dedup gate).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Newest"]


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
