"""REST history reads against the simulator: signing, paging, rate limits, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.ingest.rest import TransientError as BackfillError
from bridge.sources.okx import messages as m
from bridge.sources.okx.backfill import HistoryClient
from bridge_testkit.okx.simulator import OkxSimulator


@pytest.fixture
async def sim() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(rest_rate_limit=100) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def history(sim: OkxSimulator, http: aiohttp.ClientSession, account: str = "main", **options: Any) -> HistoryClient:
    options.setdefault("rate_per_second", 50.0)
    return HistoryClient(http, sim.rest_url, account, sim.accounts[account].okx_account(**options.pop("override", {})), **options)


async def started(sim: OkxSimulator, script: str, count: int, account: str = "main") -> list[str]:
    ids = []
    for _ in range(count):
        transfer = sim.create(script, account)
        await sim.advance(transfer)
        ids.append(transfer.transfer_id)
    return ids


async def all_rows(client: HistoryClient, channel: str, since_ms: int, **options: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for page, _ in client.pages(channel, since_ms=since_ms, **options):
        rows.extend(page)
    return rows


async def test_every_row_since_the_window_start_is_read_across_pages(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    ids = await started(sim, "deposit", 250)
    rows = await all_rows(history(sim, http), "deposit-info", since_ms=0, limit=100)
    assert {row["depId"] for row in rows} == set(ids)
    assert len(rows) <= 250 + 3  # pages re-read only their oldest millisecond


async def test_rows_created_before_the_window_are_not_read(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    await started(sim, "withdrawal", 5)
    boundary = max(t.created_ms for t in sim.transfers.values()) + 1
    newer = await started(sim, "withdrawal", 3)
    rows = await all_rows(history(sim, http), "withdrawal-info", since_ms=boundary)
    assert [row["wdId"] for row in rows] == list(reversed(newer))


async def test_a_currency_filter_is_passed_on(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    btc = sim.create("deposit", "main", ccy="BTC")
    await sim.advance(btc)
    await sim.advance(sim.create("deposit", "main", ccy="ETH"))
    rows = await all_rows(history(sim, http), "deposit-info", since_ms=0, ccy="BTC")
    assert [row["depId"] for row in rows] == [btc.transfer_id]


async def test_rate_limited_pages_are_retried_until_every_row_is_read(http: aiohttp.ClientSession) -> None:
    async with OkxSimulator(rest_rate_limit=2) as sim:
        ids = await started(sim, "deposit", 320)
        client = history(sim, http, rate_per_second=6.0)
        rows = await all_rows(client, "deposit-info", since_ms=0, limit=100)
        assert {row["depId"] for row in rows} == set(ids)
        assert sim.stats["rest_rate_limited"] >= 1
        assert client.rate_limited == sim.stats["rest_rate_limited"]


async def test_server_errors_are_retried(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    ids = await started(sim, "deposit", 3)
    sim.fail_rest(2, status=503, code="50001")
    rows = await all_rows(history(sim, http), "deposit-info", since_ms=0)
    assert {row["depId"] for row in rows} == set(ids)


async def test_a_server_that_keeps_failing_ends_the_pass_with_a_backfill_error(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    sim.fail_rest(10, status=503, code="50001")
    with pytest.raises(BackfillError, match="'main'"):
        await all_rows(history(sim, http, max_retries=2), "deposit-info", since_ms=0)


async def test_refused_credentials_raise_a_configuration_rest_error_without_retrying(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    client = history(sim, http, override={"secret_key": "wrong"})
    with pytest.raises(m.RestError) as refused:
        await all_rows(client, "deposit-info", since_ms=0)
    assert refused.value.is_configuration_error and refused.value.code == "50113"
    assert client.requests == 1


async def test_the_account_uid_is_looked_up(sim: OkxSimulator, http: aiohttp.ClientSession) -> None:
    assert await history(sim, http, account="sub1").account_uid() == sim.accounts["sub1"].uid
