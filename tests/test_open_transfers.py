"""Open and stuck transfers: counted from the dedup state, kept across restarts (SQLite and Kafka stores)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.contract.events import Account, Direction, Provider, Source, Status, TransferEvent, build_event
from bridge.delivery.assemble import build_pipeline
from bridge.delivery.dedup import Decision, DedupGate, MemoryStore, newer
from bridge.delivery.open_transfers import OpenSummary
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import DedupSettings, TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.service.settings import StuckSettings
from bridge.service.stuck import publish_open_transfers

HOUR = 3600
T0 = 1_800_000_000  # a minute boundary (seconds)
STUCK = StuckSettings()


def _event(direction: Direction, transfer_id: str, status: Status, confirmations: int = 0) -> TransferEvent:
    return build_event(
        provider=Provider.OKX,
        direction=direction,
        transfer_id=transfer_id,
        status=status,
        provider_status=status.value,
        amount="1.000000000000000001",
        asset="USDT",
        confirmations=confirmations,
        occurred_at="2025-05-05T00:53:29.206Z",
        received_at="2025-05-05T00:53:29.310Z",
        source=Source(channel="deposit-info" if direction is Direction.DEPOSIT else "withdrawal-info"),
        account=Account(id="1"),
    )


def _by_kind(rows: list[OpenSummary]) -> dict[str, tuple[int, float, int]]:
    return {f"{r.provider}.{r.direction}": (r.open, r.oldest_age_seconds, r.stuck) for r in rows}


def _lifecycle(gate: DedupGate) -> None:
    """Withdrawal w1 first seen at T0 (pending, then processing 30 min later), w2 at T0+1h, deposit d1 at T0+10min."""
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.PENDING), now_ms=T0 * 1000)
    gate.mark(_event(Direction.DEPOSIT, "d1", Status.PENDING), now_ms=(T0 + 600) * 1000)
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.PROCESSING), now_ms=(T0 + 1800) * 1000)
    gate.mark(_event(Direction.WITHDRAWAL, "w2", Status.PENDING), now_ms=(T0 + HOUR) * 1000)


def test_open_transfers_count_and_age_from_their_first_seen_time_and_turn_stuck_past_the_threshold() -> None:
    gate = DedupGate(MemoryStore())
    _lifecycle(gate)
    at = T0 + 2 * HOUR + 60
    assert _by_kind(gate.open_transfers.summary(at, STUCK.threshold_seconds)) == {
        "okx.deposit": (1, 2 * HOUR + 60 - 600, 0),  # 6 h threshold for deposits
        "okx.withdrawal": (2, 2 * HOUR + 60, 1),  # w1 is past 2 h (a later state does not reset it), w2 is not
    }
    shorter = StuckSettings(overrides={"okx.deposit": 1})
    assert _by_kind(gate.open_transfers.summary(at, shorter.threshold_seconds))["okx.deposit"][2] == 1


def test_a_final_state_closes_the_transfer_and_a_stale_state_cannot_reopen_it() -> None:
    gate = DedupGate(MemoryStore())
    _lifecycle(gate)
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.COMPLETED, 3), now_ms=(T0 + 2 * HOUR) * 1000)
    at = T0 + 3 * HOUR + 60
    assert _by_kind(gate.open_transfers.summary(at, STUCK.threshold_seconds))["okx.withdrawal"] == (1, 2 * HOUR + 60, 1)
    assert gate.check(_event(Direction.WITHDRAWAL, "w1", Status.PENDING, 9)) is Decision.STALE
    assert gate.check(_event(Direction.WITHDRAWAL, "w1", Status.PROCESSING)) is Decision.DUPLICATE
    gate.mark(_event(Direction.WITHDRAWAL, "w2", Status.FAILED, 1), now_ms=at * 1000)
    gate.mark(_event(Direction.DEPOSIT, "d1", Status.COMPLETED, 1), now_ms=at * 1000)
    assert _by_kind(gate.open_transfers.summary(at, STUCK.threshold_seconds)) == {
        "okx.deposit": (0, 0.0, 0),
        "okx.withdrawal": (0, 0.0, 0),
    }


async def test_a_transfer_open_longer_than_the_retention_is_dropped_from_tracking() -> None:
    gate = DedupGate(MemoryStore(), retention_seconds=24 * HOUR)
    _lifecycle(gate)
    await gate.expire(now_ms=(T0 + 24 * HOUR + 1800) * 1000)  # w1 and d1 first seen over a day ago
    rows = _by_kind(gate.open_transfers.summary(T0 + 25 * HOUR, STUCK.threshold_seconds))
    assert rows["okx.withdrawal"][0] == 1 and rows["okx.deposit"][0] == 0
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.COMPLETED, 3), now_ms=(T0 + 25 * HOUR) * 1000)
    assert _by_kind(gate.open_transfers.summary(T0 + 25 * HOUR, STUCK.threshold_seconds))["okx.withdrawal"][0] == 1


async def test_open_transfers_and_their_first_seen_times_are_restored_from_the_sqlite_store(tmp_path: Path) -> None:
    gate = DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3"), retention_seconds=10 * 365 * 86400)
    await gate.open()
    _lifecycle(gate)
    at = T0 + 2 * HOUR + 60
    before = _by_kind(gate.open_transfers.summary(at, STUCK.threshold_seconds))
    await gate.close()

    reopened = DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3"), retention_seconds=10 * 365 * 86400)
    await reopened.open()
    try:
        assert _by_kind(reopened.open_transfers.summary(at, STUCK.threshold_seconds)) == before
        assert before["okx.withdrawal"] == (2, 2 * HOUR + 60, 1)
        assert reopened.check(_event(Direction.WITHDRAWAL, "w1", Status.PROCESSING)) is Decision.DUPLICATE
    finally:
        await reopened.close()


def test_the_later_of_two_states_wins_when_a_final_one_is_shorter_than_an_open_one() -> None:
    gate = DedupGate(MemoryStore())
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.PENDING), now_ms=T0 * 1000)
    [opened] = gate._index.values()
    gate.mark(_event(Direction.WITHDRAWAL, "w1", Status.COMPLETED, 1), now_ms=(T0 + 60) * 1000)
    [final] = gate._index.values()
    assert len(final) == len(opened)  # one id more, the tracking block less
    assert newer(opened, final) == final and newer(final, opened) == final


@pytest.mark.kafka
async def test_open_transfers_are_restored_from_the_kafka_state_topic(kafka_settings: KafkaSettings, topics: TopicSettings) -> None:
    suffix = uuid.uuid4().hex[:10]
    dedup = DedupSettings(store="kafka", state_topic=f"t.{suffix}.state", transactional_id=f"bridge-{suffix}")
    first = build_pipeline(kafka_settings, topics, dedup)
    await first.start()
    try:
        outcomes = await first.submit_all(
            [
                _event(Direction.WITHDRAWAL, "k1", Status.PENDING),
                _event(Direction.WITHDRAWAL, "k2", Status.PENDING),
                _event(Direction.WITHDRAWAL, "k2", Status.COMPLETED, 2),
                _event(Direction.DEPOSIT, "k3", Status.PENDING),
            ]
        )
        assert outcomes == [Outcome.PUBLISHED] * 4
    finally:
        await first.close()
    later = time.time() + 3 * HOUR
    second = build_pipeline(kafka_settings, topics, dedup)
    await second.start()
    try:
        rows = _by_kind(second.gate.open_transfers.summary(later, STUCK.threshold_seconds))
        assert {kind: (n, stuck) for kind, (n, _, stuck) in rows.items()} == {"okx.withdrawal": (1, 1), "okx.deposit": (1, 0)}
        assert 3 * HOUR <= rows["okx.withdrawal"][1] <= 3 * HOUR + 120
    finally:
        await second.close()


def test_the_gauges_show_open_oldest_and_stuck_per_provider_and_direction() -> None:
    gate = DedupGate(MemoryStore())
    _lifecycle(gate)
    publish_open_transfers(gate.open_transfers, STUCK, T0 + 2 * HOUR + 60)
    labels = {"provider": "okx", "direction": "withdrawal"}
    assert REGISTRY.get_sample_value("bridge_open_transfers", labels) == 2
    assert REGISTRY.get_sample_value("bridge_oldest_open_transfer_age_seconds", labels) == 2 * HOUR + 60
    assert REGISTRY.get_sample_value("bridge_stuck_transfers", labels) == 1
    assert REGISTRY.get_sample_value("bridge_stuck_threshold_seconds", labels) == 2 * HOUR
    assert REGISTRY.get_sample_value("bridge_stuck_threshold_seconds", {"provider": "okx", "direction": "deposit"}) == 6 * HOUR

