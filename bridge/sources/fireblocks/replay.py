"""Fireblocks dead letters read again with today's parser and the section's rules
(``transfer-bridge dlq replay``).

A ``transactions`` dead letter holds one ``GET /v1/transactions`` row; any other holds a whole
webhook body (signature checked when it arrived). A delivery that is not a transaction, or one
the rules skip, is nothing to publish (an empty list), as the receiver acknowledges it. The
receiver's out-of-order filter is per process and does not apply; the dedup gate still does.
"""

from __future__ import annotations

from bridge.contract.events import DeadLetter, Provider
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, refusal
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.messages import BACKFILL_CHANNEL, read_envelope
from bridge.sources.fireblocks.parse import Rules, delivery_events, row_events, skip_reason

__all__ = ["reparse"]


def reparse(config: FireblocksConfig | None, letter: DeadLetter) -> list[ParseResult]:
    """Never raises: bytes that still are not a transaction we can normalize are one ``refusal``,
    with the words of what refused them."""
    rules = Rules.of(config) if config is not None else Rules()
    try:
        document = loads_exact(letter.raw)
        if letter.channel == BACKFILL_CHANNEL:
            workspace = config.workspace_id if config is not None and config.workspace_id else letter.account_id
            return list(row_events(document, received_at=letter.received_at, rules=rules, workspace_id=workspace))
        envelope = read_envelope(document)
        if not envelope.is_transaction or skip_reason(envelope.data, rules) is not None:
            return []
        return list(delivery_events(envelope.document, received_at=letter.received_at, rules=rules))
    except ValueError as exc:  # JSONError, ParseError, TimestampError, the contract's ValidationError
        return [
            refusal(str(exc), provider=Provider.FIREBLOCKS, channel=letter.channel, payload=letter.raw, received_at=letter.received_at, account_id=letter.account_id)
        ]
