"""OpenXSwitch dead letters read again with today's parser (``transfer-bridge dlq replay``).

Every OpenXSwitch dead letter holds a whole webhook body, whatever its channel (the method, or
``webhook``); its signature was checked when it arrived. A body that is a delivery but not a
transfer is nothing to publish (an empty list), as the receiver acknowledges it.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import DeadLetter
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.sources.openxswitch.messages import read_delivery
from bridge.sources.openxswitch.parse import parse_delivery

__all__ = ["reparse"]


def reparse(config: Any, letter: DeadLetter) -> list[ParseResult]:
    delivery = read_delivery(loads_exact(letter.raw))
    if not delivery.is_transfer:
        return []
    return [parse_delivery(delivery.document, received_at=letter.received_at)]
