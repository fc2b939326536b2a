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

**Backfill** (``backfill_enabled`` with ``api_key`` + ``api_private_key_file``): a loop beside the
route reads ``GET /v1/transactions`` at start, every ``backfill_interval``, and after an ingress
outage (a delivery answered 503 followed by one answered 200) — the window is ``Window``'s:
creation time since the last complete pass minus ``backfill_overlap``, stretched back to every
transfer still open. No exception ends the loop: a failed pass is retried after
``backfill_retry`` and shown in health (``backfill_error``); a refused credential too, shown as
a configuration error. Rows pass the same ordering rule and the same dedup gate as pushes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from bridge.contract.events import DeadLetter, Provider, TransferEvent, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError, ParseResult, item_bytes
from bridge.contract.timeutil import to_epoch_ms
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.backfill import Page, Window
from bridge.ingest.frames import utc_now
from bridge.ingest.intake import Intake
from bridge.ingest.rest import RestClient, TransientError
from bridge.ingest.webhook import Answer, Ignore, Interpretation, Letterhead, Publish, Quarantine, WebhookSource, describe_error
from bridge.observability import metrics
from bridge.sources.fireblocks import messages as m
from bridge.sources.fireblocks.auth import RequestSigner
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.jwks import KeySet
from bridge.sources.fireblocks.ordering import Newest
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


class FireblocksWebhook(WebhookSource[FireblocksConfig]):
    """The receiver component (``bridge.ingest.source.Source``) for ``config.path``."""

    provider: ClassVar[Provider] = Provider.FIREBLOCKS
    signature_header: ClassVar[str] = JWS_HEADER
    dlq_channel: ClassVar[str] = m.WEBHOOK_DLQ_CHANNEL

    def __init__(
        self,
        config: FireblocksConfig,
        pipeline: Pipeline,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        super().__init__(config, pipeline, name=name or config.source_name, clock=clock, dead_letter_memory=dead_letter_memory)
        self._legacy = tuple(load_public_key(path.read_bytes()) for path in config.legacy_public_keys)
        self.keys = KeySet(
            url=config.resolved_jwks_url(), file=config.jwks_file, refresh_s=config.jwks_refresh_s,
            min_refetch_s=config.jwks_min_refetch_s, timeout_s=config.jwks_timeout_s,
        )
        self.rules = Rules.of(config)
        self.newest = Newest(config.reorder_memory)
        self.window = Window(
            now_ms=int(clock() * 1000),
            initial_lookback_ms=int(config.backfill_initial_lookback * 1000),
            overlap_ms=int(config.backfill_overlap * 1000),
            max_lookback_ms=int(config.backfill_max_lookback * 1000),
        )
        self.backfill_stats: Counter[str] = Counter()
        self._intake = Intake(pipeline, self.backfill_stats, self.log, self.name)
        self._trigger = asyncio.Event()
        self._outage = False
        self._started = time.monotonic()
        self._warm = asyncio.Event()
        """Set once the ordering memory reflects what Fireblocks shows (see ``_warm_up``)."""
        if not config.backfills or config.ordering_warmup_seconds <= 0 or config.reorder_memory <= 0:
            self._warm.set()
        self.health.detail.update(
            {"backfill_last_success": None, "backfill_error": None, "jwks_error": None, "ordering_warm": self._warm.is_set()}
        )

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
            self._outage = True
            return web.json_response({"result": "unavailable", "detail": "signing keys unavailable, retry later"}, status=503)
        self.health.detail["jwks_error"] = self.keys.last_error
        response = await super().handle(request)
        if response.status == 503:
            self._outage = True
        elif response.status == 200 and self._outage:
            self._outage = False
            self.request_backfill("after_outage")
        return response

    async def admit(self, request: web.Request) -> Answer | None:
        """An authenticated delivery waits for the ordering warm-up (an unsigned one is refused
        first and never waits)."""
        if self._warm.is_set() or await self._warm_up():
            return None
        return Answer(503, "warming_up", "starting up, retry later")  # counted by the engine

    async def _warm_up(self) -> bool:
        """Hold a delivery until the start-up backfill pass has refilled the ordering memory.

        The memory of the newest ``lastUpdated`` per key is in process: without this, a delivery
        older than a state a previous process published (a late re-delivery after a kill -9)
        would be published after it. The pass reads every transaction created within
        ``backfill_initial_lookback`` in its current state — never older than what was published
        — and ``accept`` remembers it. Bounded by ``ack_timeout_seconds`` per request (then 503:
        Fireblocks retries) and by ``ordering_warmup_seconds`` in all (then deliveries pass
        without it, logged once, so a REST outage cannot stop the webhooks)."""
        left = self._started + self.config.ordering_warmup_seconds - time.monotonic()
        if left > 0:
            try:
                await asyncio.wait_for(self._warm.wait(), min(self.config.ack_timeout_seconds, left))
                return True
            except TimeoutError:
                if time.monotonic() < self._started + self.config.ordering_warmup_seconds:
                    return False
        if not self._warm.is_set():
            self._warm.set()
            self.stats["ordering_warmup_given_up"] += 1
            self.log.warning(
                "%s: no complete backfill pass within %.0fs of the start; accepting deliveries without it — a late "
                "state older than one published before this start may be published after it",
                self.name, self.config.ordering_warmup_seconds,
            )  # fmt: skip
        return True

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
            events = parse_delivery(envelope.document, received_at=received_at, rules=self.rules)
        except Exception as exc:  # noqa: BLE001 - any reason at all: the delivery is kept, with the reason
            return Quarantine(describe_error(exc), to, 200)
        fresh = self._in_order(events, envelope.data)
        if not fresh:
            return Ignore("out_of_order")
        for event in fresh:
            self.window.note(event)
        return Publish(fresh, to)

    def _in_order(self, events: list[TransferEvent], tx: Any) -> list[TransferEvent]:
        updated = last_updated_ms(tx)
        return [event for event in events if self.newest.accept(event.key, updated)]

    # -- lifecycle -------------------------------------------------------------------------------

    def request_backfill(self, reason: str = "manual") -> None:
        """Ask for a pass as soon as the running one (if any) is done."""
        self.backfill_stats[f"requested.{reason}"] += 1
        self._trigger.set()

    async def run(self) -> None:
        backfill = None
        if self.config.backfills:
            backfill = asyncio.create_task(self._backfill_loop(), name=f"{self.name}-backfill")
        try:
            await super().run()
        finally:
            if backfill is not None:
                backfill.cancel()
                await asyncio.gather(backfill, return_exceptions=True)
            await self.keys.close()

    async def drain(self, timeout: float) -> bool:
        started = time.monotonic()
        pushed = await super().drain(timeout)
        return await self._intake.settle(max(timeout - (time.monotonic() - started), 0.0)) and pushed

    # -- backfill --------------------------------------------------------------------------------

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        assert self.config.api_key is not None and self.config.api_private_key_file is not None
        signer = RequestSigner.from_file(self.config.api_key.get_secret_value(), self.config.api_private_key_file)
        return FireblocksRest(
            session, self.config.resolved_base_url(), self.config.name, signer,
            rate_per_second=self.config.rest_rate_per_second, max_retries=self.config.rest_max_retries,
        )

    async def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]:
        """Pages of rows created since ``since_ms``, parsed (a row that cannot be is a dead letter)."""
        assert isinstance(rest, FireblocksRest)
        async for rows, sent_at in rest.transactions(since_ms, self.config.page_limit):
            received_at = utc_now(self._clock)
            items: list[ParseResult] = []
            for row in rows:
                items.extend(self._row(row, received_at))
            yield Page(items, len(rows), sent_at)

    def _row(self, row: Any, received_at: str) -> list[ParseResult]:
        try:
            return list(parse_row(row, received_at=received_at, rules=self.rules, workspace_id=self.config.workspace_id))
        except Exception as exc:  # noqa: BLE001 - one row, never the pass
            reason = describe_error(exc) if not isinstance(exc, ParseError) else str(exc)
            letter = DeadLetter(self.provider, m.BACKFILL_CHANNEL, reason[:2000], item_bytes(row), received_at, self.config.workspace_id)
            return [letter]

    async def _backfill_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.rest_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._trigger.set()  # the pass at start
            wait = self.config.backfill_interval
            while True:
                try:
                    async with asyncio.timeout(wait):  # not wait_for: no task per wait
                        await self._trigger.wait()
                    trigger = "requested"
                except TimeoutError:
                    trigger = "interval"
                self._trigger.clear()
                if not self.leads_backfill():  # cluster mode: another replica runs it
                    self._trigger.set()  # a pass is owed the moment this replica takes it over
                    # No pass of this replica's will ever warm its ordering memory: waiting for one
                    # only answered 503 to every delivery here for ordering_warmup_seconds.
                    self._warm.set()
                    self.health.detail["ordering_warm"] = True
                    await asyncio.sleep(1.0)
                    continue
                try:
                    rest = self.rest_client(session)
                    await self.backfill_pass(rest, trigger)
                    wait = self.config.backfill_interval
                    self.health.config_error = False
                except FireblocksApiError as exc:  # refused credentials or request
                    self._backfill_failed(f"{self.name}: backfill refused: {exc}", logging.ERROR)
                    self.health.config_error = exc.status in (401, 403)
                    wait = max(self.config.backfill_retry, 60.0) if self.health.config_error else self.config.backfill_retry
                except TransientError as exc:
                    self._backfill_failed(f"{self.name}: {exc}", logging.WARNING)
                    wait = self.config.backfill_retry
                except Exception as exc:  # noqa: BLE001 - this loop must outlive any single pass
                    self._backfill_failed(f"{self.name}: backfill failed: {exc.__class__.__name__}: {str(exc)[:300]}", logging.ERROR)
                    wait = self.config.backfill_retry

    def _backfill_failed(self, message: str, level: int) -> None:
        self.health.detail["backfill_error"] = message
        self.backfill_stats["failures"] += 1
        metrics.BACKFILL_FAILURES.labels(self.provider.value, self.config.name).inc()
        self.log.log(level, "%s; next pass later", message)

    async def backfill_pass(self, rest: RestClient, trigger: str = "manual") -> int:
        """Read the window into the pipeline (not waiting for each ack); returns the rows offered."""
        started_ms = int(self._clock() * 1000)
        since = self.window.since(started_ms)
        metrics.BACKFILL_RUNS.labels(self.provider.value, self.config.name, trigger).inc()
        offered = 0
        async for page in self.history(rest, since):
            metrics.BACKFILL_ITEMS.labels(self.provider.value, self.config.name).inc(page.rows)
            for item in page.items:
                if isinstance(item, TransferEvent):
                    if not self.newest.accept(item.key, to_epoch_ms(item.occurred_at)):
                        continue
                    self.window.note(item)
                    self.health.mark_event()
                await self._intake.offer(item, Via.BACKFILL)
                offered += 1
        self.window.completed(started_ms)
        self._warm.set()
        self.health.detail["ordering_warm"] = True
        self.health.detail["backfill_error"] = None
        self.health.detail["backfill_last_success"] = utc_now(self._clock)
        self.backfill_stats["passes"] += 1
        self.log.info("%s: backfill (%s) offered %d items", self.name, trigger, offered)
        return offered
