"""Fireblocks dead letters read again with today's parser and the section's rules
(``transfer-bridge dlq replay``).

A ``transactions`` dead letter holds one ``GET /v1/transactions`` row; any other holds a whole
webhook body (signature checked when it arrived). A delivery that is not a transaction, or one
the rules skip, is nothing to publish (an empty list), as the receiver acknowledges it. The
receiver's out-of-order filter is per process and does not apply; the dedup gate still does.
"""

from __future__ import annotations

from bridge.contract.events import DeadLetter
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.messages import BACKFILL_CHANNEL, read_envelope
from bridge.sources.fireblocks.parse import Rules, parse_delivery, parse_row, skip_reason

__all__ = ["reparse"]


def reparse(config: FireblocksConfig | None, letter: DeadLetter) -> list[ParseResult]:
    rules = Rules.of(config) if config is not None else Rules()
    document = loads_exact(letter.raw)
    if letter.channel == BACKFILL_CHANNEL:
        workspace = config.workspace_id if config is not None and config.workspace_id else letter.account_id
        return list(parse_row(document, received_at=letter.received_at, rules=rules, workspace_id=workspace))
    envelope = read_envelope(document)
    if not envelope.is_transaction or skip_reason(envelope.data, rules) is not None:
        return []
    return list(parse_delivery(envelope.document, received_at=letter.received_at, rules=rules))
