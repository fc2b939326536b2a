"""The OpenXSwitch webhook receiver: the core's webhook engine with OpenXSwitch's signature and bodies.

``bridge.ingest.webhook`` owns the route, the checks, the dead-letter-first rule and the bounded
wait for Kafka (its docstring has the full table of answers). What is OpenXSwitch's:

====  ======================================================================================
401   ``X-Webhook-Signature`` missing or not the HMAC-SHA256 of the raw body under any
      configured secret (hex or base64, see ``signature``); every secret is tried, so rotation
      works, and the matching one is counted.
400   authenticated, but not a webhook delivery: not UTF-8, not JSON, NaN/Infinity, numbers
      beyond what can be read, no object, no ``method``. Dead-lettered on channel ``webhook``.
200   a method that is not a deposit/withdrawal (``internal_transfer.*``, ``instant_swap.*``,
      unknown ones): acknowledged and counted by family, nothing published — never fail the
      sender.
200   a transfer method whose ``params`` cannot be normalized, for any reason: dead-lettered on
      the method's channel (``withdraw.confirmed``, …) with the ``requestId`` and the wallet id
      when one can be read, then acknowledged — a retry would fail the same way 144 times.
200   a transfer: after Kafka's ack or the dedup gate's decision.
503   as the engine says; OpenXSwitch retries every 5 minutes for 12 hours, and allows 60 s for
      an answer (``ack_timeout_seconds`` stays below that).
====  ======================================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from aiohttp import web

from bridge.contract.events import Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import refused
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.webhook import Ignore, Interpretation, Letterhead, Publish, Quarantine, WebhookSource, describe_error
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.openxswitch.signature import HEADER, verify

__all__ = ["OpenXSwitchWebhook"]


class OpenXSwitchWebhook(WebhookSource[OpenXSwitchConfig]):
    """The receiver component (``bridge.ingest.source.Source``) for ``config.path``."""

    provider: ClassVar[Provider] = Provider.OPENXSWITCH
    signature_header: ClassVar[str] = HEADER
    dlq_channel: ClassVar[str] = m.WEBHOOK_DLQ_CHANNEL

    def __init__(
        self,
        config: OpenXSwitchConfig,
        pipeline: Pipeline,
        *,
        name: str = "openxswitch:webhook",
        clock: Callable[[], float] = time.time,
        dead_letter_memory: int = 4096,
    ):
        if not config.secrets:
            raise ValueError("the OpenXSwitch webhook needs at least one secret")
        super().__init__(config, pipeline, name=name, clock=clock, dead_letter_memory=dead_letter_memory)
        self._secrets = tuple(secret.get_secret_value().encode() for secret in config.secrets)

    def __repr__(self) -> str:  # never the secrets
        return f"OpenXSwitchWebhook(path={self.config.path!r}, secrets={len(self._secrets)})"

    def authenticate(self, request: web.Request, body: bytes) -> int | None:
        """The HMAC of the exact bytes received, compared in constant time against every secret."""
        return verify(request.headers.get(HEADER), body, self._secrets)

    def interpret(self, body: bytes, received_at: str, request: web.Request) -> Interpretation:
        try:
            delivery = m.read_delivery(loads_exact(body))
        except ValueError as exc:  # JSONError, ParseError, and the int() digit limit of huge numbers
            return Quarantine(str(exc), Letterhead(m.WEBHOOK_DLQ_CHANNEL), 400)
        if not delivery.is_transfer:
            return Ignore(m.method_family(delivery.method))
        to = Letterhead(m.dead_letter_channel(delivery.method), delivery.request_id, m.wallet_hint(delivery.document))
        try:
            results = parse_delivery(delivery.document, received_at=received_at)
        except Exception as exc:  # noqa: BLE001 - a parser bug: the delivery is kept, with the reason
            return Quarantine(describe_error(exc), to, 200)
        whole = refused(results)
        if whole is not None:  # a delivery we cannot normalize: kept whole, with the reason
            return Quarantine(whole.reason, to, 200)
        return Publish([item for item in results if isinstance(item, TransferEvent)], to)
