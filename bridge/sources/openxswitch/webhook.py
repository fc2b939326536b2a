"""The OpenXSwitch webhook receiver: one POST route, answered 2xx only once Kafka has the delivery.

Mounting (the service shell serves it beside ``/healthz`` and ``/metrics``)::

    webhook = OpenXSwitchWebhook(settings.openxswitch, pipeline)
    webhook.add_routes(app)          # POST settings.openxswitch.path
    ... webhook.run() supervised like any source; await webhook.close() before pipeline.close()

or on its own server (tests, benchmarks, demo): ``async with webhook.serve() as url: ...``.

What each request gets, in the order the checks run:

====  ======================================================================================
403   source address outside ``allowed_ips`` (when set)
415   not ``application/json`` (a ``charset`` other than UTF-8 included)
413   body larger than ``max_body_bytes``: refused from ``Content-Length`` before reading, and
      by a streaming cap for chunked bodies; the connection is closed rather than drained
401   ``X-Webhook-Signature`` missing or not the HMAC-SHA256 of the raw body under any
      configured secret. Such a body is **not** published and **not** dead-lettered:
      unauthenticated input is not the provider's and not ours to store — anyone can post it.
400   authenticated, but not a webhook delivery (not UTF-8, not JSON, NaN/Infinity, numbers
      beyond what can be read, no object, no ``method``): the raw bytes go to the DLQ with the
      reason first (503 if Kafka cannot take them), then 400, so the provider's console shows
      the delivery failing.
200   a method that is not a deposit/withdrawal (``internal_transfer.*``, ``instant_swap.*``,
      unknown ones): acknowledged and counted, nothing published — never fail the sender.
200   a transfer method whose ``params`` cannot be normalized — for any reason, including an
      event that could not be serialized for Kafka (lone surrogates, nesting too deep) — the
      raw bytes go to the DLQ and the 200 follows the DLQ ack. It is kept; a retry would fail
      the same way 144 times.
200   a transfer: after Kafka acknowledged the event, or after the dedup gate decided it is a
      repeat (a repeat of a state still in flight waits for that state's ack: the pipeline
      queues per transfer) or stale after the final state.
503   Kafka did not acknowledge within ``ack_timeout_seconds``, the pipeline is shutting down
      or fenced, or ``max_pending`` deliveries are already waiting: the provider retries
      (every 5 minutes for 12 hours). A timed-out event stays in the pipeline and is still
      published when Kafka returns; the retry is then answered as a duplicate.
====  ======================================================================================

Repeats of a body already dead-lettered (the provider retries a 400 for 12 hours, operators
replay from the console) are recognised by a bounded in-memory set of body digests and answered
the same way without writing the DLQ again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from bridge.observability import metrics
from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.ingest.source import SourceBase, SourceHealth
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.config import IPNetwork, OpenXSwitchConfig
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.openxswitch.signature import HEADER, verify
from bridge.contract.timeutil import format_utc_ms

__all__ = ["OpenXSwitchWebhook", "Answer", "build_openxswitch_webhook"]

log = logging.getLogger(__name__)

_PROVIDER = Provider.OPENXSWITCH.value
_OUTCOME_RESULT = {
    Outcome.PUBLISHED: "published",
    Outcome.DUPLICATE: "duplicate",
    Outcome.STALE: "stale",
    Outcome.DEAD_LETTERED: "dead_lettered",
}
_CHUNK = 65_536
_MAX_HEADER_TEXT = 256


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request is answered: the HTTP status and a short result name (metric label)."""

    status: int
    result: str
    detail: str | None = None
    close: bool = False


class _RecentDigests:
    """Bounded memory of bodies already dead-lettered, with the status they were answered."""

    def __init__(self, limit: int):
        self._limit = limit
        self._items: OrderedDict[bytes, Answer] = OrderedDict()

    def get(self, digest: bytes) -> Answer | None:
        answer = self._items.get(digest)
        if answer is not None:
            self._items.move_to_end(digest)
        return answer

    def add(self, digest: bytes, answer: Answer) -> None:
        self._items[digest] = answer
        self._items.move_to_end(digest)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)


class OpenXSwitchWebhook(SourceBase):
    """The receiver component (``bridge.ingest.source.Source``): routes, checks, hand-off, answers."""

    provider = Provider.OPENXSWITCH

    def __init__(
        self,
        config: OpenXSwitchConfig,
        pipeline: Pipeline,
        *,
        name: str = "openxswitch:webhook",
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        if not config.secrets:
            raise ValueError("the OpenXSwitch webhook needs at least one secret")
        self.config = config
        self.pipeline = pipeline
        self.name = name
        self.health = SourceHealth(name, detail={"path": config.path, "awaiting_kafka": 0})
        self.stats: Counter[str] = Counter()
        """Answers by result (``published``, ``duplicate``, ``unauthorized``, ``ignored.instant_swap``, …)."""
        self._secrets = tuple(secret.get_secret_value().encode() for secret in config.secrets)
        self._clock = clock
        self._pending: set[asyncio.Task[Outcome]] = set()
        self._serving = False
        self._accepting = True
        self._dead_lettered = _RecentDigests(dead_letter_memory)

    def __repr__(self) -> str:  # never the secrets
        return f"OpenXSwitchWebhook(path={self.config.path!r}, secrets={len(self._secrets)})"

    # -- mounting and lifecycle ----------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Add the POST route (``config.path``) to an application that is not started yet."""
        app.router.add_post(self.config.path, self.handle)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        self._serving = True
        self._accepting = True
        self.health.mark_connected()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.stop_accepting()

    def stop_accepting(self) -> None:
        """From now on answer 503: the provider keeps the delivery and retries later."""
        self._accepting = False
        self.health.mark_disconnected("shutting down")

    async def close(self, *, timeout: float = 10.0) -> None:
        """Stop accepting and give deliveries still awaiting Kafka (already answered 503) a chance
        to land before the pipeline closes; whatever is left is retried by the provider anyway."""
        self.stop_accepting()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)

    async def drain(self, timeout: float) -> bool:
        await self.close(timeout=timeout)
        return not self._pending

    async def run(self) -> None:
        """A webhook has no connection to keep: the shell's HTTP server carries the route. This
        loop only keeps ``health`` current until cancelled — "connected" while the route is served
        and accepting, also after a supervisor restarted ``run`` and marked it down."""
        try:
            while True:
                if self._serving and self._accepting and not self.health.connected:
                    self.health.mark_connected()
                self.health.detail["awaiting_kafka"] = len(self._pending)
                await asyncio.sleep(1.0)
        finally:
            self.health.detail["awaiting_kafka"] = len(self._pending)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a server of its own (port 0 = any free port); yields the route's URL."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.ack_timeout_seconds + 1)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        try:
            yield f"http://{bound_host}:{bound_port}{self.config.path}"
        finally:
            await runner.cleanup()

    # -- the request ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer = await self._answer(request, started)
        except Exception:  # never a 2xx, never a traceback to the sender
            log.exception("openxswitch webhook: unexpected error; answering 503")
            answer = Answer(503, "error", "temporarily unavailable")
        self.stats[answer.result] += 1
        metrics.WEBHOOK_REQUESTS.labels(_PROVIDER, answer.result.split(".", 1)[0], str(answer.status)).inc()
        metrics.WEBHOOK_LATENCY.labels(_PROVIDER).observe(time.perf_counter() - started)
        body: dict[str, Any] = {"result": answer.result.split(".", 1)[0]}
        if answer.detail:
            body["detail"] = answer.detail
        response = web.json_response(body, status=answer.status)
        if answer.close:
            response.force_close()
        return response

    async def _answer(self, request: web.Request, started: float) -> Answer:
        if not self._accepting:
            return Answer(503, "shutting_down", "shutting down, retry later")
        received_at = format_utc_ms(datetime.fromtimestamp(self._clock(), timezone.utc))
        if self.config.allowed_ips and not self._allowed(request):
            log.info("openxswitch webhook: refused source address %s", request.remote)
            return Answer(403, "forbidden", "source address not allowed")
        if request.content_type != "application/json" or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            return Answer(415, "unsupported_media_type", "expected application/json (UTF-8)")
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return Answer(413, "too_large", f"body larger than {limit} bytes", close=True)
        body = await _read_capped(request, limit)
        if body is None:
            return Answer(413, "too_large", f"body larger than {limit} bytes", close=True)

        header = request.headers.get(HEADER)
        matched = verify(header, body, self._secrets)
        if matched is None:
            why = "missing" if not header else "invalid"
            log.info("openxswitch webhook: %s signature from %s (%d bytes), not accepted", why, request.remote, len(body))
            return Answer(401, f"unauthorized.{why}", f"{why} signature")
        metrics.WEBHOOK_SIGNATURE_MATCHES.labels(_PROVIDER, str(matched)).inc()

        digest = hashlib.sha256(body).digest()
        repeat = self._dead_lettered.get(digest)
        if repeat is not None:
            return Answer(repeat.status, f"{repeat.result}.repeat", repeat.detail)

        try:
            delivery = m.read_delivery(loads_exact(body))
        except ValueError as exc:  # JSONError, ParseError, and the int() digit limit of huge numbers
            letter = self._letter(body, str(exc), m.WEBHOOK_DLQ_CHANNEL, received_at, request, None, None)
            return await self._dead_letter(letter, digest, Answer(400, "malformed", str(exc)), started)

        if not delivery.is_transfer:
            family = m.method_family(delivery.method)
            metrics.WEBHOOK_IGNORED.labels(_PROVIDER, family).inc()
            return Answer(200, f"ignored.{family}")

        try:
            event = parse_delivery(delivery.document, received_at=received_at)
            self.pipeline.publisher.event_record(event)  # what cannot become a record must not enter the pipeline
        except Exception as exc:  # noqa: BLE001 - any reason at all: the delivery is kept, with the reason
            letter = self._letter(
                body,
                _describe(exc),
                m.dead_letter_channel(delivery.method),
                received_at,
                request,
                delivery.request_id,
                m.wallet_hint(delivery.document),
            )
            return await self._dead_letter(letter, digest, Answer(200, "dead_lettered"), started)

        answer = await self._hand_over(event, started)
        if answer.result in ("published", "duplicate", "stale"):
            self.health.mark_event()
        return answer

    # -- helpers -------------------------------------------------------------------------------

    def _allowed(self, request: web.Request) -> bool:
        address = _client_address(request, self.config.trusted_proxies)
        return address is not None and any(address in network for network in self.config.allowed_ips)

    @staticmethod
    def _letter(
        body: bytes,
        reason: str,
        channel: str,
        received_at: str,
        request: web.Request,
        request_id: str | None,
        account_id: str | None,
    ) -> DeadLetter:
        headers = {"content_type": _header_text(request.headers.get("Content-Type")) or ""}
        request_id = _header_text(request_id)
        if request_id:
            headers["request_id"] = request_id
        return DeadLetter(
            provider=Provider.OPENXSWITCH,
            channel=channel,
            reason=reason[:2000],
            raw=body,
            received_at=received_at,
            account_id=_header_text(account_id),
            headers=headers,
        )

    async def _dead_letter(self, letter: DeadLetter, digest: bytes, then: Answer, started: float) -> Answer:
        """Kept first, answered after: a DLQ record Kafka did not ack means 503 (the provider retries)."""
        handed = await self._hand_over(letter, started)
        if handed.result != "dead_lettered":
            return handed
        self._dead_lettered.add(digest, then)
        return then

    async def _hand_over(self, item: TransferEvent | DeadLetter, started: float) -> Answer:
        """Submit to the pipeline and wait, bounded, for the ack or the dedup decision.

        The submission runs in its own task, shielded: a timeout answers 503 but never cancels a
        hand-off half way (the item stays in the pipeline and is published when Kafka returns).
        """
        if len(self._pending) >= self.config.max_pending:
            return Answer(503, "overloaded", "too many deliveries awaiting Kafka, retry later")
        task: asyncio.Task[Outcome] = asyncio.ensure_future(self.pipeline.submit(item))
        self._pending.add(task)
        task.add_done_callback(self._settled)
        remaining = self.config.ack_timeout_seconds - (time.perf_counter() - started)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(task), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            log.warning("openxswitch webhook: Kafka did not acknowledge within %.1fs; answering 503", self.config.ack_timeout_seconds)
            return Answer(503, "timeout", "not yet stored, retry later")
        except RuntimeError as exc:
            if "shutting down" in str(exc):  # Pipeline.offer after close() began
                return Answer(503, "shutting_down", "shutting down, retry later")
            log.error("openxswitch webhook: hand-off failed (%s); answering 503", exc)
            return Answer(503, "unavailable", "not stored, retry later")
        except Exception as exc:  # fenced producer, oversized dead letter, …
            log.error("openxswitch webhook: hand-off failed (%s); answering 503", exc.__class__.__name__)
            return Answer(503, "unavailable", "not stored, retry later")
        return Answer(200, _OUTCOME_RESULT[outcome])

    def _settled(self, task: asyncio.Task[Outcome]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here; the request (if still waiting) got its answer already


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it grows past ``limit`` (chunked bodies have no length)."""
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _client_address(
    request: web.Request, trusted_proxies: list[IPNetwork]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer, or — when the peer is a trusted proxy — the nearest untrusted X-Forwarded-For hop."""
    address = _ip(request.remote)
    if address is None or not trusted_proxies:
        return address
    hops = [hop for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    for hop in reversed(hops):
        if not any(address in network for network in trusted_proxies):
            return address
        address = _ip(hop.strip())
        if address is None:
            return None
    return address


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _describe(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic ValidationError: name the fields, keep it one line
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors()[:5]]
        return "contract validation failed: " + "; ".join(parts)
    if isinstance(exc, ParseError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def _header_text(value: str | None) -> str | None:
    """A sender-chosen string fit for a Kafka header: valid UTF-8, bounded."""
    if not value:
        return None
    return value[:_MAX_HEADER_TEXT].encode("utf-8", "replace").decode("utf-8")


def build_openxswitch_webhook(config: OpenXSwitchConfig, pipeline: Pipeline) -> OpenXSwitchWebhook | None:
    """The receiver when OpenXSwitch is enabled, else None (the shell mounts nothing)."""
    if not config.enabled:
        return None
    return OpenXSwitchWebhook(config, pipeline)
