"""Signed Ripio REST calls for one account: the stream ticket and the listing pages.

Transport only (aiohttp): signs, spaces requests under the account's rate limit, retries HTTP 429
(after ``Retry-After`` when the server sends one), 5xx and network errors with capped jittered
backoff, and decodes bodies exactly (amounts are JSON numbers). Refused credentials, signatures or clocks raise ``RestError`` at once — retrying fast
cannot help — and the caller turns them into a configuration error.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from yarl import URL

from bridge.jsonutil import JSONError, loads_exact
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.auth import Credentials, signed_headers, signed_path

__all__ = ["RipioRest", "TransientRestError", "MAX_RETRY_AFTER"]

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0
"""A ``Retry-After`` longer than this is cut short: the next retry or pass asks again."""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class TransientRestError(Exception):
    """A call still failed after its retries (rate limit, server or network): try again later."""


class RipioRest:
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
        self._session = session
        self._base = base_url.rstrip("/")
        self._base_path = urlsplit(self._base).path.rstrip("/")
        self.account = account
        self._credentials = credentials
        self._spacing = 1.0 / rate_per_second
        self._max_retries = max_retries
        self._tolerance_ms = tolerance_ms
        self._sign_query = sign_query
        self._retry_initial = retry_initial
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

    async def _once(self, method: str, path: str, params: Mapping[str, str]) -> tuple[int, Any, float | None]:
        query = urlencode(params) if params else ""
        full_path = self._base_path + path  # what the server sees, and so what it verifies
        headers = signed_headers(
            self._credentials,
            method,
            signed_path(full_path, query, include_query=self._sign_query),
            "",
            self._clock(),
            tolerance_ms=self._tolerance_ms,
        )
        url = URL(self._base + path + (f"?{query}" if query else ""), encoded=True)
        self.requests += 1
        async with self._session.request(method, url, headers=headers) as response:
            status = response.status
            payload = await response.read()
            retry_after = _seconds(response.headers.get("Retry-After"))
        try:
            return status, loads_exact(payload) if payload else None, retry_after
        except JSONError as exc:
            if status >= 400:
                return status, {"message": f"non-JSON error body ({exc})"}, retry_after
            raise

    async def request(
        self, method: str, path: str, read: Callable[[Any, int], Any], params: Mapping[str, str] | None = None
    ) -> tuple[Any, float]:
        """One signed request, its body read by ``read(body, status)`` (which raises ``RestError``
        for an error envelope). Returns what ``read`` returned and the monotonic time the answered
        request was sent (a listing page is a snapshot of that moment)."""
        delay = self._retry_initial
        for attempt in range(self._max_retries + 1):
            await self._slot()
            sent_at = time.monotonic()
            retry_after: float | None = None
            try:
                status, body, retry_after = await self._once(method, path, params or {})
                return read(body, status), sent_at
            except m.RestError as exc:
                if not exc.is_transient:  # say which call, for the operator who has to act
                    raise m.RestError(exc.http_status, exc.code, f"{method} {path}: {exc.message}") from None
                if exc.is_rate_limit:
                    self.rate_limited += 1
                    delay = max(delay, self._spacing * 2)
                reason = str(exc)
            except JSONError as exc:
                reason = f"response is not JSON: {exc}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = exc.__class__.__name__
            if attempt == self._max_retries:
                raise TransientRestError(f"Ripio account {self.account!r}: {method} {path}: {reason}")
            pause = delay / 2 + random.uniform(0, delay / 2)
            if retry_after is not None:  # the server said when: believe it, within reason
                pause = min(max(pause, retry_after), MAX_RETRY_AFTER)
            log.info("ripio account %r: %s %s failed (%s); retrying in %.2fs", self.account, method, path, reason, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, 8.0)
        raise AssertionError("unreachable")

    async def ticket(self, path: str) -> str:
        """A fresh stream ticket (``POST /trade/ticket``). Never log it."""
        ticket, _ = await self.request("POST", path, m.ticket_from)
        return ticket  # type: ignore[no-any-return]
