"""The reduced chaos run CI executes: bridge and broker killed with SIGKILL under load."""

from __future__ import annotations

import pytest

from tests.chaos.run import run_chaos

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.parametrize("mode", ["embedded", "exactly-once"])
async def test_kill9_of_bridge_and_broker_never_loses_the_current_state_of_a_transfer(mode: str) -> None:
    report = await run_chaos(transfers=150, bridge_kills=2, broker_kills=1, mode=mode, seed=3, timeout=300)
    print(report)
    assert report.faults["bridge_kill9"]["injected"] >= 1
    assert report.lost_final == 0
    if mode == "exactly-once":
        assert report.duplicates_by_event_id == 0
