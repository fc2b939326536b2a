"""A reduced run of the Binance scenario (``bridge_testkit.binance.scenario``): rows changing between
polls, states no poll can see, transfers that end after leaving the hot window, restarts of the
sources, 429/418 answers and a clock jump — no final state lost, none published twice, in order."""

from __future__ import annotations

import pytest

from bridge_testkit.binance.scenario import run_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_a_reduced_scenario_loses_no_final_state_and_publishes_no_state_twice(kafka_bootstrap: str) -> None:
    report = await run_scenario(bootstrap=kafka_bootstrap, transfers=120, restart_every=4.0, rate_limit_every=60, timeout=120)
    assert (report.lost_finals, report.duplicated, report.out_of_order, report.unexpected_keys) == (0, 0, 0, 0), report.lines()
    assert report.lost_visible_states == 0 and report.dead_lettered == 0, report.lines()
    assert report.bans_earned == 0
    # the run did what it claims: every hazard happened at least once
    assert report.restarts >= 3 and report.rate_limit_answers >= 2 and report.timestamp_rejections >= 1
    assert report.answers_429 >= 1 and report.answers_418 >= 1
    assert report.held_past_window >= 1 and report.requeried >= report.held_past_window
    assert report.visible_states < report.states  # some states changed twice between two polls
    assert report.published == report.visible_states
