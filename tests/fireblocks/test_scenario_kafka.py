"""A reduced Fireblocks scenario on a real broker: re-deliveries, neighbours out of order, lost
answers, deliveries that never arrive (closed by the REST backfill) and a restart mid-flight lose no
final state, publish no state twice, and never publish a key's states backwards, within one life or
across the restart."""

from __future__ import annotations

import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.fireblocks.scenario import run_scenario

pytestmark = pytest.mark.kafka


async def test_a_disorderly_run_with_drops_and_a_restart_loses_no_final_state_and_publishes_none_twice(
    kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    result = await run_scenario(kafka_settings, topics, transactions=120, restarts=1, drop_rate=0.05, seed=7)
    assert result.dropped > 0 and result.via["backfill"] > 0  # drops happened and the backfill closed them
    assert result.older_dropped > 0  # out-of-order deliveries happened and the older ones were not published
    assert result.finals_missing == [] and result.finals_expected >= result.transactions
    assert result.duplicates == 0
    assert result.backwards == 0
    assert result.backwards_across_restarts == 0
