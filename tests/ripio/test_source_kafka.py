"""End to end, what only Ripio does: simulator → Ripio source → pipeline → real Kafka.

What every provider must do (lifecycles once and in order, repeats, backfill after a drop, wrong
secrets, non-JSON frames, venues that hang up, secrets in logs, parser and backfill failures,
shutdown) is the conformance suite's (``tests/conformance``), run on the service shell for Ripio
too. Here: amounts as JSON numbers, message-id gaps and the interval backfill, listing paths the
server does not know, tickets refused on subscribe, malformed bodies and unknown statuses, the
keepalive, and the scripted scenario run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from bridge.contract.jsonutil import dumps
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.ripio.service import RipioAccountSource, build_ripio_sources
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.ripio.scenario import run_scenario
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.conftest import PipelineFactory
from tests.support import events, eventually, running_sources, settled, values

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[RipioSimulator]:
    async with RipioSimulator() as simulator:
        yield simulator


def sources_for(sim: RipioSimulator, pipeline: Pipeline, *names: str, **overrides: Any) -> list[RipioAccountSource]:
    overrides.setdefault("accounts", [sim.accounts[name].ripio_account() for name in names])
    return build_ripio_sources(sim.config(**overrides), pipeline)


async def test_amounts_sent_as_json_numbers_reach_kafka_with_every_digit(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    amounts = ["1234567890123456.78901234567891", "0.1", "0.300000000000000000000000000001"]
    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        for amount in amounts:
            await sim.advance(sim.create("deposit-fiat", "main", amount=amount))
        await settled(sources, pipeline)
    records = await events(kafka_bootstrap, topics, deposits=3)
    assert sorted(v["amount"] for v in values(records)) == sorted(amounts)
    for record, amount in ((r, json.loads(r.value)["amount"]) for r in records):
        assert f'"amount":{amount},'.encode() in record.value  # raw keeps the JSON number's digits


async def wait_first_pass(sources: Sequence[RipioAccountSource]) -> None:
    await eventually(lambda: all(s.stats["backfill_passes"] >= 1 for s in sources), what="the start-up backfill")


async def test_a_skipped_message_id_is_a_gap_that_triggers_a_backfill_which_fills_it(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main", backfill_interval=60)) as sources:
        await sim.wait_subscribed("main")
        await wait_first_pass(sources)
        lost, next_one = sim.create("deposit-crypto", "main"), sim.create("deposit-fiat", "main")
        sim.skip_next("deposit")
        await sim.advance(lost)
        assert not lost.observed
        await sim.advance(next_one)  # arrives with id 2: one id missing
        await eventually(lambda: lost.observed, what="the gap backfill served the lost message")
        await settled(sources, pipeline)
    source = sources[0]
    assert (source.stats["gaps"], source.stats["gap_ids"], source.stats["backfill_trigger.gap"]) == (1, 1, 1)
    assert source.health.detail["last_gap"] == {"topic": "deposit", "missing": 1, "before_id": 2}
    records = values(await events(kafka_bootstrap, topics, deposits=2))
    assert {(r["transfer_id"], r["source"]["via"]) for r in records} == {(lost.transfer_id, "backfill"), (next_one.transfer_id, "push")}
    row = next(r for r in records if r["source"]["via"] == "backfill")
    assert row["account"]["id"] == sim.accounts["main"].user_id  # learnt from the pushes: listings name no user


async def test_a_lost_last_message_that_no_later_id_reveals_arrives_through_the_interval_backfill(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running_sources(sources_for(sim, pipeline, "main", backfill_interval=0.4)) as sources:
        await sim.wait_subscribed("main")
        await wait_first_pass(sources)
        transfer = sim.create("withdrawal-failed", "main")
        await sim.advance(transfer)
        sim.skip_next("withdrawal")
        await sim.advance(transfer)  # nothing follows on this topic: no gap to see
        await eventually(lambda: transfer.observed, what="the interval backfill served the lost message")
        await settled(sources, pipeline)
    assert sources[0].stats["gaps"] == 0 and sources[0].stats["backfill_trigger.interval"] >= 1
    records = values(await events(kafka_bootstrap, topics, withdrawals=2))
    assert [(r["provider_status"], r["source"]["via"]) for r in records] == [("pending", "push"), ("failed", "backfill")]


async def test_a_listing_path_the_server_does_not_know_is_reported_while_the_stream_flows(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = await make_pipeline()
    caplog.set_level(logging.INFO)
    async with running_sources(sources_for(sim, pipeline, "main", withdrawals_path="/trade/withdrawal-list", config_error_retry=30)) as sources:
        await sim.wait_subscribed("main")
        await eventually(lambda: sources[0].stats["backfill_failures"] >= 1, what="a refused backfill")
        await sim.advance(sim.create("withdrawal-crypto", "main"))
        await settled(sources, pipeline)
    error = sources[0].health.detail["backfill_error"]
    assert "'main'" in error and "HTTP 404" in error and "/trade/withdrawal-list" in error
    assert any(r.levelno == logging.ERROR and "backfill refused" in r.getMessage() for r in caplog.records)
    assert sources[0].health.snapshot(grace_seconds=0)["ready"] is True  # the stream itself is fine
    assert len(await events(kafka_bootstrap, topics, withdrawals=1)) == 1


async def test_tickets_refused_on_subscribe_are_retried_with_backoff_then_reported_as_configuration_and_recover(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    sim.reject_tickets = True
    pipeline = await make_pipeline()
    options = dict(backfill_enabled=False, reconnect_initial=0.05, config_error_retry=0.3, ticket_rejections_before_config_error=3)
    async with running_sources(sources_for(sim, pipeline, "main", **options)) as sources:
        source = sources[0]
        started = time.monotonic()
        await eventually(lambda: source.stats["config_errors"] >= 1, what="a configuration error")
        snapshot = source.health.snapshot(grace_seconds=0)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        refused = [at for at, name, result in sim.subscribe_attempts if name == "main" and result != "ok"]
        elapsed = time.monotonic() - started
        assert 4 <= len(refused) <= 3 + elapsed / 0.27 + 1  # 3 with backoff (0.05 s doubling), then the 0.3 s configuration pace
        # every attempt used a fresh ticket (a ticket fetched after the last refusal belongs to the next attempt)
        assert len([at for at in sim.ticket_attempts("main") if at <= refused[-1]]) == len(refused)
        sim.reject_tickets = False
        await sim.wait_subscribed("main")
        await sim.advance(sim.create("deposit-fiat", "main"))
        await settled(sources, pipeline)
    assert snapshot["config_error"] is True and "subscription refused" in snapshot["last_error"] and "'main'" in snapshot["last_error"]
    assert source.stats["tickets_rejected"] == len(refused) and source.health.snapshot(grace_seconds=0)["ready"] is True
    assert len(await events(kafka_bootstrap, topics, deposits=1)) == 1


async def test_a_malformed_body_is_dead_lettered_with_its_reason_and_an_unknown_status_is_published(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    good = sim.create("deposit-crypto", "main")
    good.index = 0
    body = good.body()
    bad = {**body, "id": "BROKEN-1", "amount": "1,5"}
    odd = {**body, "id": "ODD-1", "status": "under_review"}
    async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        for number, item in enumerate((bad, odd), start=1):
            await sim.send_raw(dumps({"id": number, "topic": "deposit", "timestamp": 1673271591764, "body": item}).decode())
        await settled(sources, pipeline)
    assert (sources[0].stats["push.published"], sources[0].stats["push.dead_lettered"]) == (1, 1)
    [letter] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert json.loads(letter.value)["id"] == "BROKEN-1" and b"amount" in letter.headers["dlq_reason"]
    [event] = values(await events(kafka_bootstrap, topics, deposits=1))
    assert (event["transfer_id"], event["status"], event["provider_status"]) == ("ODD-1", "unknown", "under_review")


@pytest.mark.parametrize(("ping_interval", "reconnects"), [(0.1, False), (None, True)])
async def test_the_keepalive_holds_a_connection_the_server_would_drop_for_silence(
    make_pipeline: PipelineFactory, ping_interval: float | None, reconnects: bool
) -> None:
    async with RipioSimulator(idle_timeout=0.4) as sim:
        pipeline = await make_pipeline()
        async with running_sources(sources_for(sim, pipeline, "main", backfill_enabled=False, ping_interval=ping_interval)) as sources:
            await sim.wait_subscribed("main")
            await asyncio.sleep(1.2)
    assert (sim.stats["closed_idle"] > 0) is reconnects
    assert (sources[0].stats["reconnect.closed"] > 0) is reconnects


async def test_a_run_with_skipped_ids_and_dropped_connections_loses_nothing(kafka_bootstrap: str) -> None:
    report = await run_scenario(bootstrap=kafka_bootstrap, transfers=200, skip_every=15, drop_every=40, timeout=60)
    assert (report.lost, report.out_of_order, report.duplicated_in_kafka, report.dead_lettered) == (0, 0, 0, 0)
    assert report.published == report.acked == report.states
    assert report.skipped_ids >= 5 and report.gaps_detected >= 1 and report.drops >= 1
    assert report.backfilled > 0 and report.deduplicated > 0
