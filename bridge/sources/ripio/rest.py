"""Signed Ripio REST calls for one account: the stream ticket and the listing pages.

Pacing, retries (HTTP 429 after ``Retry-After`` when the server sends one, 5xx, network errors)
and exact decoding are the engine's (``bridge.ingest.rest``). Refused credentials, signatures or
clocks raise ``RestError`` at once — retrying fast cannot help — and the source turns them into a
configuration error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import aiohttp

from bridge.ingest.rest import RestClient, TransientError, Verdict
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.auth import Credentials, signed_headers, signed_path

__all__ = ["RipioRest", "TransientRestError"]

TransientRestError = TransientError
"""A call still failed after its retries (rate limit, server or network): try again later."""


class RipioRest(RestClient):
    provider_name = "Ripio"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: str,
        credentials: Credentials,
        *,
        rate_per_second: float = 1.0,
        max_retries: int = 6,
        tolerance_ms: int | None = None,
        sign_query: bool = False,
        retry_initial: float = 0.5,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(
            session, base_url, account, rate_per_second=rate_per_second, max_retries=max_retries,
            retry_initial=retry_initial, clock=clock,
        )
        self._base_path = urlsplit(self.base).path.rstrip("/")
        self._credentials = credentials
        self._tolerance_ms = tolerance_ms
        self._sign_query = sign_query

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        full_path = self._base_path + path  # what the server sees, and so what it verifies
        return signed_headers(
            self._credentials,
            method,
            signed_path(full_path, query, include_query=self._sign_query),
            body,
            self.clock(),
            tolerance_ms=self._tolerance_ms,
        )

    def verdict(self, error: Exception) -> Verdict:
        return Verdict.RETRY if isinstance(error, m.RestError) and error.is_transient else Verdict.FATAL

    def fatal(self, error: Exception, method: str, path: str) -> Exception:
        if isinstance(error, m.RestError):  # say which call, for the operator who has to act
            return m.RestError(error.http_status, error.code, f"{method} {path}: {error.message}")
        return error

    async def ticket(self, path: str) -> str:
        """A fresh stream ticket (``POST /trade/ticket``). Never log it."""
        ticket, _ = await self.request("POST", path, m.ticket_from)
        return ticket
