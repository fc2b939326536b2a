"""The stream engine: one account's connection loop, live items, and backfill, for any provider.

A provider subclasses ``StreamSource`` and supplies only what is its own — how to open a logged-in,
subscribed connection (``open``), how a frame becomes items (``parse_message``), how its history is
read (``rest_client``, ``history``), and, optionally, how its own failures are classified
(``classify``). Everything else lives here once:

* **Connect loop** with jittered backoff that resets only after ``min_uptime`` (a venue that
  accepts and hangs up at once is no tight loop); a configuration error (credentials, URL) is
  retried at the slow ``config_error_retry`` pace and shown in health.
* **One failure hook**: every exception out of opening or reading goes through ``classify`` (the
  provider's) and then ``default_failure``; the answer is a ``Failure`` — a reason label for the
  metric and a message — or the exception is a bug and ends ``run`` (the supervisor restarts it).
* **Make-before-break** as a capability: a connection with an ``upgrade_notice`` (``frames.Notice``,
  raised on OKX notice 64008) is replaced by a successor opened *before* it is closed; what it
  still delivers is read (``bridge.ingest.handover``). Reading stays in the source's own task; only
  a notice starts a second one, for the handover.
* **Backfill**: after every (re)connect, on request (a sequence gap) and on an interval, the
  account's history is read into the pipeline with ``via = backfill``. While a pass runs, live
  items of the account are held and merged with the pages by receive time: items received before
  a page's request go first, then the page, then later items. No exception ends the loop. A
  provider that numbers its messages (``numbered``) gets each gap counted, shown and backfilled.
* **Parsing never raises** out of the engine: a frame that is not JSON, not an object, or that
  makes the parser fail becomes a dead letter with its raw bytes, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import ClassVar

import aiohttp

from bridge.contract.events import DeadLetter, Provider, TransferEvent, Via
from bridge.contract.parsing import ParseResult, refused
from bridge.contract.timeutil import format_utc_ms
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import BackfillCoordinator, BackfillLoop, Held, Page, Window
from bridge.ingest.backoff import Backoff
from bridge.ingest.failures import common_failure
from bridge.ingest.frames import Failure, Frame, HandshakeError, KeepaliveTimeout, StreamConnection, utc_now
from bridge.ingest.handover import serve
from bridge.ingest.intake import Intake
from bridge.ingest.rest import RestClient, TransientError, shared_session
from bridge.ingest.sequence import Gap, SequenceTracker
from bridge.ingest.settings import StreamSettings
from bridge.ingest.source import SourceBase
from bridge.observability import metrics

__all__ = [
    "StreamSource",
    "StreamConnection",
    "Failure",
    "Page",
    "HandshakeError",
    "KeepaliveTimeout",
]

log = logging.getLogger(__name__)

_TRIGGER_PRIORITY = ("gap", "reconnect")
"""One label per pass for the metric, however many reasons asked for it (else ``manual``)."""


class StreamSource(SourceBase, ABC):
    """Run loop and health of one account of a streaming provider (``bridge.ingest.source.Source``)."""

    provider: ClassVar[Provider]
    display_name: ClassVar[str]
    """The provider as operators read it in messages ("OKX", "Ripio")."""
    dlq_channel: ClassVar[str]
    """DLQ channel of frames that are not a message we can read (not JSON, not an object)."""
    rest_refusals: ClassVar[tuple[type[Exception], ...]] = ()
    """History errors that mean the credentials were refused (retried at the config-error pace)."""
    items_word: ClassVar[str] = "pushes"

    def __init__(
        self,
        config: StreamSettings,
        account: str,
        pipeline: Pipeline,
        *,
        coordinator: BackfillCoordinator | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.account_name = account
        self.pipeline = pipeline
        self.name = f"{self.provider.value}:{account}"
        super().__init__(self.name, detail={"account": account, "backfill_error": None})
        self.stats: Counter[str] = Counter()
        """Outcomes by path (``push.published``, ``backfill.duplicate``, …) and connection events."""
        self.clock = clock
        self.window = Window(
            now_ms=int(clock() * 1000),
            initial_lookback_ms=int(config.backfill_initial_lookback * 1000),
            overlap_ms=int(config.backfill_overlap * 1000),
            max_lookback_ms=int(config.backfill_max_lookback * 1000),
        )
        self._held: Held | None = None
        self._coordinator = coordinator or BackfillCoordinator()
        self._passes = BackfillLoop(config.backfill_interval, priority=_TRIGGER_PRIORITY, requested="manual")
        self._labels = (self.provider.value, account)
        self.log = logging.getLogger(type(self).__module__)
        """The provider's logger: operators filter by it."""
        self.sequence_start: int | None = 1
        self._sequence = SequenceTracker()
        self.secrets: tuple[str, ...] = ()
        """What provider messages may echo of what we sent (tokens, keys): ``scrub`` blanks it out."""
        self._intake = Intake(pipeline, self.stats, self.log, self._who)

    # -- provider hooks ------------------------------------------------------------------------

    @abstractmethod
    async def open(self, rest: RestClient | None) -> StreamConnection:
        """Connect, log in and subscribe; raise on failure (``classify`` decides what it means)."""

    @abstractmethod
    def parse_message(self, frame: Frame) -> list[ParseResult]:
        """Items of one frame whose ``message`` is a JSON object (the provider's pure parser, which
        never raises: a frame it refuses as a whole is one ``refusal``, dead-lettered with the
        frame's bytes on ``dlq_channel``)."""

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient | None:
        """The account's signed history client; None when the provider has no history to read."""
        return None

    def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        """Pages of the account's transfers created at or after ``since_ms``."""
        raise NotImplementedError

    def classify(self, error: BaseException, phase: str) -> Failure | None:
        """The provider's reading of an exception (``phase``: ``connect`` or ``serve``); None
        leaves it to ``default_failure``."""
        return None

    def on_connected(self, connection: StreamConnection) -> None:
        """A connection is up (after login and subscription)."""

    def observe(self, frame: Frame) -> None:
        """Sees every frame before parsing (e.g. learning the account id)."""

    def numbered(self, frame: Frame) -> tuple[str, object] | None:
        """(topic, message id) of a frame whose provider numbers its messages per topic and
        connection, counting up from ``sequence_start`` (None: as they come); a jump is a gap."""
        return None

    async def before_backfill(self, rest: RestClient) -> None:
        """Runs at the start of each pass (e.g. look up the account id once)."""

    @property
    def account_id(self) -> str | None:
        """The provider's id of this account, once known (dead letters carry it)."""
        return None

    def owner_of(self, item: TransferEvent) -> str | None:
        """The account whose running pass must hold this item, when it is not ours."""
        return None

    def is_own(self, item: ParseResult) -> bool:
        """Could this account's history return the transfer (else it never widens our window)?"""
        return True

    def scrub(self, text: str) -> str:
        """Provider messages may echo what we sent: blank out anything secret (``secrets``)."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    # -- run loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        async with shared_session(self.provider.value, timeout=cfg.rest_timeout, ca_bundle=cfg.ca_bundle) as http:
            rest = self.rest_client(http)
            backfill = None
            if self.config.backfill_enabled and rest is not None:
                history = rest
                passes = self._passes.run(lambda trigger: self.backfill_pass(history, trigger), self._backfill_error)
                backfill = asyncio.create_task(passes, name=f"{self.name}-backfill")
            try:
                await self._connect_loop(rest)
            finally:
                if backfill is not None:
                    backfill.cancel()
                    await asyncio.gather(backfill, return_exceptions=True)
                metrics.SOURCE_CONNECTED.labels(*self._labels).set(0)

    async def _open(self, rest: RestClient | None) -> StreamConnection:
        self.stats["connect_attempts"] += 1
        return await self.open(rest)

    async def _connect_loop(self, rest: RestClient | None) -> None:
        cfg = self.config
        backoff = Backoff(initial=cfg.reconnect_initial, maximum=cfg.reconnect_max, min_uptime=cfg.min_uptime)
        connection: StreamConnection | None = None
        while True:
            if connection is None:
                try:
                    connection = await self._open(rest)
                except Exception as exc:
                    await self._failed(self._failure(exc, "connect"), backoff)
                    continue
                self._connected(backoff, connection)
            successor: StreamConnection | None = None
            try:
                successor = await self._serve(connection, backoff, rest)
                failure = Failure("notice", "service upgrade notice") if successor else Failure("closed", "stream ended")
            except Exception as exc:
                failure = self._failure(exc, "serve")
            finally:
                await connection.close()
            connection = successor
            if successor is not None:
                self.stats["reconnect.notice"] += 1
                metrics.SOURCE_RECONNECTS.labels(*self._labels, "notice").inc()
                self._connected(backoff, successor)
                continue
            metrics.SOURCE_CONNECTED.labels(*self._labels).set(0)
            await self._failed(failure, backoff)

    def _failure(self, error: Exception, phase: str) -> Failure:
        failure = self.classify(error, phase) or self.default_failure(error, phase)
        if failure is None:
            raise error  # a bug, not a connection problem: the supervisor restarts the source
        return failure

    def default_failure(self, error: BaseException, phase: str) -> Failure | None:
        """What the engine makes of an exception ``classify`` left (``bridge.ingest.failures``)."""
        who = f"{self.display_name} account {self.account_name!r}"
        return common_failure(error, phase, who=who, peer=self.display_name, scrub=self.scrub)

    async def _serve(
        self, connection: StreamConnection, backoff: Backoff, rest: RestClient | None
    ) -> StreamConnection | None:
        """Read until the connection ends, or hand over to a successor after an upgrade notice
        (``bridge.ingest.handover``); the successor waits for the backoff."""
        return await serve(
            connection,
            self._read,
            lambda: self._open(rest),
            delay=backoff.next_delay,
            failed=lambda exc: self._failure(exc, "connect").message,
            log=self.log,
            who=self._who,
            name=self.name,
        )

    @property
    def _who(self) -> str:
        return f"{self.provider.value} account {self.account_name!r}"

    def _connected(self, backoff: Backoff, connection: StreamConnection) -> None:
        backoff.connected()
        self.health.mark_connected()
        self.stats["connections"] += 1
        metrics.SOURCE_CONNECTIONS.labels(*self._labels).inc()
        metrics.SOURCE_CONNECTED.labels(*self._labels).set(1)
        self._sequence = SequenceTracker(self.sequence_start)  # ids restart per connection
        self.on_connected(connection)
        self.request_backfill("reconnect")  # a reconnect means a possible gap: backfill now

    async def _failed(self, failure: Failure, backoff: Backoff) -> None:
        if failure.config:
            # Credentials or request refused: not ready, say so plainly, retry slowly.
            self.health.mark_disconnected(failure.message, config_error=True)
            self.stats["config_errors"] += 1
            metrics.SOURCE_RECONNECTS.labels(*self._labels, "config_error").inc()
            retry = self.config.config_error_retry * random.uniform(0.9, 1.1)
            self.log.error("%s; fix the configuration — retrying in %.1fs", failure.message, retry)
            await asyncio.sleep(retry)
            return
        self.health.mark_disconnected(failure.message)
        self.stats[f"reconnect.{failure.reason}"] += 1
        metrics.SOURCE_RECONNECTS.labels(*self._labels, failure.reason).inc()
        delay = backoff.next_delay()
        self.log.warning("%s disconnected (%s: %s); reconnecting in %.2fs", self._who, failure.reason, failure.message, delay)
        await asyncio.sleep(delay)

    # -- live items ----------------------------------------------------------------------------

    def _gap(self, gap: Gap) -> None:
        """Messages lost on this connection: counted, shown, logged, and closed by a backfill pass."""
        self.stats["gaps"] += 1
        self.stats["gap_ids"] += gap.missing
        metrics.SOURCE_GAPS.labels(*self._labels).inc()
        self.health.detail["last_gap"] = gap.detail
        self.log.warning("%s: %s; backfilling", self._who, gap.describe())
        self.request_backfill("gap")

    async def _read(self, connection: StreamConnection) -> None:
        async for frame in connection.frames():
            received = time.monotonic()
            self.stats["frames"] += 1
            numbered = self.numbered(frame)
            gap = self._sequence.gap(*numbered) if numbered is not None else None
            if gap is not None:
                self._gap(gap)
            self.observe(frame)
            batch: list[ParseResult] = []
            for item in self.parse_frame(frame):
                held = self._held_for(item)
                if held is not None:
                    held.add(item, received)
                else:
                    batch.append(item)
            if batch:
                await self._offer(batch, Via.PUSH, own=None)

    def parse_frame(self, frame: Frame) -> list[ParseResult]:
        """Items of one frame; never raises — what cannot be read is a dead letter with its bytes."""
        if frame.error is not None:
            return [self.dead_letter(frame, frame.error)]
        if not isinstance(frame.message, dict):
            return [self.dead_letter(frame, f"frame is a JSON {type(frame.message).__name__}, not an object")]
        try:
            results = self.parse_message(frame)
        except Exception as exc:  # a parser bug must cost one frame, never the stream
            self.stats["parser_errors"] += 1
            metrics.PARSER_ERRORS.labels(self.provider.value).inc()
            self.log.error("%s: parser failed on a frame (%s); dead-lettered", self._who, exc.__class__.__name__)
            return [self.dead_letter(frame, f"parser failed: {exc.__class__.__name__}: {self.scrub(str(exc))[:300]}")]
        whole = refused(results)
        return results if whole is None else [self.dead_letter(frame, whole.reason)]

    def dead_letter(self, frame: Frame, reason: str) -> DeadLetter:
        return DeadLetter(
            provider=self.provider,
            channel=self.dlq_channel,
            reason=reason,
            raw=frame.data,
            received_at=frame.received_at,
            account_id=self.account_id,
            headers={"account": self.account_name},
        )

    def _held_for(self, item: ParseResult) -> Held | None:
        """The running pass this item must be merged with, if any (its owner's, maybe ours)."""
        if not isinstance(item, TransferEvent):
            return None
        owner = self.owner_of(item)
        if owner is not None:
            held = self._coordinator.held_for(owner)
            if held is not None:
                return held
        if self._held is not None and self.is_own(item):
            return self._held
        return None

    async def _offer(self, items: list[ParseResult], via: Via, *, own: bool | None = True) -> None:
        """Hand over as one batch without waiting for Kafka: ``offer_batch`` only waits for pipeline
        room (backpressure); outcomes are counted when the batch resolves. ``own=None``: ask ``is_own``."""
        events = 0
        for item in items:
            if isinstance(item, TransferEvent):
                events += 1
                if own or (own is None and self.is_own(item)):
                    self.window.note(item)
        if events:
            self.health.mark_event()
            metrics.labelled(metrics.LAST_EVENT_TIMESTAMP, *self._labels).set(time.time())
        await self._intake.offer_batch(items, via)

    # -- backfill ------------------------------------------------------------------------------

    def request_backfill(self, reason: str = "manual") -> None:
        """Ask for a pass as soon as the running one (if any) is done."""
        self._passes.request(reason)

    def _backfill_error(self, exc: Exception) -> float:
        """Record a failed pass (health, metric, log); returns the wait before the next one."""
        who = f"{self.display_name} account {self.account_name!r}"
        if isinstance(exc, self.rest_refusals):  # credentials refused on REST
            message, level, wait = f"{who}: backfill refused: {self.scrub(str(exc))}", logging.ERROR, self.config.config_error_retry
        elif isinstance(exc, TransientError):
            message, level, wait = self.scrub(str(exc)), logging.WARNING, self.config.backfill_retry
        else:
            detail = self.scrub(str(exc))[:300]
            message, level = f"{who}: backfill failed: {exc.__class__.__name__}: {detail}", logging.ERROR
            wait = self.config.backfill_retry
        self.health.detail["backfill_error"] = message
        self.stats["backfill_failures"] += 1
        metrics.BACKFILL_FAILURES.labels(*self._labels).inc()
        self.log.log(level, "%s; next pass later", message)
        return wait

    async def backfill_pass(self, rest: RestClient, trigger: str = "manual") -> int:
        """Read the window's history into the pipeline; returns the number of items offered."""
        started_ms = int(self.clock() * 1000)
        since = self.window.since(started_ms)
        metrics.BACKFILL_RUNS.labels(*self._labels, trigger).inc()
        self.stats[f"backfill_trigger.{trigger}"] += 1
        await self.before_backfill(rest)
        held = self._held = Held(self.config.backfill_max_held)
        owner = self.account_id
        if owner is not None:
            self._coordinator.begin(owner, held)
        seen: set[str] = set()
        offered = 0
        complete = False
        try:
            async for page in self.history(rest, since):
                if held.full:
                    raise TransientError(
                        f"{self.display_name} account {self.account_name!r}: {len(held.items)} {self.items_word} "
                        "held during backfill; pass cut short"
                    )
                metrics.BACKFILL_ITEMS.labels(*self._labels).inc(page.rows)
                while held.items and held.items[0][0] < page.sent_at:  # older than this snapshot
                    await self._offer([held.items.popleft()[1]], Via.PUSH)
                rows: list[ParseResult] = []
                for item in page.items:
                    if isinstance(item, TransferEvent):
                        if item.event_id in seen:
                            continue  # a row read twice (overlapping pages of a moving list)
                        seen.add(item.event_id)
                    rows.append(item)
                await self._offer(rows, Via.BACKFILL)
                offered += len(rows)
            complete = True
        finally:
            if not _cancelling():
                while held.items:  # the reader keeps adding while we wait for pipeline room
                    await self._offer([held.items.popleft()[1]], Via.PUSH)
            self._held = None
            if owner is not None:
                self._coordinator.end(owner, held)
        if complete:
            self.window.completed(started_ms)
            self.health.detail["backfill_error"] = None
            self.health.detail["backfill_last_success"] = utc_now(self.clock)
            self.stats["backfill_passes"] += 1
        self.log.info("%s: backfill (%s) since %s offered %d rows", self._who, trigger, _iso(since), offered)
        return offered

    # -- shutdown and tests --------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Items offered and not yet decided, or live items held by a running pass."""
        return bool(self._intake.pending) or (self._held is not None and bool(self._held.items))

    async def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every offered item has its outcome (for shutdown and tests)."""
        return await self._intake.settle(timeout)

    async def drain(self, timeout: float) -> bool:
        return await self.settle(timeout)


def _iso(epoch_ms: int) -> str:
    return format_utc_ms(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

