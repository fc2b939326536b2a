"""Signed REST calls of one account: spaced under its rate limit, retried with capped backoff.

Every history-reading source (stream backfill, poll) needs the same loop: wait for a rate slot,
sign, send, read the body exactly, and on failure decide — through one provider hook — whether the
answer is fatal (credentials, signature, request: an operator has to act), worth retrying now
(rate limit, 5xx, network), or a reason to give up until the next pass. ``Retry-After`` is believed
within ``max_retry_after``. Secrets never reach an exception: the provider's error types carry the
provider's words, and callers scrub echoes of what they sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.ingest.tls import client_context

__all__ = ["RateSlot", "RestClient", "TransientError", "Verdict", "retry_after_seconds", "shared_session"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(Exception):
    """A call still failed after its retries (rate limit, server, network): try again later."""


class Verdict(Enum):
    FATAL = "fatal"
    """Raise the error as it is: retrying cannot help (credentials, signature, request)."""
    RETRY = "retry"
    """Worth another attempt after a pause (rate limit, 5xx)."""
    GIVE_UP = "give_up"
    """Not retried now, not an operator's problem either: ``TransientError``, next pass tries again."""


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds; an HTTP date (or garbage) falls back to our own backoff."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RateSlot:
    """Spaces requests ``1 / rate_per_second`` apart (a token bucket of one: providers count per second)."""

    def __init__(self, rate_per_second: float):
        self.spacing = 1.0 / rate_per_second
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        wait = self._next - now
        self._next = max(now, self._next) + self.spacing
        if wait > 0:
            await asyncio.sleep(wait)


_SESSIONS: dict[tuple[Any, ...], list[Any]] = {}  # key → [session, users]


@asynccontextmanager
async def shared_session(owner: str, *, timeout: float, ca_bundle: Path | None) -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session (connection pool) for all accounts of a provider with the same settings,
    closed when its last account stops: a session per account costs each an idle pool, a
    keep-alive socket and their buffers. Safe to share: every request is signed per account, no
    cookie is kept (``DummyCookieJar``), rate limits live in each ``RestClient``, and the pool is
    unbounded as each account's own pool was (a pool limit would eat into the request timeout)."""
    key = (owner, timeout, ca_bundle, asyncio.get_running_loop())
    entry = _SESSIONS.get(key)
    if entry is None or entry[0].closed:
        connector = aiohttp.TCPConnector(ssl=client_context(ca_bundle), limit=0)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        entry = _SESSIONS[key] = [session, 0]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if not entry[1] and _SESSIONS.get(key) is entry:
            del _SESSIONS[key]
            await entry[0].close()


class RestClient:
    """One account's signed calls. Subclasses provide ``sign`` and ``verdict``."""

    provider_name = "provider"
    max_retry_after = 60.0
    """A ``Retry-After`` longer than this is cut short: the next retry or pass asks again."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: str,
        *,
        rate_per_second: float,
        max_retries: int = 6,
        retry_initial: float = 0.5,
        retry_max: float = 8.0,
        clock: Callable[[], float] = time.time,
    ):
        self.session = session
        self.base = base_url.rstrip("/")
        self.account = account
        self.slot = RateSlot(rate_per_second)
        self.max_retries = max_retries
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.clock = clock
        self.requests = 0
        self.rate_limited = 0
        self.not_json: list[tuple[str, bytes, str]] = []
        """Answers that claimed success but were not JSON, as (path, body, reason), when the
        provider's client records them (the request itself is retried): the poll engine
        dead-letters them so they are seen, not silently dropped (``bridge.ingest.paging``)."""

    # -- provider hooks ------------------------------------------------------------------------

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        """Headers of one signed request (``path`` as the server sees it, ``query`` encoded)."""
        raise NotImplementedError

    def verdict(self, error: Exception) -> Verdict:
        """What a provider error raised by ``read`` means; network errors are always retried."""
        return Verdict.FATAL

    def fatal(self, error: Exception, method: str, path: str) -> Exception:
        """The exception a fatal answer becomes (add which call failed, for the operator)."""
        return error

    # -- the call ------------------------------------------------------------------------------

    async def send(self, method: str, path: str, query: str) -> tuple[int, bytes, float | None]:
        headers = self.sign(method, path, query, "")
        url = URL(self.base + path + (f"?{query}" if query else ""), encoded=True)
        self.requests += 1
        async with self.session.request(method, url, headers=headers) as response:
            return response.status, await response.read(), retry_after_seconds(response.headers.get("Retry-After"))

    async def request(
        self, method: str, path: str, read: Callable[[Any, int], T], params: Mapping[str, str] | None = None
    ) -> tuple[T, float]:
        """One signed request, its body read by ``read(body, status)`` (which raises the provider's
        error for an error envelope). Returns what ``read`` returned and the monotonic time the
        answered request was sent (a history page is a snapshot of that moment)."""
        query = urlencode(params) if params else ""
        delay = self.retry_initial
        for attempt in range(self.max_retries + 1):
            await self.slot.wait()
            sent_at = time.monotonic()
            retry_after: float | None = None
            try:
                status, payload, retry_after = await self.send(method, path, query)
                try:
                    body = loads_exact(payload) if payload else None
                except JSONError as exc:
                    if status < 400:
                        raise
                    body = {"message": f"non-JSON error body ({exc})"}
                return read(body, status), sent_at
            except JSONError as exc:
                reason = f"response is not JSON: {exc}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = exc.__class__.__name__
            except Exception as exc:  # the provider's error envelope, raised by ``read``
                verdict = self.verdict(exc)
                if verdict is Verdict.FATAL:
                    raise self.fatal(exc, method, path) from None
                if getattr(exc, "is_rate_limit", False):
                    self.rate_limited += 1
                    delay = max(delay, self.slot.spacing * 2)
                reason = str(exc)
                if verdict is Verdict.GIVE_UP:
                    raise TransientError(f"{self.provider_name} account {self.account!r}: {path}: {reason}") from None
            if attempt == self.max_retries:
                raise TransientError(f"{self.provider_name} account {self.account!r}: {method} {path}: {reason}")
            pause = delay / 2 + random.uniform(0, delay / 2)
            if retry_after is not None:  # the server said when: believe it, within reason
                pause = min(max(pause, retry_after), self.max_retry_after)
            log.info("%s account %r: %s %s failed (%s); retrying in %.2fs", self.provider_name.lower(), self.account, method, path, reason, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self.retry_max)
        raise AssertionError("unreachable")
