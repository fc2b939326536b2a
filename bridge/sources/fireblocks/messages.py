"""The wire shapes of Fireblocks webhooks: the v1 and v2 envelopes around a ``TransactionDetails``.

No I/O. v1 ``{type, tenantId, timestamp, data}``; v2 ``{id, eventType, eventVersion?, resourceId?,
workspaceId, createdAt, data}`` (``createdAt`` is epoch **ms** in every capture, whatever one doc
page says). Only created / status-updated transaction events are normalized; every other type is
acknowledged and counted by a bounded family name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.contract.parsing import ParseError, optional_str, require_mapping

__all__ = ["Envelope", "read_envelope", "TRANSACTION_EVENTS", "family_of", "BACKFILL_CHANNEL", "WEBHOOK_DLQ_CHANNEL"]

TRANSACTION_EVENTS = frozenset({"TRANSACTION_CREATED", "TRANSACTION_STATUS_UPDATED", "transaction.created", "transaction.status.updated"})
BACKFILL_CHANNEL = "transactions"
WEBHOOK_DLQ_CHANNEL = "webhook"

_KNOWN_FAMILIES = {
    "TRANSACTION_APPROVAL_STATUS_UPDATED": "transaction_approval",
    "transaction.approval_status.updated": "transaction_approval",
    "transaction.network_records.processing_completed": "transaction_network_records",
}
_PREFIX_FAMILIES = (
    ("VAULT_", "vault"), ("vault_account.", "vault"), ("INTERNAL_WALLET", "wallet"), ("EXTERNAL_WALLET", "wallet"),
    ("external_wallet.", "wallet"), ("internal_wallet.", "wallet"), ("EXCHANGE_", "exchange"), ("FIAT_", "fiat"),
    ("NETWORK_CONNECTION", "network_connection"), ("UNFREEZE_", "unfreeze"), ("TRAVEL_RULE", "travel_rule"),
    ("ticket.", "ticket"), ("embedded_wallet.", "embedded_wallet"), ("NCW_", "embedded_wallet"),
)


def family_of(event_type: str | None) -> str:
    """A bounded metric label for an event type we acknowledge without publishing."""
    if not event_type:
        return "unknown"
    if event_type in _KNOWN_FAMILIES:
        return _KNOWN_FAMILIES[event_type]
    return next((family for prefix, family in _PREFIX_FAMILIES if event_type.startswith(prefix)), "unknown")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One delivery read: which generation, its event type, workspace, message id and time."""

    version: int
    event_type: str
    workspace_id: str | None
    message_id: str | None
    sent_ms: Any
    document: Mapping[str, Any]

    @property
    def is_transaction(self) -> bool:
        return self.event_type in TRANSACTION_EVENTS

    @property
    def data(self) -> Mapping[str, Any]:
        return require_mapping(self.document.get("data"), "data")


def read_envelope(document: Any) -> Envelope:
    """v2 has ``eventType``, v1 ``type``; anything else is not a Fireblocks delivery (ParseError)."""
    body = require_mapping(document, "delivery")
    if isinstance(body.get("eventType"), str):
        return Envelope(2, body["eventType"], optional_str(body, "workspaceId"), optional_str(body, "id"), body.get("createdAt"), body)
    if isinstance(body.get("type"), str):
        return Envelope(1, body["type"], optional_str(body, "tenantId"), None, body.get("timestamp"), body)
    raise ParseError("neither 'eventType' (v2) nor 'type' (v1): not a Fireblocks webhook")
