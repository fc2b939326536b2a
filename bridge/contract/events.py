"""Contract v1 (``shared/design/transfer-event-v1.md``) as code: enums, the event model, ids.

Every source produces ``TransferEvent`` values through ``build_event`` so that the key, the
fingerprint, the deterministic ``event_id`` and ``is_final`` are derived in exactly one place.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bridge.contract.jsonutil import dumps

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_MAJOR",
    "Provider",
    "Direction",
    "Status",
    "Via",
    "FINAL_STATUSES",
    "Account",
    "Source",
    "TransferEvent",
    "DeadLetter",
    "build_event",
    "make_key",
    "fingerprint_of",
    "event_id_of",
    "encode_event",
]

SCHEMA_MAJOR = 1
SCHEMA_VERSION = "1.1"
"""1.1 (additive): providers ``binance`` and ``fireblocks``, ``source.via`` ``poll``, and the readers'
generic ``unknown`` of ``provider`` and ``source.via`` (see ``Provider``)."""
EVENT_ID_NAMESPACE = uuid.UUID("6f1c4d2e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")
"""UUIDv5 namespace of ``event_id``. Changing it changes every id: that would be a v2."""

DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"


class Provider(StrEnum):
    """``UNKNOWN`` is the readers' generic form of a provider added by a later minor (the typed
    consumer maps an unknown value to it, the Avro enum defaults to it); the bridge never publishes it."""

    OKX = "okx"
    RIPIO = "ripio"
    OPENXSWITCH = "openxswitch"
    BINANCE = "binance"
    FIREBLOCKS = "fireblocks"
    UNKNOWN = "unknown"


class Direction(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    CREDITED = "credited"
    ON_HOLD = "on_hold"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class Via(StrEnum):
    """``POLL``: read from a provider that offers only history (no push). ``UNKNOWN``: the readers'
    generic form of a later value, as for ``Provider``; never published."""

    PUSH = "push"
    BACKFILL = "backfill"
    POLL = "poll"
    UNKNOWN = "unknown"


class Account(BaseModel):
    """Who owns the transfer; parts a provider does not give are null."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    sub_account: str | None = None
    workspace_id: str | None = None


class Source(BaseModel):
    """How the event reached the bridge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str
    message_id: str | None = None
    via: Via = Via.PUSH


class TransferEvent(BaseModel):
    """One observed state of one transfer: the record downstream consumers read."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="TransferEvent",
        json_schema_extra={
            "$id": "https://transfer-bridge.dev/schemas/transfer-event/v1.json",
            "description": "One observed state of one crypto transfer, normalized across providers (contract v1).",
        },
    )

    schema_version: str = Field(default=SCHEMA_VERSION, pattern=r"^1\.[0-9]+$")
    event_id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    key: str = Field(min_length=1)
    provider: Provider
    direction: Direction
    transfer_id: str = Field(min_length=1)
    client_transfer_id: str | None = None
    account: Account
    asset: str = Field(min_length=1, pattern=r"^[^a-z]+$")
    chain: str | None = None
    network: str | None = Field(default=None, pattern=r"^[a-z0-9_-]+$")
    amount: str = Field(pattern=DECIMAL_PATTERN)
    fee: str | None = Field(default=None, pattern=DECIMAL_PATTERN)
    fee_asset: str | None = None
    status: Status
    is_final: bool
    provider_status: str
    provider_status_text: str | None = None
    confirmations: int | None = Field(default=None, ge=0)
    tx_hash: str | None = Field(default=None, min_length=1)
    from_address: str | None = None
    to_address: str | None = None
    address_tag: dict[str, str] | None = None
    internal: bool | None = None
    created_at: str | None = Field(default=None, pattern=TIMESTAMP_PATTERN)
    occurred_at: str = Field(pattern=TIMESTAMP_PATTERN)
    received_at: str = Field(pattern=TIMESTAMP_PATTERN)
    source: Source
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload that could not be normalized: kept byte for byte with the reason."""

    provider: Provider
    channel: str
    reason: str
    raw: bytes
    received_at: str
    account_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    """Set only by a parser, on its only result: the payload it was given is refused *as a whole*
    (not its kind of message, or one item that is the whole payload) rather than one item of it
    dead-lettered. The engine that read the payload dead-letters it as it received it instead
    (its bytes, channel and account) with this ``reason``; ``bridge.contract.parsing`` says what
    each engine does. Never written to Kafka."""


def make_key(provider: Provider, direction: Direction, transfer_id: str) -> str:
    return f"{provider.value}:{direction.value}:{transfer_id}"


def fingerprint_of(
    status: Status,
    provider_status: str,
    confirmations: int | None,
    tx_hash: str | None,
    amount: str,
    fee: str | None,
) -> str:
    """The material fields of a state, in a fixed order (contract: Deduplication)."""
    parts = (status.value, provider_status, confirmations, tx_hash, amount, fee)
    return "\x1f".join("" if part is None else str(part) for part in parts)


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id_of(key: str, fingerprint: str) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, key + "\\x1e" + fingerprint))``, written out: the same
    SHA-1, version and variant bits, without building a ``UUID`` object (once per event)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{key}\x1e{fingerprint}".encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_event(
    *,
    provider: Provider,
    direction: Direction,
    transfer_id: str,
    status: Status,
    provider_status: str,
    amount: str,
    asset: str,
    occurred_at: str,
    received_at: str,
    source: Source,
    account: Account,
    fee: str | None = None,
    confirmations: int | None = None,
    tx_hash: str | None = None,
    **optional: Any,
) -> TransferEvent:
    """Derive key, fingerprint, ``event_id`` and ``is_final``, then validate the whole record."""
    if provider is Provider.UNKNOWN or source.via is Via.UNKNOWN:
        raise ValueError("'unknown' provider and source.via are the readers' generic forms, never published")
    key = make_key(provider, direction, transfer_id)
    tx_hash = tx_hash or None
    fingerprint = fingerprint_of(status, provider_status, confirmations, tx_hash, amount, fee)
    return TransferEvent(
        event_id=event_id_of(key, fingerprint),
        key=key,
        provider=provider,
        direction=direction,
        transfer_id=transfer_id,
        status=status,
        is_final=status in FINAL_STATUSES,
        provider_status=provider_status,
        amount=amount,
        fee=fee,
        asset=asset.upper(),
        confirmations=confirmations,
        tx_hash=tx_hash,
        occurred_at=occurred_at,
        received_at=received_at,
        source=source,
        account=account,
        **optional,
    )


def _fields(value: Any) -> Any:
    """orjson hook: a nested contract model (``account``, ``source``) is written as its fields."""
    if type(value) is Account or type(value) is Source:  # exact types first: isinstance on a model class is slow
        return value.__dict__
    if isinstance(value, BaseModel):
        return value.__dict__
    if isinstance(value, Decimal):  # as in ``bridge.contract.jsonutil.dumps``: the digits it came with
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialize {type(value).__name__}")


def encode_event(event: TransferEvent, *, include_raw: bool = True) -> bytes:
    """The Kafka value: JSON, ``raw`` numbers written with their original digits.

    A validated, frozen event already holds exactly what ``model_dump`` would return (fields in
    declaration order, enums, nested models, ``raw`` as parsed), so orjson writes its fields
    directly; what orjson refuses (integers beyond 64 bits, lone surrogates) takes the general path.
    """
    fields = event.__dict__ if include_raw else {k: v for k, v in event.__dict__.items() if k != "raw"}
    try:
        return orjson.dumps(fields, default=_fields)
    except TypeError:
        return dumps(event.model_dump(mode="python", exclude=None if include_raw else {"raw"}))


def short_hash(text: str) -> int:
    """A signed 64-bit hash of a key, the shape SQLite stores as an INTEGER primary key."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
