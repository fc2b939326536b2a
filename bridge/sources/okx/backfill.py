"""OKX's REST history: signed, paginated reads of ``/api/v5/asset/deposit-history`` and
``withdrawal-history`` (newest first, ``before``/``after`` on the record's creation ``ts``).

Pacing, retries and error handling are the engine's (``bridge.ingest.rest``); what the window of a
pass is, is the engine's too (``bridge.ingest.backfill.Window``). The history endpoints filter on
creation time, not on update time, which is why that window reaches back to every open transfer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from bridge.ingest.rest import RestClient, TransientError, Verdict
from bridge.sources.okx import messages as m
from bridge.sources.okx.auth import Credentials, rest_headers

__all__ = ["HistoryClient", "MAX_PAGES"]

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
"""Guard against a server that keeps answering full pages: a pass never loops forever."""


class HistoryClient(RestClient):
    """Signed GETs for one account, spaced to stay under OKX's per-user rate limit."""

    provider_name = "OKX"

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
        super().__init__(session, base_url, account, rate_per_second=rate_per_second, max_retries=max_retries, clock=clock)
        self._credentials = credentials

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        return rest_headers(self._credentials, method, f"{path}?{query}" if query else path, body, self.clock())

    def verdict(self, error: Exception) -> Verdict:
        if not isinstance(error, m.RestError) or error.is_configuration_error:
            return Verdict.FATAL
        if error.is_rate_limit or error.http_status >= 500:
            return Verdict.RETRY
        return Verdict.GIVE_UP

    async def get(self, path: str, params: Mapping[str, str]) -> list[Any]:
        """One signed GET; retries rate limits, 5xx and network errors with backoff."""
        rows, _ = await self.get_timed(path, params)
        return rows

    async def get_timed(self, path: str, params: Mapping[str, str]) -> tuple[list[Any], float]:
        """``get``, plus the monotonic time the answered request was sent."""
        return await self.request("GET", path, m.history_rows, params)

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
        raise TransientError(f"OKX account {self.account!r}: {path}: more than {MAX_PAGES} pages")


def _ts(row: Any) -> int | None:
    if isinstance(row, Mapping):
        try:
            return int(row.get("ts"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None
