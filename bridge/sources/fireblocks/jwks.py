"""The v2 key set: fetched from the JWKS URL and cached, or a static file (air-gapped runs).

Rotation is automatic on Fireblocks' side, so the cache lives ``jwks_refresh_s`` (an hour, as its
``Cache-Control`` says) and an unknown ``kid`` triggers one refetch — at most every
``jwks_min_refetch_s``, so a flood of forged kids cannot turn us into a fetch loop. A fetch is
async (aiohttp); ``authenticate`` stays synchronous and only reads the cache, the receiver
refreshes before it (``FireblocksWebhook.handle``). A set that cannot be fetched while the kid is
unknown is our outage: the delivery is answered 503 (retried), never 401 (lost).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.sources.fireblocks.signature import jwks_keys

__all__ = ["KeySet"]

log = logging.getLogger(__name__)


class KeySet:
    """Keys by ``kid``; ``ensure(kid)`` refreshes when needed. ``available`` is False while no usable
    set was ever loaded or the last needed fetch failed."""

    def __init__(
        self,
        *,
        url: str | None,
        file: Path | None = None,
        refresh_s: float = 3600.0,
        min_refetch_s: float = 60.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = None if file is not None else url
        self.refresh_s = refresh_s
        self.min_refetch_s = min_refetch_s
        self.timeout_s = timeout_s
        self._clock = clock
        self.keys: dict[str, rsa.RSAPublicKey] = {}
        self.fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        if file is not None:
            self.keys = jwks_keys(json.loads(file.read_bytes()))
            self.fetched_at = clock()

    @property
    def static(self) -> bool:
        return self.url is None

    def needs_fetch(self, kid: str) -> bool:
        """Should the set be (re)fetched before checking a signature made with ``kid``?"""
        if self.static:
            return False
        now = self._clock()
        if self.fetched_at is None or now - self.fetched_at >= self.refresh_s:
            return self._attempted_at is None or now - self._attempted_at >= min(self.min_refetch_s, 1.0)
        return kid not in self.keys and (self._attempted_at is None or now - self._attempted_at >= self.min_refetch_s)

    async def ensure(self, kid: str) -> bool:
        """Refresh if needed; False when the set could not be fetched and ``kid`` is not known
        (an outage: answer 503). An unknown kid after a good fetch is True (then 401)."""
        if self.needs_fetch(kid) or self._lock.locked():  # a fetch in flight decides for every caller
            async with self._lock:
                if self.needs_fetch(kid):
                    await self._fetch()
        return self._usable(kid)

    def _usable(self, kid: str) -> bool:
        return kid in self.keys or (self.last_error is None and self.fetched_at is not None)

    async def _fetch(self) -> None:
        assert self.url is not None
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            async with self._session.get(self.url) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                keys = jwks_keys(json.loads(await response.read()))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.failures += 1
            self.last_error = f"JWKS fetch from {self.url} failed: {exc.__class__.__name__}: {str(exc)[:200]}"
            log.warning("fireblocks: %s", self.last_error)
            return
        self.keys = keys
        self.fetched_at = self._clock()
        self.last_error = None
        log.info("fireblocks: JWKS loaded from %s (%d keys)", self.url, len(keys))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
