"""The webhook engine with a REST gap backfill, for a provider that both pushes and lists.

A webhook provider whose REST API lists its transfers subclasses ``BackfillingWebhookSource``
instead of ``WebhookSource`` and adds two hooks — its signed client (``rest_client``) and its
history (``history``, parsed ``Page``s) — the same hooks a stream source has, so
``bridge.ingest.history.PagedHistory`` reads it for ``reconcile`` too. The engine adds, beside the
route (``bridge.ingest.webhook``):

* **Passes** (``bridge.ingest.backfill.BackfillLoop``) at start, every ``backfill_interval``, on
  ``request_backfill``, and after an ingress outage: a delivery answered 503 followed by one
  answered 200 (the provider may not retry everything it failed to deliver meanwhile). The window
  is ``Window``'s: creation time since the last complete pass minus ``backfill_overlap``,
  stretched back to every transfer still open (what the route published is noted too).
* **No exception ends the loop**: a failed pass is retried after ``backfill_retry`` and shown in
  health (``backfill_error``); a refusal (``backfill_refusals``) too, and when it is the
  credentials' (``credentials_refused``) it is a configuration error, retried at most once a
  minute.
* **Cluster mode**: the route is served on every replica, passes run only where
  ``leads_backfill()`` says (the history is the same everywhere); elsewhere ``backfill_standby``.
* Rows go through ``admit_backfilled`` (e.g. a provider's ordering rule), the same dedup gate as
  pushes, ``via = backfill``; outcomes are counted in ``backfill_stats`` and awaited by ``drain``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, TypeVar

import aiohttp
from aiohttp import web

from bridge.contract.events import DeadLetter, TransferEvent, Via
from bridge.contract.parsing import Parser, ParseResult, item_bytes, refused
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import BackfillLoop, Page, Window
from bridge.ingest.frames import utc_now
from bridge.ingest.intake import Intake
from bridge.ingest.requests import describe_error
from bridge.ingest.rest import RestClient, TransientError
from bridge.ingest.settings import WebhookBackfillSettings
from bridge.ingest.webhook import WebhookSource
from bridge.observability import metrics

__all__ = ["BackfillingWebhookSource", "CONFIG_ERROR_RETRY"]

BackfillConfigT = TypeVar("BackfillConfigT", bound=WebhookBackfillSettings)

CONFIG_ERROR_RETRY = 60.0
"""Seconds, at least, between passes while the provider refuses the credentials."""


class BackfillingWebhookSource(WebhookSource[BackfillConfigT], ABC):
    """A ``WebhookSource`` that also reads the provider's history into the pipeline."""

    backfill_refusals: ClassVar[tuple[type[Exception], ...]] = ()
    """History errors that mean the provider refused the request (not worth retrying soon)."""

    def __init__(
        self,
        config: BackfillConfigT,
        pipeline: Pipeline,
        *,
        name: str,
        account: str,
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        """``account``: the receiver's label in the backfill metrics."""
        super().__init__(config, pipeline, name=name, clock=clock, dead_letter_memory=dead_letter_memory)
        self.window = Window(
            now_ms=int(clock() * 1000),
            initial_lookback_ms=int(config.backfill_initial_lookback * 1000),
            overlap_ms=int(config.backfill_overlap * 1000),
            max_lookback_ms=int(config.backfill_max_lookback * 1000),
        )
        self.backfill_stats: Counter[str] = Counter()
        """Passes, failures, requests by reason and outcomes of backfilled items (``backfill.published``, …)."""
        self._labels = (self.provider.value, account)
        self._intake = Intake(pipeline, self.backfill_stats, self.log, self.name)
        self._passes = BackfillLoop(config.backfill_interval)
        self._outage = False
        self.health.detail.update({"backfill_last_success": None, "backfill_error": None})

    # -- provider hooks ------------------------------------------------------------------------

    @abstractmethod
    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        """The signed history client (built for every pass: a key that cannot be loaded fails the pass)."""

    @abstractmethod
    def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        """Pages of transfers created at or after ``since_ms``, parsed (``page`` builds one)."""

    def admit_backfilled(self, event: TransferEvent) -> bool:
        """May a row's event be offered (False drops it, e.g. older than a state already accepted)?"""
        return True

    def credentials_refused(self, error: Exception) -> bool:
        """Is this refusal (one of ``backfill_refusals``) the credentials' — a configuration error?"""
        return True

    def backfill_completed(self) -> None:
        """A pass read its whole window."""

    def backfill_standby(self) -> None:
        """Cluster mode: another replica runs the passes (called about once a second)."""

    def page(
        self, rows: Sequence[Any], sent_at: float, parse: Parser, *, channel: str, account_id: str | None = None,
    ) -> Page:  # fmt: skip
        """One history page for ``history`` to yield: each row parsed on its own (``parse(row,
        received_at)``); a row that cannot be — refused by the parser, or whatever it raises (a
        bug) — is a dead letter on ``channel`` with its bytes, never the end of the pass."""
        received_at = utc_now(self._clock)
        items: list[ParseResult] = []
        for row in rows:
            try:
                results = parse(row, received_at)
                whole = refused(results)
                reason = None if whole is None else whole.reason
            except Exception as exc:  # noqa: BLE001 - one row, never the pass
                results, reason = [], describe_error(exc)
            if reason is None:
                items.extend(results)
            else:
                items.append(DeadLetter(self.provider, channel, reason[:2000], item_bytes(row), received_at, account_id))
        return Page(items, len(rows), sent_at)

    # -- the route's part ----------------------------------------------------------------------

    def publishing(self, events: Sequence[TransferEvent]) -> None:
        for event in events:
            self.window.note(event)

    async def handle(self, request: web.Request) -> web.Response:
        response = await super().handle(request)
        self.ingress_answered(response.status)
        return response

    def ingress_answered(self, status: int) -> None:
        """A 503 is an ingress outage; the first 200 after one asks for a pass."""
        if status == 503:
            self._outage = True
        elif status == 200 and self._outage:
            self._outage = False
            self.request_backfill("after_outage")

    # -- lifecycle -----------------------------------------------------------------------------

    def request_backfill(self, reason: str = "manual") -> None:
        """Ask for a pass as soon as the running one (if any) is done."""
        self.backfill_stats[f"requested.{reason}"] += 1
        self._passes.request(reason)

    async def run(self) -> None:
        if not self.config.backfills:
            await super().run()
            return
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.rest_timeout)) as session:
            self._passes.request("start")

            async def one_pass(trigger: str) -> None:
                await self.backfill_pass(self.rest_client(session), trigger)
                self.health.config_error = False

            passes = self._passes.run(one_pass, self._backfill_error, leads=lambda: self.leads_backfill(), standby=self.backfill_standby)
            backfill = asyncio.create_task(passes, name=f"{self.name}-backfill")
            try:
                await super().run()
            finally:
                backfill.cancel()
                await asyncio.gather(backfill, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        started = time.monotonic()
        pushed = await super().drain(timeout)
        return await self._intake.settle(max(timeout - (time.monotonic() - started), 0.0)) and pushed

    # -- passes --------------------------------------------------------------------------------

    def _backfill_error(self, exc: Exception) -> float:
        """Record a failed pass (health, metric, log); returns the wait before the next one."""
        retry = self.config.backfill_retry
        if isinstance(exc, self.backfill_refusals):
            message, level = f"{self.name}: backfill refused: {exc}", logging.ERROR
            self.health.config_error = self.credentials_refused(exc)
            wait = max(retry, CONFIG_ERROR_RETRY) if self.health.config_error else retry
        elif isinstance(exc, TransientError):
            message, level, wait = f"{self.name}: {exc}", logging.WARNING, retry
        else:
            message, level, wait = f"{self.name}: backfill failed: {exc.__class__.__name__}: {str(exc)[:300]}", logging.ERROR, retry
        self.health.detail["backfill_error"] = message
        self.backfill_stats["failures"] += 1
        metrics.BACKFILL_FAILURES.labels(*self._labels).inc()
        self.log.log(level, "%s; next pass later", message)
        return wait

    async def backfill_pass(self, rest: RestClient, trigger: str = "manual") -> int:
        """Read the window into the pipeline (not waiting for each ack); returns the items offered."""
        started_ms = int(self._clock() * 1000)
        since = self.window.since(started_ms)
        metrics.BACKFILL_RUNS.labels(*self._labels, trigger).inc()
        offered = 0
        async for page in self.history(rest, since):
            metrics.BACKFILL_ITEMS.labels(*self._labels).inc(page.rows)
            for item in page.items:
                if isinstance(item, TransferEvent):
                    if not self.admit_backfilled(item):
                        continue
                    self.window.note(item)
                    self.health.mark_event()
                await self._intake.offer(item, Via.BACKFILL)
                offered += 1
        self.window.completed(started_ms)
        self.backfill_completed()
        self.health.detail["backfill_error"] = None
        self.health.detail["backfill_last_success"] = utc_now(self._clock)
        self.backfill_stats["passes"] += 1
        self.log.info("%s: backfill (%s) offered %d items", self.name, trigger, offered)
        return offered
