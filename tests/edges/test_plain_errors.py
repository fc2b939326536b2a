"""Finding 8a (Reliability): a malformed request's 400 echoed the offending header line (and
logged it with a traceback), and every answer carried a ``Server: Python/… aiohttp/…`` banner.

Now what aiohttp answers by itself is plain — the status line and its reason, nothing of the
request — and no answer names the server software. Tested with raw sockets on both listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.service.http import HttpServer
from bridge.service.settings import ServerSettings

TOKEN = b"secret-token-4f1c"


class Echo:
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/test", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"result": "ok"})


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer(ServerSettings(host="127.0.0.1", port=0, admin_port=0), lambda: (True, {}))
    http.mount(Echo())
    await http.start_admin()
    await http.start_webhooks()
    try:
        yield http
    finally:
        await http.stop()


async def exchange(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    return status, headers, body


BAD_REQUESTS = {
    "control character in a header name": b"POST /webhooks/test HTTP/1.1\r\nHost: bridge\r\nX-Evil\x01: <script>" + TOKEN + b"</script>\r\n\r\n",
    "header line without a colon": b"POST /webhooks/test HTTP/1.1\r\nHost: bridge\r\n<script>" + TOKEN + b"</script>\r\n\r\n",
    "garbage request line": b"<script>" + TOKEN + b"</script> / HTTP/1.1\r\nHost: bridge\r\n\r\n",
    "header line too long": b"POST /webhooks/test HTTP/1.1\r\nHost: bridge\r\nX-Long: " + TOKEN * 1000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("role", ["webhooks", "admin"])
@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
async def test_a_malformed_request_gets_a_plain_400_without_echo_or_banner(
    server: HttpServer, role: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = split(await exchange(server.addresses[role], BAD_REQUESTS[name]))
    assert status.split(b" ", 1)[1].startswith(b"4"), status
    assert not any(h.lower().startswith(b"server:") for h in headers), headers
    assert body in (b"", status.split(b" ", 1)[1]), body  # the status and reason at most
    assert TOKEN.decode() not in caplog.text  # nor in the log: a header may carry a credential


@pytest.mark.parametrize(
    ("role", "request_bytes", "expected"),
    [
        ("webhooks", b"POST /webhooks/test HTTP/1.1\r\nHost: bridge\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", b"200"),
        ("webhooks", b"GET /nothing-here HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n", b"404"),
        ("admin", b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n", b"200"),
        ("admin", b"GET /metrics HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n", b"200"),
    ],
    ids=["webhook", "not found", "healthz", "metrics"],
)
async def test_no_answer_names_the_server_software(server: HttpServer, role: str, request_bytes: bytes, expected: bytes) -> None:
    status, headers, _ = split(await exchange(server.addresses[role], request_bytes))
    assert status.split(b" ")[1] == expected, status
    assert not any(h.lower().startswith(b"server:") for h in headers), headers
