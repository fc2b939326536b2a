"""The OKX source: one ``OkxAccountSource`` per configured account, on the stream engine.

Data path per account: ``client.OkxConnection`` frames → ``parse.parse_push`` → pipeline; after
every (re)connect and on an interval, ``backfill.HistoryClient`` pages → ``parse.parse_rows`` with
``source.via = "backfill"``. A master key also receives its sub-accounts' pushes, so a push is held
by whichever account's pass owns it (``owner_of``) while that pass runs. A transfer that changes
twice within one page's round trip can still be seen out of order; the dedup gate keeps final
states last.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp

from bridge.contract.events import DeadLetter, Provider, TransferEvent, Via
from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.parsing import ParseResult, refused
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import BackfillCoordinator
from bridge.ingest.frames import Frame, utc_now
from bridge.ingest.rest import RestClient, TransientError
from bridge.ingest.shared import ProviderContext
from bridge.ingest.stream import Page, StreamConnection, StreamSource
from bridge.ingest.tls import websocket_ssl
from bridge.sources.okx import messages as m
from bridge.sources.okx.backfill import HistoryClient
from bridge.sources.okx.client import OkxConnection
from bridge.sources.okx.config import OkxAccount, OkxConfig
from bridge.sources.okx.parse import WS_DLQ_CHANNEL, parse_push, parse_rows

__all__ = ["OkxAccountSource", "build_okx_sources", "WS_DLQ_CHANNEL"]

log = logging.getLogger(__name__)


class OkxAccountSource(StreamSource):
    provider = Provider.OKX
    display_name = "OKX"
    dlq_channel = WS_DLQ_CHANNEL
    rest_refusals = (m.RestError,)

    def __init__(self, config: OkxConfig, account: OkxAccount, pipeline: Pipeline, **options: object):
        super().__init__(config, account.name, pipeline, **options)  # type: ignore[arg-type]
        self.config: OkxConfig = config
        self.account = account
        self._uid = account.uid
        self._subscriptions = m.subscription_args(account.deposit_ccy, account.withdrawal_ccy)

    async def open(self, rest: RestClient | None) -> StreamConnection:
        cfg = self.config
        return await OkxConnection.open(
            cfg.ws_url,
            self.account.name,
            self.account,
            self._subscriptions,
            ping_interval=cfg.ping_interval,
            pong_timeout=cfg.effective_pong_timeout,
            handshake_timeout=cfg.handshake_timeout,
            ssl_context=websocket_ssl(cfg.ws_url, cfg.ca_bundle),
            clock=self.clock,
        )

    def on_connected(self, connection: StreamConnection) -> None:
        self.health.detail["conn_id"] = getattr(connection, "conn_id", None)

    def parse_message(self, frame: Frame) -> list[ParseResult]:
        arg = frame.message.get("arg")
        if self._uid is None and isinstance(arg, dict) and isinstance(arg.get("uid"), str):
            self._uid = arg["uid"]
        results = parse_push(frame.message, received_at=frame.received_at)
        if refused(results) is None and any(isinstance(item, DeadLetter) for item in results):
            # orjson reads JSON numbers as floats, which parsing refuses: read this frame again
            # exactly, so a numeric amount is kept and dead letters carry the original digits.
            try:
                again = parse_push(loads_exact(frame.data), received_at=frame.received_at)
            except JSONError:
                return results
            if refused(again) is None:
                results = again
        return results

    @property
    def account_id(self) -> str | None:
        return self._uid

    def owner_of(self, item: TransferEvent) -> str | None:
        return item.account.id

    def is_own(self, item: ParseResult) -> bool:
        """Not a sub-account's push: a master key receives those, but its history holds only its
        own records."""
        if not isinstance(item, TransferEvent):
            return False
        owner = item.account
        return owner.sub_account is None or self._uid is None or owner.id == self._uid

    # -- history -------------------------------------------------------------------------------

    def rest_client(self, session: aiohttp.ClientSession) -> HistoryClient:
        return HistoryClient(
            session,
            self.config.rest_url,
            self.account.name,
            self.account,
            rate_per_second=self.config.rest_rate_per_second,
            max_retries=self.config.rest_max_retries,
            clock=self.clock,
        )

    async def before_backfill(self, rest: RestClient) -> None:
        if self._uid is None:
            assert isinstance(rest, HistoryClient)
            try:
                self._uid = await rest.account_uid()
            except TransientError as exc:
                log.info("okx account %r: uid lookup failed (%s); rows carry no account id yet", self.account.name, exc)
        self.health.detail["uid"] = self._uid

    async def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        assert isinstance(rest, HistoryClient)
        for channel, currencies in ((m.CHANNELS[0], self.account.deposit_ccy), (m.CHANNELS[1], self.account.withdrawal_ccy)):
            for ccy in currencies or (None,):
                async for rows, sent_at in rest.pages(channel, since_ms=since_ms, ccy=ccy, limit=self.config.backfill_page_limit):
                    items = parse_rows(channel, rows, received_at=utc_now(self.clock), via=Via.BACKFILL, uid=self._uid)
                    yield Page(items, len(rows), sent_at)


def build_okx_sources(config: OkxConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> list[OkxAccountSource]:
    """One source per enabled account; empty when the OKX source is disabled. The accounts share
    one coordinator (kept in the provider's context, so accounts added by a reload join it): a
    master's connection holds a sub-account's pushes during its pass."""
    coordinator = (shared or ProviderContext("okx")).get("backfill_coordinator", BackfillCoordinator)
    return [OkxAccountSource(config, account, pipeline, coordinator=coordinator) for account in config.enabled_accounts()]
