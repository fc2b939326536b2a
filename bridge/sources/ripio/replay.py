"""Ripio dead letters read again with today's parser (``transfer-bridge dlq replay``).

A ``deposit`` / ``withdrawal`` dead letter holds one message ``body`` or one listing row (or rows
that were not a list); a ``stream`` one holds a whole frame. A body lost its message's id and
timestamp when it was dead-lettered: the replayed event has no ``message_id``.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, parse_items, refusal
from bridge.sources.ripio.parse import STREAM_DLQ_CHANNEL, TOPICS, parse_body, parse_message, parse_rows

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    """Never raises: bytes that are not JSON, or a channel with no parser, are one ``refusal``."""
    topic, at, user = letter.channel, letter.received_at, letter.account_id
    try:
        document = loads_exact(letter.raw)
    except ValueError as exc:  # JSONError, the int() digit limit
        return [_refusal(str(exc), letter)]
    if topic in TOPICS:
        if isinstance(document, list):
            return parse_rows(topic, document, received_at=at, user_id=user)

        def one(body: Any) -> TransferEvent:
            return parse_body(body, topic=topic, received_at=at, user_id=user)

        return parse_items([document], one, provider=Provider.RIPIO, channel=topic, received_at=at, account_id=user)
    if topic == STREAM_DLQ_CHANNEL:
        return parse_message(document, received_at=at)
    return [_refusal(f"no Ripio parser for channel {topic[:80]!r}", letter)]


def _refusal(reason: str, letter: DeadLetter) -> DeadLetter:
    return refusal(
        reason, provider=Provider.RIPIO, channel=letter.channel, payload=letter.raw, received_at=letter.received_at, account_id=letter.account_id
    )
