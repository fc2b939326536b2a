"""Failover of real replica processes: kill -9 the slot owner under load, another takes over."""

from __future__ import annotations

import pytest

from tests.chaos.cluster import run_cluster

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_kill9_of_the_owner_hands_its_slot_over_without_loss_or_duplicate(kafka_bootstrap: str) -> None:
    report = await run_cluster(
        replicas=2, faults=["kill"], okx_transfers=30, webhook_transfers=16, duration=12, seed=11, bootstrap=kafka_bootstrap
    )
    print(report.table())
    assert report.faults["kill"].injected == 1
    assert len(report.faults["kill"].handover_seconds) == 1, "no event from the new owner after the kill"
    assert report.stream_states > 0 and report.webhook_acked > 0
    assert report.duplicates == 0
    assert report.lost_final == 0
    assert report.webhook_acked_missing == 0
    assert report.failures == []
