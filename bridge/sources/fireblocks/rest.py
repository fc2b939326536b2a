"""The signed history client: ``GET /v1/transactions`` pages for the gap backfill.

Pages are walked by creation time (``orderBy=createdAt``, ``sort=ASC``, ``after`` = the last row's
``createdAt`` − 1 ms): the ``next-page`` header would need the response headers, and the
creation-time cursor gives the same rows (the dedup gate drops a row read twice). Rate limits are
undocumented: requests are spaced (``rest_rate_per_second``), 429/5xx are retried with backoff and
``Retry-After`` is believed (``bridge.ingest.rest.RestClient``); 401/403 are fatal for the pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from bridge.ingest.rest import RestClient, Verdict
from bridge.sources.fireblocks.auth import RequestSigner

__all__ = ["FireblocksRest", "FireblocksApiError", "TRANSACTIONS_PATH"]

TRANSACTIONS_PATH = "/v1/transactions"


class FireblocksApiError(Exception):
    """An error answer of the REST API: the HTTP status and Fireblocks' message (no secret)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message[:200]}")
        self.status = status
        self.is_rate_limit = status == 429


class FireblocksRest(RestClient):
    provider_name = "Fireblocks"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, account: str, signer: RequestSigner, **kwargs: Any):
        super().__init__(session, base_url, account, **kwargs)
        self._signer = signer

    def __repr__(self) -> str:
        return f"FireblocksRest(base={self.base!r})"

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        return self._signer.headers(path + (f"?{query}" if query else ""), body.encode())

    def verdict(self, error: Exception) -> Verdict:
        status = getattr(error, "status", 0)
        if status in (429, 408) or status >= 500:
            return Verdict.RETRY
        return Verdict.FATAL

    @staticmethod
    def _rows(body: Any, status: int) -> list[Any]:
        if status >= 400:
            message = body.get("message") if isinstance(body, Mapping) else None
            raise FireblocksApiError(status, str(message or ""))
        if not isinstance(body, list):
            raise FireblocksApiError(status, f"expected an array of transactions, got {type(body).__name__}")
        return body

    async def transactions(self, after_ms: int, limit: int) -> AsyncIterator[tuple[list[Any], float]]:
        """Pages of rows created at or after ``after_ms``, oldest first, with each request's send
        time (Fireblocks' ``after`` is exclusive)."""
        after = after_ms - 1
        while True:
            params = {"after": str(after), "orderBy": "createdAt", "sort": "ASC", "limit": str(limit)}
            rows, sent_at = await self.request("GET", TRANSACTIONS_PATH, self._rows, params)
            yield rows, sent_at
            if len(rows) < limit:
                return
            created = [row.get("createdAt") for row in rows if isinstance(row, Mapping)]
            last = max((c for c in created if isinstance(c, int) and not isinstance(c, bool)), default=None)
            if last is None or last - 1 <= after:
                return  # a full page without progress (> limit rows in one ms): the next pass reads on
            after = last - 1
