"""Ripio stream messages (``deposit`` / ``withdrawal`` topics) and listing rows → contract v1.

Pure: no I/O, no clock. ``amount`` arrives as a JSON number: callers read frames with
``bridge.jsonutil.loads_exact`` so it is a ``Decimal`` or ``int`` here, never a float.
"""

from __future__ import annotations

from typing import Any, Mapping

from bridge.events import Account, DeadLetter, Direction, Provider, Source, TransferEvent, Via, build_event
from bridge.networks import canonical_network
from bridge.parsing import (
    ParseError,
    ParseResult,
    optional_bool,
    optional_decimal,
    optional_str,
    parse_items,
    require_decimal,
    require_mapping,
    require_str,
)
from bridge.status_tables import RIPIO, lookup
from bridge.timeutil import from_epoch_ms, from_iso

__all__ = ["TOPICS", "WELCOME_ID", "parse_body", "parse_message", "parse_rows"]

TOPICS: dict[str, Direction] = {"deposit": Direction.DEPOSIT, "withdrawal": Direction.WITHDRAWAL}
WELCOME_ID = -1


def parse_body(
    body: Mapping[str, Any],
    *,
    topic: str,
    received_at: str,
    via: Via = Via.PUSH,
    message_id: str | None = None,
    fallback_time: str | None = None,
) -> TransferEvent:
    direction = TOPICS[topic]
    status_value = require_str(body, "status")
    status, text = lookup(RIPIO, status_value)
    network_raw = optional_str(body, "network")
    created = from_iso(body["create_date"], field="create_date") if body.get("create_date") else None
    if body.get("update_date"):
        occurred = from_iso(body["update_date"], field="update_date")
    elif created is not None or fallback_time is not None:
        occurred = created or fallback_time  # type: ignore[assignment]
    else:
        raise ParseError("missing both 'update_date' and 'create_date'")
    asset = require_str(body, "currency_code")
    fee = optional_decimal(body, "fee") if direction is Direction.WITHDRAWAL else None
    to_address = optional_str(body, "destination_address") if direction is Direction.WITHDRAWAL else None
    return build_event(
        provider=Provider.RIPIO,
        direction=direction,
        transfer_id=require_str(body, "id"),
        status=status,
        provider_status=status_value,
        provider_status_text=text,
        amount=require_decimal(body, "amount"),
        fee=fee,
        fee_asset=asset.upper() if fee is not None else None,
        asset=asset,
        chain=network_raw,
        network=canonical_network(network_raw),
        tx_hash=optional_str(body, "hash"),
        to_address=to_address or optional_str(body, "address"),
        internal=optional_bool(body, "is_internal"),
        created_at=created,
        occurred_at=occurred,
        received_at=received_at,
        account=Account(id=optional_str(body, "user_id")),
        source=Source(channel=topic, message_id=message_id, via=via),
        raw=dict(body),
    )


def parse_message(message: Mapping[str, Any], *, received_at: str) -> list[ParseResult]:
    """One stream message ``{id, topic, timestamp, body}``; welcome messages yield nothing."""
    topic = message.get("topic")
    if topic not in TOPICS:
        raise ParseError(f"message for unexpected topic {topic!r}")
    message_id = message.get("id")
    if message_id == WELCOME_ID:
        return []
    fallback = None
    if isinstance(message.get("timestamp"), int):
        fallback = from_epoch_ms(message["timestamp"], field="timestamp")
    return parse_items(
        [message.get("body")],
        lambda body: parse_body(
            body,
            topic=topic,
            received_at=received_at,
            message_id=None if message_id is None else str(message_id),
            fallback_time=fallback,
        ),
        provider=Provider.RIPIO,
        channel=topic,
        received_at=received_at,
    )


def parse_rows(topic: str, rows: Any, *, received_at: str) -> list[ParseResult]:
    """Rows of a listing endpoint (backfill), each parsed on its own."""
    if not isinstance(rows, list):
        return [
            DeadLetter(
                provider=Provider.RIPIO,
                channel=topic,
                reason=f"listing rows are not a list but {type(rows).__name__}",
                raw=repr(rows).encode(),
                received_at=received_at,
            )
        ]
    return parse_items(
        rows,
        lambda body: parse_body(require_mapping(body, "row"), topic=topic, received_at=received_at, via=Via.BACKFILL),
        provider=Provider.RIPIO,
        channel=topic,
        received_at=received_at,
    )
