"""The poll engine: for providers that offer only signed REST history (no push channel).

A provider subclasses ``PollSource`` and supplies its signed client (``rest_client``) and how one
window of history becomes pages of items (``poll``), which it writes with the engine's paged reads
(``bridge.ingest.paging``: ``sweep`` and ``pages`` over its ``fetch_page`` and ``parse_rows``
hooks). The engine owns the rest, once:

* **Incremental windows with overlap**: each cycle reads from ``cursor - poll_overlap`` (bounded
  by ``poll_max_lookback``) to now; the dedup gate drops what an overlap reads again.
* **A cursor that survives restarts**, advanced only after every item of the cycle was decided by
  the pipeline (acknowledged by Kafka, or a duplicate): a crash before that re-reads the window,
  never skips it. Stored as a small JSON file per source, replaced atomically.
* **Rate limits and backoff**: the REST client spaces and retries requests
  (``bridge.ingest.rest``); a failed cycle waits with jittered backoff up to ``poll_retry_max``; a
  refusal of the credentials is a configuration error retried at ``config_error_retry``.
* **Paging and window splitting** (``bridge.ingest.paging``): windows no longer than the
  endpoint takes, pages until a short (or empty) one, a bound on the pages of one read.
* **No exception ends polling**: a failing cycle costs that cycle only; a page the parser refuses
  or fails on is dead-lettered with its bytes (so is an answer that was not JSON), never the
  source; health, a metric and a log line show it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import aiohttp
from pydantic import Field

from bridge.contract.events import Provider, TransferEvent
from bridge.contract.parsing import ParseResult
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.ingest.backfill import Page
from bridge.ingest.backoff import Backoff
from bridge.ingest.frames import utc_now
from bridge.ingest.paging import PagedReads
from bridge.ingest.rest import RestClient, TransientError, shared_session
from bridge.ingest.settings import AccountsSection
from bridge.ingest.source import SourceBase
from bridge.observability import metrics

__all__ = ["PollSettings", "PollSource", "CursorFile", "due"]


class PollSettings(AccountsSection):
    """Pacing and windows of a polled provider; a provider's section extends it."""

    ca_bundle: Path | None = Field(default=None, description="PEM file of the CAs to trust instead of the system's")
    poll_interval: float = Field(default=30.0, gt=0, description="seconds between the starts of two polls")
    poll_overlap: float = Field(default=600.0, ge=0, description="seconds read again before the cursor")
    poll_initial_lookback: float = Field(default=86_400.0, ge=0, description="window of the first poll without a cursor")
    poll_max_lookback: float = Field(default=7 * 86_400.0, gt=0, description="never read further back than this")
    poll_retry: float = Field(default=5.0, gt=0, description="first pause after a failed poll; doubles")
    poll_retry_max: float = Field(default=300.0, gt=0, description="longest pause after failed polls")
    config_error_retry: float = Field(default=60.0, gt=0, description="retry pace after credentials were refused")
    cursor_dir: Path = Field(default=Path("./.state/cursors"), description="where each source keeps its cursor file")
    rest_timeout: float = Field(default=10.0, gt=0)
    rest_max_retries: int = Field(default=6, ge=0, description="per request, on HTTP 429 / 5xx / network errors")
    stop_grace: float = Field(
        default=2.0, ge=0, le=30,
        description="a stopped source (shutdown, restart, reload) lets a poll under way finish for this long, so what it read is handed over",
    )


def due(last: float | None, interval: float, now: float) -> bool:
    """Whether a read done every ``interval`` seconds (last at ``last``, monotonic) is due in this
    cycle: half a second early counts, so a cycle that starts a little early does not skip it."""
    return last is None or now - last >= interval - 0.5


class CursorFile:
    """The epoch-millisecond cursor of one source, in ``<dir>/<source>.json``, replaced atomically."""

    def __init__(self, directory: Path, source: str):
        self.path = directory / (source.replace(":", "-") + ".json")

    def load(self) -> int | None:
        try:
            value = json.loads(self.path.read_text()).get("cursor_ms")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"cursor file {self.path} is unreadable ({exc.__class__.__name__}); remove it to poll from the lookback") from None
        return value if isinstance(value, int) else None

    def save(self, cursor_ms: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.tmp")
        with open(partial, "w") as handle:
            json.dump({"cursor_ms": cursor_ms}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


class PollSource(SourceBase, PagedReads, ABC):
    """Run loop and health of one account of a polled provider (``bridge.ingest.source.Source``)."""

    provider: ClassVar[Provider]
    display_name: ClassVar[str]
    rest_refusals: ClassVar[tuple[type[Exception], ...]] = ()
    """Errors that mean the credentials or request were refused (retried at the config-error pace)."""

    def __init__(
        self,
        config: PollSettings,
        account: str,
        pipeline: Pipeline,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.account_name = account
        self.pipeline = pipeline
        super().__init__(f"{self.provider.value}:{account}", detail={"account": account, "poll_error": None})
        self.stats: Counter[str] = Counter()
        self.clock = clock
        self.cursor = CursorFile(config.cursor_dir, self.name)
        self._labels = (self.provider.value, account)
        self.log = logging.getLogger(type(self).__module__)

    # -- provider hooks ------------------------------------------------------------------------

    @abstractmethod
    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        """The account's signed history client."""

    @abstractmethod
    def poll(self, rest: RestClient, since_ms: int, until_ms: int) -> AsyncIterator[Page]:
        """Pages of the account's transfers that may have changed in ``[since_ms, until_ms]``."""

    def scrub(self, text: str) -> str:
        """Provider messages may echo what we sent: blank out anything secret."""
        return text

    # -- run loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        backoff = Backoff(initial=cfg.poll_retry, maximum=cfg.poll_retry_max, min_uptime=0)
        who = f"{self.display_name} account {self.account_name!r}"
        async with shared_session(self.provider.value, timeout=cfg.rest_timeout, ca_bundle=cfg.ca_bundle) as http:
            rest = self.rest_client(http)
            while True:
                started = time.monotonic()
                try:
                    await self._cycle(rest)
                except self.rest_refusals as exc:
                    await self._failed(f"{who}: poll refused: {self.scrub(str(exc))}", cfg.config_error_retry, config=True)
                    continue
                except TransientError as exc:
                    await self._failed(self.scrub(str(exc)), backoff.next_delay())
                    continue
                except Exception as exc:  # no exception ends polling
                    detail = self.scrub(str(exc))[:300]
                    await self._failed(f"{who}: poll failed: {exc.__class__.__name__}: {detail}", backoff.next_delay())
                    continue
                backoff = Backoff(initial=cfg.poll_retry, maximum=cfg.poll_retry_max, min_uptime=0)
                await asyncio.sleep(max(0.0, cfg.poll_interval - (time.monotonic() - started)))

    async def _cycle(self, rest: RestClient) -> int:
        """``poll_once`` in its own task. A stop (this task cancelled) lets a cycle under way finish
        for up to ``stop_grace`` seconds: an answer already written by the provider is read and its
        items handed over, instead of dropped between the read and the hand-over (a state read then
        that changes before the next start would never be seen again). Past the grace it is cancelled."""
        cycle = asyncio.ensure_future(self.poll_once(rest))
        try:
            return await asyncio.shield(cycle)
        except asyncio.CancelledError:
            try:
                await asyncio.wait({cycle}, timeout=self.config.stop_grace)
            finally:
                if not cycle.done():
                    cycle.cancel()
                    await asyncio.wait({cycle})  # its own unwinding, before the session closes
            raise

    async def _failed(self, message: str, pause: float, *, config: bool = False) -> None:
        self.health.mark_disconnected(message, config_error=config)
        self.health.detail["poll_error"] = message
        self.stats["config_errors" if config else "poll_failures"] += 1
        metrics.BACKFILL_FAILURES.labels(*self._labels).inc()
        if config:
            pause *= random.uniform(0.9, 1.1)
            self.log.error("%s; fix the configuration — retrying in %.1fs", message, pause)
        else:
            self.log.warning("%s; next poll in %.2fs", message, pause)
        await asyncio.sleep(pause)

    async def poll_once(self, rest: RestClient) -> int:
        """One cycle: read the window, hand every item over, wait for their outcomes, advance the
        cursor. Returns the number of items offered."""
        cfg = self.config
        now_ms = int(self.clock() * 1000)
        cursor = self.cursor.load()
        floor = now_ms - int(cfg.poll_max_lookback * 1000)
        since = now_ms - int(cfg.poll_initial_lookback * 1000) if cursor is None else cursor - int(cfg.poll_overlap * 1000)
        since = max(floor, since)
        metrics.BACKFILL_RUNS.labels(*self._labels, "poll").inc()
        batches: list[asyncio.Future[list[Outcome | BaseException | None]]] = []
        seen: set[str] = set()
        async for page in self.poll(rest, since, now_ms):
            metrics.BACKFILL_ITEMS.labels(*self._labels).inc(page.rows)
            self.stats["rows"] += page.rows
            items: list[ParseResult] = []
            for item in page.items:
                if isinstance(item, TransferEvent):
                    if item.event_id in seen:
                        continue  # the same row on two pages of a moving list
                    seen.add(item.event_id)
                    self.health.mark_event()
                items.append(item)
            batches.append(await self.pipeline.offer_batch(items))  # one page, one hand-over
        outcomes = [o for batch in await asyncio.gather(*batches) for o in batch]
        failed = [o for o in outcomes if not isinstance(o, Outcome)]
        for outcome in outcomes:
            if isinstance(outcome, Outcome):
                self.stats[f"poll.{outcome.value}"] += 1
        if failed:  # not all acknowledged: the cursor stays, the next cycle reads the window again
            raise TransientError(f"{self.display_name} account {self.account_name!r}: {len(failed)} items not delivered")
        self.cursor.save(now_ms)
        self.stats["polls"] += 1
        self.health.mark_connected()
        self.health.detail.update(poll_error=None, cursor=utc_now(lambda: now_ms / 1000), last_poll_items=len(outcomes))
        return len(outcomes)

    async def drain(self, timeout: float) -> bool:
        return True  # a cycle's items are awaited inside it; cancelling one loses nothing (cursor kept)

