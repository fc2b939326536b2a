"""The OKX source: one ``OkxAccountSource`` per configured account, each with its own connection.

Data path per account: ``client.OkxConnection`` frames → ``parse.parse_push`` → ``pipeline.offer``;
after every (re)connect and on an interval, ``backfill`` reads the REST history through
``parse.parse_rows`` into the same pipeline with ``source.via = "backfill"``.

Ordering between a backfill pass and live pushes: a history page is a snapshot taken when its
request was sent, so while an account's pass runs, the pushes of that account's transfers are
held — whichever connection received them: a master key also receives its sub-accounts' pushes —
and merged with the pages by receive time: pushes received before a page's request go first,
then the page, then later pushes. A transfer that changes twice within one page's round trip can
still be seen out of order; the dedup gate keeps final states last.
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
from bridge.jsonutil import JSONError, loads_exact
from bridge.parsing import ParseError, ParseResult
from bridge.pipeline import Outcome, Pipeline
from bridge.source import ConfigurationError, SourceHealth
from bridge.sources.okx import messages as m
from bridge.sources.okx.backfill import BackfillError, HistoryClient, Window
from bridge.sources.okx.client import Frame, HandshakeError, KeepaliveTimeout, OkxConnection
from bridge.sources.okx.config import OkxAccount, OkxConfig
from bridge.sources.okx.parse import parse_push, parse_rows
from bridge.timeutil import format_utc_ms
from bridge.tls import client_context, websocket_ssl

__all__ = ["OkxAccountSource", "BackfillCoordinator", "build_okx_sources", "WS_DLQ_CHANNEL"]

log = logging.getLogger(__name__)

WS_DLQ_CHANNEL = "ws/v5/business"
"""DLQ channel of frames that are not a push we can read (not JSON, not an object, no channel)."""

_PROVIDER = Provider.OKX.value


class _Held:
    """Live pushes held back while a backfill pass runs, each with its monotonic receive time."""

    def __init__(self, limit: int):
        self.items: deque[tuple[float, ParseResult]] = deque()
        self.limit = limit

    def add(self, item: ParseResult, at: float) -> None:
        self.items.append((at, item))

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


class BackfillCoordinator:
    """Shared by the sources of one process: whose backfill pass is running, by account uid, so a
    master's connection holds a sub-account's pushes while that sub-account's pass runs."""

    def __init__(self) -> None:
        self._running: dict[str, _Held] = {}

    def begin(self, uid: str, held: _Held) -> None:
        self._running[uid] = held

    def end(self, uid: str, held: _Held) -> None:
        if self._running.get(uid) is held:
            del self._running[uid]

    def held_for(self, uid: str) -> _Held | None:
        return self._running.get(uid)


class OkxAccountSource:
    """Run loop and health of one OKX account (``bridge.source.Source``)."""

    provider = Provider.OKX

    def __init__(
        self,
        config: OkxConfig,
        account: OkxAccount,
        pipeline: Pipeline,
        *,
        coordinator: BackfillCoordinator | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.account = account
        self.pipeline = pipeline
        self.name = f"okx:{account.name}"
        self.health = SourceHealth(self.name, detail={"account": account.name, "backfill_error": None})
        self.stats: Counter[str] = Counter()
        """Outcomes by path (``push.published``, ``backfill.duplicate``, …) and connection events."""
        self._clock = clock
        self._uid = account.uid
        self._window = Window(
            now_ms=int(clock() * 1000),
            initial_lookback_ms=int(config.backfill_initial_lookback * 1000),
            overlap_ms=int(config.backfill_overlap * 1000),
            max_lookback_ms=int(config.backfill_max_lookback * 1000),
        )
        self._held: _Held | None = None
        self._coordinator = coordinator or BackfillCoordinator()
        self._trigger: asyncio.Event | None = None
        self._pending: set[asyncio.Future[Outcome]] = set()
        self._subscriptions = m.subscription_args(account.deposit_ccy, account.withdrawal_ccy)

    # -- run loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._trigger = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self.config.rest_timeout)
        connector = aiohttp.TCPConnector(ssl=client_context(self.config.ca_bundle))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            history = HistoryClient(
                http,
                self.config.rest_url,
                self.account.name,
                self.account,
                rate_per_second=self.config.rest_rate_per_second,
                max_retries=self.config.rest_max_retries,
                clock=self._clock,
            )
            backfill = (
                asyncio.create_task(self._backfill_loop(history), name=f"{self.name}-backfill")
                if self.config.backfill_enabled
                else None
            )
            try:
                await self._connect_loop()
            finally:
                if backfill is not None:
                    backfill.cancel()
                    await asyncio.gather(backfill, return_exceptions=True)
                metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(0)

    async def _open(self) -> OkxConnection:
        cfg = self.config
        self.stats["connect_attempts"] += 1
        return await OkxConnection.open(
            cfg.ws_url,
            self.account.name,
            self.account,
            self._subscriptions,
            ping_interval=cfg.ping_interval,
            pong_timeout=cfg.effective_pong_timeout,
            handshake_timeout=cfg.handshake_timeout,
            ssl_context=websocket_ssl(cfg.ws_url, cfg.ca_bundle),
            clock=self._clock,
        )

    async def _connect_loop(self) -> None:
        cfg = self.config
        backoff = Backoff(initial=cfg.reconnect_initial, maximum=cfg.reconnect_max, min_uptime=cfg.min_uptime)
        connection: OkxConnection | None = None
        while True:
            if connection is None:
                try:
                    connection = await self._open()
                except ConfigurationError as exc:
                    await self._configuration_failed(str(exc))
                    continue
                except InvalidURI as exc:
                    await self._configuration_failed(f"OKX account {self.account.name!r}: invalid ws_url: {exc}")
                    continue
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if 400 <= status < 500 and status != 429:
                        await self._configuration_failed(
                            f"OKX account {self.account.name!r}: WebSocket upgrade refused with HTTP {status} (check ws_url)"
                        )
                        continue
                    await self._disconnected(f"HTTP {status} on upgrade", "handshake", backoff)
                    continue
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, HandshakeError) as exc:
                    await self._disconnected(_describe(exc), "connect_failed", backoff)
                    continue
                self._connected(backoff, connection)

            config_error: str | None = None
            successor: OkxConnection | None = None
            try:
                successor = await self._serve(connection, backoff)
                reason, error = "notice", "service upgrade notice 64008"
            except ConfigurationError as exc:
                reason, error, config_error = "config_error", str(exc), str(exc)
            except KeepaliveTimeout as exc:
                reason, error = "keepalive", str(exc)
            except (ConnectionClosed, OSError) as exc:
                reason, error = "closed", _describe(exc)
            finally:
                await connection.close()
            connection = successor
            if successor is not None:
                self.stats["reconnect.notice"] += 1
                metrics.SOURCE_RECONNECTS.labels(_PROVIDER, self.account.name, reason).inc()
                self._connected(backoff, successor)
                continue
            metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(0)
            if config_error is not None:
                await self._configuration_failed(config_error)
            else:
                await self._disconnected(error, reason, backoff)

    async def _serve(self, connection: OkxConnection, backoff: Backoff) -> OkxConnection | None:
        """Read until the connection ends (raises), or hand over after a 64008 notice: open a
        successor, then close this one and read what it still delivers before the successor's
        first frame (make before break: nothing pushed in between is lost, order is kept).
        The successor waits for the backoff, so notices right after every open are no tight loop."""
        reader = asyncio.create_task(self._read(connection), name=f"{self.name}-reader")
        notice = asyncio.create_task(connection.upgrade_notice.wait())
        try:
            await asyncio.wait({reader, notice}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                await asyncio.wait({reader}, timeout=backoff.next_delay())  # reading goes on meanwhile
            if reader.done():
                reader.result()
                raise ConnectionError("connection ended")
            try:
                successor = await self._open()
            except (ConfigurationError, OSError, TimeoutError, InvalidHandshake, ConnectionClosed, HandshakeError) as exc:
                log.warning("okx account %r: successor after notice failed (%s); keeping the old connection", self.account.name, _describe(exc))
                await reader
                raise ConnectionError("connection ended")
            await connection.close()
            try:
                await reader  # drains what arrived before the close
            except (ConnectionClosed, OSError, KeepaliveTimeout):
                pass
            except BaseException:
                await successor.close()
                raise
            log.info("okx account %r: handed over to connection %s after notice", self.account.name, successor.conn_id)
            return successor
        finally:
            notice.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, notice, return_exceptions=True)

    def _connected(self, backoff: Backoff, connection: OkxConnection) -> None:
        backoff.connected()
        self.health.mark_connected()
        self.health.detail["conn_id"] = connection.conn_id
        self.stats["connections"] += 1
        metrics.SOURCE_CONNECTIONS.labels(_PROVIDER, self.account.name).inc()
        metrics.SOURCE_CONNECTED.labels(_PROVIDER, self.account.name).set(1)
        if self._trigger is not None:
            self._trigger.set()  # a reconnect means a possible gap: backfill now

    async def _disconnected(self, error: str, reason: str, backoff: Backoff) -> None:
        self.health.mark_disconnected(error)
        self.stats[f"reconnect.{reason}"] += 1
        metrics.SOURCE_RECONNECTS.labels(_PROVIDER, self.account.name, reason).inc()
        delay = backoff.next_delay()
        log.warning("okx account %r disconnected (%s: %s); reconnecting in %.2fs", self.account.name, reason, error, delay)
        await asyncio.sleep(delay)

    async def _configuration_failed(self, message: str) -> None:
        """Credentials or request refused: not ready, say so plainly, retry slowly."""
        self.health.mark_disconnected(message, config_error=True)
        self.stats["config_errors"] += 1
        metrics.SOURCE_RECONNECTS.labels(_PROVIDER, self.account.name, "config_error").inc()
        retry = self.config.config_error_retry * random.uniform(0.9, 1.1)
        log.error("%s; fix the configuration — retrying in %.1fs", message, retry)
        await asyncio.sleep(retry)

    # -- live pushes ---------------------------------------------------------------------------

    async def _read(self, connection: OkxConnection) -> None:
        async for frame in connection.frames():
            received = time.monotonic()
            self.stats["frames"] += 1
            for item in self._parse(frame):
                held = self._held_for(item)
                if held is not None:
                    held.add(item, received)
                else:
                    await self._offer(item, Via.PUSH, own=self._is_own(item))

    def _is_own(self, item: ParseResult) -> bool:
        """Could this key's history return the transfer? Not a sub-account's: a master key
        receives those pushes, but its history holds only its own records."""
        if not isinstance(item, TransferEvent):
            return False
        owner = item.account
        return owner.sub_account is None or self._uid is None or owner.id == self._uid

    def _held_for(self, item: ParseResult) -> _Held | None:
        """The running pass this push must be merged with, if any (its owner's, maybe ours)."""
        if not isinstance(item, TransferEvent):
            return None
        if item.account.id is not None:
            held = self._coordinator.held_for(item.account.id)
            if held is not None:
                return held
        if self._held is not None and self._is_own(item):
            return self._held
        return None

    def _parse(self, frame: Frame) -> list[ParseResult]:
        if frame.error is not None:
            return [self._dead_letter(frame, frame.error)]
        message = frame.message
        if not isinstance(message, dict):
            return [self._dead_letter(frame, f"frame is a JSON {type(message).__name__}, not an object")]
        arg = message.get("arg")
        if self._uid is None and isinstance(arg, dict) and isinstance(arg.get("uid"), str):
            self._uid = arg["uid"]
        try:
            results = parse_push(message, received_at=frame.received_at)
        except ParseError as exc:
            return [self._dead_letter(frame, str(exc))]
        if any(isinstance(item, DeadLetter) for item in results):
            # orjson reads JSON numbers as floats, which parsing refuses: read this frame again
            # exactly, so a numeric amount is kept and dead letters carry the original digits.
            try:
                results = parse_push(loads_exact(frame.data), received_at=frame.received_at)
            except (JSONError, ParseError):
                pass
        return results

    def _dead_letter(self, frame: Frame, reason: str) -> DeadLetter:
        return DeadLetter(
            provider=Provider.OKX,
            channel=WS_DLQ_CHANNEL,
            reason=reason,
            raw=frame.data,
            received_at=frame.received_at,
            account_id=self._uid,
            headers={"account": self.account.name},
        )

    async def _offer(self, item: ParseResult, via: Via, *, own: bool = True) -> None:
        if isinstance(item, TransferEvent):
            if own:
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
            log.error("okx account %r: item not delivered: %s", self.account.name, error.__class__.__name__)
            return
        self.stats[f"{via.value}.{future.result().value}"] += 1

    # -- backfill ------------------------------------------------------------------------------

    async def _backfill_loop(self, history: HistoryClient) -> None:
        assert self._trigger is not None
        wait = self.config.backfill_interval
        while True:
            try:
                await asyncio.wait_for(self._trigger.wait(), wait)
                trigger = "reconnect"
            except TimeoutError:
                trigger = "interval"
            self._trigger.clear()
            try:
                await self.backfill_pass(history, trigger)
                wait = self.config.backfill_interval
            except m.RestError as exc:  # credentials refused on REST
                self._backfill_failed(f"OKX account {self.account.name!r}: backfill refused: {exc}", logging.ERROR)
                wait = self.config.config_error_retry
            except BackfillError as exc:
                self._backfill_failed(str(exc), logging.WARNING)
                wait = self.config.backfill_retry

    def _backfill_failed(self, message: str, level: int) -> None:
        self.health.detail["backfill_error"] = message
        self.stats["backfill_failures"] += 1
        log.log(level, "%s; next pass later", message)

    async def backfill_pass(self, history: HistoryClient, trigger: str = "manual") -> int:
        """Read the window's history into the pipeline; returns the number of rows offered."""
        started_ms = int(self._clock() * 1000)
        since = self._window.since(started_ms)
        metrics.BACKFILL_RUNS.labels(_PROVIDER, self.account.name, trigger).inc()
        if self._uid is None:
            try:
                self._uid = await history.account_uid()
            except BackfillError as exc:
                log.info("okx account %r: uid lookup failed (%s); rows carry no account id yet", self.account.name, exc)
        self.health.detail["uid"] = self._uid
        held = self._held = _Held(self.config.backfill_max_held)
        uid = self._uid
        if uid is not None:
            self._coordinator.begin(uid, held)
        seen: set[str] = set()
        offered = 0
        complete = False
        try:
            for channel, currencies in (
                (m.CHANNELS[0], self.account.deposit_ccy),
                (m.CHANNELS[1], self.account.withdrawal_ccy),
            ):
                for ccy in currencies or (None,):
                    async for page, sent_at in history.pages(
                        channel, since_ms=since, ccy=ccy, limit=self.config.backfill_page_limit
                    ):
                        if held.full:
                            raise BackfillError(
                                f"OKX account {self.account.name!r}: {len(held.items)} pushes held during backfill; pass cut short"
                            )
                        metrics.BACKFILL_ITEMS.labels(_PROVIDER, self.account.name).inc(len(page))
                        while held.items and held.items[0][0] < sent_at:  # pushes older than this snapshot
                            await self._offer(held.items.popleft()[1], Via.PUSH)
                        received_at = _now_iso(self._clock)
                        for item in parse_rows(channel, page, received_at=received_at, via=Via.BACKFILL, uid=self._uid):
                            if isinstance(item, TransferEvent):
                                if item.event_id in seen:
                                    continue  # the oldest millisecond of a page is read twice
                                seen.add(item.event_id)
                            await self._offer(item, Via.BACKFILL)
                            offered += 1
            complete = True
        finally:
            if not _cancelling():
                while held.items:  # readers keep adding while we wait for pipeline room
                    await self._offer(held.items.popleft()[1], Via.PUSH)
            self._held = None
            if uid is not None:
                self._coordinator.end(uid, held)
        if complete:
            self._window.completed(started_ms)
            self.health.detail["backfill_error"] = None
            self.health.detail["backfill_last_success"] = _now_iso(self._clock)
            self.stats["backfill_passes"] += 1
        log.info(
            "okx account %r: backfill (%s) since %s offered %d rows", self.account.name, trigger, _iso(since), offered
        )
        return offered

    # -- helpers for the shell and tests -------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Items offered and not yet decided, or pushes held by a running pass."""
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
        return f"closed by OKX with {exc.rcvd.code} {exc.rcvd.reason}".strip()
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def build_okx_sources(config: OkxConfig, pipeline: Pipeline) -> list[OkxAccountSource]:
    """One source per enabled account; empty when the OKX source is disabled."""
    if not config.enabled:
        return []
    coordinator = BackfillCoordinator()
    return [
        OkxAccountSource(config, account, pipeline, coordinator=coordinator)
        for account in config.accounts
        if account.enabled
    ]
