"""Message numbering per topic within a connection (``bridge.ingest.sequence``), as Ripio numbers it."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.ingest.sequence import Gap, SequenceTracker


@pytest.mark.parametrize(
    ("start", "ids", "gaps"),
    [
        (1, [1, 2, 3, 4], [0, 0, 0, 0]),
        (1, [3, 4], [2, 0]),  # the sequence restarts per connection: ids 1 and 2 were lost
        (None, [7, 8, 10], [0, 0, 1]),  # ids that continue across connections: the first is taken as it comes
        (1, [1, 5, 6], [0, 3, 0]),
        (1, [1, 2, 2, 1, 3], [0, 0, 0, 0, 0]),  # repeats and stragglers are not gaps
        (1, [-1, 1, 2], [0, 0, 0]),  # welcome
        (1, [1, "x", None, True, 2], [0, 0, 0, 0, 0]),
        (0, [0, 1], [0, 0]),
    ],
)
def test_a_forward_jump_in_a_topics_message_ids_is_a_gap(start: int | None, ids: list[Any], gaps: list[int]) -> None:
    tracker = SequenceTracker(start)
    assert [tracker.observe("deposit", i) for i in ids] == gaps


def test_message_ids_are_tracked_per_topic() -> None:
    tracker = SequenceTracker()
    assert [tracker.observe("deposit", 1), tracker.observe("withdrawal", 1), tracker.observe("deposit", 2), tracker.observe("withdrawal", 3)] == [0, 0, 0, 1]
    assert (tracker.gaps, tracker.missing) == (1, 1)


def test_a_gap_says_where_it_is_and_hints_at_sequence_start_on_a_connections_first_message() -> None:
    tracker = SequenceTracker(1)
    first = tracker.gap("deposit", 3)
    assert first == Gap("deposit", 2, 3, first=True)
    assert first.detail == {"topic": "deposit", "missing": 2, "before_id": 3}
    assert first.describe().startswith("2 deposit message(s) missing before id 3 (the first on this connection")
    later = tracker.gap("deposit", 6)
    assert later == Gap("deposit", 2, 6, first=False) and later.describe() == "2 deposit message(s) missing before id 6"
    assert tracker.gap("deposit", 7) is None
