"""End to end, what only OKX does: simulator → OKX source → pipeline → real Kafka.

What every provider must do (lifecycles once and in order, repeats, backfill after a drop, wrong
secrets, non-JSON frames, venues that hang up, secrets in logs, parser and backfill failures,
shutdown) is the conformance suite's (``tests/conformance``), run on the service shell for OKX
too. Here: states only the REST history shows, a master key receiving its sub-accounts' pushes, a
malformed item among good ones, a missing pong, notice 64008's make-before-break handover, and
the scripted scenario run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest

from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.okx.service import OkxAccountSource, build_okx_sources
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import compare, run_scenario, scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from tests.conftest import PipelineFactory
from tests.support import events, eventually, expected, fixture_bytes, running_sources, settled, values

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=5.0) as simulator:
        yield simulator


def sources_for(sim: OkxSimulator, pipeline: Pipeline, *names: str, **overrides: Any) -> list[OkxAccountSource]:
    overrides.setdefault("accounts", [sim.accounts[name].okx_account() for name in names])
    return build_okx_sources(scenario_config(sim, **overrides), pipeline)


async def test_rest_only_states_arrive_through_the_interval_backfill(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main", backfill_interval=0.3)) as sources:
        await sim.wait_subscribed("main")
        deposit, withdrawal = sim.create("deposit-travel-rule", "main"), sim.create("withdrawal-hot-wallet", "main")
        await sim.run_lifecycles([deposit, withdrawal], timeout=20)
        await settled(sources, pipeline)
    records = await events(kafka_bootstrap, topics, **expected(sim.truth()))
    rest_only = {(r["direction"], r["provider_status"], r["status"], r["source"]["via"]) for r in values(records) if r["provider_status"] in ("17", "19")}
    assert rest_only == {("deposit", "17", "pending", "backfill"), ("withdrawal", "19", "pending", "backfill")}
    assert compare(sim.truth(), records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}


async def test_a_master_account_publishes_its_sub_accounts_pushes_under_the_sub_account(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main")) as sources:
        await sim.wait_subscribed("main")
        transfer = sim.create("deposit", "sub1")
        await sim.advance(transfer)
        await settled(sources, pipeline)
    assert sources[0].stats["push.published"] == 1
    [record] = values(await events(kafka_bootstrap, topics, deposits=1))
    assert record["account"] == {"id": sim.accounts["sub1"].uid, "sub_account": "sub-one", "workspace_id": None}


async def test_a_malformed_item_is_dead_lettered_while_the_rest_of_its_push_is_published(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    message = json.loads(fixture_bytes("okx/deposit-info.push.json"))
    good = message["data"][0]
    message["data"] = [good, {**good, "depId": "88165463", "amt": "1,5"}, {**good, "depId": "88165464", "amt": 0.1}]
    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        await sim.send_raw(json.dumps(message))
        await settled(sources, pipeline)
    assert (sources[0].stats["push.published"], sources[0].stats["push.dead_lettered"]) == (2, 1)
    [letter] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert json.loads(letter.value)["depId"] == "88165463" and b"amt" in letter.headers["dlq_reason"]
    published = values(await events(kafka_bootstrap, topics, deposits=2))
    assert {(r["transfer_id"], r["amount"]) for r in published} == {("88165462", "1"), ("88165464", "0.1")}  # a JSON number, read exactly


async def test_a_missing_pong_makes_the_source_reconnect(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    async with OkxSimulator(answer_pings=False) as sim:
        pipeline = await make_pipeline()
        async with running_sources(sources_for(sim, pipeline, "main", ping_interval=0.2, backfill_enabled=False)) as sources:
            await eventually(lambda: sources[0].stats["reconnect.keepalive"] >= 2, timeout=5, what="keepalive reconnects")
            await sim.wait_subscribed("main")
            await sim.advance(sim.create("deposit", "main"))
            await settled(sources, pipeline)
        assert len(await events(kafka_bootstrap, topics, deposits=1)) == 1


async def test_a_notice_hands_over_to_a_new_connection_without_losing_or_reordering_pushes(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create("withdrawal", "main") for _ in range(20)]
        await sim.run_lifecycles(transfers, notice_every=25, drop_accounts=["main"], min_step_interval=0, timeout=20)
        await settled(sources, pipeline)
    truth = sim.truth()
    records = await events(kafka_bootstrap, topics, **expected(truth))
    assert compare(truth, records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}
    assert sim.stats["notices"] >= 3 and sources[0].stats["reconnect.notice"] >= 1
    assert sources[0].stats["backfill.published"] == 0  # no gap: nothing needed the history


async def test_an_idle_connection_runs_in_its_source_task_alone_before_and_after_a_handover(
    sim: OkxSimulator, make_pipeline: PipelineFactory
) -> None:
    """Reading stays in the source's own task; a notice starts the handover's task only for the
    handover (an idle connection costs no reader task and no waiter beside it)."""
    pipeline = await make_pipeline()
    before = asyncio.all_tasks()

    def ours() -> list[str]:
        names = (task.get_name() for task in asyncio.all_tasks() - before if not task.done())
        return sorted(name for name in names if name.startswith("okx:main"))  # the engine names its tasks after the source

    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False, reconnect_initial=0.01)) as sources:
        await sim.wait_subscribed("main")
        await eventually(lambda: sources[0].health.connected, what="connected")
        assert ours() == ["okx:main"]
        await sim.notice("main")
        await eventually(lambda: sources[0].stats["reconnect.notice"] == 1, what="the handover")
        await sim.wait_subscribed("main")
        await eventually(lambda: ours() == ["okx:main"], what="the handover task gone")
        assert sources[0].stats["connections"] == 2 and sources[0].health.connected


async def test_a_venue_that_sends_a_notice_right_after_every_subscription_is_retried_at_the_backoff_pace_not_in_a_tight_loop(
    sim: OkxSimulator, make_pipeline: PipelineFactory
) -> None:
    """Each notice opens a successor (make-before-break); the successor waits for the backoff,
    which only resets after ``min_uptime``, so the delays double."""
    sim.notice_on_subscribe = True
    initial = 0.05
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False, reconnect_initial=initial, min_uptime=2.0)) as sources:
        await eventually(lambda: len(sim.attempts("main")) >= 5, what="five logins")
    gaps = [later - earlier for earlier, later in pairwise(sim.attempts("main")[:5])]
    assert all(gap >= 0.9 * initial * 2**n / 2 for n, gap in enumerate(gaps)), gaps  # jittered delays in [c/2, c], c doubling
    assert sources[0].stats["reconnect.notice"] >= 3


async def test_a_run_with_forced_disconnects_loses_nothing(kafka_bootstrap: str) -> None:
    report = await run_scenario(bootstrap=kafka_bootstrap, transfers=200, drop_every=60, notice_every=250, timeout=60)
    assert (report.lost, report.out_of_order, report.duplicated_in_kafka, report.dead_lettered) == (0, 0, 0, 0)
    assert report.published == report.acked == report.states
    assert report.drops >= 2 and report.backfilled > 0 and report.deduplicated > 0
