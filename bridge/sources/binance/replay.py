"""Binance dead letters read again with today's parser and the section's rules
(``transfer-bridge dlq replay``).

The channel is the history endpoint; the dead letter holds one row, or a whole page (a body that
was not a list of rows, or not JSON). The row's owner is the account id the dead letter carries;
a sub-account's e-mail was not kept with it.
"""

from __future__ import annotations

from typing import Any

from bridge.contract.events import Account, DeadLetter, Provider
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult, refusal
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.parse import DEFAULT_RULES, parse_page

__all__ = ["reparse"]


def reparse(config: BinanceConfig | None, letter: DeadLetter) -> list[ParseResult]:
    """Never raises: bytes that are not JSON, or a channel with no parser, are one ``refusal``."""
    account = Account(id=letter.account_id)
    try:
        body: Any = loads_exact(letter.raw)
    except ValueError as exc:  # JSONError, the int() digit limit
        return [refusal(str(exc), provider=Provider.BINANCE, channel=letter.channel, payload=letter.raw, received_at=letter.received_at, account_id=account.id)]
    rows = body if isinstance(body, list) else [body]
    rules = config.rules if config is not None else DEFAULT_RULES
    return parse_page(letter.channel, rows, received_at=letter.received_at, account=account, rules=rules)
