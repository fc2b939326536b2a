"""The reduced cluster chaos run ``make test`` executes: 3 replica processes, every provider (OKX, Ripio,
Binance held by the slot owner; OpenXSwitch and Fireblocks webhooks on every replica), the owner
SIGKILLed and SIGSTOPped, a rolling restart, the broker SIGKILLed (``make chaos CLUSTER=1`` is the full run)."""

from __future__ import annotations

import pytest

from bridge_testkit.kafka_broker import LocalKafka
from tests.chaos.cluster import run_cluster

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_three_replicas_lose_no_final_state_of_any_provider_and_publish_nothing_twice_through_every_fault() -> None:
    with LocalKafka() as broker:  # its own: this run kills it
        report = await run_cluster(
            replicas=3,
            faults=["kill", "stop", "roll", "broker"],
            okx_transfers=40,
            webhook_transfers=24,
            duration=16,
            seed=7,
            broker=broker,
        )
    print(report.table())
    assert {name: f.injected for name, f in report.faults.items()} == {"kill": 1, "stop": 1, "roll": 1, "broker": 1}
    assert len(report.handovers) == 2, "the new owner published nothing after a kill or a stop"
    assert report.duplicates == 0
    assert set(report.streams) == {"okx", "ripio"} and all(f.states > 0 for f in report.streams.values())
    assert report.lost_final == 0
    assert report.webhook_acked_missing == 0
    fireblocks, binance = report.drivers["fireblocks"], report.drivers["binance"]
    assert fireblocks.states > 0 and binance.states > 0
    assert fireblocks.detail["acked_but_missing_in_kafka"] == 0 and fireblocks.older_after_newer == 0
    assert fireblocks.lost_final == 0 and binance.lost_final == 0
    assert report.failures == []
