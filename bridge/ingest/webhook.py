"""The webhook engine: one POST route per provider, answered 2xx only once Kafka has the delivery.

A provider subclasses ``WebhookSource`` and supplies only what is its own — how a request proves
it comes from the provider (``authenticate``) and what an authenticated body means
(``interpret``). Everything else lives here once: mounting, the checks every request passes, the
dead-letter-first rule, the bounded wait for Kafka's ack, health, metrics and shutdown. A provider
whose REST API also lists its transfers subclasses ``bridge.ingest.webhook_backfill``'s
``BackfillingWebhookSource``: the same route plus the gap backfill.

Mounting (the service shell serves it beside ``/healthz`` and ``/metrics``)::

    webhook.add_routes(app)          # POST config.path
    ... webhook.run() supervised like any source; stop_accepting(), then drain(timeout)

or on its own server (tests, benchmarks, demo): ``async with webhook.serve() as url: ...``.

What each request gets, in the order the checks run:

====  ======================================================================================
503   shutdown began (``stop_accepting``): the provider keeps the delivery and retries later
403   source address outside ``allowed_ips`` (when set); behind a peer in ``trusted_proxies``
      the nearest untrusted ``X-Forwarded-For`` hop is the one checked
415   not ``application/json`` (a ``charset`` other than UTF-8 included)
413   body larger than ``max_body_bytes``: refused from ``Content-Length`` before reading, and
      by a streaming cap for chunked bodies; the connection is closed rather than drained.
      ``max_body_bytes`` plus ``RECORD_OVERHEAD_BYTES`` must fit ``kafka.max_request_size``
      (checked when the receiver is built), so every accepted body fits one record whole; a
      dead letter that would still not fit is refused with 413 too, never cut or acknowledged
408   the body did not arrive within the server's deadline (a ``TimeoutError`` from the read,
      ``server.request_body_timeout_seconds`` in the service): the connection is closed
401   ``authenticate`` refused the raw body (credential ``missing`` or ``invalid``). Such a body
      is **not** published and **not** dead-lettered: unauthenticated input is not the
      provider's and not ours to store — anyone can post it.
4xx/  a body already dead-lettered: answered as the first time (``<result>.repeat``), without
200   writing the DLQ again — a bounded in-memory set of body digests remembers them.
400   ``interpret`` says it is not a delivery at all (``Quarantine`` with status 400): the raw
      bytes go to the DLQ with the reason first (503 if Kafka cannot take them), then 400, so
      the provider's console shows the delivery failing.
200   ``Ignore``: a kind of delivery we do not publish; acknowledged and counted by family.
200   ``Quarantine`` with status 200 — a delivery we cannot normalize, an event that cannot
      become a Kafka record (lone surrogates, nesting too deep, larger than
      ``kafka.max_request_size``), or ``interpret`` itself raising: the raw bytes, whole, go to
      the DLQ and the 200 follows the DLQ ack. It is kept; a retry would fail the same way.
200   ``Publish``: after Kafka acknowledged the event(s), or after the dedup gate decided it is
      a repeat (a repeat of a state still in flight waits for that state's ack: the pipeline
      queues per transfer) or stale after the final state.
503   Kafka did not acknowledge within ``ack_timeout_seconds``, the pipeline is shutting down
      or fenced, or ``max_pending`` deliveries are already waiting. A timed-out item stays in
      the pipeline and is still published when Kafka returns; the retry is then a duplicate.
====  ======================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from aiohttp import web
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.timeutil import format_utc_ms
from bridge.delivery.pipeline import Item, Outcome, Pipeline
from bridge.delivery.publish import Record
from bridge.ingest.requests import RecentDigests, client_address, describe_error, header_text, read_capped
from bridge.ingest.settings import WebhookSettings
from bridge.ingest.source import SourceBase
from bridge.observability import metrics

__all__ = ["WebhookSource", "Answer", "Ignore", "Letterhead", "Quarantine", "Publish", "Interpretation", "describe_error"]

ConfigT = TypeVar("ConfigT", bound=WebhookSettings)

_OUTCOME_RESULT = {
    Outcome.PUBLISHED: "published",
    Outcome.DUPLICATE: "duplicate",
    Outcome.STALE: "stale",
    Outcome.DEAD_LETTERED: "dead_lettered",
}
_EVENT_RESULTS = ("published", "duplicate", "stale")
_MAX_REASON = 2000


# -- what a provider's interpret hook answers ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ignore:
    """An authenticated delivery we do not publish: acknowledged (200), counted by ``family``.

    ``family`` is a metric label: the provider keeps it bounded (documented families, else
    ``unknown``)."""

    family: str


@dataclass(frozen=True, slots=True)
class Letterhead:
    """Where a delivery's dead letter goes and what it carries besides the raw bytes."""

    channel: str
    request_id: str | None = None
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Keep the raw bytes in the DLQ with ``reason``, then answer ``status``.

    400 (``malformed``) when the body is not a delivery at all, so the sender's console shows it
    failing; 200 (``dead_lettered``) when it is one we cannot normalize — a retry would fail the
    same way, and the delivery is kept."""

    reason: str
    to: Letterhead
    status: Literal[200, 400]


@dataclass(frozen=True, slots=True)
class Publish:
    """The delivery's event(s), in order; ``to`` is where the body goes if one cannot be written."""

    events: Sequence[TransferEvent]
    to: Letterhead


Interpretation = Ignore | Quarantine | Publish


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request is answered: the HTTP status and a short result name (metric label)."""

    status: int
    result: str
    detail: str | None = None
    close: bool = False


# -- the engine --------------------------------------------------------------------------------------


class WebhookSource(SourceBase, ABC, Generic[ConfigT]):
    """The receiver component (``bridge.ingest.source.Source``): routes, checks, hand-off, answers."""

    provider: ClassVar[Provider]
    signature_header: ClassVar[str]
    """The header carrying the request's credential: its absence is logged as ``missing``."""
    dlq_channel: ClassVar[str]
    """DLQ channel of a body whose ``interpret`` raised (a bug must not lose a delivery)."""

    def __init__(
        self,
        config: ConfigT,
        pipeline: Pipeline,
        *,
        name: str,
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        problem = config.record_limit_problem(pipeline.publisher.kafka.max_request_size, self.provider.value)
        if problem:
            raise ValueError(problem)
        super().__init__(name, detail={"path": config.path, "awaiting_kafka": 0})
        self.config = config
        self.pipeline = pipeline
        self.stats: Counter[str] = Counter()
        """Answers by result (``published``, ``duplicate``, ``unauthorized``, ``ignored.<family>``, …)."""
        self.log = logging.getLogger(type(self).__module__)
        """The provider's logger: operators filter by it."""
        self._label = self.provider.value
        self._clock = clock
        self._pending: set[asyncio.Task[list[Outcome | BaseException | None]]] = set()
        self._serving = False
        self._accepting = True
        self._dead_lettered: RecentDigests[Answer] = RecentDigests(dead_letter_memory)
        self._max_record = pipeline.publisher.kafka.max_request_size
        self.leads_backfill: Callable[[], bool] = lambda: True
        """Whether this replica runs the receiver's backfill, if it has one. Cluster
        mode serves the route on every replica but gives the backfill to one (its slot's holder):
        the history it reads is the same everywhere."""

    # -- provider hooks ------------------------------------------------------------------------

    @abstractmethod
    def authenticate(self, request: web.Request, body: bytes) -> int | None:
        """Index of the configured credential (secret, key) that vouches for ``body``; None refuses.

        Gets the exact raw bytes received and the request (its headers); must not log secrets."""

    @abstractmethod
    def interpret(self, body: bytes, received_at: str, request: web.Request) -> Interpretation:
        """What an authenticated body means. Should not raise: whatever escapes is dead-lettered
        on ``dlq_channel`` and acknowledged (200)."""

    def credential_present(self, request: web.Request) -> bool:
        """Did the sender present a credential at all (a 401 is then ``invalid``, else ``missing``)?"""
        return bool(request.headers.get(self.signature_header))

    def publishing(self, events: Sequence[TransferEvent]) -> None:
        """A delivery's events, accepted by ``interpret``, are about to be handed over."""

    async def admit(self, request: web.Request) -> Answer | None:
        """Called once a delivery is authenticated, before anything of it is decided: an ``Answer``
        refuses it (e.g. 503 while the source cannot yet decide correctly), None lets it through.
        Only authenticated senders can make the source wait here."""
        return None

    # -- mounting and lifecycle ----------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Add the POST route (``config.path``) to an application that is not started yet."""
        app.router.add_post(self.config.path, self.handle)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        self._serving = True
        self._accepting = True
        self.health.mark_connected()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.stop_accepting()

    def stop_accepting(self) -> None:
        """From now on answer 503: the provider keeps the delivery and retries later."""
        self._accepting = False
        self.health.mark_disconnected("shutting down")

    async def drain(self, timeout: float) -> bool:
        """Wait, bounded, for deliveries still awaiting Kafka (already answered 503 or still
        waiting) so they land before the pipeline closes; False if some are still pending —
        the provider retries those anyway."""
        waiting = {task for task in self._pending if not task.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=max(timeout, 0.0))
        return not any(not task.done() for task in self._pending)

    async def close(self, *, timeout: float = 10.0) -> None:
        """Stop accepting, then drain: call before ``pipeline.close()``."""
        self.stop_accepting()
        await self.drain(timeout)

    async def run(self) -> None:
        """A webhook has no connection to keep: the shell's HTTP server carries the route. This
        loop only keeps ``health`` current until cancelled — "connected" while the route is served
        and accepting, also after a supervisor restarted ``run`` and marked it down."""
        try:
            while True:
                if self._serving and self._accepting and not self.health.connected:
                    self.health.mark_connected()
                self.health.detail["awaiting_kafka"] = len(self._pending)
                await asyncio.sleep(1.0)
        finally:
            self.health.detail["awaiting_kafka"] = len(self._pending)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a server of its own (port 0 = any free port); yields the route's URL."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.ack_timeout_seconds + 1)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        try:
            yield f"http://{bound_host}:{bound_port}{self.config.path}"
        finally:
            await runner.cleanup()

    # -- the request ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            answer = await self._answer(request, started)
        except Exception:  # never a 2xx, never a traceback to the sender
            self.log.exception("%s webhook: unexpected error; answering 503", self._label)
            answer = Answer(503, "error", "temporarily unavailable")
        self.stats[answer.result] += 1
        metrics.WEBHOOK_REQUESTS.labels(self._label, answer.result.split(".", 1)[0], str(answer.status)).inc()
        metrics.WEBHOOK_LATENCY.labels(self._label).observe(time.perf_counter() - started)
        body: dict[str, Any] = {"result": answer.result.split(".", 1)[0]}
        if answer.detail:
            body["detail"] = answer.detail
        response = web.json_response(body, status=answer.status)
        if answer.close:
            response.force_close()
        return response

    async def _answer(self, request: web.Request, started: float) -> Answer:
        if not self._accepting:
            return Answer(503, "shutting_down", "shutting down, retry later")
        received_at = format_utc_ms(datetime.fromtimestamp(self._clock(), UTC))
        if self.config.allowed_ips and not self._allowed(request):
            self.log.info("%s webhook: refused source address %s", self._label, request.remote)
            return Answer(403, "forbidden", "source address not allowed")
        if request.content_type != "application/json" or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            return Answer(415, "unsupported_media_type", "expected application/json (UTF-8)")
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return Answer(413, "too_large", f"body larger than {limit} bytes", close=True)
        try:
            body = await read_capped(request, limit)
        except TimeoutError:  # the server's body deadline (request_body_timeout_seconds)
            self.log.info("%s webhook: body from %s not received in time; closing", self._label, request.remote)
            return Answer(408, "body_timeout", "request body not received in time", close=True)
        except ConnectionError:  # the sender went away mid-body: nobody to answer
            return Answer(400, "incomplete", "request body incomplete", close=True)
        if body is None:
            return Answer(413, "too_large", f"body larger than {limit} bytes", close=True)

        matched = self.authenticate(request, body)
        if matched is None:
            why = "invalid" if self.credential_present(request) else "missing"
            who = request.remote
            self.log.info("%s webhook: %s signature from %s (%d bytes), not accepted", self._label, why, who, len(body))
            return Answer(401, f"unauthorized.{why}", f"{why} signature")
        metrics.WEBHOOK_SIGNATURE_MATCHES.labels(self._label, str(matched)).inc()
        refused = await self.admit(request)
        if refused is not None:
            return refused

        digest = hashlib.sha256(body).digest()
        repeat = self._dead_lettered.get(digest)
        if repeat is not None:
            return Answer(repeat.status, f"{repeat.result}.repeat", repeat.detail)

        meaning = self._interpret(body, received_at, request)
        if isinstance(meaning, Ignore):
            metrics.WEBHOOK_IGNORED.labels(self._label, meaning.family).inc()
            return Answer(200, f"ignored.{meaning.family}")
        if isinstance(meaning, Publish):
            self.publishing(meaning.events)
            meaning = self._writable(meaning) or meaning
        if isinstance(meaning, Quarantine):
            then = Answer(400, "malformed", meaning.reason) if meaning.status == 400 else Answer(200, "dead_lettered")
            letter = self._letter(body, meaning.reason, meaning.to, received_at, request)
            return await self._dead_letter(letter, digest, then, started)

        answer = await self._publish(meaning.events, started)
        if answer.result in _EVENT_RESULTS:
            self.health.mark_event()
        return answer

    def _interpret(self, body: bytes, received_at: str, request: web.Request) -> Interpretation:
        """The hook's answer; anything it raises or returns amiss becomes a 200 quarantine."""
        try:
            meaning = self.interpret(body, received_at, request)
        except Exception as exc:  # noqa: BLE001 - parsing never raises out of the engine
            return Quarantine(describe_error(exc), Letterhead(self.dlq_channel), 200)
        if isinstance(meaning, Publish) and not meaning.events:
            return Quarantine("interpret published no event", meaning.to, 200)
        if isinstance(meaning, (Ignore, Quarantine, Publish)):
            return meaning
        return Quarantine(f"interpret returned a {type(meaning).__name__}", Letterhead(self.dlq_channel), 200)

    def _writable(self, publish: Publish) -> Quarantine | None:
        """What cannot become a Kafka record must not enter the pipeline: the body is kept instead
        (whole: the pipeline's own fallback for an oversized event would store a re-encoding)."""
        try:
            for event in publish.events:
                size = _record_size(self.pipeline.publisher.event_record(event))
                if size > self._max_record:
                    reason = f"event too large for Kafka: {size} bytes, kafka.max_request_size is {self._max_record}"
                    return Quarantine(reason, publish.to, 200)
        except Exception as exc:  # noqa: BLE001 - any reason at all: the delivery is kept, with the reason
            return Quarantine(describe_error(exc), publish.to, 200)
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _allowed(self, request: web.Request) -> bool:
        address = client_address(request, self.config.trusted_proxies)
        return address is not None and any(address in network for network in self.config.allowed_ips)

    def _letter(self, body: bytes, reason: str, to: Letterhead, received_at: str, request: web.Request) -> DeadLetter:
        headers = {"content_type": header_text(request.headers.get("Content-Type")) or ""}
        request_id = header_text(to.request_id)
        if request_id:
            headers["request_id"] = request_id
        return DeadLetter(
            provider=self.provider,
            channel=header_text(to.channel) or self.dlq_channel,
            reason=reason[:_MAX_REASON],
            raw=body,
            received_at=received_at,
            account_id=header_text(to.account_id),
            headers=headers,
        )

    async def _dead_letter(self, letter: DeadLetter, digest: bytes, then: Answer, started: float) -> Answer:
        """Kept first, answered after: a DLQ record Kafka did not ack means 503 (the provider retries).

        A record too large for Kafka is refused here (413) rather than handed over: the pipeline
        would keep only a cut of it, and a delivery is acknowledged only once it is stored whole."""
        size = _record_size(self.pipeline.publisher.dead_letter_record(letter))
        if size > self._max_record:
            self.log.error(
                "%s webhook: dead letter of %d bytes exceeds kafka.max_request_size (%d); refusing the body with 413",
                self._label, size, self._max_record,
            )
            return Answer(413, "too_large", "body cannot be stored whole", close=True)
        outcomes = await self._hand_over([letter], started)
        handed = outcomes if isinstance(outcomes, Answer) else self._answer_for(outcomes[0])
        if handed.result != "dead_lettered":
            return handed
        self._dead_lettered.add(digest, then)
        return then

    async def _publish(self, events: Sequence[TransferEvent], started: float) -> Answer:
        """The delivery's events enter the pipeline together (one batch, one wait under the
        request's deadline); the first refusal, in order, is the answer."""
        outcomes = await self._hand_over(events, started)
        if isinstance(outcomes, Answer):
            return outcomes
        answers = [self._answer_for(outcome) for outcome in outcomes]
        refused = next((a for a in answers if a.status != 200), None)
        return refused or next((a for a in answers if a.result == "published"), answers[-1])

    async def _hand_over(self, items: Sequence[Item], started: float) -> list[Outcome | BaseException | None] | Answer:
        """Submit to the pipeline and wait, bounded, for every ack or dedup decision.

        The submission runs in its own task, shielded: a timeout answers 503 but never cancels a
        hand-off half way (the items stay in the pipeline and are published when Kafka returns).
        ``asyncio.timeout`` rather than ``wait_for``: no second task per request.
        """
        if len(self._pending) >= self.config.max_pending:
            return Answer(503, "overloaded", "too many deliveries awaiting Kafka, retry later")
        task: asyncio.Task[list[Outcome | BaseException | None]] = asyncio.ensure_future(self.pipeline.submit_batch(items))
        self._pending.add(task)
        task.add_done_callback(self._settled)
        remaining = self.config.ack_timeout_seconds - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                return await asyncio.shield(task)
        except TimeoutError:
            wait = self.config.ack_timeout_seconds
            self.log.warning("%s webhook: Kafka did not acknowledge within %.1fs; answering 503", self._label, wait)
            return Answer(503, "timeout", "not yet stored, retry later")
        except Exception as exc:  # noqa: BLE001 - the pipeline refused the whole batch
            return self._answer_for(exc)

    def _answer_for(self, outcome: Outcome | BaseException | None) -> Answer:
        """One item's fate as the request's answer."""
        if isinstance(outcome, Outcome):
            return Answer(200, _OUTCOME_RESULT[outcome])
        if isinstance(outcome, RuntimeError) and "shutting down" in str(outcome):  # offer after close() began
            return Answer(503, "shutting_down", "shutting down, retry later")
        if isinstance(outcome, RuntimeError):
            self.log.error("%s webhook: hand-off failed (%s); answering 503", self._label, outcome)
        else:  # fenced producer, oversized dead letter, an item abandoned by a cancelled hand-off …
            name = "no outcome" if outcome is None else outcome.__class__.__name__
            self.log.error("%s webhook: hand-off failed (%s); answering 503", self._label, name)
        return Answer(503, "unavailable", "not stored, retry later")

    def _settled(self, task: asyncio.Task[list[Outcome | BaseException | None]]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here; the request (if still waiting) got its answer already


def _record_size(record: Record) -> int:
    """The size the Kafka producer checks against ``max_request_size`` (its own estimate)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
    return size
