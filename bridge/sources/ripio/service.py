"""The Ripio source: one ``RipioAccountSource`` per configured account, on the stream engine.

Data path per account: a fresh ticket (signed ``POST /trade/ticket``) → ``client.RipioConnection``
frames → ``parse.parse_message`` → pipeline. Backfill runs after every (re)connect, on every gap
in a topic's message ``id`` sequence, and on an interval, reading the deposit and withdrawal
listings through ``parse.parse_rows``. Ripio transfers have one non-final state (``pending``), and
the dedup gate drops a ``pending`` seen after the final state, so what a pass cannot order cannot
reach Kafka out of order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from bridge.contract.events import Provider
from bridge.contract.parsing import ParseResult
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.frames import Frame, utc_now
from bridge.ingest.rest import RestClient, TransientError
from bridge.ingest.shared import ProviderContext
from bridge.ingest.stream import Failure, Page, StreamConnection, StreamSource
from bridge.ingest.tls import websocket_ssl
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.backfill import listing_pages
from bridge.sources.ripio.client import RipioConnection, TicketRejected
from bridge.sources.ripio.config import RipioAccount, RipioConfig
from bridge.sources.ripio.parse import STREAM_DLQ_CHANNEL, parse_message, parse_rows
from bridge.sources.ripio.rest import RipioRest

__all__ = ["RipioAccountSource", "build_ripio_sources", "STREAM_DLQ_CHANNEL"]


class RipioAccountSource(StreamSource):
    provider = Provider.RIPIO
    display_name = "Ripio"
    dlq_channel = STREAM_DLQ_CHANNEL
    rest_refusals = (m.RestError,)
    items_word = "messages"

    def __init__(self, config: RipioConfig, account: RipioAccount, pipeline: Pipeline, **options: object):
        super().__init__(config, account.name, pipeline, **options)  # type: ignore[arg-type]
        self.config: RipioConfig = config
        self.account = account
        self._user_id = account.user_id
        self._rejected_in_a_row = 0
        self.sequence_start = config.sequence_start
        self.secrets = tuple(value for value in (account.api_token.get_secret_value(), account.api_secret.get_secret_value()) if value)

    # -- the stream ----------------------------------------------------------------------------

    async def open(self, rest: RestClient | None) -> StreamConnection:
        """A fresh ticket for every connection: tickets are short-lived and may be single use."""
        assert isinstance(rest, RipioRest)
        cfg = self.config
        ticket = await rest.ticket(cfg.ticket_path)
        self.stats["tickets"] += 1
        return await RipioConnection.open(
            cfg.ws_url,
            self.account.name,
            ticket,
            cfg.topics,
            ping_interval=cfg.ping_interval,
            liveness_timeout=cfg.liveness_timeout,
            ws_ping_interval=cfg.ws_ping_interval,
            ws_ping_timeout=cfg.ws_ping_timeout,
            handshake_timeout=cfg.handshake_timeout,
            ssl_context=websocket_ssl(cfg.ws_url, cfg.ca_bundle),
            confirm_timeout=cfg.subscribe_confirm_timeout,
            clock=self.clock,
        )

    def classify(self, error: BaseException, phase: str) -> Failure | None:
        who = f"Ripio account {self.account.name!r}"
        if isinstance(error, m.RestError):  # not transient: credentials, signature, clock or request
            return Failure("config_error", f"{who}: ticket refused: {self.scrub(str(error))}", config=True)
        if isinstance(error, TransientError):
            return Failure("ticket_failed", self.scrub(str(error)))
        if isinstance(error, TicketRejected):
            self._rejected_in_a_row += 1
            self.stats["tickets_rejected"] += 1
            text = self.scrub(str(error))
            if self._rejected_in_a_row >= self.config.ticket_rejections_before_config_error:
                return Failure(
                    "config_error",
                    f"{text} ({self._rejected_in_a_row} tickets in a row; check rest_url and ws_url belong together)",
                    config=True,
                )
            return Failure("ticket_rejected", text)
        return None

    def on_connected(self, connection: StreamConnection) -> None:
        self._rejected_in_a_row = 0

    def numbered(self, frame: Frame) -> tuple[str, object] | None:
        topic = frame.message.get("topic") if isinstance(frame.message, dict) else None
        return (topic, frame.message.get("id")) if isinstance(topic, str) and topic in self.config.topics else None

    def parse_message(self, frame: Frame) -> list[ParseResult]:
        body = frame.message.get("body")
        if self._user_id is None and isinstance(body, dict):
            user_id = body.get("user_id")
            if isinstance(user_id, str) and user_id:
                self._user_id = user_id
                self.health.detail["user_id"] = user_id
        return parse_message(frame.message, received_at=frame.received_at)

    @property
    def account_id(self) -> str | None:
        return self._user_id

    # -- history -------------------------------------------------------------------------------

    def rest_client(self, session: aiohttp.ClientSession) -> RipioRest:
        cfg = self.config
        return RipioRest(
            session,
            cfg.rest_url,
            self.account.name,
            self.account,
            rate_per_second=cfg.rest_rate_per_second,
            max_retries=cfg.rest_max_retries,
            tolerance_ms=cfg.timestamp_tolerance_ms,
            sign_query=cfg.sign_query,
            retry_initial=cfg.rest_retry_initial,
            clock=self.clock,
        )

    async def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        assert isinstance(rest, RipioRest)
        cfg = self.config
        for topic in cfg.topics:
            for currency in self.account.currencies or (None,):
                pages = listing_pages(
                    rest, cfg.listing_path(topic), topic, since_ms=since_ms, currency=currency, page_size=cfg.backfill_page_size
                )
                async for rows, sent_at in pages:
                    items = parse_rows(topic, rows, received_at=utc_now(self.clock), user_id=self._user_id)
                    yield Page(items, len(rows), sent_at)


def build_ripio_sources(config: RipioConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> list[RipioAccountSource]:
    """One source per enabled account; empty when the Ripio source is disabled. Nothing is shared
    between Ripio accounts (each has its own REST pacing and tickets), so ``shared`` is unused."""
    return [RipioAccountSource(config, account, pipeline) for account in config.enabled_accounts()]
