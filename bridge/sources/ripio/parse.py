"""Ripio stream messages (``deposit`` / ``withdrawal`` topics) and listing rows → contract v1.

Pure: no I/O, no clock. ``amount`` and the fees arrive as JSON numbers: callers read frames and
REST bodies with ``bridge.contract.jsonutil.loads_exact`` so they are a ``Decimal`` or ``int`` here, never a
float (``canonical_decimal`` refuses floats, so a caller that forgets becomes a dead letter, not a
rounded amount).

Field map (Ripio → contract), the same for pushes and listing rows:

* ``id`` → ``transfer_id``; ``user_id`` → ``account.id`` (listing rows have none: the caller passes
  the account's user id, learnt from its pushes or configured);
* ``status`` → ``status`` via ``status_tables.RIPIO`` (unknown values → ``unknown``, still published);
* ``network`` → ``chain`` unchanged and ``network`` canonical; ``hash`` → ``tx_hash``;
* deposit ``address`` / withdrawal ``destination_address`` → ``to_address``;
* withdrawal ``fee`` → ``fee`` (in ``currency_code``); ``external_id`` → ``client_transfer_id``;
  ``miner_fee`` has no contract field of its own and stays in ``raw`` with its exact digits;
* ``tag`` / ``memo`` (listing rows) → ``address_tag``, non-empty ones only;
* ``create_date`` → ``created_at``; ``occurred_at`` is the first of ``update_date``,
  ``confirmation_date``, ``create_date`` and the message ``timestamp`` that is present (listing
  rows of deposits carry no ``update_date``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.contract.events import Account, DeadLetter, Direction, Provider, Source, TransferEvent, Via, build_event
from bridge.contract.networks import canonical_network
from bridge.contract.parsing import (
    ParseError,
    ParseResult,
    optional_bool,
    optional_decimal,
    optional_str,
    parse_items,
    refusal,
    require_decimal,
    require_mapping,
    require_str,
)
from bridge.contract.status_tables import RIPIO, lookup
from bridge.contract.timeutil import from_epoch_ms, from_iso

__all__ = ["TOPICS", "WELCOME_ID", "OCCURRED_FIELDS", "TAG_FIELDS", "STREAM_DLQ_CHANNEL", "parse_body", "parse_message", "parse_rows"]

TOPICS: dict[str, Direction] = {"deposit": Direction.DEPOSIT, "withdrawal": Direction.WITHDRAWAL}
STREAM_DLQ_CHANNEL = "stream"
"""Where a whole frame is dead-lettered (one the parser refuses, or that is not JSON)."""
WELCOME_ID = -1

OCCURRED_FIELDS = ("update_date", "confirmation_date", "create_date")
"""Where the time of the observed state is read from, first present wins."""

TAG_FIELDS = ("tag", "memo")
"""Destination extras carried into ``address_tag`` when non-empty."""


def _occurred_at(body: Mapping[str, Any], message_timestamp: Any) -> str:
    for name in OCCURRED_FIELDS:
        if body.get(name):
            return from_iso(body[name], field=name)
    if message_timestamp is not None:
        return from_epoch_ms(message_timestamp, field="timestamp")
    raise ParseError("missing 'update_date', 'confirmation_date' and 'create_date'")


def _address_tag(body: Mapping[str, Any]) -> dict[str, str] | None:
    tags = {name: value for name in TAG_FIELDS if (value := optional_str(body, name)) is not None}
    return tags or None


def parse_body(
    body: Mapping[str, Any],
    *,
    topic: str,
    received_at: str,
    via: Via = Via.PUSH,
    message_id: str | None = None,
    message_timestamp: Any = None,
    user_id: str | None = None,
) -> TransferEvent:
    """One transfer object (a message ``body`` or a listing row) in the state it describes."""
    direction = TOPICS[topic]
    status_value = require_str(body, "status")
    status, text = lookup(RIPIO, status_value)
    network_raw = optional_str(body, "network")
    created = from_iso(body["create_date"], field="create_date") if body.get("create_date") else None
    asset = require_str(body, "currency_code")
    withdrawal = direction is Direction.WITHDRAWAL
    fee = optional_decimal(body, "fee") if withdrawal else None
    to_address = optional_str(body, "destination_address") if withdrawal else optional_str(body, "address")
    return build_event(
        provider=Provider.RIPIO,
        direction=direction,
        transfer_id=require_str(body, "id"),
        client_transfer_id=optional_str(body, "external_id") if withdrawal else None,
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
        to_address=to_address,
        address_tag=_address_tag(body),
        internal=optional_bool(body, "is_internal"),
        created_at=created,
        occurred_at=_occurred_at(body, message_timestamp),
        received_at=received_at,
        account=Account(id=optional_str(body, "user_id") or user_id),
        source=Source(channel=topic, message_id=message_id, via=via),
        raw=dict(body),
    )


def parse_message(message: Any, *, received_at: str) -> list[ParseResult]:
    """One stream message ``{id, topic, timestamp, body}``; welcome messages yield nothing.

    Never raises (the parser contract of ``bridge.contract.parsing``): a message that is not for a
    transfer topic at all is one ``refusal`` (the stream dead-letters the frame); a body that
    cannot be normalized becomes a ``DeadLetter`` with the body's bytes.
    """
    if not isinstance(message, Mapping):
        return [_refused(f"frame: expected an object, got {type(message).__name__}", STREAM_DLQ_CHANNEL, message, received_at)]
    topic = message.get("topic")
    if not isinstance(topic, str) or topic not in TOPICS:
        return [_refused(f"message for unexpected topic {str(topic)[:40]!r}", STREAM_DLQ_CHANNEL, message, received_at)]
    message_id = message.get("id")
    if message_id == WELCOME_ID:
        return []
    timestamp = message.get("timestamp")
    return parse_items(
        [message.get("body")],
        lambda body: parse_body(
            body,
            topic=topic,
            received_at=received_at,
            message_id=None if message_id is None else str(message_id),
            message_timestamp=timestamp,
        ),
        provider=Provider.RIPIO,
        channel=topic,
        received_at=received_at,
    )


def parse_rows(topic: str, rows: Any, *, received_at: str, user_id: str | None = None) -> list[ParseResult]:
    """Rows of a listing endpoint (backfill, ``source.via = "backfill"``), each parsed on its own.

    ``user_id`` names the account for rows that do not (Ripio's listings leave it out).
    """
    if topic not in TOPICS:
        return [_refused(f"listing for unexpected topic {topic[:40]!r}", topic, rows, received_at, user_id)]
    return parse_items(
        rows,
        lambda body: parse_body(
            require_mapping(body, "row"), topic=topic, received_at=received_at, via=Via.BACKFILL, user_id=user_id
        ),
        provider=Provider.RIPIO,
        channel=topic,
        received_at=received_at,
        account_id=user_id,
        not_a_list="listing rows are not a list",
    )


def _refused(reason: str, channel: str, payload: Any, received_at: str, account_id: str | None = None) -> DeadLetter:
    return refusal(reason, provider=Provider.RIPIO, channel=channel, payload=payload, received_at=received_at, account_id=account_id)
