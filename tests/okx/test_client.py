"""The transport alone against the simulator: handshake errors by code, keepalive, notice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from bridge.ingest.source import ConfigurationError
from bridge.sources.okx import messages as m
from bridge.sources.okx.client import Frame, KeepaliveTimeout, LoginRejected, OkxConnection, RequestRejected
from bridge_testkit.okx.simulator import OkxSimulator

SUBSCRIPTIONS = m.subscription_args(None, None)


@pytest.fixture
async def sim() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=0.6) as simulator:
        yield simulator


async def open_main(sim: OkxSimulator, *, ping_interval: float = 0.2, subscriptions: Any = SUBSCRIPTIONS, **override: str) -> OkxConnection:
    return await OkxConnection.open(
        sim.ws_url,
        "main",
        sim.accounts["main"].okx_account(**override),
        subscriptions,
        ping_interval=ping_interval,
        pong_timeout=ping_interval,
        handshake_timeout=3,
    )


async def read_for(connection: OkxConnection, seconds: float) -> list[Frame]:
    frames: list[Frame] = []

    async def collect() -> None:
        async for frame in connection.frames():
            frames.append(frame)

    try:
        async with asyncio.timeout(seconds):
            await collect()
    except TimeoutError:
        pass
    return frames


async def test_a_wrong_secret_is_a_configuration_error_naming_the_account_and_the_code(sim: OkxSimulator) -> None:
    with pytest.raises(LoginRejected) as refused:
        await open_main(sim, secret_key="not-the-secret")
    assert isinstance(refused.value, ConfigurationError)
    assert refused.value.code == "60007"
    assert "'main'" in str(refused.value) and "invalid sign" in str(refused.value)
    assert "not-the-secret" not in str(refused.value)


async def test_a_wrong_passphrase_is_a_configuration_error(sim: OkxSimulator) -> None:
    with pytest.raises(LoginRejected) as refused:
        await open_main(sim, passphrase="nope")
    assert refused.value.code == "60024"


async def test_a_refused_subscription_is_a_configuration_error_with_the_code(sim: OkxSimulator) -> None:
    with pytest.raises(RequestRejected) as refused:
        await open_main(sim, subscriptions=[{"channel": "deposit-infos"}])
    assert refused.value.code == "60018" and "'main'" in str(refused.value)


async def test_the_text_ping_keeps_a_quiet_connection_open_past_the_server_timeout(sim: OkxSimulator) -> None:
    connection = await open_main(sim, ping_interval=0.2)
    try:
        started = time.monotonic()
        await read_for(connection, 1.5)  # 2.5 x the simulator's 0.6 s idle timeout
        assert time.monotonic() - started >= 1.4
        assert connection.pings_sent >= 4
        assert sim.stats["closed_4004"] == 0
    finally:
        await connection.close()


async def test_without_ping_the_server_closes_with_4004(sim: OkxSimulator) -> None:
    connection = await open_main(sim, ping_interval=5)
    try:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(3):
                async for _ in connection.frames():
                    pass
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
    finally:
        await connection.close()


async def test_a_missing_pong_ends_the_connection_within_ping_plus_pong_time() -> None:
    async with OkxSimulator(idle_timeout=30, answer_pings=False) as sim:
        connection = await open_main(sim, ping_interval=0.2)
        started = time.monotonic()
        try:
            with pytest.raises(KeepaliveTimeout):
                async with asyncio.timeout(3):
                    async for _ in connection.frames():
                        pass
            assert 0.35 <= time.monotonic() - started < 1.5
        finally:
            await connection.close()


async def test_pushes_are_yielded_with_their_bytes_and_receive_time(sim: OkxSimulator) -> None:
    connection = await open_main(sim)
    try:
        await sim.advance(sim.create("deposit", "main"))
        [frame] = await read_for(connection, 0.5)
        assert frame.message["arg"]["channel"] == "deposit-info"
        assert frame.data.startswith(b'{"arg"') and frame.error is None
        assert frame.received_at.endswith("Z")
    finally:
        await connection.close()


async def test_frames_stay_compressed_but_no_compressor_is_kept_between_messages(sim: OkxSimulator) -> None:
    """Per-message deflate is still negotiated (pushes arrive compressed and are inflated), but our
    side declares no context takeover: no zlib compressor stays with the connection after the
    login, the subscription or a keepalive ping (websockets' default keeps one per connection)."""
    connection = await open_main(sim, ping_interval=0.05)
    try:
        [deflate] = connection.ws.protocol.extensions
        assert deflate.name == "permessage-deflate" and deflate.local_no_context_takeover
        assert not hasattr(deflate, "encoder")
        await read_for(connection, 0.2)  # long enough for text pings
        assert connection.pings_sent >= 1 and not hasattr(deflate, "encoder")
        await sim.advance(sim.create("deposit", "main"))
        [frame] = await read_for(connection, 0.5)
        assert frame.message["arg"]["channel"] == "deposit-info"
    finally:
        await connection.close()


async def test_a_frame_that_is_not_json_is_yielded_with_the_reason(sim: OkxSimulator) -> None:
    connection = await open_main(sim)
    try:
        await sim.send_raw("{not json")
        [frame] = await read_for(connection, 0.5)
        assert frame.data == b"{not json" and frame.message is None and "not JSON" in (frame.error or "")
    finally:
        await connection.close()


async def test_a_notice_is_flagged_and_reading_goes_on(sim: OkxSimulator) -> None:
    connection = await open_main(sim)
    try:
        await sim.notice("main")
        transfer = sim.create("withdrawal", "main")
        await sim.advance(transfer)
        frames = await read_for(connection, 0.5)
        assert connection.upgrade_notice.is_set()
        assert [f.message["data"][0]["wdId"] for f in frames] == [transfer.transfer_id]
    finally:
        await connection.close()


async def test_an_error_echoing_the_login_request_is_reported_without_the_secrets() -> None:
    async with OkxSimulator() as sim:
        account = sim.accounts["main"]
        original = sim._check_login

        def echoing(args: Any) -> Any:  # a venue that echoes the refused request, as 60012 does
            found, _, _ = original(args)
            return found, "60012", f"Invalid request: {args}"

        sim._check_login = echoing  # type: ignore[method-assign]
        with pytest.raises(LoginRejected) as refused:
            await open_main(sim)
        text = str(refused.value)
        assert "Invalid request" in text and "***" in text
        assert account.passphrase not in text and account.api_key not in text
        assert not any(sign in text for sign in sim.signatures_seen)
