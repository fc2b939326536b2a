"""A store that cannot persist: every acknowledged state reaches its reserve, even one acknowledged
while a spill was being written."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bridge.delivery.dedup import DedupGate, DedupStoreError, MemoryStore, Row
from tests.test_pipeline_kafka import withdrawal


class FullStore(MemoryStore):
    """Every save fails like a full disk; ``spill`` keeps rows in ``reserve`` and can be held open."""

    def __init__(self) -> None:
        super().__init__()
        self.reserve: dict[int, Row] = {}
        self.spilling = threading.Event()
        self.let_spill_finish = threading.Event()
        self.let_spill_finish.set()

    @property
    def reserved(self) -> int:
        return len(self.reserve)

    def save(self, rows: list[Row]) -> None:
        raise DedupStoreError("dedup.sqlite3: cannot be written: the disk is full")

    def spill(self, rows: list[Row]) -> int:
        self.spilling.set()
        assert self.let_spill_finish.wait(10)
        self.reserve.update((row[0], row) for row in rows)
        return 0


async def test_states_acknowledged_during_a_spill_reach_the_reserve_by_close() -> None:
    store = FullStore()
    gate = DedupGate(store, flush_interval=3600, max_unpersisted=100)
    await gate.open()
    for n in range(6):
        gate.mark(withdrawal(transfer_id=f"before-{n}"))
    store.let_spill_finish.clear()
    failing = asyncio.create_task(gate.flush())
    await asyncio.to_thread(store.spilling.wait, 10)
    for n in range(34):  # acknowledged while the first spill is still being written
        gate.mark(withdrawal(transfer_id=f"during-{n}"))
    store.let_spill_finish.set()
    with pytest.raises(DedupStoreError):
        await failing
    assert store.reserved == 6

    with pytest.raises(DedupStoreError) as closing:
        await gate.close()
    assert store.reserved == 40, "states acknowledged during the first spill were never kept for the next start"
    assert "could not persist 40 acknowledged states" in str(closing.value)
    assert "40 kept in its reserve for the next start, 0 lost" in str(closing.value)
