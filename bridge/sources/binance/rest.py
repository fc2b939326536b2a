"""Signed Binance GETs for one account, on the engine's REST client (rate slot, retries, exact JSON).

What is Binance's own:

* **Server time.** ``timestamp`` is the server's clock: the offset is learnt from ``/api/v3/time``
  (half the round trip allowed for), refreshed every ``time_sync_interval`` and at once after a
  -1021, which is then retried once; a second -1021 ends the cycle (the next one resyncs again).
* **Signing in the query**: ``recvWindow``, ``timestamp``, then ``signature`` over exactly the
  percent-encoded bytes sent (``auth``), and the key in ``X-MBX-APIKEY``.
* **Limits** (``limits``): every request is charged to its budget before it is sent, weight headers
  are read from every answer, 429/418 block until ``Retry-After``.
* **Verdicts by code**: refused credentials and malformed requests are fatal (a configuration
  error for the engine), rate limits and Binance-side failures are retried, the rest waits for the
  next cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.ingest.rest import RestClient, Verdict, retry_after_seconds
from bridge.observability import metrics
from bridge.sources.binance import messages as m
from bridge.sources.binance.auth import Signer, signed_query
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.limits import Limits, RateLimited

__all__ = ["BinanceRest"]

log = logging.getLogger(__name__)


class BinanceRest(RestClient):
    provider_name = "Binance"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        account: str,
        signer: Signer,
        limits: Limits,
        *,
        endpoints: Mapping[str, m.Endpoint] = m.ENDPOINTS,
        recv_window_ms: int = 5000,
        time_sync_interval: float = 300.0,
        rate_per_second: float = 1.0,
        max_retries: int = 6,
        retry_initial: float = 0.5,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(
            session, base_url, account, rate_per_second=rate_per_second, max_retries=max_retries, retry_initial=retry_initial, clock=clock
        )
        self.signer = signer
        self.limits = limits
        self.endpoints = dict(endpoints)
        self.recv_window_ms = recv_window_ms
        self.time_sync_interval = time_sync_interval
        self.max_retry_after = limits.max_wait
        self.offset_ms: int | None = None
        """Server clock minus ours, in ms; None until learnt."""
        self.synced_at: float | None = None
        self.time_syncs = 0
        self.timestamp_errors = 0
        self.weights: dict[str, int] = {}
        """The last weight headers seen, by ``<scope>-<interval>``."""
        self._resync = False
        self._retried_timestamp = False

    @classmethod
    def for_key(
        cls, session: aiohttp.ClientSession, cfg: BinanceConfig, account: str, signer: Signer, limits: Limits, *, clock: Callable[[], float]
    ) -> BinanceRest:
        """The client of one key as the ``binance:`` section configures it."""
        endpoints = dict(m.ENDPOINTS)
        for path in (m.WITHDRAWAL_PATH, m.LOCALENTITY_WITHDRAWAL_PATH):
            endpoints[path] = m.Endpoint(path, cfg.withdrawal_weight, cfg.withdrawal_weight_scope)
        return cls(
            session,
            cfg.base_url,
            account,
            signer,
            limits,
            endpoints=endpoints,
            recv_window_ms=cfg.recv_window_ms,
            time_sync_interval=cfg.time_sync_interval,
            rate_per_second=cfg.rest_rate_per_second,
            max_retries=cfg.rest_max_retries,
            clock=clock,
        )

    # -- time ----------------------------------------------------------------------------------

    def server_ms(self) -> int:
        """Now on Binance's clock (ours until the offset is learnt)."""
        return int(self.clock() * 1000) + (self.offset_ms or 0)

    async def sync_time(self) -> int:
        """Learn the server clock offset from ``GET /api/v3/time``; returns it in ms."""
        endpoint = self.endpoints[m.TIME_PATH]
        await self.limits.acquire(endpoint, self.account, self.server_ms)
        before = self.clock()
        async with self.session.get(URL(self.base + m.TIME_PATH, encoded=True)) as response:
            status, payload = response.status, await response.read()
            headers = response.headers
        after = self.clock()
        self._observe(endpoint, headers, status, None)
        server = m.server_time_of(loads_exact(payload) if payload else None, status)
        self.offset_ms = server - int((before + after) / 2 * 1000)
        self.synced_at = time.monotonic()
        self.time_syncs += 1
        self._resync = False
        return self.offset_ms

    def _sync_due(self) -> bool:
        return self._resync or self.synced_at is None or time.monotonic() - self.synced_at >= self.time_sync_interval

    # -- the engine's hooks --------------------------------------------------------------------

    def verdict(self, error: Exception) -> Verdict:
        if isinstance(error, RateLimited):
            return Verdict.GIVE_UP
        if not isinstance(error, m.BinanceApiError):
            return Verdict.FATAL
        if error.is_timestamp:
            self.timestamp_errors += 1
            if self._retried_timestamp:
                return Verdict.GIVE_UP  # resynced once already: the next cycle tries again
            self._retried_timestamp = self._resync = True
            return Verdict.RETRY
        if error.is_configuration_error or error.is_request_error:
            return Verdict.FATAL
        if error.is_ban:
            return Verdict.GIVE_UP  # every budget is blocked until Retry-After: nothing is sent meanwhile
        if error.is_rate_limit and self.limits.blocked_until_ms(self.account) - self.server_ms() > self.limits.max_wait * 1000:
            return Verdict.GIVE_UP  # Retry-After beyond an in-cycle wait: a later cycle asks again
        if error.is_rate_limit or error.is_transient:
            return Verdict.RETRY
        return Verdict.GIVE_UP

    def fatal(self, error: Exception, method: str, path: str) -> Exception:
        if isinstance(error, m.BinanceApiError):
            return m.BinanceApiError(error.http_status, error.code, f"{method} {path}: {error.msg}")
        return error

    async def send(self, method: str, path: str, query: str) -> tuple[int, bytes, float | None]:
        endpoint = self.endpoints[path]
        headers: Mapping[str, str] = {}
        if endpoint.signed:
            if self._sync_due():
                await self.sync_time()
            await self.limits.acquire(endpoint, self.account, self.server_ms)
            query = signed_query(self.signer, query, timestamp_ms=self.server_ms(), recv_window_ms=self.recv_window_ms)
            headers = self.signer.headers
        else:
            await self.limits.acquire(endpoint, self.account, self.server_ms)
        url = URL(self.base + path + (f"?{query}" if query else ""), encoded=True)
        self.requests += 1
        metrics.POLL_REQUESTS.labels("binance", self.account, path).inc()
        async with self.session.request(method, url, headers=headers) as response:
            status, payload = response.status, await response.read()
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            self._observe(endpoint, response.headers, status, retry_after)
        if status < 400:
            try:
                loads_exact(payload)
            except JSONError as exc:
                self.not_json.append((path, payload, f"response is not JSON: {exc}"))
        return status, payload, retry_after

    def _observe(self, endpoint: m.Endpoint, headers: Mapping[str, str], status: int, retry_after: float | None) -> None:
        now = self.server_ms()
        self.weights.update(self.limits.observe(endpoint, self.account, headers, now))
        if status in (418, 429):
            self.limits.rate_limited(endpoint, self.account, retry_after, now, ban=status == 418)
        elif status < 400:
            self._retried_timestamp = False

    # -- calls ---------------------------------------------------------------------------------

    async def get(self, path: str, params: Mapping[str, str]) -> tuple[Any, float]:
        """One signed GET: the body (a history page is a bare JSON array) and the monotonic time
        the answered request was sent."""
        return await self.request("GET", path, m.rows_of, params)

    async def account_uid(self) -> str | None:
        """The key's ``uid`` (``GET /api/v3/account``, weight 20), for ``account.id``."""
        uid, _ = await self.request("GET", m.ACCOUNT_PATH, m.uid_of, {"omitZeroBalances": "true"})
        return uid
