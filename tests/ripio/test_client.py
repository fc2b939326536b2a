"""The Ripio transport (signed REST, listing pages, stream connection) against the simulator — no Kafka.

Each test checks both sides of one rule: the client does what Ripio documents, and the simulator
holds it to that (a simulator that let anything through would make the end-to-end tests worthless).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect

from bridge.contract.jsonutil import loads_exact
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.auth import signed_headers
from bridge.sources.ripio.backfill import listing_pages
from bridge.sources.ripio.client import KeepaliveTimeout, RipioConnection, TicketRejected
from bridge.sources.ripio.config import DEPOSITS_PATH, TICKET_PATH, WITHDRAWALS_PATH
from bridge.sources.ripio.rest import RipioRest, TransientRestError
from bridge_testkit.ripio.simulator import RipioSimulator


@pytest.fixture
async def sim() -> AsyncIterator[RipioSimulator]:
    async with RipioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def rest_for(sim: RipioSimulator, http: aiohttp.ClientSession, name: str = "main", **options: Any) -> RipioRest:
    options.setdefault("rate_per_second", 100.0)
    options.setdefault("retry_initial", 0.02)
    return RipioRest(http, sim.rest_url, name, sim.accounts[name].ripio_account(**options.pop("account", {})), **options)


async def open_connection(sim: RipioSimulator, ticket: str, **options: Any) -> RipioConnection:
    values: dict[str, Any] = dict(
        ping_interval=None,
        liveness_timeout=None,
        ws_ping_interval=None,
        ws_ping_timeout=5,
        handshake_timeout=5,
        confirm_timeout=1.0,
    )
    values.update(options)
    return await RipioConnection.open(sim.ws_url, "main", ticket, ("deposit", "withdrawal"), **values)


# -- REST signing and tickets --------------------------------------------------------------------


async def test_a_correctly_signed_ticket_request_gets_a_fresh_ticket_each_time(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    rest = rest_for(sim, http)
    first, second = await rest.ticket(TICKET_PATH), await rest.ticket(TICKET_PATH)
    assert first != second and {first, second} <= sim.tickets_issued


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"account": {"api_secret": "another-secret"}}, "Invalid signature"),
        ({"account": {"api_token": "unknown-token"}}, "Not authorized"),
        ({"clock": lambda: time.time() - 30}, "outside the tolerance"),
        ({"clock": lambda: time.time() + 30}, "outside the tolerance"),
    ],
)
async def test_a_refused_signature_token_or_clock_raises_at_once_without_retrying(
    sim: RipioSimulator, http: aiohttp.ClientSession, change: dict[str, Any], message: str
) -> None:
    rest = rest_for(sim, http, **change)
    with pytest.raises(m.RestError) as caught:
        await rest.ticket(TICKET_PATH)
    assert caught.value.is_configuration_error and caught.value.http_status == 401 and message in str(caught.value)
    assert rest.requests == 1


async def test_a_timestamp_tolerance_header_widens_the_accepted_clock_skew(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    rest = rest_for(sim, http, clock=lambda: time.time() - 30, tolerance_ms=60_000)
    assert await rest.ticket(TICKET_PATH)


async def test_the_simulator_refuses_a_tolerance_above_the_documented_maximum(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    headers = signed_headers(sim.accounts["main"].ripio_account(), "POST", TICKET_PATH, "", time.time(), tolerance_ms=60_001)
    async with http.post(sim.rest_url + TICKET_PATH, headers=headers) as response:
        assert response.status == 400 and (await response.json())["error_code"] == 40000


async def test_rate_limits_and_server_errors_are_retried_until_they_pass(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    sim.rest_rate_limit = 3
    sim.fail_rest(1, status=503)
    rest = rest_for(sim, http, max_retries=10)
    tickets = [await rest.ticket(TICKET_PATH) for _ in range(3)]
    assert len(set(tickets)) == 3
    assert rest.requests >= 5 and rest.rate_limited >= 1 and sim.stats["rest_rate_limited"] >= 1


async def test_a_retry_after_header_on_429_is_honoured(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    sim.rest_rate_limit, sim.retry_after = 1, 0.4
    rest = rest_for(sim, http, max_retries=5)
    await rest.ticket(TICKET_PATH)
    started = time.monotonic()
    await rest.ticket(TICKET_PATH)  # limited: one retry after the announced pause, not a burst of them
    assert time.monotonic() - started >= 0.4 and rest.rate_limited <= 3


async def test_retries_are_bounded(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    sim.fail_rest(10, status=500)
    rest = rest_for(sim, http, max_retries=2)
    with pytest.raises(TransientRestError, match="main"):
        await rest.ticket(TICKET_PATH)
    assert rest.requests == 3


async def test_the_query_string_can_be_part_of_the_signed_path_when_both_sides_agree(http: aiohttp.ClientSession) -> None:
    async with RipioSimulator(sign_query=True) as sim:
        sim.create("deposit-crypto")
        await sim.advance(sim.transfers[next(iter(sim.transfers))])
        pages = [rows async for rows, _ in listing_pages(rest_for(sim, http, sign_query=True), DEPOSITS_PATH, "deposit", since_ms=0)]
        assert sum(map(len, pages)) == 1
        with pytest.raises(m.RestError, match="Invalid signature"):
            [rows async for rows, _ in listing_pages(rest_for(sim, http), DEPOSITS_PATH, "deposit", since_ms=0)]


# -- listings ------------------------------------------------------------------------------------


async def started(sim: RipioSimulator, script: str, count: int, account: str = "main") -> list[str]:
    ids = []
    for _ in range(count):
        transfer = sim.create(script, account)
        await sim.advance(transfer)
        ids.append(transfer.transfer_id)
    return ids


@pytest.mark.parametrize("cursor_paging", [True, False])
async def test_listing_pages_walk_every_row_once_newest_first(http: aiohttp.ClientSession, cursor_paging: bool) -> None:
    async with RipioSimulator(cursor_paging=cursor_paging) as sim:
        ids = await started(sim, "withdrawal-crypto", 7)
        await started(sim, "withdrawal-crypto", 2, account="second")
        pages = [rows async for rows, _ in listing_pages(rest_for(sim, http), WITHDRAWALS_PATH, "withdrawal", since_ms=0, page_size=3)]
    assert [len(rows) for rows in pages] == [3, 3, 1]
    assert [row["id"] for rows in pages for row in rows] == ids[::-1]


async def test_listings_filter_on_creation_time_and_currency(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    older = await started(sim, "deposit-crypto", 3)
    cutoff = sim.transfers[f"ripio:deposit:{older[-1]}"].created_ms + 1
    newer = await started(sim, "deposit-fiat", 2)
    rest = rest_for(sim, http)
    rows = [row async for page, _ in listing_pages(rest, DEPOSITS_PATH, "deposit", since_ms=cutoff) for row in page]
    assert {row["id"] for row in rows} == set(newer)
    currency = rows[0]["currency_code"]
    filtered = [row async for page, _ in listing_pages(rest, DEPOSITS_PATH, "deposit", since_ms=0, currency=currency) for row in page]
    assert filtered and {row["currency_code"] for row in filtered} == {currency}


async def test_listing_rows_have_the_listing_shape_with_exact_amounts(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    transfer = sim.create("deposit-crypto", amount="1234567890123456.78901234567891")
    await sim.advance(transfer)
    headers = signed_headers(sim.accounts["main"].ripio_account(), "GET", DEPOSITS_PATH, "", time.time())
    async with http.get(sim.rest_url + DEPOSITS_PATH, headers=headers) as response:
        payload = await response.read()
    assert b'"amount":1234567890123456.78901234567891' in payload
    [row] = loads_exact(payload)["data"]["deposits"]
    assert "user_id" not in row and "update_date" not in row and row["status"] == "pending"


# -- the stream ----------------------------------------------------------------------------------


async def test_a_subscription_is_confirmed_by_the_welcome_and_messages_follow_with_per_topic_ids(
    sim: RipioSimulator, http: aiohttp.ClientSession
) -> None:
    connection = await open_connection(sim, await rest_for(sim, http).ticket(TICKET_PATH))
    try:
        assert connection.confirmed and connection.welcomes >= 1
        deposit, withdrawal = sim.create("deposit-crypto"), sim.create("withdrawal-crypto")
        for transfer in (deposit, withdrawal, deposit, withdrawal):
            await sim.advance(transfer)
        frames = connection.frames()
        got = [(await anext(frames)).message for _ in range(4)]
    finally:
        await connection.close()
    assert [(g["topic"], g["id"]) for g in got] == [("deposit", 1), ("withdrawal", 1), ("deposit", 2), ("withdrawal", 2)]
    assert got[2]["body"]["status"] == "confirmed"


async def test_a_skipped_message_uses_its_id(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    connection = await open_connection(sim, await rest_for(sim, http).ticket(TICKET_PATH))
    try:
        sim.skip_next("deposit")
        for script in ("deposit-crypto", "deposit-crypto"):
            await sim.advance(sim.create(script))
        frame = await anext(connection.frames())
    finally:
        await connection.close()
    assert frame.message["id"] == 2 and sim.stats["skipped"] == 1


@pytest.mark.parametrize("reuse", ["used", "expired", "invented"])
async def test_a_used_expired_or_invented_ticket_is_refused_with_an_error_and_a_close(
    http: aiohttp.ClientSession, reuse: str
) -> None:
    async with RipioSimulator(ticket_ttl=0.05 if reuse == "expired" else 30) as sim:
        ticket = await rest_for(sim, http).ticket(TICKET_PATH)
        if reuse == "used":
            await (await open_connection(sim, ticket)).close()
        elif reuse == "expired":
            await asyncio.sleep(0.1)
        else:
            ticket = "97794B95-AFE7-454F-81B0-9109112548C2"
        with pytest.raises(TicketRejected, match="'main': subscription refused: Ripio error 40100"):
            await open_connection(sim, ticket)
        async with connect(sim.ws_url) as ws:  # the simulator's side of it, seen raw
            await ws.send('{"method":"subscribe","topics":["deposit"],"ticket":"nope"}')
            assert loads_exact(await ws.recv())["error_code"] == 40100
            await ws.wait_closed()
            assert ws.close_code == 1008


async def test_pings_go_out_on_the_interval_and_are_answered(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    connection = await open_connection(sim, await rest_for(sim, http).ticket(TICKET_PATH), ping_interval=0.05)
    reader = asyncio.create_task(anext(connection.frames()))
    try:
        await asyncio.sleep(0.4)
        assert connection.pings_sent >= 4 and sim.stats["pings"] >= 4
        assert not reader.done()  # pongs are control frames, never yielded
    finally:
        reader.cancel()
        await connection.close()


async def test_silence_beyond_the_liveness_timeout_ends_the_connection(http: aiohttp.ClientSession) -> None:
    async with RipioSimulator(answer_pings=False) as sim:
        connection = await open_connection(sim, await rest_for(sim, http).ticket(TICKET_PATH), ping_interval=0.05, liveness_timeout=0.3)
        started_at = time.monotonic()
        with pytest.raises(KeepaliveTimeout, match="'main'"):
            await anext(connection.frames())
        await connection.close()
    assert 0.25 < time.monotonic() - started_at < 2


async def test_a_frame_that_is_not_json_is_yielded_with_its_bytes_and_the_reason(sim: RipioSimulator, http: aiohttp.ClientSession) -> None:
    connection = await open_connection(sim, await rest_for(sim, http).ticket(TICKET_PATH))
    try:
        await sim.send_raw('{"id": 3, "topic": "deposit", "body": ')
        frame = await anext(connection.frames())
    finally:
        await connection.close()
    assert frame.data == b'{"id": 3, "topic": "deposit", "body": ' and frame.message is None and "not JSON" in (frame.error or "")
