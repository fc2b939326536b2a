"""Binance's request limits: weights charged before sending and read back from the headers, the
UID budget of the withdrawal history (18000 a read) never passed, Retry-After obeyed after a 429,
nothing sent during a 418 ban — and never a ban earned."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bridge.sources.binance import messages as m
from bridge.sources.binance.limits import MARGIN_MS, Limits, RateLimited
from bridge.sources.binance.service import BinanceAccountSource, build_binance_sources
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import config, fast_simulator
from bridge_testkit.conformance import eventually
from tests.conftest import PipelineFactory

WITHDRAWALS = m.ENDPOINTS[m.WITHDRAWAL_PATH]
DEPOSITS = m.ENDPOINTS[m.DEPOSIT_PATH]
MINUTE = 60_000 * 29_000_000  # some whole minute, in ms


class Sleeps:
    """A fake ``asyncio.sleep`` that moves a fake clock (``now``) instead of waiting."""

    def __init__(self, now: int = 0) -> None:
        self.calls: list[float] = []
        self.now = now

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += int(seconds * 1000)

    def clock(self) -> int:
        return self.now


# -- the budgets on their own ------------------------------------------------------------------------


async def test_a_budget_holds_a_request_that_would_pass_the_headroom_until_the_next_minute() -> None:
    sleeps = Sleeps(MINUTE + 10_000)
    limits = Limits(uid_limit=180_000, headroom=0.8, max_wait=120, sleep=sleeps)
    for _ in range(8):  # 8 x 18000 = 144000 = 80 % of 180000
        await limits.acquire(WITHDRAWALS, "main", sleeps.clock)
    assert sleeps.calls == []
    await limits.acquire(WITHDRAWALS, "main", sleeps.clock)
    assert sleeps.calls == [pytest.approx((60_000 - 10_000 + MARGIN_MS) / 1000)]
    assert limits.budget(WITHDRAWALS, "main").used == 18_000  # the next minute's budget


async def test_a_wait_longer_than_allowed_raises_without_sleeping_or_charging() -> None:
    sleeps = Sleeps()
    limits = Limits(uid_limit=18_000, headroom=1.0, max_wait=5, sleep=sleeps)
    await limits.acquire(WITHDRAWALS, "main", lambda: MINUTE)
    with pytest.raises(RateLimited, match="budget until"):
        await limits.acquire(WITHDRAWALS, "main", lambda: MINUTE + 1)
    assert sleeps.calls == [] and limits.spent[("main", "uid")] == 18_000


async def test_uid_budgets_are_per_account_and_ip_budgets_shared_by_every_account() -> None:
    limits = Limits(ip_limit=10, uid_limit=18_000, headroom=1.0, max_wait=0.001, sleep=Sleeps())
    await limits.acquire(WITHDRAWALS, "a", lambda: MINUTE)
    await limits.acquire(WITHDRAWALS, "b", lambda: MINUTE)  # b's own UID budget
    for account in "ababababab":
        await limits.acquire(DEPOSITS, account, lambda: MINUTE)
    with pytest.raises(RateLimited):
        await limits.acquire(DEPOSITS, "c", lambda: MINUTE)  # the IP's 10 are spent, whoever asks


def test_the_reported_use_is_believed_when_higher_other_processes_share_the_ip() -> None:
    limits = Limits(ip_limit=12_000)
    seen = limits.observe(DEPOSITS, "main", {"X-SAPI-USED-IP-WEIGHT-1M": "11990", "X-SAPI-USED-UID-WEIGHT-1S": "3"}, MINUTE)
    assert seen == {"ip-1m": 11_990, "uid-1s": 3}
    assert limits.wait_ms(DEPOSITS, "main", MINUTE + 1) > 0  # 11990 + 1 > 80 % of 12000
    limits.observe(DEPOSITS, "main", {"X-SAPI-USED-IP-WEIGHT-1M": "1"}, MINUTE + 2)
    assert limits.budget(DEPOSITS, "main").used == 11_990  # a lower report never lowers ours


def test_a_429_blocks_its_budget_and_a_418_every_budget_for_retry_after_plus_a_margin() -> None:
    limits = Limits()
    limits.rate_limited(DEPOSITS, "main", 3.0, MINUTE, ban=False)
    assert limits.wait_ms(DEPOSITS, "other", MINUTE) == 3_000 + MARGIN_MS  # the IP budget: every account
    assert limits.wait_ms(WITHDRAWALS, "main", MINUTE) == 0
    limits.rate_limited(DEPOSITS, "main", 10.0, MINUTE, ban=True)
    assert limits.wait_ms(WITHDRAWALS, "other", MINUTE) == 10_000 + MARGIN_MS


def test_weight_headers_of_every_documented_spelling_are_read() -> None:
    headers = {"x-sapi-used-uid-weight-1m": "36000", "X-SAPI-USED-IP-WEIGHT-1S": "18000", "X-MBX-USED-WEIGHT-1M": "21", "X-Other": "9"}
    assert {(h.scope, h.interval, h.used) for h in m.weight_headers(headers)} == {("uid", "1m", 36_000), ("ip", "1s", 18_000), ("api", "1m", 21)}


# -- against the simulator ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(sources: Sequence[BinanceAccountSource]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(source.run()) for source in sources]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.kafka
async def test_withdrawal_reads_never_pass_the_uid_minute_budget_they_are_deferred_while_deposits_go_on(
    make_pipeline: PipelineFactory, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    async with BinanceSimulator() as sim:  # Binance's budget: 180000 a minute per UID, 18000 a read
        cfg = config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path, uid_weight_limit=180_000, poll_interval=0.05, withdrawal_interval=0.05)
        source = build_binance_sources(cfg, pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats[f"deferred {m.WITHDRAWAL_PATH}"] >= 3, timeout=30, what="deferred withdrawal reads")
            polls = source.stats["polls"]
            await eventually(lambda: source.stats["polls"] >= polls + 3, what="deposit polls while withdrawals wait")
    per_minute = sim.weight_per_minute("main", "uid")
    assert per_minute and max(per_minute.values()) <= 0.8 * 180_000
    assert sim.stats["rate_limited"] == 0 and sim.stats["bans_earned"] == 0
    assert "uid-1m" in source.health.detail["weights"]
    assert source.limits.waits["main"] >= 3


@pytest.mark.kafka
async def test_weights_reported_by_binance_are_shown_in_health(make_pipeline: PipelineFactory, tmp_path: Path) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        source = build_binance_sources(config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path), pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats["polls"] >= 2, what="polls")
    detail = source.health.detail
    assert detail["weights"]["ip-1m"] >= 2 and detail["weights"]["uid-1m"] >= 36_000 and detail["weights"]["api-1m"] >= 1
    assert detail["budgets"][f"uid:{m.WITHDRAWAL_PATH}"]["limit"] == source.config.uid_weight_limit
    assert detail["time_offset_ms"] is not None and detail["requests"] >= 4


@pytest.mark.kafka
async def test_after_a_429_nothing_is_sent_before_its_retry_after(make_pipeline: PipelineFactory, tmp_path: Path) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        source = build_binance_sources(config(sim, [sim.accounts["main"].entry(lookup_uid=False)], cursor_dir=tmp_path), pipeline)[0]
        async with running([source]):
            await eventually(lambda: source.stats["polls"] >= 1, what="a poll")
            sim.fail("429", account="main", retry_after=1)
            await eventually(lambda: sim.stats["fault 429"] == 1, what="the 429")
            polls = source.stats["polls"]
            await eventually(lambda: source.stats["polls"] >= polls + 2, what="polls after the 429")
    answered = [(at, status) for at, who, _, status in sim.requests if who == "main"]
    limited = next(at for at, status in answered if status == 429)
    following = [at for at, _ in answered if at > limited]
    assert following and following[0] - limited >= 1.0
    assert sim.stats["bans_earned"] == 0 and source.limits.waits["main"] >= 1


@pytest.mark.kafka
async def test_a_418_stops_every_account_until_the_ban_ends_and_polling_resumes(make_pipeline: PipelineFactory, tmp_path: Path) -> None:
    pipeline = await make_pipeline()
    async with fast_simulator() as sim:
        sources = build_binance_sources(config(sim, cursor_dir=tmp_path), pipeline)
        async with running(sources):
            await eventually(lambda: all(s.stats["polls"] >= 1 for s in sources), what="first polls")
            sim.fail("418", account="main", retry_after=2)
            await eventually(lambda: sim.stats["fault 418"] == 1, what="the ban")
            banned_at = next(at for at, _, _, status in sim.requests if status == 418)
            polls = {s: s.stats["polls"] for s in sources}
            await eventually(lambda: all(s.stats["polls"] >= polls[s] + 2 for s in sources), timeout=20, what="polls after the ban")
    # Requests already on the wire when the 418 came back are answered 418 too; none is sent after.
    in_flight = [at - banned_at for at, _, _, status in sim.requests if status == 418 and at >= banned_at]
    assert len(in_flight) == 1 + sim.stats["requests_while_banned"] and max(in_flight) < 0.05
    assert min(at for at, *_ in sim.requests if at > banned_at + 0.05) - banned_at >= 2.0
    assert sim.stats["bans_earned"] == 0
