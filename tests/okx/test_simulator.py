"""The simulator answers like the OKX documents say — otherwise the end-to-end tests prove nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.sources.okx.auth import login_args, rest_headers
from bridge_testkit.okx.simulator import OkxSimulator, SimAccount


@pytest.fixture
async def sim() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=1.0) as simulator:
        yield simulator


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(3):
        return json.loads(await ws.recv())


async def login(ws: ClientConnection, account: SimAccount, *, at: float | None = None, **override: str) -> dict[str, Any]:
    args = login_args(account.okx_account(**override), time.time() if at is None else at)
    await ws.send(json.dumps({"op": "login", "args": [args]}))
    return await recv_json(ws)


async def closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    try:
        async with asyncio.timeout(3):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("still open")


async def test_a_correct_login_is_acknowledged_with_code_0_and_a_connection_id(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        ack = await login(ws, sim.accounts["main"])
        assert ack["event"] == "login" and ack["code"] == "0" and ack["connId"]


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"secret_key": "wrong-secret"}, "60007"),
        ({"passphrase": "wrong-passphrase"}, "60024"),
        ({"api_key": "no-such-key"}, "60005"),
    ],
)
async def test_a_bad_login_gets_the_documented_error_and_close_4001(sim: OkxSimulator, override: dict[str, str], code: str) -> None:
    async with connect(sim.ws_url) as ws:
        error = await login(ws, sim.accounts["main"], **override)
        assert error["event"] == "error" and error["code"] == code and error["msg"] and error["connId"]
        assert (await closed_with(ws))[0] == 4001


async def test_a_login_timestamp_older_than_30_seconds_is_expired(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        error = await login(ws, sim.accounts["main"], at=time.time() - 31)
        assert error["code"] == "60006"


async def test_a_connection_without_traffic_is_closed_with_4004(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        code, reason = await closed_with(ws)
        assert code == 4004 and "No data received" in reason


async def test_text_ping_gets_text_pong_and_keeps_the_connection_open(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        for _ in range(4):  # 1.6 s in all, beyond the 1 s idle timeout
            await asyncio.sleep(0.4)
            await ws.send("ping")
            assert await ws.recv() == "pong"
        assert sim.stats["closed_4004"] == 0


async def test_subscribing_before_login_is_refused_with_60011(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await ws.send(json.dumps({"id": "1", "op": "subscribe", "args": [{"channel": "deposit-info"}]}))
        error = await recv_json(ws)
        assert (error["event"], error["code"], error["id"]) == ("error", "60011", "1")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ([{"channel": "no-such-channel"}], "60018"),
        ([{"chanel": "deposit-info"}], "60013"),
        ([], "60012"),
    ],
)
async def test_bad_subscriptions_get_the_documented_errors(sim: OkxSimulator, args: list[Any], code: str) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        await ws.send(json.dumps({"id": "1512", "op": "subscribe", "args": args}))
        error = await recv_json(ws)
        assert (error["event"], error["code"], error["id"]) == ("error", code, "1512")


async def test_subscriptions_are_acked_and_a_master_receives_its_sub_accounts_pushes(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        await ws.send(json.dumps({"id": "1512", "op": "subscribe", "args": [{"channel": "deposit-info"}, {"channel": "withdrawal-info"}]}))
        acks = [await recv_json(ws) for _ in range(4)]
        assert [a["event"] for a in acks] == ["subscribe", "channel-conn-count", "subscribe", "channel-conn-count"]
        assert acks[0] == {"id": "1512", "event": "subscribe", "arg": {"channel": "deposit-info"}, "connId": acks[0]["connId"]}
        transfer = sim.create("withdrawal", "sub1")
        await sim.advance(transfer)
        push = await recv_json(ws)
        assert push["arg"] == {"channel": "withdrawal-info", "uid": sim.accounts["main"].uid}
        [item] = push["data"]
        assert item["subAcct"] == "sub-one" and item["uid"] == sim.accounts["sub1"].uid
        assert item["state"] == "17" and item["wdId"] == transfer.transfer_id and item["addrEx"] is None
        assert "*****" in item["to"]  # masked like OKX does
        assert transfer.observed


async def test_a_currency_filter_only_receives_that_currency(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "deposit-info", "ccy": "BTC"}]}))
        await recv_json(ws), await recv_json(ws)
        await sim.advance(sim.create("deposit", "main", ccy="ETH"))
        await sim.advance(sim.create("deposit", "main", ccy="BTC"))
        assert (await recv_json(ws))["data"][0]["ccy"] == "BTC"


async def get(sim: OkxSimulator, account: SimAccount, path: str, **override: str) -> tuple[int, dict[str, Any]]:
    headers = rest_headers(account.okx_account(**override), "GET", path, "", time.time())
    async with aiohttp.ClientSession() as session, session.get(sim.rest_url + path, headers=headers) as response:
        return response.status, await response.json()


async def test_history_is_newest_first_in_the_documented_envelope_and_pages_with_before_and_after(sim: OkxSimulator) -> None:
    main = sim.accounts["main"]
    transfers = [sim.create("deposit", "main") for _ in range(5)]
    for transfer in transfers:
        await sim.advance(transfer)
    stamps = [t.created_ms for t in transfers]
    status, body = await get(sim, main, "/api/v5/asset/deposit-history?limit=2")
    assert status == 200 and body["code"] == "0" and body["msg"] == ""
    assert [row["depId"] for row in body["data"]] == [transfers[4].transfer_id, transfers[3].transfer_id]
    assert "pTime" not in body["data"][0] and "uid" not in body["data"][0]
    _, older = await get(sim, main, f"/api/v5/asset/deposit-history?after={stamps[3]}&limit=100")
    assert [row["depId"] for row in older["data"]] == [t.transfer_id for t in reversed(transfers[:3])]
    _, newer = await get(sim, main, f"/api/v5/asset/deposit-history?before={stamps[1]}")
    assert [row["depId"] for row in newer["data"]] == [t.transfer_id for t in reversed(transfers[2:])]


async def test_history_only_returns_the_keys_own_transfers(sim: OkxSimulator) -> None:
    await sim.advance(sim.create("withdrawal", "sub1"))
    _, master = await get(sim, sim.accounts["main"], "/api/v5/asset/withdrawal-history")
    _, sub = await get(sim, sim.accounts["sub1"], "/api/v5/asset/withdrawal-history")
    assert master["data"] == [] and len(sub["data"]) == 1


async def test_history_shows_rest_only_states_and_marks_them_seen(sim: OkxSimulator) -> None:
    transfer = sim.create("withdrawal-hot-wallet", "main")
    await sim.advance(transfer)
    await sim.advance(transfer)  # state 19 is never pushed
    assert not transfer.observed
    _, body = await get(sim, sim.accounts["main"], "/api/v5/asset/withdrawal-history")
    assert body["data"][0]["state"] == "19"
    assert transfer.observed


@pytest.mark.parametrize(
    ("override", "code"),
    [({"secret_key": "wrong"}, "50113"), ({"passphrase": "wrong"}, "50105"), ({"api_key": "wrong"}, "50111")],
)
async def test_history_refuses_bad_signatures_with_401(sim: OkxSimulator, override: dict[str, str], code: str) -> None:
    status, body = await get(sim, sim.accounts["main"], "/api/v5/asset/deposit-history", **override)
    assert status == 401 and body["code"] == code


async def test_history_rate_limit_answers_429_with_50011() -> None:
    async with OkxSimulator(rest_rate_limit=2) as sim:
        results = [await get(sim, sim.accounts["main"], "/api/v5/asset/deposit-history") for _ in range(3)]
        assert [status for status, _ in results] == [200, 200, 429]
        assert results[2][1]["code"] == "50011"


async def test_a_notice_reaches_subscribed_connections(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "deposit-info"}]}))
        await recv_json(ws), await recv_json(ws)
        assert await sim.notice("main") == 1
        notice = await recv_json(ws)
        assert (notice["event"], notice["code"]) == ("notice", "64008")


async def test_a_drop_closes_the_connection_mid_lifecycle(sim: OkxSimulator) -> None:
    async with connect(sim.ws_url) as ws:
        await login(ws, sim.accounts["main"])
        assert sim.drop("main") == 1
        assert (await closed_with(ws))[0] == 1011


async def test_other_paths_are_not_found(sim: OkxSimulator) -> None:
    with pytest.raises(Exception, match="404"):
        async with connect(sim.ws_url.replace("/business", "/public")):
            pass
