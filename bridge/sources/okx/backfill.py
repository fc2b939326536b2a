"""Gap recovery over OKX's REST history: signed, paginated, rate-limit aware reads.

``HistoryClient`` pages through ``/api/v5/asset/deposit-history`` and ``withdrawal-history``
(newest first, ``before``/``after`` on the record's creation ``ts``). ``Window`` decides how far
back a pass reads: since the start of the previous successful pass minus an overlap, and far
enough to include every transfer still open — a transfer created long ago can change state
during a disconnect, and the history endpoints filter on creation time, not on update time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from bridge.events import TransferEvent
from bridge.jsonutil import JSONError, loads_exact
from bridge.sources.okx import messages as m
from bridge.sources.okx.auth import Credentials, rest_headers
from bridge.timeutil import to_epoch_ms

__all__ = ["HistoryClient", "BackfillError", "Window", "MAX_PAGES"]

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
"""Guard against a server that keeps answering full pages: a pass never loops forever."""


class BackfillError(Exception):
    """A history read failed after its retries; the next pass tries again."""


class HistoryClient:
    """Signed GETs for one account, spaced to stay under OKX's per-user rate limit."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: str,
        credentials: Credentials,
        *,
        rate_per_second: float = 5.0,
        max_retries: int = 6,
        clock: Callable[[], float] = time.time,
    ):
        self._session = session
        self._base = base_url.rstrip("/")
        self.account = account
        self._credentials = credentials
        self._spacing = 1.0 / rate_per_second
        self._max_retries = max_retries
        self._clock = clock
        self._next_slot = 0.0
        self.requests = 0
        self.rate_limited = 0

    async def _slot(self) -> None:
        now = time.monotonic()
        wait = self._next_slot - now
        self._next_slot = max(now, self._next_slot) + self._spacing
        if wait > 0:
            await asyncio.sleep(wait)

    async def get(self, path: str, params: Mapping[str, str]) -> list[Any]:
        """One signed GET; retries rate limits, 5xx and network errors with backoff."""
        rows, _ = await self.get_timed(path, params)
        return rows

    async def get_timed(self, path: str, params: Mapping[str, str]) -> tuple[list[Any], float]:
        """``get``, plus the monotonic time the answered request was sent."""
        request_path = f"{path}?{urlencode(params)}" if params else path
        delay = 0.5
        for attempt in range(self._max_retries + 1):
            await self._slot()
            headers = rest_headers(self._credentials, "GET", request_path, "", self._clock())
            self.requests += 1
            sent_at = time.monotonic()
            try:
                async with self._session.get(URL(self._base + request_path, encoded=True), headers=headers) as response:
                    status = response.status
                    payload = await response.read()
                body = loads_exact(payload) if payload else None
                return m.history_rows(body, status), sent_at
            except m.RestError as exc:
                if exc.is_configuration_error:
                    raise
                retryable = exc.is_rate_limit or exc.http_status >= 500
                if exc.is_rate_limit:
                    self.rate_limited += 1
                if not retryable or attempt == self._max_retries:
                    raise BackfillError(f"OKX account {self.account!r}: {path}: {exc}") from None
                reason = str(exc)
            except JSONError as exc:
                reason = f"response is not JSON: {exc}"
                if attempt == self._max_retries:
                    raise BackfillError(f"OKX account {self.account!r}: {path}: {reason}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = exc.__class__.__name__
                if attempt == self._max_retries:
                    raise BackfillError(f"OKX account {self.account!r}: {path}: {reason}") from None
            pause = delay / 2 + random.uniform(0, delay / 2)
            log.info("okx account %r: %s failed (%s); retrying in %.2fs", self.account, path, reason, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    async def account_uid(self) -> str | None:
        """The key's own uid (``/api/v5/account/config``), so backfilled rows name their account."""
        rows = await self.get(m.ACCOUNT_CONFIG_PATH, {})
        if rows and isinstance(rows[0], Mapping) and isinstance(rows[0].get("uid"), str) and rows[0]["uid"]:
            return str(rows[0]["uid"])
        return None

    async def pages(
        self, channel: str, *, since_ms: int, ccy: str | None = None, limit: int = 100
    ) -> AsyncIterator[tuple[list[Any], float]]:
        """Pages of rows created at or after ``since_ms``, newest first, each with the monotonic
        time its request was sent: the moment the page's snapshot is ordered against live pushes."""
        path = m.HISTORY_PATH[channel]
        after: int | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, str] = {}
            if ccy:
                params["ccy"] = ccy
            if after is not None:
                params["after"] = str(after)
            params["before"] = str(since_ms - 1)
            params["limit"] = str(limit)
            rows, sent_at = await self.get_timed(path, params)
            yield rows, sent_at
            if len(rows) < limit:
                return
            stamps = [_ts(row) for row in rows]
            known = [s for s in stamps if s is not None]
            if not known:
                log.warning("okx account %r: %s page without readable 'ts'; stopping this pass", self.account, path)
                return
            oldest, newest = min(known), max(known)
            if oldest == newest:
                # A full page inside one millisecond: ``ts`` cannot page inside it, move past it.
                log.warning("okx account %r: %d+ %s rows share ts %d; paging past them", self.account, limit, channel, oldest)
                after = oldest
            else:
                after = oldest + 1  # read the oldest millisecond again: rows tied on it are not skipped
        raise BackfillError(f"OKX account {self.account!r}: {path}: more than {MAX_PAGES} pages")


def _ts(row: Any) -> int | None:
    if isinstance(row, Mapping):
        try:
            return int(row.get("ts"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None


class Window:
    """Creation-time window of the next pass.

    Every transfer created after the previous pass began is read again (minus ``overlap``), and every
    transfer still open is included by reaching back to its creation; the dedup gate drops
    what was already published. ``max_lookback`` bounds both.
    """

    def __init__(
        self,
        *,
        now_ms: int,
        initial_lookback_ms: int,
        overlap_ms: int,
        max_lookback_ms: int,
        open_cap: int = 100_000,
    ):
        self._covered_from = now_ms - initial_lookback_ms
        self._overlap = overlap_ms
        self._max_lookback = max_lookback_ms
        self._open: dict[str, int] = {}
        self._open_cap = open_cap

    @property
    def open_transfers(self) -> int:
        return len(self._open)

    def note(self, event: TransferEvent) -> None:
        if event.is_final:
            self._open.pop(event.key, None)
        elif event.created_at is not None and event.key not in self._open:
            if len(self._open) >= self._open_cap:
                self._open.pop(min(self._open, key=self._open.__getitem__))
            self._open[event.key] = to_epoch_ms(event.created_at)

    def since(self, now_ms: int) -> int:
        floor = now_ms - self._max_lookback
        for key in [k for k, created in self._open.items() if created < floor]:
            del self._open[key]  # older than anything we would read: give up tracking it
        start = self._covered_from - self._overlap
        if self._open:
            start = min(start, min(self._open.values()))
        return max(floor, start)

    def completed(self, pass_started_ms: int) -> None:
        """A pass that began at ``pass_started_ms`` read everything: later passes start there."""
        self._covered_from = max(self._covered_from, pass_started_ms)
