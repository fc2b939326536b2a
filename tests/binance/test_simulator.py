"""The simulator refuses what Binance refuses, with Binance's codes, and verifies signatures with its
own code: the tests of the source are only as good as this peer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from yarl import URL

from bridge.sources.binance import messages as m
from bridge.sources.binance.auth import Signer, signed_query
from bridge_testkit.binance.lifecycles import SimAccount
from bridge_testkit.binance.simulator import BinanceSimulator


async def _get(sim: BinanceSimulator, account: SimAccount, path: str, params: dict[str, str], *, ahead: int = 0,
               window: int = 5000, tamper: bool = False, key: str | None = None) -> tuple[int, Any, dict[str, str]]:
    """One signed GET, its timestamp ``ahead`` ms of the simulator's clock."""
    query = signed_query(Signer(account.binance_account()), urlencode(params), timestamp_ms=sim.now_ms() + ahead, recv_window_ms=window)
    if tamper:
        query = query.replace("limit=", "limit=0", 1)
    async with aiohttp.ClientSession() as http, http.get(URL(f"{sim.url}{path}?{query}", encoded=True), headers={"X-MBX-APIKEY": key or account.api_key}) as response:
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize("name", ["main", "sub1"])
async def test_signed_reads_of_hmac_and_ed25519_keys_are_answered_with_rows_and_weight_headers(name: str) -> None:
    async with BinanceSimulator() as sim:
        sim.create("deposit", name)
        status, body, headers = await _get(sim, sim.accounts[name], m.DEPOSIT_PATH, {"limit": "10"})
    assert status == 200 and len(body) == 1 and body[0]["status"] == 0
    assert headers["X-SAPI-USED-IP-WEIGHT-1M"] == "1"


async def test_an_rsa_key_is_verified_too() -> None:
    import random

    from bridge_testkit.binance.lifecycles import make_account

    account = make_account("rsa", 7, "rsa", random.Random(1))
    async with BinanceSimulator([account]) as sim:
        status, body, _ = await _get(sim, account, m.WITHDRAWAL_PATH, {})
    assert status == 200 and body == []


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"tamper": True}, 400, -1022),
        ({"key": "UnknownKey0123456789"}, 401, -2015),
        ({"key": "bad key!"}, 401, -2014),
        ({"ahead": -5001}, 400, -1021),
        ({"ahead": 1500}, 400, -1021),
        ({"window": 60_001}, 400, -1131),
    ],
)
async def test_requests_binance_would_refuse_are_refused_with_its_codes(change: dict[str, Any], status: int, code: int) -> None:
    async with BinanceSimulator() as sim:
        got = await _get(sim, sim.accounts["main"], m.DEPOSIT_PATH, {"limit": "5"}, **change)
    assert (got[0], got[1]["code"]) == (status, code)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"startTime": "1", "endTime": str(91 * 86_400_000)}, -1127),
        ({"startTime": "5", "endTime": "4"}, -1128),
        ({"limit": "1001"}, -1130),
        ({"idList": ",".join(str(i) for i in range(46))}, -1130),
        ({"bogus": "1"}, -1104),
    ],
)
async def test_windows_limits_and_unknown_parameters_are_checked(params: dict[str, str], code: int) -> None:
    async with BinanceSimulator() as sim:
        path = m.WITHDRAWAL_PATH if "idList" in params else m.DEPOSIT_PATH
        status, body, _ = await _get(sim, sim.accounts["main"], path, params)
    assert status == 400 and body["code"] == code


async def test_over_the_minute_budget_is_a_429_and_asking_again_before_retry_after_a_ban() -> None:
    async with BinanceSimulator(uid_limit=36_000) as sim:
        main = sim.accounts["main"]
        answers = [await _get(sim, main, m.WITHDRAWAL_PATH, {}) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 429, 418]
    assert answers[1][2]["X-SAPI-USED-UID-WEIGHT-1M"] == "36000" and int(answers[2][2]["Retry-After"]) >= 1
    assert sim.stats["bans_earned"] == 1


async def test_a_row_changes_in_place_and_the_master_reads_its_sub_accounts_deposits() -> None:
    async with BinanceSimulator() as sim:
        transfer = sim.create("deposit-travel-rule", "sub1")
        sim.advance(transfer)
        _, own, _ = await _get(sim, sim.accounts["sub1"], m.DEPOSIT_PATH, {})
        _, via_master, _ = await _get(sim, sim.accounts["main"], m.SUB_DEPOSIT_PATH, {"email": "sub1@sim.example"})
        status, refused, _ = await _get(sim, sim.accounts["other"], m.SUB_DEPOSIT_PATH, {"email": "sub1@sim.example"})
    assert own[0]["status"] == 6 and own[0]["travelRuleStatus"] == 1 and own[0]["id"] == via_master[0]["id"]
    assert "travelRuleStatus" not in via_master[0]  # Binance's subHisrec example omits it
    assert status == 400 and transfer.observed
