"""OKX dead letters read again with today's parser (``transfer-bridge dlq replay``).

A ``deposit-info`` / ``withdrawal-info`` dead letter holds one item of a push or a REST page (or
the ``data`` that was not a list); a ``ws/v5/business`` one holds a whole frame.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError, ParseResult, require_mapping
from bridge.sources.okx.parse import DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL, parse_push, parse_rows
from bridge.sources.okx.service import WS_DLQ_CHANNEL

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    document = loads_exact(letter.raw)
    if letter.channel in (DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL):
        rows = document if isinstance(document, list) else [document]
        # REST history rows carry no push time: that is how a row read by backfill is told apart.
        via = Via.PUSH if isinstance(document, dict) and document.get("pTime") not in (None, "") else Via.BACKFILL
        return parse_rows(letter.channel, rows, received_at=letter.received_at, via=via, uid=letter.account_id)
    if letter.channel == WS_DLQ_CHANNEL:
        return parse_push(require_mapping(document, "frame"), received_at=letter.received_at)
    raise ParseError(f"no OKX parser for channel {letter.channel[:80]!r}")
