"""Provider connections verify TLS: a server whose certificate no trusted CA signed is refused.

Each client (OKX WebSocket, Ripio ticket over HTTPS, Ripio WebSocket) is pointed at a loopback TLS
server holding a certificate from this session's throwaway CA. With default settings the TLS
handshake must fail on certificate verification, so the server never sees a completed handshake.

A configurable CA bundle (``ca_bundle``) trusts a private CA or a TLS-inspecting proxy without
turning verification off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.delivery.pipeline import Pipeline
from bridge.sources.okx.config import OkxConfig
from bridge.sources.okx.service import OkxAccountSource, build_okx_sources
from bridge.sources.ripio.service import RipioAccountSource, build_ripio_sources
from bridge_testkit.okx.simulator import default_accounts as okx_accounts
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.conftest import PipelineFactory
from tests.security.material import Material

pytestmark = pytest.mark.kafka  # the sources hand items to a real pipeline

class TlsServer:
    """Accepts TLS on 127.0.0.1 with the test CA's server certificate; counts completed handshakes."""

    def __init__(self, material: Material):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(material.cert_file, material.key_file)
        self.handshakes = 0
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # called only once the TLS handshake succeeded
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TlsServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def running(source: Any) -> AsyncIterator[Any]:
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def okx_source(pipeline: Pipeline, ws_url: str, **overrides: Any) -> OkxAccountSource:
    config = OkxConfig(
        enabled=True,
        ws_url=ws_url,
        accounts=[okx_accounts()[0].okx_account()],
        backfill_enabled=False,
        reconnect_initial=0.05,
        reconnect_max=0.2,
        handshake_timeout=3,
        **overrides,
    )
    [source] = build_okx_sources(config, pipeline)
    return source


def ripio_source(pipeline: Pipeline, sim: RipioSimulator, **overrides: Any) -> RipioAccountSource:
    config = sim.config(
        accounts=[sim.accounts["main"].ripio_account()],
        backfill_enabled=False,
        rest_max_retries=0,
        handshake_timeout=3,
        reconnect_max=0.2,
        **overrides,
    )
    [source] = build_ripio_sources(config, pipeline)
    return source


def certificate_refused(source: Any) -> bool:
    error = source.health.last_error or ""
    return any(sign in error for sign in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "CertificateError"))


async def test_okx_refuses_a_websocket_server_whose_certificate_no_trusted_ca_signed(
    tls_material: Material, make_pipeline: PipelineFactory
) -> None:
    async with TlsServer(tls_material).running() as server:
        source = okx_source(await make_pipeline(), f"wss://127.0.0.1:{server.port}/ws/v5/business")
        async with running(source):
            await until(lambda: certificate_refused(source))
        assert server.handshakes == 0
        assert not source.health.connected


async def test_ripio_refuses_an_https_ticket_server_whose_certificate_no_trusted_ca_signed(
    tls_material: Material, make_pipeline: PipelineFactory
) -> None:
    async with RipioSimulator() as sim, TlsServer(tls_material).running() as server:
        source = ripio_source(await make_pipeline(), sim, rest_url=f"https://127.0.0.1:{server.port}")
        async with running(source):
            await until(lambda: certificate_refused(source))
        assert server.handshakes == 0


async def test_ripio_refuses_a_websocket_server_whose_certificate_no_trusted_ca_signed(
    tls_material: Material, make_pipeline: PipelineFactory
) -> None:
    async with RipioSimulator() as sim, TlsServer(tls_material).running() as server:
        source = ripio_source(await make_pipeline(), sim, ws_url=f"wss://127.0.0.1:{server.port}/")
        async with running(source):
            await until(lambda: certificate_refused(source))
            assert source.stats["tickets"] >= 1  # the ticket came over plain loopback HTTP; the stream refused
        assert server.handshakes == 0


async def test_okx_trusts_a_server_signed_by_the_configured_ca_bundle(tls_material: Material, make_pipeline: PipelineFactory) -> None:
    async with TlsServer(tls_material).running() as server:
        source = okx_source(
            await make_pipeline(), f"wss://127.0.0.1:{server.port}/ws/v5/business", ca_bundle=Path(tls_material.ca_file)
        )
        async with running(source):
            await until(lambda: server.handshakes > 0)


async def test_ripio_trusts_servers_signed_by_the_configured_ca_bundle(tls_material: Material, make_pipeline: PipelineFactory) -> None:
    async with RipioSimulator() as sim, TlsServer(tls_material).running() as server:
        source = ripio_source(
            await make_pipeline(), sim, rest_url=f"https://127.0.0.1:{server.port}", ca_bundle=Path(tls_material.ca_file)
        )
        async with running(source):
            await until(lambda: server.handshakes > 0)


def test_a_ca_bundle_that_does_not_exist_is_a_configuration_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ca_bundle"):
        OkxConfig(ca_bundle=tmp_path / "missing.pem")
