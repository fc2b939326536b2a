"""OKX dead letters read again with today's parser (``transfer-bridge dlq replay``).

A ``deposit-info`` / ``withdrawal-info`` dead letter holds one item of a push or a REST page (or
the ``data`` that was not a list); a ``ws/v5/business`` one holds a whole frame.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter, Provider, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, refusal
from bridge.sources.okx.parse import DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL, WS_DLQ_CHANNEL, parse_push, parse_rows

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    """Never raises: bytes that are not JSON, or a channel with no parser, are one ``refusal``."""
    try:
        document = loads_exact(letter.raw)
    except ValueError as exc:  # JSONError, the int() digit limit
        return [_refusal(str(exc), letter)]
    if letter.channel in (DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL):
        rows = document if isinstance(document, list) else [document]
        # REST history rows carry no push time: that is how a row read by backfill is told apart.
        via = Via.PUSH if isinstance(document, dict) and document.get("pTime") not in (None, "") else Via.BACKFILL
        return parse_rows(letter.channel, rows, received_at=letter.received_at, via=via, uid=letter.account_id)
    if letter.channel == WS_DLQ_CHANNEL:
        return parse_push(document, received_at=letter.received_at)
    return [_refusal(f"no OKX parser for channel {letter.channel[:80]!r}", letter)]


def _refusal(reason: str, letter: DeadLetter) -> DeadLetter:
    return refusal(
        reason, provider=Provider.OKX, channel=letter.channel, payload=letter.raw, received_at=letter.received_at, account_id=letter.account_id
    )
