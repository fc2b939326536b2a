"""Finding 7 (Reliability): slow requests on the webhook port were never timed out.

200 slowloris connections stayed open for 60 s: aiohttp gives a connection an hour to send its
request head and waits for a body forever, and nothing caps how many connections are open. Now
``server.request_header_timeout_seconds`` bounds the head, ``server.request_body_timeout_seconds``
the body (408, then the connection is closed), and past ``server.max_connections`` a listener
answers 503 and closes — against the real service, while a signed delivery still gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.config import DEFAULT_PATH
from bridge.sources.openxswitch.signature import HEADER, sign
from tests.service.support import Running, running, service_settings

pytestmark = pytest.mark.kafka

SECRET = "whsec-edges-slow-5e1f"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 1.5  # event loop and CI jitter on top of a timeout
NEVER = 10.0  # a connection still open after this was not timed out at all


def _settings(tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings, max_connections: int):  # type: ignore[no-untyped-def]
    return service_settings(
        tmp_path,
        kafka,
        topics,
        server={
            "request_header_timeout_seconds": HEADER_TIMEOUT,
            "request_body_timeout_seconds": BODY_TIMEOUT,
            "max_connections": max_connections,
        },
        openxswitch={"enabled": True, "secrets": [SECRET]},
    )


def _delivery(transfer_id: str) -> bytes:
    params = m.withdrawal_params(
        transfer_id=transfer_id,
        status="confirmed",
        amount=Decimal("9"),
        updated_at="2025-05-05T00:53:29.206Z",
        created_at="2025-05-05T00:53:29.206Z",
        wallet_id="6812b103908d2d0d49c7ff79",
    )
    return m.delivery_body(f"req-{transfer_id}", m.WITHDRAW_CONFIRMED, params)


async def _post_signed(app: Running, transfer_id: str) -> tuple[int, dict[str, str]]:
    body = _delivery(transfer_id)
    headers = {"Content-Type": "application/json", HEADER: sign(SECRET.encode(), body)}
    async with aiohttp.ClientSession() as http, http.post(app.url("webhooks", DEFAULT_PATH), data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def _slow(address: tuple[str, int], head: bytes, drip: bytes, every: float = 0.2) -> tuple[float, bytes]:
    """Send ``head``, then ``drip`` every ``every`` seconds; (seconds until the server closed, what it answered)."""
    reader, writer = await asyncio.open_connection(*address)
    opened = time.monotonic()
    writer.write(head)

    async def dripping() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await asyncio.sleep(every)
                if writer.is_closing():
                    return
                writer.write(drip)
                await writer.drain()

    task = asyncio.create_task(dripping())
    try:
        answer = await asyncio.wait_for(reader.read(), NEVER)
    except ConnectionError:
        answer = b""
    except TimeoutError:
        answer = b"<still open>"
    finally:
        task.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return time.monotonic() - opened, answer


async def test_slow_heads_and_slow_bodies_are_closed_within_their_timeouts_while_a_signed_delivery_succeeds(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    async with running(_settings(tmp_path, kafka_settings, topics, max_connections=100)) as app:
        address = app.app.http.addresses["webhooks"]
        slow_heads = [
            _slow(address, f"POST {DEFAULT_PATH} HTTP/1.1\r\nHost: bridge\r\nX-Slow: ".encode(), b"a") for _ in range(20)
        ]
        head = (
            f"POST {DEFAULT_PATH} HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100000\r\n{HEADER}: 00\r\n\r\n{{"
        ).encode()
        slow_bodies = [_slow(address, head, b" ") for _ in range(10)]
        stalled_bodies = [_slow(address, head, b"", every=NEVER) for _ in range(5)]
        results = asyncio.gather(*slow_heads, *slow_bodies, *stalled_bodies)
        await asyncio.sleep(0.3)
        assert await _post_signed(app, "while-slowloris") == (200, {"result": "published"})
        closed = await results

    for took, answer in closed[:20]:
        assert answer != b"<still open>", "a connection sending its head slowly was never closed"
        assert took <= HEADER_TIMEOUT + SLACK, f"head timeout {HEADER_TIMEOUT}s, closed after {took:.1f}s"
    for took, answer in closed[20:30]:
        # 408, or a reset: the server closes while bytes the client keeps sending are unread
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert took <= BODY_TIMEOUT + SLACK, f"body timeout {BODY_TIMEOUT}s, closed after {took:.1f}s"
    for took, answer in closed[30:]:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]  # a stalled sender reads its answer
        assert took <= BODY_TIMEOUT + SLACK, f"body timeout {BODY_TIMEOUT}s, closed after {took:.1f}s"


async def test_connections_past_the_cap_are_refused_and_the_port_recovers(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    cap = 10
    async with running(_settings(tmp_path, kafka_settings, topics, max_connections=cap)) as app:
        address = app.app.http.addresses["webhooks"]
        idle = [await asyncio.open_connection(*address) for _ in range(cap)]
        await asyncio.sleep(0.2)  # accepted by the server
        reader, writer = await asyncio.open_connection(*address)
        refused = await asyncio.wait_for(reader.read(), 3)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 "), refused[:100]
        assert b"Server:" not in refused

        status, _ = await app.get_json("/healthz")  # the admin listener has its own cap
        assert status == 200

        opened = time.monotonic()
        for idle_reader, _ in idle:  # closed by the head timeout, which frees the port
            assert await asyncio.wait_for(idle_reader.read(), NEVER) == b""
        assert time.monotonic() - opened <= HEADER_TIMEOUT + SLACK
        for _, idle_writer in idle:
            idle_writer.close()
        assert await _post_signed(app, "after-the-cap") == (200, {"result": "published"})
