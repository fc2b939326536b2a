"""Ripio dead letters read again with today's parser (``transfer-bridge dlq replay``).

A ``deposit`` / ``withdrawal`` dead letter holds one message ``body`` or one listing row (or rows
that were not a list); a ``stream`` one holds a whole frame. A body lost its message's id and
timestamp when it was dead-lettered: the replayed event has no ``message_id``.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError, ParseResult, parse_items, require_mapping
from bridge.sources.ripio.parse import TOPICS, parse_body, parse_message, parse_rows
from bridge.sources.ripio.service import STREAM_DLQ_CHANNEL

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    document = loads_exact(letter.raw)
    topic, at, user = letter.channel, letter.received_at, letter.account_id
    if topic in TOPICS:
        if isinstance(document, list):
            return parse_rows(topic, document, received_at=at, user_id=user)

        def one(body: Any) -> TransferEvent:
            return parse_body(body, topic=topic, received_at=at, user_id=user)

        return parse_items([document], one, provider=Provider.RIPIO, channel=topic, received_at=at, account_id=user)
    if topic == STREAM_DLQ_CHANNEL:
        return parse_message(require_mapping(document, "frame"), received_at=at)
    raise ParseError(f"no Ripio parser for channel {topic[:80]!r}")
