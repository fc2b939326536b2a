"""Open (non-final) transfers per provider and direction: how many, how old the oldest, how many stuck.

The dedup gate keeps one ``bytes`` state per transfer. An open transfer's state carries an 8-byte
tracking block after its flags byte (``TRACKED_FLAG``): the provider and direction, the first-seen
time and the last change. So the store persists it with the state at no extra write, a restart
gets it back with the index, and a final state drops the block (final transfers cost nothing more).

Counting is per minute bucket of the first-seen time, per provider and direction: a mark moves one
count, a scrape walks buckets (a few per minute of open history) rather than a million states, and
the oldest open transfer is the lowest bucket. Ages are therefore to the minute: the oldest age is
measured from the start of its minute (never under-reported); a transfer counts as stuck once its
whole minute is past the threshold. A transfer first seen more than the dedup retention ago is
dropped from tracking (its bucket is forgotten), like a final one leaving retention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.contract.events import Direction, Provider

__all__ = [
    "TRACKED_FLAG",
    "BUCKET_SECONDS",
    "OpenTransfers",
    "OpenSummary",
    "kind_code",
    "tracking_block",
    "read_tracking",
    "ids_offset",
]

TRACKED_FLAG = 0x02
BUCKET_SECONDS = 60
_DELTA_MAX = 0xFFFFFF
"""Last change is stored as seconds after first seen in 3 bytes (about 194 days, saturating)."""

_KINDS: list[tuple[Provider, Direction]] = [(p, d) for p in Provider for d in (Direction.DEPOSIT, Direction.WITHDRAWAL)]
_CODES: dict[tuple[str, str], int] = {(p.value, d.value): code for code, (p, d) in enumerate(_KINDS)}


def kind_code(provider: str, direction: str) -> int:
    """One byte for (provider, direction); stable because ``Provider`` only grows at its end
    before ``UNKNOWN``, which the bridge never publishes."""
    return _CODES[(provider, direction)]


def tracking_block(kind: int, first_seen_s: int, last_change_s: int) -> bytes:
    delta = min(max(0, last_change_s - first_seen_s), _DELTA_MAX)
    return ((kind << 56) | ((first_seen_s & 0xFFFFFFFF) << 24) | delta).to_bytes(8, "big")


def read_tracking(state: bytes) -> tuple[int, int, int] | None:
    """(kind, first seen s, last change s) of a tracked state; None for one without the block."""
    if not state[0] & TRACKED_FLAG:
        return None
    value = int.from_bytes(state[1:9], "big")
    first = (value >> 24) & 0xFFFFFFFF
    return value >> 56, first, first + (value & _DELTA_MAX)


def ids_offset(state: bytes) -> int:
    """Where the published ids start in a state."""
    return 9 if state[0] & TRACKED_FLAG else 1


@dataclass(frozen=True)
class OpenSummary:
    provider: str
    direction: str
    open: int
    oldest_age_seconds: float
    stuck: int
    threshold_seconds: float


class OpenTransfers:
    """Counts of open transfers per (kind, first-seen minute); the gate keeps it in step with marks."""

    def __init__(self) -> None:
        self._buckets: dict[int, dict[int, int]] = {}
        """kind → first-seen minute → open transfers."""
        self._horizon = 0
        """Minutes below this were dropped (first seen before the retention): never counted again."""

    def add(self, state: bytes) -> None:
        found = read_tracking(state)
        if found is None:
            return
        kind, first, _ = found
        minute = first // BUCKET_SECONDS
        if minute < self._horizon:
            return
        buckets = self._buckets.get(kind)
        if buckets is None:
            buckets = self._buckets[kind] = {}
        buckets[minute] = buckets.get(minute, 0) + 1

    def remove(self, state: bytes) -> None:
        found = read_tracking(state)
        if found is None:
            return
        kind, first, _ = found
        buckets = self._buckets.get(kind)
        minute = first // BUCKET_SECONDS
        if buckets is None or minute not in buckets:
            return  # dropped at the horizon already
        left = buckets[minute] - 1
        if left > 0:
            buckets[minute] = left
        else:
            del buckets[minute]

    def replace(self, old: bytes | None, new: bytes) -> None:
        """A transfer's state changed from ``old`` (None: first seen) to ``new``."""
        if old is not None and old[0] & TRACKED_FLAG and new[0] & TRACKED_FLAG and old[1:6] == new[1:6]:
            return  # same kind and first-seen second (the first 5 bytes of the block): same bucket
        if old is not None:
            self.remove(old)
        self.add(new)

    def rebuild(self, states: Iterable[bytes], *, drop_before_s: int) -> None:
        """Count every tracked state of a freshly loaded index (runs in the loader's thread)."""
        self._buckets = {}
        self._horizon = max(0, drop_before_s // BUCKET_SECONDS)
        add = self.add
        for state in states:
            if state[0] & TRACKED_FLAG:
                add(state)

    def drop_before(self, before_s: int) -> int:
        """Forget transfers first seen before ``before_s`` (left the retention); returns how many."""
        horizon = before_s // BUCKET_SECONDS
        if horizon <= self._horizon:
            return 0
        self._horizon = horizon
        dropped = 0
        for buckets in self._buckets.values():
            for minute in [m for m in buckets if m < horizon]:
                dropped += buckets.pop(minute)
        return dropped

    @property
    def total(self) -> int:
        return sum(sum(b.values()) for b in self._buckets.values())

    def summary(self, now_s: float, threshold: Callable[[str, str], float]) -> list[OpenSummary]:
        """Per (provider, direction) ever seen: open count, oldest age, stuck count past ``threshold``."""
        out = []
        for kind, buckets in sorted(self._buckets.items()):
            provider, direction = _KINDS[kind]
            limit = threshold(provider.value, direction.value)
            open_count = stuck = 0
            oldest: int | None = None
            for minute, count in buckets.items():
                open_count += count
                if oldest is None or minute < oldest:
                    oldest = minute
                if (minute + 1) * BUCKET_SECONDS <= now_s - limit:
                    stuck += count
            age = 0.0 if oldest is None else max(0.0, now_s - oldest * BUCKET_SECONDS)
            out.append(OpenSummary(provider.value, direction.value, open_count, age, stuck, limit))
        return out
