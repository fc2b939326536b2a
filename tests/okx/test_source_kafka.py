"""End to end: OKX simulator → OKX source → pipeline → real Kafka, read back like a consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.sources.okx.service import WS_DLQ_CHANNEL, OkxAccountSource, build_okx_sources
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from bridge_testkit.okx.scenario import compare, run_scenario, scenario_config, settle
from bridge_testkit.okx.simulator import OkxSimulator, SimTransfer
from tests.conftest import PipelineFactory
from tests.support import fixture_bytes

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sim() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=5.0) as simulator:
        yield simulator


@contextlib.asynccontextmanager
async def running(sources: list[OkxAccountSource]) -> AsyncIterator[list[OkxAccountSource]]:
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


async def settled(sources: list[OkxAccountSource], pipeline: Pipeline) -> None:
    await settle(sources, pipeline, quiet=0.25, timeout=15)


async def events(bootstrap: str, topics: TopicSettings, *, deposits: int = 0, withdrawals: int = 0) -> list[ConsumedRecord]:
    """Both event topics, each until its expected count arrived (that nothing more was published
    is checked on the sources' outcomes, which are Kafka acks)."""
    records = await read_topic(bootstrap, topics.deposit, expect=deposits, timeout=10) if deposits else []
    return records + (await read_topic(bootstrap, topics.withdrawal, expect=withdrawals, timeout=10) if withdrawals else [])


def expected(truth: dict[str, list[Any]]) -> dict[str, int]:
    """Per topic, how many states the simulator generated."""
    deposits = sum(len(states) for key, states in truth.items() if key.startswith("okx:deposit:"))
    return {"deposits": deposits, "withdrawals": sum(map(len, truth.values())) - deposits}


def values(records: list[ConsumedRecord]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


def sources_for(sim: OkxSimulator, pipeline: Pipeline, *names: str, **overrides: Any) -> list[OkxAccountSource]:
    overrides.setdefault("accounts", [sim.accounts[name].okx_account() for name in names])
    return build_okx_sources(scenario_config(sim, **overrides), pipeline)


async def test_every_state_of_scripted_lifecycles_arrives_once_and_in_order_per_key(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main")) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create(script, "main") for script in ("deposit", "deposit-suspended", "deposit-internal", "withdrawal", "withdrawal-failed", "withdrawal-cancelled", "withdrawal-internal", "withdrawal-memo")]
        await sim.run_lifecycles(transfers, repeat_every=3, timeout=20)
        await settled(sources, pipeline)
    truth = sim.truth()
    records = await events(kafka_bootstrap, topics, **expected(truth))
    assert compare(truth, records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}
    assert len(records) == sum(map(len, truth.values()))
    by_key: dict[str, set[int]] = {}
    for record in records:
        by_key.setdefault(record.key.decode(), set()).add(record.partition)  # type: ignore[union-attr]
    assert all(len(partitions) == 1 for partitions in by_key.values())


async def test_identical_repeated_pushes_are_published_once(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        transfer = sim.create("withdrawal", "main")
        await sim.advance(transfer)
        for _ in range(4):
            await sim.push_again(transfer)
        await settled(sources, pipeline)
    assert sources[0].stats["push.published"] == 1 and sources[0].stats["push.duplicate"] == 4
    [record] = await events(kafka_bootstrap, topics, withdrawals=1)
    assert json.loads(record.value)["provider_status"] == "17"


async def advance_while_down(sim: OkxSimulator, transfers: list[SimTransfer]) -> None:
    sim.drop("main")  # the account's connection is gone from this moment
    for transfer in transfers:
        await sim.advance(transfer)
    assert all(not t.observed for t in transfers)


async def test_states_that_changed_while_the_connection_was_down_arrive_through_backfill(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_interval=60)) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create("withdrawal", "main"), sim.create("deposit", "main")]
        for transfer in transfers:
            await sim.advance(transfer)
        await advance_while_down(sim, transfers)
        await eventually(lambda: all(t.observed for t in transfers), what="backfill served the offline states")
        await settled(sources, pipeline)
    records = values(await events(kafka_bootstrap, topics, **expected(sim.truth())))
    withdrawal, deposit = (t.transfer_id for t in transfers)
    assert {(r["transfer_id"], r["provider_status"], r["confirmations"], r["source"]["via"]) for r in records} == {
        (withdrawal, "17", None, "push"),
        (withdrawal, "0", None, "backfill"),
        (deposit, "0", 0, "push"),
        (deposit, "0", 6, "backfill"),
    }
    assert all(r["account"]["id"] == sim.accounts["main"].uid for r in records)
    assert sources[0].stats["reconnect.closed"] == 1


async def test_rest_only_states_arrive_through_the_interval_backfill(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_interval=0.3)) as sources:
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
    async with running(sources_for(sim, pipeline, "main")) as sources:
        await sim.wait_subscribed("main")
        transfer = sim.create("deposit", "sub1")
        await sim.advance(transfer)
        await settled(sources, pipeline)
    assert sources[0].stats["push.published"] == 1
    [record] = values(await events(kafka_bootstrap, topics, deposits=1))
    assert record["account"] == {"id": sim.accounts["sub1"].uid, "sub_account": "sub-one", "workspace_id": None}


async def test_a_wrong_secret_is_a_clear_configuration_error_retried_at_a_bounded_rate_while_other_accounts_flow(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = await make_pipeline()
    accounts = [sim.accounts["main"].okx_account(secret_key="not-the-secret"), sim.accounts["sub1"].okx_account()]
    caplog.set_level(logging.INFO)
    async with running(sources_for(sim, pipeline, accounts=accounts, config_error_retry=0.3)) as sources:
        broken, healthy = sources
        await sim.wait_subscribed("sub1")
        transfer = sim.create("withdrawal-cancelled", "sub1")
        window_start = time.monotonic()
        await sim.run_lifecycles([transfer], timeout=10)
        await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - window_start)))
        attempts = [at for at in sim.attempts("main") if at >= window_start]
        elapsed = time.monotonic() - window_start
        await settled([healthy], pipeline)
        snapshot = broken.health.snapshot(grace_seconds=0)
    assert 2 <= len(attempts) <= elapsed / 0.27 + 1  # paced by config_error_retry (±10 % jitter), never a tight loop
    assert snapshot["config_error"] is True and snapshot["ready"] is False
    assert "'main'" in snapshot["last_error"] and "60007" in snapshot["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("bridge.sources.okx")]
    assert any("'main'" in line and "invalid sign" in line and "retrying" in line for line in errors)
    assert healthy.health.snapshot(grace_seconds=0)["ready"] is True
    assert len(await events(kafka_bootstrap, topics, withdrawals=4)) == 4  # the sub-account's lifecycle went through


async def test_no_secret_passphrase_or_signature_appears_in_any_log_line(
    sim: OkxSimulator, make_pipeline: PipelineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pipeline = await make_pipeline()
    accounts = [sim.accounts["main"].okx_account(), sim.accounts["sub1"].okx_account(passphrase="Xq7#wr0ng!pZ-91")]
    async with running(sources_for(sim, pipeline, accounts=accounts, config_error_retry=0.2, backfill_interval=0.3)) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create("withdrawal", "main"), sim.create("deposit", "main")]
        await sim.run_lifecycles(transfers, drop_every=4, timeout=20)
        await eventually(lambda: sources[1].stats["config_errors"] >= 2, what="the broken account retried")
        await settled(sources, pipeline)
    assert sim.signatures_seen, "no signatures were exchanged"
    secrets = {a.secret_key for a in sim.accounts.values()} | {a.passphrase for a in sim.accounts.values()}
    secrets |= {a.api_key for a in sim.accounts.values()} | {"Xq7#wr0ng!pZ-91"} | sim.signatures_seen
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert len(caplog.records) > 20
    # any 10 characters in a row: truncated frame dumps leak a prefix or a suffix, not the whole
    leaked = {secret for secret in secrets for i in range(len(secret) - 9) if secret[i : i + 10] in text}
    assert leaked == set()


async def test_a_frame_that_is_not_json_goes_to_the_dlq_with_its_bytes_and_the_stream_goes_on(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        await sim.send_raw('{"arg": {"channel": "deposit-info"}, "data": [')
        await sim.advance(sim.create("deposit", "main"))
        await settled(sources, pipeline)
    [letter] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert letter.value == b'{"arg": {"channel": "deposit-info"}, "data": ['
    assert letter.headers["dlq_channel"] == WS_DLQ_CHANNEL.encode() and b"not JSON" in letter.headers["dlq_reason"]
    assert len(await events(kafka_bootstrap, topics, deposits=1)) == 1


async def test_a_malformed_item_is_dead_lettered_while_the_rest_of_its_push_is_published(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    message = json.loads(fixture_bytes("okx/deposit-info.push.json"))
    good = message["data"][0]
    message["data"] = [good, {**good, "depId": "88165463", "amt": "1,5"}, {**good, "depId": "88165464", "amt": 0.1}]
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
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
        async with running(sources_for(sim, pipeline, "main", ping_interval=0.2, backfill_enabled=False)) as sources:
            await eventually(lambda: sources[0].stats["reconnect.keepalive"] >= 2, timeout=5, what="keepalive reconnects")
            await sim.wait_subscribed("main")
            await sim.advance(sim.create("deposit", "main"))
            await settled(sources, pipeline)
        assert len(await events(kafka_bootstrap, topics, deposits=1)) == 1


async def test_a_notice_hands_over_to_a_new_connection_without_losing_or_reordering_pushes(
    sim: OkxSimulator, make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False)) as sources:
        await sim.wait_subscribed("main")
        transfers = [sim.create("withdrawal", "main") for _ in range(20)]
        await sim.run_lifecycles(transfers, notice_every=25, drop_accounts=["main"], min_step_interval=0, timeout=20)
        await settled(sources, pipeline)
    truth = sim.truth()
    records = await events(kafka_bootstrap, topics, **expected(truth))
    assert compare(truth, records) == {"lost": 0, "out_of_order": 0, "duplicated": 0}
    assert sim.stats["notices"] >= 3 and sources[0].stats["reconnect.notice"] >= 1
    assert sources[0].stats["backfill.published"] == 0  # no gap: nothing needed the history


@pytest.mark.parametrize("venue", ["notice_on_subscribe", "close_on_subscribe"])
async def test_a_venue_that_hangs_up_right_after_every_open_is_retried_at_the_backoff_pace_not_in_a_tight_loop(
    sim: OkxSimulator, make_pipeline: PipelineFactory, venue: str
) -> None:
    setattr(sim, venue, True)
    pipeline = await make_pipeline()
    async with running(sources_for(sim, pipeline, "main", backfill_enabled=False, reconnect_initial=0.05, min_uptime=1.0)) as sources:
        await eventually(lambda: sim.stats["logins"] >= 1, what="a first login")
        started = time.monotonic()
        await asyncio.sleep(1.5)
        attempts = len([at for at in sim.attempts("main") if at >= started])
    assert 1 <= attempts <= 8  # 0.05 s doubling: at most ~7 in 1.5 s; a tight loop makes hundreds
    assert sources[0].stats["reconnect.notice" if venue == "notice_on_subscribe" else "reconnect.closed"] >= 1


async def test_a_run_with_forced_disconnects_loses_nothing(kafka_bootstrap: str) -> None:
    report = await run_scenario(bootstrap=kafka_bootstrap, transfers=200, drop_every=60, notice_every=250, timeout=60)
    assert (report.lost, report.out_of_order, report.duplicated_in_kafka, report.dead_lettered) == (0, 0, 0, 0)
    assert report.published == report.acked == report.states
    assert report.drops >= 2 and report.backfilled > 0 and report.deduplicated > 0
