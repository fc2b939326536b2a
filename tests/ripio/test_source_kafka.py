"""End to end: Ripio simulator → Ripio source → pipeline → real Kafka, read back like a consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.contract.jsonutil import dumps
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.ripio.service import STREAM_DLQ_CHANNEL, RipioAccountSource, build_ripio_sources
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from bridge_testkit.ripio.scenario import compare, run_scenario, settle
from bridge_testkit.ripio.simulator import SCRIPTS, RipioSimulator
from tests.conftest import PipelineFactory

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[RipioSimulator]:
    async with RipioSimulator() as simulator:
        yield simulator


@contextlib.asynccontextmanager
async def running(sources: list[RipioAccountSource]) -> AsyncIterator[list[RipioAccountSource]]:
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    try:
        yield sources
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:  # a source must only ever end by being cancelled
            assert isinstance(result, asyncio.CancelledError), result


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


async def settled(sources: list[RipioAccountSource], pipeline: Pipeline) -> None:
    await settle(sources, pipeline, quiet=0.25, timeout=15)


async def events(bootstrap: str, topics: TopicSettings, *, deposits: int = 0, withdrawals: int = 0) -> list[ConsumedRecord]:
    """Both event topics, each until its expected count arrived (that nothing more was published
    is checked on the sources' outcomes, which are Kafka acks)."""
    records = await read_topic(bootstrap, topics.deposit, expect=deposits, timeout=10) if deposits else []
    return records + (await read_topic(bootstrap, topics.withdrawal, expect=withdrawals, timeout=10) if withdrawals else [])


def expected(truth: dict[str, list[Any]]) -> dict[str, int]:
    deposits = sum(len(states) for key, states in truth.items() if key.startswith("ripio:deposit:"))
    return {"deposits": deposits, "withdrawals": sum(map(len, truth.values())) - deposits}


def values(records: list[ConsumedRecord]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


def sources_for(sim: RipioSimulator, pipeline: Pipeline, *names: str, **overrides: Any) -> list[RipioAccountSource]:
    overrides.setdefault("accounts", [sim.accounts[name].ripio_account() for name in names])
    return build_ripio_sources(sim.config(**overrides), pipeline)


def published(sources: list[RipioAccountSource]) -> int:
    return sum(s.stats["push.published"] + s.stats["backfill.published"] for s in sources)


async def test_every_state_of_scripted_lifecycles_arrives_once_and_in_order_per_key(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main")) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create(script, "main") for script in SCRIPTS for _ in range(2)]
        await sim.run_lifecycles(transfers, repeat_every=3, timeout=20)
        await settled(sources, pipeline)
    truth = sim.truth()
    records = await events(kafka_bootstrap, topics, **expected(truth))
    assert compare(truth, records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}
    assert published(sources) == len(records) == sum(map(len, truth.values()))
    assert sources[0].stats["push.dead_lettered"] == 0  # welcome messages and pongs are not messages
    by_key: dict[str, set[int]] = {}
    for record in records:
        by_key.setdefault(record.key.decode(), set()).add(record.partition)  # type: ignore[union-attr]
    assert all(len(partitions) == 1 for partitions in by_key.values())
    fiat = [v for v in values(records) if v["direction"] == "deposit" and v["asset"] in ("BRL", "ARS")]
    assert fiat and all(v["internal"] is True and v["tx_hash"] is None and v["network"] is None for v in fiat)


async def test_identical_repeated_messages_are_published_once(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        transfer = sim.create("withdrawal-crypto", "main")
        await sim.advance(transfer)
        for _ in range(4):
            await sim.push_again(transfer)
        await settled(sources, pipeline)
    assert (sources[0].stats["push.published"], sources[0].stats["push.duplicate"]) == (1, 4)
    [record] = values(await events(kafka_bootstrap, topics, withdrawals=1))
    assert (record["provider_status"], record["status"], record["source"]["message_id"]) == ("pending", "pending", "1")


async def test_amounts_sent_as_json_numbers_reach_kafka_with_every_digit(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    amounts = ["1234567890123456.78901234567891", "0.1", "0.300000000000000000000000000001"]
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        for amount in amounts:
            await sim.advance(sim.create("deposit-fiat", "main", amount=amount))
        await settled(sources, pipeline)
    records = await events(kafka_bootstrap, topics, deposits=3)
    assert sorted(v["amount"] for v in values(records)) == sorted(amounts)
    for record, amount in ((r, json.loads(r.value)["amount"]) for r in records):
        assert f'"amount":{amount},'.encode() in record.value  # raw keeps the JSON number's digits


async def wait_first_pass(sources: list[RipioAccountSource]) -> None:
    await eventually(lambda: all(s.stats["backfill_passes"] >= 1 for s in sources), what="the start-up backfill")


async def test_a_skipped_message_id_is_a_gap_that_triggers_a_backfill_which_fills_it(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_interval=60)) as sources:
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
    async with running(sources_for(sim, pipeline, "main", backfill_interval=0.4)) as sources:
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
    async with running(sources_for(sim, pipeline, "main", withdrawals_path="/trade/withdrawal-list", config_error_retry=30)) as sources:
        await sim.wait_subscribed("main")
        await eventually(lambda: sources[0].stats["backfill_failures"] >= 1, what="a refused backfill")
        await sim.advance(sim.create("withdrawal-crypto", "main"))
        await settled(sources, pipeline)
    error = sources[0].health.detail["backfill_error"]
    assert "'main'" in error and "HTTP 404" in error and "/trade/withdrawal-list" in error
    assert any(r.levelno == logging.ERROR and "backfill refused" in r.getMessage() for r in caplog.records)
    assert sources[0].health.snapshot(grace_seconds=0)["ready"] is True  # the stream itself is fine
    assert len(await events(kafka_bootstrap, topics, withdrawals=1)) == 1


async def test_states_that_changed_while_the_connection_was_down_arrive_through_backfill(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_interval=60)) as sources:
        await sim.wait_subscribed("main")
        await wait_first_pass(sources)  # else its listing may carry the first states before their pushes
        transfers = [sim.create("withdrawal-crypto", "main"), sim.create("deposit-crypto-failed", "main")]
        for transfer in transfers:
            await sim.advance(transfer)
        sim.drop("main")
        for transfer in transfers:
            await sim.advance(transfer)
        assert all(not t.observed for t in transfers)
        await eventually(lambda: all(t.observed for t in transfers), what="the reconnect backfill served the offline states")
        await settled(sources, pipeline)
    records = values(await events(kafka_bootstrap, topics, **expected(sim.truth())))
    withdrawal, deposit = (t.transfer_id for t in transfers)
    assert {(r["transfer_id"], r["provider_status"], r["source"]["via"]) for r in records} == {
        (withdrawal, "pending", "push"),
        (withdrawal, "confirmed", "backfill"),
        (deposit, "pending", "push"),
        (deposit, "failed", "backfill"),
    }
    assert sources[0].stats["reconnect.closed"] == 1 and sources[0].stats["tickets"] == 2  # a fresh ticket per connection


async def test_a_wrong_secret_is_a_clear_configuration_error_retried_at_a_bounded_rate_while_other_accounts_flow(
    sim: RipioSimulator,
    make_pipeline: PipelineFactory,
    kafka_bootstrap: str,
    topics: TopicSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = await make_pipeline()
    accounts = [sim.accounts["main"].ripio_account(api_secret="not-the-secret"), sim.accounts["second"].ripio_account()]
    caplog.set_level(logging.INFO)
    async with running(sources_for(sim, pipeline, accounts=accounts, config_error_retry=0.3)) as sources:
        broken, healthy = sources
        await sim.wait_subscribed("second")
        transfer = sim.create("withdrawal-failed", "second")
        window_start = time.monotonic()
        await sim.run_lifecycles([transfer], timeout=10)
        await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - window_start)))
        attempts = [at for at in sim.ticket_attempts("main") if at >= window_start]
        elapsed = time.monotonic() - window_start
        await settled([healthy], pipeline)
        snapshot = broken.health.snapshot(grace_seconds=0)
    assert 2 <= len(attempts) <= elapsed / 0.27 + 1  # paced by config_error_retry (±10 % jitter), never a tight loop
    assert snapshot["config_error"] is True and snapshot["ready"] is False
    assert "'main'" in snapshot["last_error"] and "Invalid signature" in snapshot["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("bridge.sources.ripio")]
    assert any("'main'" in line and "ticket refused" in line and "retrying" in line for line in errors)
    assert healthy.health.snapshot(grace_seconds=0)["ready"] is True
    assert len(await events(kafka_bootstrap, topics, withdrawals=2)) == 2  # the other account's lifecycle went through


async def test_tickets_refused_on_subscribe_are_retried_with_backoff_then_reported_as_configuration_and_recover(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    sim.reject_tickets = True
    pipeline = await make_pipeline()
    options = dict(backfill_enabled=False, reconnect_initial=0.05, config_error_retry=0.3, ticket_rejections_before_config_error=3)
    async with running(sources_for(sim, pipeline, "main", **options)) as sources:
        source = sources[0]
        started = time.monotonic()
        await eventually(lambda: source.stats["config_errors"] >= 1, what="a configuration error")
        snapshot = source.health.snapshot(grace_seconds=0)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        refused = [at for at, name, result in sim.subscribe_attempts if name == "main" and result != "ok"]
        elapsed = time.monotonic() - started
        assert 4 <= len(refused) <= 3 + elapsed / 0.27 + 1  # 3 with backoff (0.05 s doubling), then the 0.3 s configuration pace
        assert len(sim.ticket_attempts("main")) == len(refused)  # every attempt used a fresh ticket
        sim.reject_tickets = False
        await sim.wait_subscribed("main")
        await sim.advance(sim.create("deposit-fiat", "main"))
        await settled(sources, pipeline)
    assert snapshot["config_error"] is True and "subscription refused" in snapshot["last_error"] and "'main'" in snapshot["last_error"]
    assert source.stats["tickets_rejected"] == len(refused) and source.health.snapshot(grace_seconds=0)["ready"] is True
    assert len(await events(kafka_bootstrap, topics, deposits=1)) == 1


async def test_no_token_secret_signature_or_ticket_appears_in_any_log_line(
    sim: RipioSimulator, make_pipeline: PipelineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pipeline = await make_pipeline()
    wrong = "Xq7wr0ngSecretpZ91abcdef"
    accounts = [sim.accounts["main"].ripio_account(), sim.accounts["second"].ripio_account(api_secret=wrong)]
    async with running(sources_for(sim, pipeline, accounts=accounts, config_error_retry=0.2, backfill_interval=0.3)) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create("withdrawal-crypto", "main"), sim.create("deposit-crypto", "main"), sim.create("deposit-fiat-pending", "main")]
        await sim.run_lifecycles(transfers, drop_every=2, skip_every=3, timeout=20)
        await eventually(lambda: sources[1].stats["config_errors"] >= 2, what="the broken account retried")
        await settled(sources, pipeline)
    assert sim.signatures_seen and sim.tickets_issued, "nothing was exchanged"
    secrets = {a.api_token for a in sim.accounts.values()} | {a.api_secret for a in sim.accounts.values()} | {wrong}
    secrets |= sim.signatures_seen | sim.tickets_issued
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert len(caplog.records) > 20
    # any 10 characters in a row: truncated frame dumps leak a prefix or a suffix, not the whole
    leaked = {secret for secret in secrets for i in range(len(secret) - 9) if secret[i : i + 10] in text}
    assert leaked == set()


async def test_a_frame_that_is_not_json_goes_to_the_dlq_with_its_bytes_and_the_stream_goes_on(
    sim: RipioSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        await sim.send_raw('{"id": 7, "topic": "deposit", "body": {')
        await sim.advance(sim.create("deposit-crypto", "main"))
        await settled(sources, pipeline)
    [letter] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert letter.value == b'{"id": 7, "topic": "deposit", "body": {'
    assert letter.headers["dlq_channel"] == STREAM_DLQ_CHANNEL.encode() and b"not JSON" in letter.headers["dlq_reason"]
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
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
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
        async with running(sources_for(sim, pipeline, "main", backfill_enabled=False, ping_interval=ping_interval)) as sources:
            await sim.wait_subscribed("main")
            await asyncio.sleep(1.2)
    assert (sim.stats["closed_idle"] > 0) is reconnects
    assert (sources[0].stats["reconnect.closed"] > 0) is reconnects


async def test_a_venue_that_hangs_up_right_after_every_subscription_is_retried_at_the_backoff_pace_not_in_a_tight_loop(
    sim: RipioSimulator, make_pipeline: PipelineFactory
) -> None:
    sim.close_on_subscribe = True
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False, reconnect_initial=0.05, min_uptime=1.0)) as sources:
        await eventually(lambda: sim.stats["subscribes"] >= 1, what="a first subscription")
        started = time.monotonic()
        await asyncio.sleep(1.5)
        attempts = len([at for at in sim.ticket_attempts("main") if at >= started])
    assert 1 <= attempts <= 8  # 0.05 s doubling: at most ~7 in 1.5 s; a tight loop makes hundreds
    assert sources[0].stats["reconnect.closed"] >= 1


async def test_a_run_with_skipped_ids_and_dropped_connections_loses_nothing(kafka_bootstrap: str) -> None:
    report = await run_scenario(bootstrap=kafka_bootstrap, transfers=200, skip_every=15, drop_every=40, timeout=60)
    assert (report.lost, report.out_of_order, report.duplicated_in_kafka, report.dead_lettered) == (0, 0, 0, 0)
    assert report.published == report.acked == report.states
    assert report.skipped_ids >= 5 and report.gaps_detected >= 1 and report.drops >= 1
    assert report.backfilled > 0 and report.deduplicated > 0
