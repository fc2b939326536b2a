"""The Binance source: one ``BinanceAccountSource`` per configured key, on the poll engine.

Each cycle (``poll_interval``, 30 s) re-reads the hot window — ``lookback_days`` back from now on
Binance's clock, further back after an outage (the engine's cursor) — of the deposit history, the
withdrawal history when due (``withdrawal_interval``) and, for a master key, each sub-account's
deposits (``subHisrec``). The engine's paged reads (``bridge.ingest.paging``) split each sweep into
windows under ``window_days`` and page by offset with ``startTime``/``endTime`` pinned, until a
short page (``subHisrec``: an empty one); a page the parser refuses is dead-lettered. Every ``tracker_interval`` the transfers older
than the hot window that are still open are asked for directly (``tracker``). Every row is
normalized every time; the dedup gate drops what did not change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from bridge.contract.events import Account, Provider, TransferEvent
from bridge.contract.parsing import ParseResult
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import Page
from bridge.ingest.frames import utc_now
from bridge.ingest.paging import PageQuery
from bridge.ingest.poll import PollSource, due
from bridge.ingest.rest import RestClient, TransientError
from bridge.ingest.shared import ProviderContext
from bridge.observability import metrics
from bridge.sources.binance import messages as m
from bridge.sources.binance.auth import signer_for
from bridge.sources.binance.config import DAY, BinanceAccount, BinanceConfig
from bridge.sources.binance.limits import Limits, limits_for
from bridge.sources.binance.parse import parse_page
from bridge.sources.binance.rest import BinanceRest
from bridge.sources.binance.tracker import OpenTransfers, requeries

__all__ = ["BinanceAccountSource", "build_binance_sources"]

log = logging.getLogger(__name__)


class BinanceAccountSource(PollSource):
    provider = Provider.BINANCE
    display_name = "Binance"
    rest_refusals = (m.BinanceApiError,)

    def __init__(self, config: BinanceConfig, account: BinanceAccount, pipeline: Pipeline, *, limits: Limits | None = None, **options: Any):
        super().__init__(config, account.name, pipeline, **options)
        self.config: BinanceConfig = config
        self.account = account
        self.limits = limits or limits_for(config)
        self.signer = signer_for(account)
        self.rules = config.rules
        self.uid = account.uid
        self.open = OpenTransfers(config.cursor_dir, self.name, cap=config.tracker_max_open)
        self.open.load()
        self._local_clock = self.clock
        self.clock = self._server_clock  # windows and cursors on Binance's clock, as the reference asks
        self._rest: BinanceRest | None = None
        self._uid_asked = account.uid is not None or not account.lookup_uid
        self._withdrawals_at: float | None = None
        self._withdrawals_until: int | None = None
        self._tracker_at: float | None = None
        self.withdrawal_path = m.LOCALENTITY_WITHDRAWAL_PATH if account.poll_localentity else m.WITHDRAWAL_PATH
        """Where this key reads its withdrawals (``poll_localentity``: the travel-rule history)."""
        self.health.detail.update(key_type=account.key_type, mode=account.mode, uid=self.uid, tracked_open=len(self.open))

    def _server_clock(self) -> float:
        offset = self._rest.offset_ms if self._rest is not None and self._rest.offset_ms is not None else 0
        return self._local_clock() + offset / 1000

    def scrub(self, text: str) -> str:
        for secret in self.signer.secrets:
            text = text.replace(secret, "**********")
        return text

    def rest_client(self, session: aiohttp.ClientSession) -> BinanceRest:
        self._rest = BinanceRest.for_key(session, self.config, self.account.name, self.signer, self.limits, clock=self._local_clock)
        return self._rest

    # -- one cycle -----------------------------------------------------------------------------

    async def poll_once(self, rest: RestClient) -> int:
        assert isinstance(rest, BinanceRest)
        if rest.offset_ms is None:  # the first window already on Binance's clock
            try:
                await rest.sync_time()
            except (m.BinanceApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise TransientError(f"Binance account {self.account_name!r}: server time: {self.scrub(str(exc)) or type(exc).__name__}") from None
        try:
            offered = await super().poll_once(rest)
        except BaseException:
            self.open.rollback()
            raise
        self.open.commit()  # every item of the cycle is acknowledged: forget what ended
        self._health(rest)
        return offered

    async def poll(self, rest: RestClient, since_ms: int, until_ms: int) -> AsyncIterator[Page]:
        assert isinstance(rest, BinanceRest)
        cfg, now = self.config, time.monotonic()
        await self._ask_uid(rest)
        hot_from = until_ms - int(cfg.lookback_days * DAY * 1000)
        start = min(since_ms, hot_from)
        if self.account.deposits:
            async for page in self._sweep(rest, m.DEPOSIT_PATH, start, until_ms):
                yield page
        for email in self.account.sub_account_emails:
            async for page in self._sweep(rest, m.SUB_DEPOSIT_PATH, start, until_ms, email=email):
                yield page
        withdrawals = self.withdrawal_path
        if self.account.withdrawals and due(self._withdrawals_at, cfg.withdrawal_interval, now) and self._affordable(rest, withdrawals):
            # the cursor also moves in cycles that defer withdrawals: reach back to their last read
            reach = since_ms - int(cfg.withdrawal_interval * 1000)
            if self._withdrawals_until is not None:
                reach = min(reach, self._withdrawals_until - int(cfg.poll_overlap * 1000))
            async for page in self._sweep(rest, withdrawals, min(start, reach), until_ms):
                yield page
            self._withdrawals_at, self._withdrawals_until = now, until_ms
        if due(self._tracker_at, cfg.tracker_interval, now):
            complete = True
            async for found in self._requery(rest, hot_from, until_ms):
                if found is None:
                    complete = False
                else:
                    yield found
            if complete:
                self._tracker_at = now

    def _affordable(self, rest: BinanceRest, path: str) -> bool:
        """Withdrawals (18000 a request) wait for their budget by skipping a cycle, never by
        holding the deposits back: a read that would have to wait is deferred (and shown)."""
        wait = self.limits.wait_ms(rest.endpoints[path], self.account_name, rest.server_ms())
        if wait and self.limits.banned_until_ms <= rest.server_ms():
            self.stats[f"deferred {path}"] += 1
            self.limits.count_wait(self.account_name, "deferred")
            self.health.detail["withdrawals_deferred_until"] = utc_now(lambda: (rest.server_ms() + wait) / 1000)
            return False
        self.health.detail["withdrawals_deferred_until"] = None
        return True

    async def _ask_uid(self, rest: BinanceRest) -> None:
        if self._uid_asked:
            return
        self._uid_asked = True
        try:
            self.uid = await rest.account_uid() or self.uid
        except (m.BinanceApiError, TransientError) as exc:  # optional: the account name stands in
            log.info("binance account %r: uid lookup failed (%s); events name the account %r", self.account_name, self.scrub(str(exc)), self.account_name)
        self.health.detail["uid"] = self.uid

    def _owner(self, email: str | None) -> Account:
        return Account(id=self.uid or self.account_name, sub_account=email or self.account.sub_account)

    # -- the engine's paging hooks -------------------------------------------------------------

    channels = m.CHANNEL_OF

    def window_span_ms(self) -> int:
        return int(self.config.window_days * DAY * 1000)  # each window under Binance's 90 days

    def dead_letter_account(self) -> str:
        return self.uid or self.account_name

    async def fetch_page(self, rest: RestClient, query: PageQuery, params: Mapping[str, str]) -> tuple[Any, float]:
        assert isinstance(rest, BinanceRest)
        return await rest.get(query.path, params)

    def parse_rows(self, query: PageQuery, channel: str, body: Any, received_at: str) -> list[ParseResult]:
        items = parse_page(channel, body, received_at=received_at, account=self._owner(query.scope), rules=self.rules)
        for item in items:
            if isinstance(item, TransferEvent):
                self.open.observe(item, channel, query.scope)
        return items

    def _query(self, path: str, params: Mapping[str, str], email: str | None = None) -> PageQuery:
        """One read by offset paging (``subHisrec``, whose limits are unconfirmed: until an empty page)."""
        cfg, sub = self.config, path == m.SUB_DEPOSIT_PATH
        base = {**({"email": email} if email else {}), **params}
        if path == m.DEPOSIT_PATH and cfg.include_source:
            base["includeSource"] = "true"
        return PageQuery(path, base, cfg.subhisrec_page_limit if sub else cfg.page_limit, until_empty=sub, scope=email)

    def _sweep(self, rest: BinanceRest, path: str, start_ms: int, end_ms: int, *, email: str | None = None) -> AsyncIterator[Page]:
        """Every row created in ``[start_ms, end_ms]``, window by window, ``startTime``/``endTime`` pinned."""
        return self.sweep(rest, start_ms, end_ms, lambda first, last: self._query(path, {"startTime": str(first), "endTime": str(last)}, email))

    async def _requery(self, rest: BinanceRest, hot_from_ms: int, now_ms: int) -> AsyncIterator[Page | None]:
        """Ask for the open transfers the hot window no longer reads, until final or too old
        (``None``: the withdrawals' part was deferred for their budget; ask again next cycle)."""
        cfg = self.config
        expired = self.open.expire(now_ms - int(cfg.tracker_max_age_days * DAY * 1000))
        if expired:
            metrics.POLL_TRACKING_EXPIRED.labels("binance", self.account_name, "age").inc(len(expired))
            self.stats["tracking_expired"] += len(expired)
            log.warning("binance account %r: %d transfers still open after %g days are no longer re-queried: %s",
                        self.account_name, len(expired), cfg.tracker_max_age_days, ", ".join(e.key for e in expired[:10]))
        stale = self.open.stale(hot_from_ms)
        affordable = not any(e.channel in m.WITHDRAWAL_CHANNELS for e in stale) or self._affordable(rest, self.withdrawal_path)
        if not affordable:
            yield None
        for ask in requeries(stale, now_ms, withdrawals=affordable, txid_max=cfg.requery_txid_max):
            if ask.window is not None:
                reads = self._sweep(rest, ask.path, *ask.window, email=ask.email)
            else:
                reads = self.pages(rest, self._query(ask.path, ask.params, ask.email))
            async for page in reads:
                yield page
        self.stats["requeried"] += len(stale)

    def _health(self, rest: RestClient) -> None:
        assert isinstance(rest, BinanceRest)
        metrics.POLL_TRACKED_OPEN.labels("binance", self.account_name).set(len(self.open))
        if self.open.dropped:
            metrics.POLL_TRACKING_EXPIRED.labels("binance", self.account_name, "cap").inc(self.open.dropped)
            self.stats["tracking_dropped"] += self.open.dropped
            self.open.dropped = 0
        blocked = self.limits.blocked_until_ms(self.account_name)
        self.health.detail.update(
            time_offset_ms=rest.offset_ms,
            weights=dict(rest.weights),
            budgets=self.limits.snapshot(self.account_name),
            rate_limit_waits=self.limits.waits.get(self.account_name, 0),
            rate_limited_until=utc_now(lambda: blocked / 1000) if blocked > rest.server_ms() else None,
            tracked_open=len(self.open),
            requests=rest.requests,
        )


def build_binance_sources(config: BinanceConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> list[BinanceAccountSource]:
    """One source per enabled key; empty when the Binance source is disabled. They share one
    ``Limits``, kept in the provider's context so that keys added by a reload join it: the IP
    budgets (deposit history, /api) are the process's, not a key's."""
    limits = (shared or ProviderContext("binance")).get("limits", lambda: limits_for(config))
    return [BinanceAccountSource(config, account, pipeline, limits=limits) for account in config.enabled_accounts()]
