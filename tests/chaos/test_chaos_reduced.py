"""The reduced chaos run ``make test`` executes: all five providers, both dedup modes, the bridge
and the broker SIGKILLed under load. One broker serves both modes (fresh topics per run) to keep
the suite short; ``make chaos`` is the full run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge_testkit.kafka_broker import LocalKafka
from tests.chaos.run import ChaosReport, run_chaos

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def chaos_broker() -> Iterator[LocalKafka]:
    """A broker of its own: the runs SIGKILL it, which must not disturb the other tests' broker."""
    with LocalKafka() as broker:
        yield broker


async def _reduced(mode: str, broker: LocalKafka) -> ChaosReport:
    report = await run_chaos(
        transfers=240, bridge_kills=2, broker_kills=1, mode=mode, seed=3, duration=15, timeout=300, broker=broker, settle_timeout=60
    )
    print(report.table())
    return report


@pytest.mark.parametrize("mode", ["embedded", "exactly-once"])
async def test_kill9_of_bridge_and_broker_loses_no_final_state_and_no_acknowledged_webhook(mode: str, chaos_broker: LocalKafka) -> None:
    report = await _reduced(mode, chaos_broker)
    assert report.faults["bridge_kill9"]["injected"] >= 1
    assert report.faults["broker_kill9"]["injected"] == 1
    assert report.faults["provider_drop"]["injected"] >= 1 and report.faults["upgrade_notice"]["injected"] >= 1
    assert report.faults["webhook_503"]["injected"] >= 1
    assert set(report.providers) == {"okx", "ripio", "openxswitch", "fireblocks", "binance"}
    assert all(figures.states > 0 for figures in report.providers.values())
    webhook = report.providers["openxswitch"]
    assert webhook.detail["acked_but_missing_in_kafka"] == 0
    assert webhook.lost == 0
    fireblocks = report.providers["fireblocks"]
    assert fireblocks.detail["never_delivered"] >= 1 and fireblocks.detail["late_deliveries"] >= 1
    assert fireblocks.detail["acked_but_missing_in_kafka"] == 0 and fireblocks.detail["given_up"] == 0
    assert fireblocks.lost_unexplained == 0
    assert fireblocks.older_after_newer == 0  # the ordering rule holds across the bridge's kill -9
    assert report.total.lost_final == 0
    assert report.total.lost_unexplained == 0
    assert report.total.unknown_records == 0
    # A state published twice must carry the same event_id, so consumers can drop the repeat.
    assert report.total.same_state_different_event_ids == 0
    if mode == "exactly-once":
        assert report.total.duplicates_by_event_id == 0
    assert report.failures == []
