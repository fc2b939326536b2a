"""OpenXSwitch dead letters read again with today's parser (``transfer-bridge dlq replay``).

Every OpenXSwitch dead letter holds a whole webhook body, whatever its channel (the method, or
``webhook``); its signature was checked when it arrived. A body that is a delivery but not a
transfer is nothing to publish (an empty list), as the receiver acknowledges it.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter, Provider
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, refusal
from bridge.sources.openxswitch.messages import read_delivery
from bridge.sources.openxswitch.parse import delivery_event

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    """Never raises: a body that still is not a transfer we can normalize is one ``refusal``, with
    the words of what refused it."""
    try:
        delivery = read_delivery(loads_exact(letter.raw))
        if not delivery.is_transfer:
            return []
        return [delivery_event(delivery.document, received_at=letter.received_at)]
    except ValueError as exc:  # JSONError, ParseError, TimestampError, the contract's ValidationError
        return [
            refusal(str(exc), provider=Provider.OPENXSWITCH, channel=letter.channel, payload=letter.raw, received_at=letter.received_at, account_id=letter.account_id)
        ]
