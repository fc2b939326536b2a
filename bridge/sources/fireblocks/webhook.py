"""The Fireblocks receiver: one route for both webhook generations, and the REST gap backfill.

``bridge.ingest.webhook`` owns the route, the checks, the dead-letter-first rule and the bounded
wait for Kafka (its docstring has the full table). What is Fireblocks':

====  ======================================================================================
401   no valid signature. ``Fireblocks-Webhook-Signature`` (v2, detached JWS RS512, key by
      ``kid`` from the JWKS) decides alone when present; without it ``Fireblocks-Signature``
      (v1, base64 RSA-SHA512 over the raw body, any configured public key) if
      ``accept_legacy`` and not ``require_jws``. Counted (``unauthorized.*``), never stored.
503   just started, and the first backfill pass has not refilled the ordering memory within
      ``ack_timeout_seconds`` (at most ``ordering_warmup_seconds`` after the start; ``ordering``).
503   the JWS names a ``kid`` we do not have and the JWKS cannot be fetched (our outage:
      Fireblocks retries 503), or Kafka did not take the record in time.
400   signed, but not JSON / not a Fireblocks envelope: dead-lettered on ``webhook``.
200   an event type other than transaction created / status updated, an operation other than
      ``operations``, a transaction with no own side, or a state older than the newest one
      accepted for its key (``ordering``): acknowledged and counted by family, not published.
200   a transaction event that cannot be normalized: the raw body in the DLQ first (channel =
      the event type), then 200 — Fireblocks does not retry other 4xx, and a retry would fail
      the same way.
200   a transaction: after Kafka acknowledged its event(s) (two for an internal transfer).
====  ======================================================================================

Deliveries are deduplicated by content (the contract's fingerprint), so v1 and v2 copies of one
state during a migration, re-deliveries and the backfill's rows are published once.

**Backfill** (``backfill_enabled`` with ``api_key`` + ``api_private_key_file``): the core's
``BackfillingWebhookSource`` reads ``GET /v1/transactions`` at start, every ``backfill_interval``
and after an ingress outage (its docstring has the rules). What is Fireblocks': the signed client
and row parser, a refusal is ``FireblocksApiError`` (a configuration error on 401/403), rows pass
the same ordering rule as pushes, and a complete pass (or standing by in cluster mode) ends the
ordering warm-up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from bridge.contract.events import Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, refused
from bridge.contract.timeutil import to_epoch_ms
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import Page
from bridge.ingest.rest import RestClient
from bridge.ingest.webhook import Answer, Ignore, Interpretation, Letterhead, Publish, Quarantine, describe_error
from bridge.ingest.webhook_backfill import BackfillingWebhookSource
from bridge.observability import metrics
from bridge.sources.fireblocks import messages as m
from bridge.sources.fireblocks.auth import RequestSigner
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.jwks import KeySet
from bridge.sources.fireblocks.ordering import Newest, WarmUp
from bridge.sources.fireblocks.parse import Rules, last_updated_ms, parse_delivery, parse_row, skip_reason
from bridge.sources.fireblocks.rest import FireblocksApiError, FireblocksRest
from bridge.sources.fireblocks.signature import (
    JWS_HEADER,
    LEGACY_HEADER,
    load_public_key,
    read_jws_header,
    verify_jws,
    verify_legacy,
)

__all__ = ["FireblocksWebhook", "parse_delivery"]


class FireblocksWebhook(BackfillingWebhookSource[FireblocksConfig]):
    """The receiver component (``bridge.ingest.source.Source``) for ``config.path``."""

    provider: ClassVar[Provider] = Provider.FIREBLOCKS
    signature_header: ClassVar[str] = JWS_HEADER
    dlq_channel: ClassVar[str] = m.WEBHOOK_DLQ_CHANNEL
    backfill_refusals: ClassVar[tuple[type[Exception], ...]] = (FireblocksApiError,)

    def __init__(
        self,
        config: FireblocksConfig,
        pipeline: Pipeline,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        name = name or config.source_name
        super().__init__(config, pipeline, name=name, account=config.name, clock=clock, dead_letter_memory=dead_letter_memory)
        self._legacy = tuple(load_public_key(path.read_bytes()) for path in config.legacy_public_keys)
        self.keys = KeySet(
            url=config.resolved_jwks_url(), file=config.jwks_file, refresh_s=config.jwks_refresh_s,
            min_refetch_s=config.jwks_min_refetch_s, timeout_s=config.jwks_timeout_s,
        )
        self.rules = Rules.of(config)
        self.newest = Newest(config.reorder_memory)
        needed = config.backfills and config.ordering_warmup_seconds > 0 and config.reorder_memory > 0
        self.warm_up = WarmUp(
            needed=needed, limit=config.ordering_warmup_seconds, per_request=config.ack_timeout_seconds, on_give_up=self._gave_up
        )
        self.health.detail.update({"jwks_error": None, "ordering_warm": self.warm_up.open})

    def __repr__(self) -> str:  # never a key or credential
        return f"FireblocksWebhook(path={self.config.path!r}, legacy_keys={len(self._legacy)}, backfill={self.config.backfills})"

    # -- signatures ------------------------------------------------------------------------------

    def credential_present(self, request: web.Request) -> bool:
        return bool(request.headers.get(JWS_HEADER) or request.headers.get(LEGACY_HEADER))

    def authenticate(self, request: web.Request, body: bytes) -> int | None:
        """v2 JWS alone when present (index ``len(legacy keys)``), else a v1 key's index."""
        value = request.headers.get(JWS_HEADER)
        if value is not None:
            jws = read_jws_header(value, allow_unencoded=self.config.jws_allow_unencoded)
            key = self.keys.keys.get(jws.kid) if jws is not None else None
            return len(self._legacy) if key is not None and jws is not None and verify_jws(jws, body, key) else None
        if self.config.require_jws or not self.config.accept_legacy:
            return None
        return verify_legacy(request.headers.get(LEGACY_HEADER), body, self._legacy)

    async def handle(self, request: web.Request) -> web.Response:
        """Refresh the JWKS first when the JWS names a kid we lack (async: ``authenticate`` is
        not); an unfetchable set is our outage (503)."""
        jws = read_jws_header(request.headers.get(JWS_HEADER), allow_unencoded=self.config.jws_allow_unencoded)
        if jws is not None and not await self.keys.ensure(jws.kid):
            self.stats["jwks_unavailable"] += 1
            self.health.detail["jwks_error"] = self.keys.last_error
            metrics.WEBHOOK_REQUESTS.labels(self.provider.value, "jwks_unavailable", "503").inc()
            self.ingress_answered(503)
            return web.json_response({"result": "unavailable", "detail": "signing keys unavailable, retry later"}, status=503)
        self.health.detail["jwks_error"] = self.keys.last_error
        return await super().handle(request)

    async def admit(self, request: web.Request) -> Answer | None:
        """An authenticated delivery waits for the ordering warm-up (``ordering.WarmUp``; an
        unsigned one is refused first and never waits)."""
        return None if await self.warm_up.wait() else Answer(503, "warming_up", "starting up, retry later")

    def _gave_up(self) -> None:  # ``ordering_warm`` stays false: deliveries pass without it
        self.stats["ordering_warmup_given_up"] += 1
        self.log.warning(
            "%s: no complete backfill pass within %.0fs of the start; accepting deliveries without it — a late "
            "state older than one published before this start may be published after it",
            self.name, self.config.ordering_warmup_seconds,
        )  # fmt: skip

    # -- deliveries ------------------------------------------------------------------------------

    def interpret(self, body: bytes, received_at: str, request: web.Request) -> Interpretation:
        try:
            envelope = m.read_envelope(loads_exact(body))
        except ValueError as exc:  # JSONError, ParseError, the int() digit limit
            return Quarantine(str(exc), Letterhead(m.WEBHOOK_DLQ_CHANNEL), 400)
        if not envelope.is_transaction:
            return Ignore(m.family_of(envelope.event_type))
        to = Letterhead(envelope.event_type, envelope.message_id, envelope.workspace_id)
        try:
            skipped = skip_reason(envelope.data, self.rules)
            if skipped is not None:
                return Ignore(skipped)
            results = parse_delivery(envelope.document, received_at=received_at, rules=self.rules)
        except Exception as exc:  # noqa: BLE001 - any reason at all: the delivery is kept, with the reason
            return Quarantine(describe_error(exc), to, 200)
        whole = refused(results)
        if whole is not None:  # a delivery we cannot normalize: kept whole, with the reason
            return Quarantine(whole.reason, to, 200)
        events = [item for item in results if isinstance(item, TransferEvent)]
        updated = last_updated_ms(envelope.data)
        fresh = [event for event in events if self.newest.accept(event.key, updated)]  # the ordering rule
        return Publish(fresh, to) if fresh else Ignore("out_of_order")

    # -- lifecycle and backfill hooks ----------------------------------------------------------

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.keys.close()

    def admit_backfilled(self, event: TransferEvent) -> bool:
        return self.newest.accept(event.key, to_epoch_ms(event.occurred_at))

    def credentials_refused(self, error: Exception) -> bool:
        return isinstance(error, FireblocksApiError) and error.status in (401, 403)

    def backfill_completed(self) -> None:
        self._warmed()

    def backfill_standby(self) -> None:
        """No pass of this replica's will ever warm its ordering memory: waiting for one would
        only answer 503 to every delivery here for ``ordering_warmup_seconds``."""
        self._warmed()

    def _warmed(self) -> None:
        self.warm_up.done()
        self.health.detail["ordering_warm"] = True

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        assert self.config.api_key is not None and self.config.api_private_key_file is not None
        signer = RequestSigner.from_file(self.config.api_key.get_secret_value(), self.config.api_private_key_file)
        return FireblocksRest(
            session, self.config.resolved_base_url(), self.config.name, signer,
            rate_per_second=self.config.rest_rate_per_second, max_retries=self.config.rest_max_retries,
        )  # fmt: skip

    async def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        assert isinstance(rest, FireblocksRest)
        workspace = self.config.workspace_id

        def parse(row: Any, received_at: str) -> list[ParseResult]:
            return parse_row(row, received_at=received_at, rules=self.rules, workspace_id=workspace)

        async for rows, sent_at in rest.transactions(since_ms, self.config.page_limit):
            yield self.page(rows, sent_at, parse, channel=m.BACKFILL_CHANNEL, account_id=workspace)
