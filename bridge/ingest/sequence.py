"""Message numbering per topic within one connection, for providers that number their pushes.

A stream provider whose messages carry an id that counts up per topic (Ripio) says so through
``StreamSource.numbered``; the engine keeps a ``SequenceTracker`` per connection and turns a jump
forward into a ``Gap``: counted, shown in health (``last_gap``), logged, and closed by a backfill
pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Gap", "SequenceTracker"]


@dataclass(frozen=True, slots=True)
class Gap:
    """``missing`` ids of ``topic`` lost before ``before_id``; ``first``: on the connection's
    first message of that topic (lost before it, or the ids continue across connections)."""

    topic: str
    missing: int
    before_id: int
    first: bool

    @property
    def detail(self) -> dict[str, object]:
        return {"topic": self.topic, "missing": self.missing, "before_id": self.before_id}

    def describe(self) -> str:
        hint = " (the first on this connection: set sequence_start to None if ids continue across connections)"
        return f"{self.missing} {self.topic} message(s) missing before id {self.before_id}{hint if self.first else ''}"


class SequenceTracker:
    """Message ``id`` per topic within one connection: a jump forward is a gap.

    ``start`` is the id the first message of a topic carries on a new connection (the sequence
    restarts per connection): a first id above it means messages were lost before it. With
    ``start=None`` the first id is taken as it comes (for a sequence that continues across
    connections; the backfill after every connect covers that start). An id at or below the last
    one is a repeat or a straggler, not a gap.
    """

    def __init__(self, start: int | None = 1) -> None:
        self._start = start
        self._last: dict[str, int] = {}
        self.gaps = 0
        self.missing = 0

    def observe(self, topic: str, message_id: Any) -> int:
        """Returns how many ids were skipped before this one (0: none)."""
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
            return 0
        last = self._last.get(topic)
        if last is None:
            last = None if self._start is None else self._start - 1
        self._last[topic] = message_id if last is None else max(last, message_id)
        if last is None or message_id <= last + 1:
            return 0
        skipped = message_id - last - 1
        self.gaps += 1
        self.missing += skipped
        return skipped

    def last(self, topic: str) -> int | None:
        return self._last.get(topic)

    def gap(self, topic: str, message_id: Any) -> Gap | None:
        """``observe``, as the ``Gap`` it reveals (None: no gap)."""
        first = self.last(topic) is None
        skipped = self.observe(topic, message_id)
        return Gap(topic, skipped, message_id, first) if skipped else None
