"""The Ripio source: one ``RipioAccountSource`` per configured account, each with its own stream.

Data path per account: a fresh ticket (signed ``POST /trade/ticket``) → ``client.RipioConnection``
frames → ``parse.parse_message`` → ``pipeline.offer``. After every (re)connect, on every gap in a
topic's message ``id`` sequence and on an interval, ``backfill`` reads the deposit and withdrawal
listings through ``parse.parse_rows`` into the same pipeline with ``source.via = "backfill"``.

Ordering between a backfill pass and live messages: a listing page is a snapshot taken when its
request was sent, so while a pass runs the account's live transfer messages are held and merged
with the pages by receive time — messages received before a page's request go first, then the
page, then later messages. Ripio transfers have one non-final state (``pending``), and the dedup
gate drops a ``pending`` seen after the final state, so what remains unordered cannot reach Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from datetime import datetime, timezone
from functools import partial
from typing import Callable

import aiohttp
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from bridge import metrics
from bridge.backoff import Backoff
from bridge.events import DeadLetter, Provider, TransferEvent, Via
from bridge.parsing import ParseError, ParseResult
from bridge.pipeline import Outcome, Pipeline
from bridge.source import SourceHealth
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.backfill import Window, listing_pages
from bridge.sources.ripio.client import Frame, HandshakeError, KeepaliveTimeout, RipioConnection, TicketRejected
from bridge.sources.ripio.config import RipioAccount, RipioConfig
from bridge.sources.ripio.parse import parse_message, parse_rows
from bridge.sources.ripio.rest import RipioRest, TransientRestError
from bridge.timeutil import format_utc_ms
from bridge.tls import client_context, websocket_ssl

__all__ = ["RipioAccountSource", "build_ripio_sources", "STREAM_DLQ_CHANNEL"]

log = logging.getLogger(__name__)

STREAM_DLQ_CHANNEL = "stream"
"""DLQ channel of frames that are not a message we can read (not JSON, not an object, no topic)."""

_PROVIDER = Provider.RIPIO.value
_TRIGGER_PRIORITY = ("gap", "reconnect", "manual")
"""One label per pass for the metric, however many reasons asked for it."""


class _Held:
    """Live messages held back while a backfill pass runs, each with its monotonic receive time."""

    def __init__(self, limit: int):
        self.items: deque[tuple[float, ParseResult]] = deque()
        self.limit = limit

    def add(self, item: ParseResult, at: float) -> None:
        self.items.append((at, item))

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


class RipioAccountSource:
    """Run loop and health of one Ripio account (``bridge.source.Source``)."""

    provider = Provider.RIPIO

    def __init__(
        self,
        config: RipioConfig,
        account: RipioAccount,
        pipeline: Pipeline,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.account = account
        self.pipeline = pipeline
        self.name = f"ripio:{account.name}"
        self.health = SourceHealth(self.name, detail={"account": account.name, "backfill_error": None})
        self.stats: Counter[str] = Counter()
        """Outcomes by path (``push.published``, ``backfill.duplicate``, …) and connection events."""
        self._clock = clock
        self._user_id = account.user_id
        self._window = Window(
            now_ms=int(clock() * 1000),
            initial_lookback_ms=int(config.backfill_initial_lookback * 1000),
            overlap_ms=int(config.backfill_overlap * 1000),
            max_lookback_ms=int(config.backfill_max_lookback * 1000),
        )
        self._held: _Held | None = None
        self._trigger: asyncio.Event | None = None
        self._reasons: set[str] = set()
        self._pending: set[asyncio.Future[Outcome]] = set()
        self._secrets = tuple(
            value for value in (account.api_token.get_secret_value(), account.api_secret.get_secret_value()) if value
        )

    # -- run loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._trigger = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self.config.rest_timeout)
        connector = aiohttp.TCPConnector(ssl=client_context(self.config.ca_bundle))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            rest = RipioRest(
                http,
                self.config.rest_url,
                self.account.name,
                self.account,
                rate_per_second=self.config.rest_rate_per_second,
                max_retries=self.config.rest_max_retries,
                tolerance_ms=self.config.timestamp_tolerance_ms,
                sign_query=self.config.sign_query,
                retry_initial=self.config.rest_retry_initial,
                clock=self._clock,
            )
            backfill = (
                asyncio.create_task(self._backfill_loop(rest), name=f"{self.name}-backfill")
                if self.config.backfill_enabled
                else None
            )
            try:
                await self._connect_loop(rest)
            finally:
                if backfill is not None:
                    backfill.cancel()
                    await asyncio.gather(backfill, return_exceptions=True)
                metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(0)

    async def _open(self, rest: RipioRest) -> RipioConnection:
        """A fresh ticket for every connection: tickets are short-lived and may be single use."""
        cfg = self.config
        self.stats["connect_attempts"] += 1
        ticket = await rest.ticket(cfg.ticket_path)
        self.stats["tickets"] += 1
        return await RipioConnection.open(
            cfg.ws_url,
            self.account.name,
            ticket,
            cfg.topics,
            ping_interval=cfg.ping_interval,
            liveness_timeout=cfg.liveness_timeout,
            ws_ping_interval=cfg.ws_ping_interval,
            ws_ping_timeout=cfg.ws_ping_timeout,
            handshake_timeout=cfg.handshake_timeout,
            ssl_context=websocket_ssl(cfg.ws_url, cfg.ca_bundle),
            confirm_timeout=cfg.subscribe_confirm_timeout,
            clock=self._clock,
        )

    async def _connect_loop(self, rest: RipioRest) -> None:
        cfg = self.config
        backoff = Backoff(initial=cfg.reconnect_initial, maximum=cfg.reconnect_max, min_uptime=cfg.min_uptime)
        rejected_in_a_row = 0
        who = f"Ripio account {self.account.name!r}"
        while True:
            try:
                connection = await self._open(rest)
            except m.RestError as exc:  # not transient: credentials, signature, clock or request
                await self._configuration_failed(f"{who}: ticket refused: {self._scrub(str(exc))}")
                continue
            except TransientRestError as exc:
                await self._disconnected(self._scrub(str(exc)), "ticket_failed", backoff)
                continue
            except TicketRejected as exc:
                rejected_in_a_row += 1
                self.stats["tickets_rejected"] += 1
                if rejected_in_a_row >= cfg.ticket_rejections_before_config_error:
                    await self._configuration_failed(f"{self._scrub(str(exc))} ({rejected_in_a_row} tickets in a row; check rest_url and ws_url belong together)")
                else:
                    await self._disconnected(self._scrub(str(exc)), "ticket_rejected", backoff)
                continue
            except InvalidURI as exc:
                await self._configuration_failed(f"{who}: invalid ws_url: {exc}")
                continue
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status != 429:
                    await self._configuration_failed(f"{who}: WebSocket upgrade refused with HTTP {status} (check ws_url)")
                else:
                    await self._disconnected(f"HTTP {status} on upgrade", "handshake", backoff)
                continue
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, HandshakeError) as exc:
                await self._disconnected(_describe(exc), "connect_failed", backoff)
                continue
            rejected_in_a_row = 0
            self._connected(backoff)
            try:
                await self._read(connection)
                reason, error = "closed", "stream ended"
            except KeepaliveTimeout as exc:
                reason, error = "keepalive", str(exc)
            except (ConnectionClosed, OSError) as exc:
                reason, error = "closed", _describe(exc)
            finally:
                await connection.close()
            metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(0)
            await self._disconnected(error, reason, backoff)

    def _connected(self, backoff: Backoff) -> None:
        backoff.connected()
        self.health.mark_connected()
        self.stats["connections"] += 1
        metrics.SOURCE_CONNECTIONS.labels(_PROVIDER, self.account.name).inc()
        metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(1)
        self.request_backfill("reconnect")  # whatever happened while we were away

    async def _disconnected(self, error: str, reason: str, backoff: Backoff) -> None:
        self.health.mark_disconnected(error)
        self.stats[f"reconnect.{reason}"] += 1
        metrics.SOURCE_RECONNECTS.labels(_PROVIDER, self.account.name, reason).inc()
        delay = backoff.next_delay()
        log.warning("ripio account %r disconnected (%s: %s); reconnecting in %.2fs", self.account.name, reason, error, delay)
        await asyncio.sleep(delay)

    async def _configuration_failed(self, message: str) -> None:
        """Credentials or request refused: not ready, say so plainly, retry slowly."""
        self.health.mark_disconnected(message, config_error=True)
        self.stats["config_errors"] += 1
        metrics.SOURCE_RECONNECTS.labels(_PROVIDER, self.account.name, "config_error").inc()
        retry = self.config.config_error_retry * random.uniform(0.9, 1.1)
        log.error("%s; fix the configuration — retrying in %.1fs", message, retry)
        await asyncio.sleep(retry)

    def _scrub(self, text: str) -> str:
        """Provider messages may echo what we sent: blank out the token and the secret."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- live messages -------------------------------------------------------------------------

    async def _read(self, connection: RipioConnection) -> None:
        sequence = m.SequenceTracker(self.config.sequence_start)  # ids restart per connection
        async for frame in connection.frames():
            received = time.monotonic()
            self.stats["frames"] += 1
            self._check_sequence(sequence, frame)
            for item in self._parse(frame):
                if self._held is not None and isinstance(item, TransferEvent):
                    self._held.add(item, received)
                else:
                    await self._offer(item, Via.PUSH)

    def _check_sequence(self, sequence: m.SequenceTracker, frame: Frame) -> None:
        message = frame.message
        if not isinstance(message, dict):
            return
        topic = message.get("topic")
        if not isinstance(topic, str) or topic not in self.config.topics:
            return
        first = sequence.last(topic) is None
        skipped = sequence.observe(topic, message.get("id"))
        if skipped:
            self.stats["gaps"] += 1
            self.stats["gap_ids"] += skipped
            metrics.SOURCE_GAPS.labels(_PROVIDER, self.account.name).inc()
            self.health.detail["last_gap"] = {"topic": topic, "missing": skipped, "before_id": message.get("id")}
            log.warning(
                "ripio account %r: %d %s message(s) missing before id %s%s; backfilling",
                self.account.name,
                skipped,
                topic,
                message.get("id"),
                " (the first on this connection: set sequence_start to None if ids continue across connections)" if first else "",
            )
            self.request_backfill("gap")

    def _parse(self, frame: Frame) -> list[ParseResult]:
        if frame.error is not None:
            return [self._dead_letter(frame, frame.error)]
        message = frame.message
        if not isinstance(message, dict):
            return [self._dead_letter(frame, f"frame is a JSON {type(message).__name__}, not an object")]
        if self._user_id is None and isinstance(message.get("body"), dict):
            user_id = message["body"].get("user_id")
            if isinstance(user_id, str) and user_id:
                self._user_id = user_id
                self.health.detail["user_id"] = user_id
        try:
            return parse_message(message, received_at=frame.received_at)
        except ParseError as exc:
            return [self._dead_letter(frame, str(exc))]

    def _dead_letter(self, frame: Frame, reason: str) -> DeadLetter:
        return DeadLetter(
            provider=Provider.RIPIO,
            channel=STREAM_DLQ_CHANNEL,
            reason=reason,
            raw=frame.data,
            received_at=frame.received_at,
            account_id=self._user_id,
            headers={"account": self.account.name},
        )

    async def _offer(self, item: ParseResult, via: Via) -> None:
        """Hand over without waiting for Kafka: ``offer`` only waits for pipeline room
        (backpressure); the outcome is counted when its future resolves."""
        if isinstance(item, TransferEvent):
            self._window.note(item)
            self.health.mark_event()
            metrics.LAST_EVENT_TIMESTAMP.labels(_PROVIDER, self.account.name).set(time.time())
        future = await self.pipeline.offer(item)
        self._pending.add(future)
        future.add_done_callback(partial(self._on_outcome, via))

    def _on_outcome(self, via: Via, future: asyncio.Future[Outcome]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.stats["failed"] += 1
            log.error("ripio account %r: item not delivered: %s", self.account.name, error.__class__.__name__)
            return
        self.stats[f"{via.value}.{future.result().value}"] += 1

    # -- backfill ------------------------------------------------------------------------------

    def request_backfill(self, reason: str = "manual") -> None:
        """Ask for a pass as soon as the running one (if any) is done."""
        self._reasons.add(reason)
        if self._trigger is not None:
            self._trigger.set()

    async def _backfill_loop(self, rest: RipioRest) -> None:
        assert self._trigger is not None
        if self._reasons:
            self._trigger.set()
        wait = self.config.backfill_interval
        while True:
            try:
                await asyncio.wait_for(self._trigger.wait(), wait)
                trigger = next((r for r in _TRIGGER_PRIORITY if r in self._reasons), "manual")
            except TimeoutError:
                trigger = "interval"
            self._trigger.clear()
            self._reasons.clear()
            try:
                await self.backfill_pass(rest, trigger)
                wait = self.config.backfill_interval
            except m.RestError as exc:  # credentials refused on REST
                self._backfill_failed(f"Ripio account {self.account.name!r}: backfill refused: {self._scrub(str(exc))}", logging.ERROR)
                wait = self.config.config_error_retry
            except TransientRestError as exc:
                self._backfill_failed(self._scrub(str(exc)), logging.WARNING)
                wait = self.config.backfill_retry
            except Exception as exc:  # this loop must outlive any single pass
                detail = self._scrub(str(exc))[:300]
                self._backfill_failed(
                    f"Ripio account {self.account.name!r}: backfill failed: {exc.__class__.__name__}: {detail}", logging.ERROR
                )
                wait = self.config.backfill_retry

    def _backfill_failed(self, message: str, level: int) -> None:
        self.health.detail["backfill_error"] = message
        self.stats["backfill_failures"] += 1
        log.log(level, "%s; next pass later", message)

    async def backfill_pass(self, rest: RipioRest, trigger: str = "manual") -> int:
        """Read the window's listings into the pipeline; returns the number of rows offered."""
        cfg = self.config
        started_ms = int(self._clock() * 1000)
        since = self._window.since(started_ms)
        metrics.BACKFILL_RUNS.labels(_PROVIDER, self.account.name, trigger).inc()
        self.stats[f"backfill_trigger.{trigger}"] += 1
        held = self._held = _Held(cfg.backfill_max_held)
        seen: set[str] = set()
        offered = 0
        complete = False
        try:
            for topic in cfg.topics:
                for currency in self.account.currencies or (None,):
                    async for rows, sent_at in listing_pages(
                        rest,
                        cfg.listing_path(topic),
                        topic,
                        since_ms=since,
                        currency=currency,
                        page_size=cfg.backfill_page_size,
                    ):
                        if held.full:
                            raise TransientRestError(
                                f"Ripio account {self.account.name!r}: {len(held.items)} messages held during backfill; pass cut short"
                            )
                        metrics.BACKFILL_ITEMS.labels(_PROVIDER, self.account.name).inc(len(rows))
                        while held.items and held.items[0][0] < sent_at:  # older than this snapshot
                            await self._offer(held.items.popleft()[1], Via.PUSH)
                        received_at = _now_iso(self._clock)
                        for item in parse_rows(topic, rows, received_at=received_at, user_id=self._user_id):
                            if isinstance(item, TransferEvent):
                                if item.event_id in seen:
                                    continue  # a row on two pages of a moving list
                                seen.add(item.event_id)
                            await self._offer(item, Via.BACKFILL)
                            offered += 1
            complete = True
        finally:
            if not _cancelling():
                while held.items:  # the reader keeps adding while we wait for pipeline room
                    await self._offer(held.items.popleft()[1], Via.PUSH)
            self._held = None
        if complete:
            self._window.completed(started_ms)
            self.health.detail["backfill_error"] = None
            self.health.detail["backfill_last_success"] = _now_iso(self._clock)
            self.stats["backfill_passes"] += 1
        log.info("ripio account %r: backfill (%s) since %s offered %d rows", self.account.name, trigger, _iso(since), offered)
        return offered

    # -- helpers for the shell and tests -------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Items offered and not yet decided, or live messages held by a running pass."""
        return bool(self._pending) or (self._held is not None and bool(self._held.items))

    async def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every offered item has its outcome (for shutdown and tests)."""
        pending = list(self._pending)
        if not pending:
            return True
        done, _ = await asyncio.wait(pending, timeout=timeout)
        return len(done) == len(pending)


def _now_iso(clock: Callable[[], float]) -> str:
    return format_utc_ms(datetime.fromtimestamp(clock(), tz=timezone.utc))


def _iso(epoch_ms: int) -> str:
    return format_utc_ms(datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc))


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        return f"closed by Ripio with {exc.rcvd.code} {exc.rcvd.reason}".strip()
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def build_ripio_sources(config: RipioConfig, pipeline: Pipeline) -> list[RipioAccountSource]:
    """One source per enabled account; empty when the Ripio source is disabled."""
    if not config.enabled:
        return []
    return [RipioAccountSource(config, account, pipeline) for account in config.accounts if account.enabled]
