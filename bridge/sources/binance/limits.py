"""Binance's request limits, kept from both sides: our own price list and what Binance reports.

Binance meters SAPI endpoints per minute, each endpoint on its own budget, per IP (deposit
history: 12000) or per UID (withdrawal history: 180000, at 18000 a request), and ``/api`` per IP
(6000). Every response reports the budget's use in ``X-SAPI-USED-<IP|UID>-WEIGHT-1M`` (or
``X-MBX-USED-WEIGHT-1M``). Before a request, ``Limits.acquire`` charges its price to its budget
and waits for the next minute when that would pass ``headroom`` of the limit; after it, the reported
use is believed when it is higher (other processes on the same IP count too).

A 429 (or -1003) blocks the budget until its ``Retry-After``; a 418 (an IP ban: the answer to
requests sent after a 429) blocks every budget. Nothing is sent while blocked: a wait longer than
``max_wait`` raises ``RateLimited`` at once, the poll cycle ends and a later one asks again —
so the bridge never earns a ban. One ``Limits`` serves every account of the process (they share
the IP budgets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from bridge.ingest.rest import TransientError
from bridge.observability import metrics
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.messages import Endpoint, Scope, weight_headers

__all__ = ["Budget", "Limits", "RateLimited", "MINUTE_MS", "limits_for"]

MINUTE_MS = 60_000
MARGIN_MS = 250
"""Added to every wait: our estimate of Binance's clock is off by a round trip at most."""
WaitReason = Literal["budget", "retry_after", "ban"]


class RateLimited(TransientError):
    """Binance said stop (429/418), or the budget is spent, for longer than an in-cycle wait."""

    is_rate_limit = True


@dataclass
class Budget:
    """One minute budget of one endpoint (per IP or per UID)."""

    limit: int
    minute: int = -1
    used: int = 0
    reported: int | None = None
    blocked_until_ms: int = 0

    def roll(self, now_ms: int) -> None:
        minute = now_ms // MINUTE_MS
        if minute != self.minute:
            self.minute, self.used, self.reported = minute, 0, None

    def wait_ms(self, weight: int, now_ms: int, headroom: float) -> tuple[int, WaitReason | None]:
        """How long a request of ``weight`` must wait, and why (0, None: send now)."""
        if self.blocked_until_ms > now_ms:
            return self.blocked_until_ms - now_ms, "retry_after"
        self.roll(now_ms)
        if self.used and self.used + weight > self.limit * headroom:
            return (self.minute + 1) * MINUTE_MS - now_ms + MARGIN_MS, "budget"
        return 0, None


class Limits:
    """Every budget of the process, keyed by endpoint and IP or UID (account)."""

    def __init__(
        self,
        *,
        ip_limit: int = 12_000,
        uid_limit: int = 180_000,
        api_limit: int = 6_000,
        headroom: float = 0.8,
        max_wait: float = 60.0,
        sleep: Callable[[float], object] = asyncio.sleep,
    ):
        self.limits: dict[Scope, int] = {"ip": ip_limit, "uid": uid_limit, "api": api_limit}
        self.headroom = headroom
        self.max_wait = max_wait
        self._sleep = sleep
        self._budgets: dict[tuple[str, Scope, str], Budget] = {}
        self.banned_until_ms = 0
        self.waits: dict[str, int] = {}
        """Waits per account (for health and tests)."""
        self.spent: dict[tuple[str, Scope], int] = {}
        """Weight charged per (account, scope) since start."""

    def budget(self, endpoint: Endpoint, account: str) -> Budget:
        # /api weight is one budget per IP for every endpoint; SAPI budgets are per endpoint.
        path = "/api" if endpoint.scope == "api" else endpoint.path
        who = account if endpoint.scope == "uid" else "ip"
        key = (path, endpoint.scope, who)
        found = self._budgets.get(key)
        if found is None:
            found = self._budgets[key] = Budget(self.limits[endpoint.scope])
        return found

    def wait_ms(self, endpoint: Endpoint, account: str, now_ms: int) -> int:
        """How long a request to ``endpoint`` would wait now (0: it may be sent)."""
        if self.banned_until_ms > now_ms:
            return self.banned_until_ms - now_ms
        return self.budget(endpoint, account).wait_ms(endpoint.weight, now_ms, self.headroom)[0]

    async def acquire(self, endpoint: Endpoint, account: str, now_ms: Callable[[], int]) -> None:
        """Wait until ``endpoint`` may be called for ``account``, then charge its price.
        ``RateLimited`` (nothing sent) if that wait would be longer than ``max_wait``."""
        budget = self.budget(endpoint, account)
        while True:
            now = now_ms()
            if self.banned_until_ms > now:
                wait, reason = self.banned_until_ms - now, "ban"
            else:
                wait, why = budget.wait_ms(endpoint.weight, now, self.headroom)
                reason = why or "budget"
            if wait <= 0:
                break
            self.count_wait(account, reason)
            if wait > self.max_wait * 1000:
                until = time.strftime("%H:%M:%S", time.gmtime((now + wait) / 1000))
                raise RateLimited(f"{reason} until {until} UTC; not sending before")
            await self._sleep(wait / 1000)  # type: ignore[misc]
        budget.used += endpoint.weight
        self.spent[(account, endpoint.scope)] = self.spent.get((account, endpoint.scope), 0) + endpoint.weight
        metrics.POLL_WEIGHT.labels("binance", account, endpoint.scope).inc(endpoint.weight)

    def observe(self, endpoint: Endpoint, account: str, headers: Mapping[str, str], now_ms: int) -> dict[str, int]:
        """Believe the reported use of this endpoint's budget when it is higher than ours; returns
        every weight header by ``<scope>-<interval>`` (for health)."""
        budget = self.budget(endpoint, account)
        budget.roll(now_ms)
        found: dict[str, int] = {}
        for header in weight_headers(headers):
            found[f"{header.scope}-{header.interval}"] = header.used
            metrics.POLL_WEIGHT_USED.labels("binance", account, header.scope, header.interval).set(header.used)
            if header.interval == "1m":
                budget.reported = header.used
                budget.used = max(budget.used, header.used)
        return found

    def rate_limited(self, endpoint: Endpoint, account: str, retry_after: float | None, now_ms: int, *, ban: bool) -> None:
        """A 429 (or -1003) blocks the endpoint's budget, a 418 every budget, until ``Retry-After``
        (the next minute for a 429 that names none; two minutes, Binance's shortest ban, for a 418)."""
        if ban:
            pause = retry_after if retry_after is not None else 120.0
            self.banned_until_ms = max(self.banned_until_ms, now_ms + int(pause * 1000) + MARGIN_MS)
            self.count_wait(account, "ban")
            return
        budget = self.budget(endpoint, account)
        until = now_ms + int(retry_after * 1000) if retry_after is not None else (now_ms // MINUTE_MS + 1) * MINUTE_MS
        budget.blocked_until_ms = max(budget.blocked_until_ms, until + MARGIN_MS)
        self.count_wait(account, "retry_after")

    def blocked_until_ms(self, account: str) -> int:
        """When the last of this account's blocks ends (0: none)."""
        blocked = [b.blocked_until_ms for (_, scope, who), b in self._budgets.items() if who in (account, "ip")]
        return max([self.banned_until_ms, *blocked])

    def snapshot(self, account: str) -> dict[str, dict[str, int | None]]:
        """This account's budgets: used (ours or reported, the higher) and limit, by endpoint."""
        return {
            f"{scope}:{path}": {"used": b.used, "reported": b.reported, "limit": b.limit}
            for (path, scope, who), b in self._budgets.items()
            if who in (account, "ip")
        }

    def count_wait(self, account: str, reason: str) -> None:
        """One request held back (``budget``, ``retry_after``, ``ban``) or deferred (``deferred``)."""
        self.waits[account] = self.waits.get(account, 0) + 1
        metrics.POLL_RATE_LIMIT_WAITS.labels("binance", account, reason).inc()


def limits_for(config: BinanceConfig) -> Limits:
    """The budgets of the ``binance:`` section."""
    return Limits(
        ip_limit=config.ip_weight_limit,
        uid_limit=config.uid_weight_limit,
        api_limit=config.api_weight_limit,
        headroom=config.weight_headroom,
        max_wait=config.max_rate_limit_wait,
    )
