"""The Binance source against the simulator and a real broker: what is Binance's own — signed polling
with HMAC and Ed25519 keys, server time, master/sub-account reads, the open-transfer re-query, paging
and a page that is not JSON. Weights and rate limits are in ``test_limits``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bridge.delivery.settings import TopicSettings
from bridge.sources.binance import messages as m
from bridge.sources.binance.config import DAY
from bridge.sources.binance.service import BinanceAccountSource, build_binance_sources
from bridge_testkit.binance.support import compare, config, fast_simulator, settle
from bridge_testkit.conformance import eventually
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory

pytestmark = pytest.mark.kafka


@contextlib.asynccontextmanager
async def running(sources: Sequence[BinanceAccountSource]) -> AsyncIterator[Sequence[BinanceAccountSource]]:
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    try:
        yield sources
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results  # only cancelling ends a poll source


async def _records(bootstrap: str, topics: TopicSettings, expect: int) -> list[Any]:
    deposits = await read_topic(bootstrap, topics.deposit, idle=0.5, timeout=10)
    withdrawals = await read_topic(bootstrap, topics.withdrawal, idle=0.5, timeout=10)
    records = deposits + withdrawals
    assert len(records) >= expect
    return records


async def test_every_state_of_every_lifecycle_is_published_once_in_order_with_hmac_and_ed25519_keys(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator(skew_ms=-2500) as sim:  # the server clock 2.5 s behind ours: -1021 unless learnt
        sources = build_binance_sources(config(sim, cursor_dir=tmp_path), pipeline)
        assert {s.signer.key_type for s in sources} == {"hmac", "ed25519"}
        transfers = sim.create_many(30)
        async with running(sources):
            await sim.run_lifecycles(transfers, timeout=60)
            await settle(sources, pipeline)
        truth = sim.truth()
    states = sum(len(h) for h in truth.values())
    verdict = compare(truth, await _records(kafka_bootstrap, topics, states))
    assert verdict == {"lost": 0, "lost_finals": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0}
    assert sim.stats["timestamp_rejected"] == 0 and sim.stats["error -1022"] == 0
    assert all(-3000 < (s._rest.offset_ms or 0) < -2000 for s in sources)  # type: ignore[union-attr]


async def test_after_a_1021_the_offset_is_learnt_again_and_the_request_retried_once(make_pipeline: PipelineFactory, tmp_path: Path) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        source = build_binance_sources(config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path), pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats["polls"] >= 2, what="first polls")
            sim.skew_ms = 30_000  # the server's clock jumps: our timestamps are now 30 s old
            polls = source.stats["polls"]
            await eventually(lambda: source.stats["polls"] >= polls + 2, what="polls after the jump")
        rest = source._rest
        assert rest is not None and rest.time_syncs >= 2 and 29_000 < (rest.offset_ms or 0) < 31_000
    assert sim.stats["timestamp_rejected"] >= 1 and source.stats["config_errors"] == 0


async def test_refused_credentials_are_a_configuration_error_and_no_secret_reaches_a_log(
    make_pipeline: PipelineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        main, other = sim.accounts["main"], sim.accounts["other"]
        accounts = [main.entry(secret_key="WrongSecretButWellFormed0123456789abcdef", lookup_uid=False), other.entry(lookup_uid=False)]
        wrong, healthy = build_binance_sources(config(sim, accounts, cursor_dir=tmp_path), pipeline)
        async with running([wrong, healthy]):
            await eventually(lambda: wrong.stats["config_errors"] >= 2 and healthy.stats["polls"] >= 2, what="refusals and polls")
    assert wrong.health.config_error and "-1022" in (wrong.health.last_error or "")
    attempts = sim.attempts("main")
    assert all(b - a >= 0.4 for a, b in zip(attempts, attempts[1:], strict=False))  # config_error_retry 0.5 s (±10 %)
    text = caplog.text + json.dumps(wrong.health.snapshot(0), default=str)
    for secret in (main.api_key, main.secret, other.api_key, other.secret, "WrongSecretButWellFormed"):
        assert secret not in text


async def test_the_master_reads_a_sub_accounts_deposits_through_subhisrec(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        master = sim.accounts["main"].entry(lookup_uid=True, mode="master_subhisrec", sub_account_emails="sub1@sim.example")
        source = build_binance_sources(config(sim, [master], cursor_dir=tmp_path, subhisrec_page_limit=2), pipeline)[0]
        transfers = [sim.create("deposit", "sub1") for _ in range(3)]
        async with running([source]):
            await sim.run_lifecycles(transfers, timeout=30)
            await settle([source], pipeline)
    records = await read_topic(kafka_bootstrap, topics.deposit, idle=0.5, timeout=10)
    values = [json.loads(r.value) for r in records]
    assert len(values) == sum(len(t.history) for t in transfers)
    assert {(v["account"]["id"], v["account"]["sub_account"], v["source"]["channel"]) for v in values} == {
        (str(sim.accounts["main"].uid), "sub1@sim.example", "capital/deposit/subHisrec")
    }
    first_sweep = [q for _, path, q in sim.queries if path == m.SUB_DEPOSIT_PATH][:2]
    assert [(q["email"], q["offset"], q["limit"]) for q in first_sweep] == [("sub1@sim.example", "0", "2"), ("sub1@sim.example", "2", "2")]


@pytest.mark.parametrize("by", ["txId", "window"])
async def test_an_open_transfer_older_than_the_hot_window_is_requeried_by_id_until_final_across_a_restart(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path, by: str
) -> None:
    """Withdrawals by idList; deposits by txId, or (more open deposits than requery_txid_max) by
    one window over their creation times."""
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        cfg = config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path, lookback_days=1.0 / DAY, poll_overlap=0,
                     requery_txid_max=10 if by == "txId" else 0)
        withdrawal, deposit = sim.create("withdrawal-memo", "main"), sim.create("deposit-user-confirm", "main")
        source = build_binance_sources(cfg, pipeline)[0]
        async with running([source]):
            await eventually(lambda: withdrawal.observed and deposit.observed, what="first sight")
            await asyncio.sleep(1.2)  # both are now older than the one-second hot window
        sim.advance(withdrawal)
        sim.advance(deposit)
        restarted = build_binance_sources(cfg, pipeline)[0]  # a new process: the open set comes from its file
        assert len(restarted.open) == 2
        async with running([restarted]):
            await sim.run_lifecycles([withdrawal, deposit], timeout=20)
            await settle([restarted], pipeline)
            await eventually(lambda: len(restarted.open) == 0, what="both forgotten once final")
    records = await _records(kafka_bootstrap, topics, 6)
    assert compare(sim.truth(), records) == {"lost": 0, "lost_finals": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0}
    asked = [q for _, _, q in sim.queries]
    assert {"idList": withdrawal.transfer_id} in [{k: v for k, v in q.items() if k == "idList"} for q in asked]
    if by == "txId":
        assert any(q.get("txId") == deposit.row["txId"] for q in asked)
    else:
        created = str(deposit.created_ms)
        assert {"startTime": created, "endTime": created} in [{k: q.get(k) for k in ("startTime", "endTime")} for q in asked]
    assert json.loads((tmp_path / "binance-main.open.json").read_text()) == {"open": []}


async def test_an_open_transfer_past_the_tracking_age_is_no_longer_requeried_and_is_counted(
    make_pipeline: PipelineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``tracker_max_age_days`` (90: Binance's window): a withdrawal still open after 91 days is
    dropped from the re-query (counted in stats and ``bridge_poll_tracking_expired``, logged with
    its key, gone from the file); one open for 10 days is still asked for by ``idList``."""
    pipeline = await make_pipeline()
    labels = {"provider": "binance", "account": "main", "reason": "age"}
    expired_before = REGISTRY.get_sample_value("bridge_poll_tracking_expired_total", labels) or 0.0
    async with fast_simulator() as sim:
        now = sim.now_ms()
        old = sim.create("withdrawal-memo", "main", created_ms=now - 91 * 86_400_000)
        recent = sim.create("withdrawal-memo", "main", created_ms=now - 10 * 86_400_000)
        entries = [{"key": t.key, "channel": m.WITHDRAWAL_CHANNEL, "transfer_id": t.transfer_id, "created_ms": t.created_ms,
                    "tx_id": None, "email": None} for t in (old, recent)]
        (tmp_path / "binance-main.open.json").write_text(json.dumps({"open": entries}))  # what an earlier process left
        source = build_binance_sources(config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path), pipeline)[0]
        assert len(source.open) == 2
        async with running([source]):
            await eventually(lambda: recent.observed and source.stats["polls"] >= 2, what="the re-query of the 10-day-old withdrawal")
    asked = {i for _, path, q in sim.queries if path == m.WITHDRAWAL_PATH and "idList" in q for i in q["idList"].split(",")}
    assert recent.transfer_id in asked and old.transfer_id not in asked
    assert source.stats["tracking_expired"] == 1 and not old.observed
    assert (REGISTRY.get_sample_value("bridge_poll_tracking_expired_total", labels) or 0.0) - expired_before == 1
    assert old.key in caplog.text
    kept = json.loads((tmp_path / "binance-main.open.json").read_text())["open"]
    assert [entry["key"] for entry in kept] == [recent.key]  # still open: asked for again next time


async def test_poll_localentity_reads_withdrawals_from_the_travel_rule_history_only_and_requeries_them_by_window(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    """``poll_localentity``: the key's withdrawals come from ``localentity/withdraw/history``
    (``withdrawalStatus`` rows), never from the capital history; one that leaves the hot window
    while open is found again by a window over its creation time (no ``idList`` there), across a
    restart."""
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        cfg = config(sim, [sim.accounts["main"].entry(lookup_uid=False, poll_localentity=True)], cursor_dir=tmp_path,
                     lookback_days=1.0 / DAY, poll_overlap=0)
        held, moving = sim.create("withdrawal-memo", "main"), sim.create("withdrawal", "main")
        source = build_binance_sources(cfg, pipeline)[0]
        async with running([source]):
            await eventually(lambda: held.observed, what="first sight")
            await asyncio.sleep(1.2)  # older than the one-second hot window now
            await sim.run_lifecycles([moving], timeout=20)
        sim.advance(held)
        restarted = build_binance_sources(cfg, pipeline)[0]
        assert {(e.key, e.channel) for e in restarted.open.entries()} >= {(held.key, m.LOCALENTITY_WITHDRAWAL_CHANNEL)}
        async with running([restarted]):
            await sim.run_lifecycles([held, moving], timeout=20)
            await settle([restarted], pipeline)
            await eventually(lambda: len(restarted.open) == 0, what="forgotten once final")
    records = await _records(kafka_bootstrap, topics, sum(len(t.history) for t in (held, moving)))
    assert compare(sim.truth(), records) == {"lost": 0, "lost_finals": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0}
    assert {json.loads(r.value)["source"]["channel"] for r in records} == {"localentity/withdraw/history"}
    paths = {path for _, path, _ in sim.queries}
    assert m.LOCALENTITY_WITHDRAWAL_PATH in paths and m.WITHDRAWAL_PATH not in paths
    second = held.created_ms // 1000 * 1000  # applyTime has whole seconds
    asked = [(q.get("startTime"), q.get("endTime")) for _, path, q in sim.queries if path == m.LOCALENTITY_WITHDRAWAL_PATH]
    assert (str(second - 1000), str(second + 1000)) in asked  # the re-query: around its creation time, not the hot window


async def test_offset_paging_reads_every_row_of_a_window_page_after_page(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        transfers = [sim.create("deposit-rejected", "other") for _ in range(5)]
        source = build_binance_sources(config(sim, [sim.accounts["other"].entry(lookup_uid=False, withdrawals=False)], cursor_dir=tmp_path, page_limit=2), pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats["polls"] >= 1, what="a poll")
        assert source.stats["rows"] >= 5 and all(t.observed for t in transfers)
    assert len(await read_topic(kafka_bootstrap, topics.deposit, expect=5, timeout=10)) == 5


async def test_an_answer_that_is_not_json_is_dead_lettered_whole_and_the_page_read_again(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        transfer = sim.create("deposit-rejected", "other")
        sim.fail("not_json", account="other")
        source = build_binance_sources(config(sim, [sim.accounts["other"].entry(lookup_uid=False, withdrawals=False)], cursor_dir=tmp_path), pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats["polls"] >= 1, what="a poll")
        assert transfer.observed
    dead = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1, timeout=10)
    assert dead[0].value.startswith(b'[{"id": "4011239999"') and b"not JSON" in dead[0].headers.get("dlq_reason", b"")
    assert len(await read_topic(kafka_bootstrap, topics.deposit, expect=1, timeout=10)) == 1
