"""The HTTP side of the service: webhook routes, ``/healthz``, ``/readyz`` and ``/metrics``.

Two listeners by default, so a NetworkPolicy can open them to different peers: the webhook port
(providers, through the ingress) and the admin port (kubelet probes, Prometheus). With
``admin_port: null`` everything is served on one port.

The admin listener starts first, so ``/healthz`` answers while Kafka is still being reached;
webhook routes must be mounted before the webhook listener starts (aiohttp freezes its router).
From ``begin_drain()`` on, webhook routes answer 503 (the provider keeps the delivery and retries)
and ``/readyz`` answers 503 so the Service stops sending traffic; ``/healthz`` stays 200 until
the process exits, so the kubelet does not kill a pod that is draining.

Slow or too many clients (slowloris) cannot hold a listener: each connection must send a request's
head within ``request_header_timeout_seconds`` of opening or of its previous answer (else it is
closed; idle keep-alive connections close after it too), a body must arrive within
``request_body_timeout_seconds`` of its head (else 408 and close), and past ``max_connections``
open connections a listener answers a new one 503 and closes it. The limits are per listener, so
a flood on the webhook port leaves the admin port answering probes.

What aiohttp answers by itself (a malformed request, a handler that crashed) is plain: the status
line and its reason, nothing of the request echoed, logged in one line without it. No answer
carries a ``Server`` header naming the software and its version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from bridge.service.settings import ServerSettings

__all__ = ["HttpServer", "WebhookComponent", "ReadinessProbe", "ADMIN_PATHS"]

log = logging.getLogger(__name__)

ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ready, JSON-able detail)."""


class WebhookComponent(Protocol):
    def add_routes(self, app: web.Application) -> None: ...


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload, default=str), status=status, content_type="application/json"
    )


_BUSY_BODY = b'{"error":"too many connections, retry later"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 5\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
"""What a connection past ``max_connections`` gets, written before anything is read from it."""


async def _gone(request: web.Request) -> web.Response:
    return _json({"error": "no such webhook (removed from the configuration)"}, status=404)


def _routes_of(app: web.Application) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
    """(method, path, handler) of each plain route of ``app``."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path:
            found.append((route.method, str(path), route.handler))
    return found


class BodyTimeout(TimeoutError):
    """A request body did not arrive within ``request_body_timeout_seconds`` (read by a handler)."""


class _Refused(asyncio.Protocol):
    """A connection past the listener's cap: answered 503 at once and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _Plain(web.Response):
    """An answer aiohttp would build itself, without the ``Server`` banner it adds to every one."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the application's answers do not name the server software either."""
    response.headers.popall(hdrs.SERVER, None)


class _Connection(RequestHandler):
    """aiohttp's handler of one connection, counted against its listener's cap, answering what
    it answers itself plainly."""

    def __init__(self, manager: web.Server, *, role: str, on_close: Callable[[], None], **options: Any):
        super().__init__(manager, **options)
        self._role = role
        self._on_close: Callable[[], None] | None = on_close

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A malformed request (400, 413, 431, …), a handler that raised (500) or timed out (504).

        aiohttp's own answer quotes the offending request line or header back to the sender (and
        logs it in a traceback): here only the status is answered, and logged with the error's
        class, never its text — a header may carry a credential."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the error")
        if status >= 500:
            log.error("%s: request from %s failed; answering %d", self._role, request.remote, status, exc_info=exc)
        else:
            log.info(
                "%s: malformed request from %s answered %d (%s)",
                self._role, request.remote, status, type(exc).__name__ if exc is not None else "unknown",
                extra={"role": self._role},
            )
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        response = _Plain(status=status, text=f"{status} {reason}", content_type="text/plain")
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
        super().connection_lost(exc)


class _Listener(web.BaseSite):
    """A TCP listener whose connections get ``_Connection`` handlers with the server's timeouts,
    up to ``max_connections`` at a time (aiohttp's own ``TCPSite`` has neither)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, settings: ServerSettings, role: str, access_log: logging.Logger | None):
        super().__init__(runner)
        self._host, self._port, self._role = host, port, role
        self._settings = settings
        self._access_log = access_log
        self.open = 0
        self._warned_at = 0.0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._host, self._port, backlog=self._backlog)

    def _protocol(self) -> asyncio.BaseProtocol:
        """Called by the event loop for each accepted connection, before it is made: counting here
        keeps the cap exact when a burst is accepted in one go."""
        if self.open >= self._settings.max_connections:
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning(
                    "%s: %d connections open, server.max_connections reached; answering new ones 503",
                    self._role, self.open, extra={"role": self._role},
                )
            return _Refused()
        server = self._runner.server
        assert server is not None
        self.open += 1
        return _Connection(
            server,
            role=self._role,
            on_close=self._closed,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=self._settings.request_header_timeout_seconds,
            access_log=self._access_log,
        )

    def _closed(self) -> None:
        self.open -= 1


class HttpServer:
    def __init__(
        self,
        settings: ServerSettings,
        readiness: ReadinessProbe,
        *,
        before_scrape: Callable[[], None] | None = None,
        shutdown_timeout: float = 5.0,
    ):
        self.settings = settings
        self._readiness = readiness
        self._before_scrape = before_scrape
        self._shutdown_timeout = shutdown_timeout
        self._started = time.monotonic()
        self.draining = False
        self._forwarded: dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        """(method, path) → handler of a webhook route changed by a configuration reload."""
        self.public = web.Application(
            middlewares=[self._drain_middleware, self._body_deadline, self._reloaded_routes],
            client_max_size=64 * 1024 * 1024,
        )
        admin_port = settings.admin_port
        self.separate_admin = admin_port is not None and (admin_port == 0 or admin_port != settings.port)
        self.admin = web.Application() if self.separate_admin else self.public
        for app in {id(self.public): self.public, id(self.admin): self.admin}.values():
            app.on_response_prepare.append(_no_banner)
        self.admin.router.add_get("/healthz", self._healthz)
        self.admin.router.add_get("/readyz", self._readyz)
        self.admin.router.add_get("/metrics", self._metrics)
        self._runners: list[web.AppRunner] = []
        self.addresses: dict[str, tuple[str, int]] = {}
        """``"webhooks"`` / ``"admin"`` → (host, port) actually bound (port 0 resolved)."""

    # -- mounting ------------------------------------------------------------------------------

    def mount(self, component: WebhookComponent) -> None:
        component.add_routes(self.public)

    async def forward(self, routes: web.Application) -> None:
        """Serve ``routes`` (an application a reloaded webhook added its routes to) on the running
        webhook listener, in place of what its paths answered: aiohttp's router is frozen once it
        serves, so the reload's routes are looked up first. Runs ``routes``' startup hooks (the
        receiver starts serving)."""
        routes.freeze()
        await routes.on_startup.send(routes)
        for method, path, handler in _routes_of(routes):
            self._forwarded[(method, path)] = handler

    def unroute(self, component: WebhookComponent) -> None:
        """The routes of a component a reload removed answer 404 from now on."""
        scratch = web.Application()
        component.add_routes(scratch)
        for method, path, _ in _routes_of(scratch):
            self._forwarded[(method, path)] = _gone

    # -- lifecycle -----------------------------------------------------------------------------

    async def start_admin(self) -> None:
        """Start the admin listener now (when it is separate); health answers from here on."""
        if self.separate_admin:
            assert self.settings.admin_port is not None
            self.addresses["admin"] = await self._listen(self.admin, self.settings.admin_port, "admin")

    async def start_webhooks(self) -> None:
        self.addresses["webhooks"] = await self._listen(self.public, self.settings.port, "webhooks")
        if not self.separate_admin:
            self.addresses["admin"] = self.addresses["webhooks"]

    async def _listen(self, app: web.Application, port: int, role: str) -> tuple[str, int]:
        access_log = logging.getLogger("aiohttp.access") if self.settings.access_log else None
        runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=self._shutdown_timeout, handle_signals=False)
        await runner.setup()
        site = _Listener(runner, self.settings.host, port, self.settings, role, access_log)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        host, bound = runner.addresses[-1][:2]
        log.info("%s listening on http://%s:%d", role, host, bound, extra={"role": role, "host": host, "port": bound})
        return host, bound

    def begin_drain(self) -> None:
        """Webhooks answer 503 and readiness fails from now on; health and metrics keep answering."""
        self.draining = True

    async def stop(self) -> None:
        """Close listeners, webhook one first (requests still waiting for Kafka get their answer)."""
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    # -- handlers ------------------------------------------------------------------------------

    @web.middleware
    async def _drain_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.draining and request.path not in ADMIN_PATHS:
            return _json({"error": "shutting down, retry later"}, status=503)
        return await handler(request)

    @web.middleware
    async def _reloaded_routes(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._forwarded:
            forwarded = self._forwarded.get((request.method, request.path))
            if forwarded is not None:
                return await forwarded(request)
        return await handler(request)

    @web.middleware
    async def _body_deadline(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A body still arriving ``request_body_timeout_seconds`` after the head fails the handler's
        read with ``BodyTimeout`` (a ``TimeoutError``): the webhook answers 408 and closes."""
        body = request.content
        if body.is_eof():
            return await handler(request)
        timeout = self.settings.request_body_timeout_seconds

        def expire() -> None:
            if not body.is_eof():
                body.set_exception(BodyTimeout(f"request body not received within {timeout:g}s"))

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await handler(request)
        finally:
            timer.cancel()

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "uptime_seconds": round(time.monotonic() - self._started, 3)})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, detail = self._readiness()
        if self.draining:
            ready = False
        return _json({"ready": ready, "draining": self.draining, **detail}, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            self._before_scrape()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))  # OpenMetrics if asked
        return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})
