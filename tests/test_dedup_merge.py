"""Two writers of one dedup store: their states of a transfer merge, neither overwrites the other."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.contract.events import short_hash
from bridge.delivery.dedup import FINAL_FLAG, Decision, DedupGate, MemoryStore, merged, published_count, state_id
from bridge.delivery.open_transfers import read_tracking
from bridge.delivery.store_sqlite import SQLitePeer, SQLiteStore
from tests.test_pipeline_kafka import withdrawal

PENDING, SEEN, SUCCESS = withdrawal(confirmations=0), withdrawal(confirmations=1), withdrawal("success", confirmations=20)
KEY = short_hash(PENDING.key)


def _after(gate: DedupGate, *events: object, now_ms: int = 1_700_000_000_000) -> bytes:
    for event in events:
        gate.mark(event, now_ms=now_ms)  # type: ignore[arg-type]
    return gate._index[KEY]


def _published(events: list[object], seconds: int) -> bytes:
    """The state a gate holds after offering ``events`` in order (marking what it lets through)."""
    gate = DedupGate(MemoryStore())
    for event in events:
        if gate.check(event) is Decision.PUBLISH:  # type: ignore[arg-type]
            gate.mark(event, now_ms=1_700_000_000_000 + seconds * 1000)  # type: ignore[arg-type]
    return gate._index.get(KEY, b"\x00")


def _ids(state: bytes) -> set[bytes]:
    start = 9 if read_tracking(state) is not None else 1
    return {state[i : i + 8] for i in range(start, len(state), 8)}


def test_merging_two_writers_states_keeps_every_published_id_of_both() -> None:
    service = _after(DedupGate(MemoryStore()), PENDING, SEEN)
    replay = _after(DedupGate(MemoryStore()), PENDING, SUCCESS)
    both = merged(service, replay)
    assert _ids(both) == {state_id(PENDING), state_id(SEEN), state_id(SUCCESS)}
    assert published_count(both) == 3
    assert both[0] & FINAL_FLAG and read_tracking(both) is None  # a final on either side is final
    assert _ids(merged(replay, service)) == _ids(both)


def test_merging_open_states_keeps_the_tracking_with_the_earlier_first_seen() -> None:
    early = _after(DedupGate(MemoryStore()), PENDING, now_ms=1_700_000_000_000)
    late = _after(DedupGate(MemoryStore()), SEEN, now_ms=1_700_000_600_000)
    tracking = read_tracking(merged(late, early))
    assert tracking is not None
    assert tracking[1] == 1_700_000_000 and tracking[2] == 1_700_000_600


def test_one_writers_later_state_is_its_own_merge() -> None:
    gate = DedupGate(MemoryStore())
    first = _after(gate, PENDING)
    second = _after(gate, SEEN)
    assert merged(first, second) == second and merged(second, first) == second


def test_the_sqlite_row_merges_a_second_writers_save_instead_of_replacing_it(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite3"
    service, replay = SQLiteStore(path), SQLiteStore(path, reserve_name="dlq-replay.reserve")
    try:
        service.save([(KEY, _after(DedupGate(MemoryStore()), PENDING), None)])
        replay.save([(KEY, _after(DedupGate(MemoryStore()), PENDING, SUCCESS), 1)])
        service.save([(KEY, _after(DedupGate(MemoryStore()), PENDING, SEEN), None)])  # knows nothing of SUCCESS
        on_disk = SQLitePeer(replay).lookup(KEY)
        assert on_disk is not None
        assert _ids(on_disk) == {state_id(PENDING), state_id(SEEN), state_id(SUCCESS)}
        assert on_disk[0] & FINAL_FLAG  # the service's later non-final write did not reopen it
    finally:
        service.close()
        replay.close()
    assert not (tmp_path / "dedup.sqlite3.reserve").samefile(tmp_path / "dedup.sqlite3.dlq-replay.reserve")


_EVENTS = [withdrawal(confirmations=c) for c in range(6)] + [withdrawal("success", confirmations=20), withdrawal("failed")]


@given(
    st.lists(st.sampled_from(_EVENTS), max_size=6),
    st.lists(st.sampled_from(_EVENTS), max_size=6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_a_merge_holds_exactly_both_writers_ids_in_either_order_and_is_final_if_either_is(
    one: list[object], other: list[object], t1: int, t2: int
) -> None:
    a, b = _published(one, t1), _published(other, t2)
    both = merged(a, b)
    assert _ids(both) == _ids(a) | _ids(b) == _ids(merged(b, a))
    assert published_count(both) == len(_ids(a) | _ids(b))
    assert bool(both[0] & FINAL_FLAG) == bool((a[0] | b[0]) & FINAL_FLAG)
    assert merged(both, a) == both and merged(both, both) == both
    if both[0] & FINAL_FLAG:
        assert read_tracking(both) is None
