"""The contract's status mapping tables, with what each provider's documentation says a code means.

Tables are data, checked exhaustively by tests against the contract; a value missing here maps to
``Status.UNKNOWN`` and is still published.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bridge.contract.events import Status

__all__ = [
    "StatusEntry",
    "OKX_DEPOSIT",
    "OKX_WITHDRAWAL",
    "RIPIO",
    "OPENXSWITCH",
    "OPENXSWITCH_METHOD_SUFFIX",
    "BINANCE_DEPOSIT",
    "BINANCE_WITHDRAWAL",
    "FIREBLOCKS_DEPOSIT",
    "FIREBLOCKS_WITHDRAWAL",
    "lookup",
]

StatusEntry = tuple[Status, str | None]


def _table(entries: dict[str, StatusEntry]) -> Mapping[str, StatusEntry]:
    return MappingProxyType(entries)


OKX_DEPOSIT = _table(
    {
        "0": (Status.PENDING, "waiting for confirmation"),
        "17": (Status.PENDING, "pending response from Travel Rule vendor"),
        "1": (Status.CREDITED, "deposit credited (not yet withdrawable)"),
        "2": (Status.COMPLETED, "deposit successful"),
        "8": (Status.ON_HOLD, "pending due to temporary deposit suspension on this currency"),
        "11": (Status.ON_HOLD, "match the address blacklist"),
        "12": (Status.ON_HOLD, "account or deposit is frozen"),
        "13": (Status.ON_HOLD, "sub-account deposit interception"),
        "14": (Status.ON_HOLD, "KYC limit"),
    }
)

OKX_WITHDRAWAL = _table(
    {
        "17": (Status.PENDING, "pending response from Travel Rule vendor"),
        "10": (Status.PENDING, "waiting transfer"),
        "0": (Status.PENDING, "waiting withdrawal"),
        "4": (Status.PENDING, "waiting manual review"),
        "5": (Status.PENDING, "waiting manual review"),
        "6": (Status.PENDING, "waiting manual review"),
        "8": (Status.PENDING, "waiting manual review"),
        "9": (Status.PENDING, "waiting manual review"),
        "12": (Status.PENDING, "waiting manual review"),
        "19": (Status.PENDING, "insufficient balance in the hot wallet"),
        "7": (Status.PROCESSING, "approved"),
        "1": (Status.PROCESSING, "broadcasting your transaction to chain"),
        "15": (Status.PROCESSING, "pending transaction validation"),
        "16": (Status.PROCESSING, "may take up to 24 hours to arrive due to local laws and regulations"),
        "-3": (Status.CANCELLING, "canceling"),
        "-2": (Status.CANCELLED, "canceled"),
        "-1": (Status.FAILED, "failed"),
        "2": (Status.COMPLETED, "success"),
    }
)

RIPIO = _table(
    {
        "pending": (Status.PENDING, "received but not yet confirmed"),
        "confirmed": (Status.COMPLETED, "finalized and added to the balance"),
        "failed": (Status.FAILED, "failed and was not credited"),
    }
)

OPENXSWITCH = _table(
    {
        "pending": (Status.PENDING, "transaction pending"),
        "success": (Status.COMPLETED, "transaction succeeded"),
        "confirmed": (Status.COMPLETED, "transaction confirmed"),
        "failed": (Status.FAILED, "transaction failed"),
        "canceled": (Status.CANCELLED, "transaction canceled"),
        "cancelled": (Status.CANCELLED, "transaction cancelled"),
    }
)

OPENXSWITCH_METHOD_SUFFIX = _table(
    {
        "unconfirmed": (Status.PENDING, "initiated but not yet processed"),
        "pending": (Status.PENDING, "deposit detected, waiting for confirmations"),
        "updated": (Status.PENDING, "confirmations rising"),
        "confirmed": (Status.COMPLETED, "processed and sent"),
        "success": (Status.COMPLETED, "deposit succeeded"),
    }
)

BINANCE_DEPOSIT = _table(
    {
        "0": (Status.PENDING, "pending"),
        "6": (Status.CREDITED, "credited but cannot withdraw"),
        "1": (Status.COMPLETED, "success"),
        "7": (Status.ON_HOLD, "wrong deposit"),
        "8": (Status.ON_HOLD, "waiting user confirm"),
        "2": (Status.FAILED, "rejected"),
    }
)
"""``capital/deposit/hisrec`` (and ``subHisrec``) ``status``. ``6`` is not final: the funds are
credited but locked (ccxt reads it as ``ok``; the same trap as OKX deposit state 1)."""

BINANCE_WITHDRAWAL = _table(
    {
        "0": (Status.PENDING, "email sent"),
        "2": (Status.PENDING, "awaiting approval"),
        "4": (Status.PROCESSING, "processing"),
        "6": (Status.COMPLETED, "completed"),
        "1": (Status.CANCELLED, "cancelled"),
        "3": (Status.FAILED, "rejected"),
        "5": (Status.FAILED, "failure"),
    }
)
"""``capital/withdraw/history`` ``status``. The same code means something else per direction
(``1``: deposit success, withdrawal cancelled): the table is chosen by endpoint, never guessed."""


def lookup(table: Mapping[str, StatusEntry], value: str) -> StatusEntry:
    """Unknown values are carried as ``unknown`` (never dropped, never a crash)."""
    return table.get(value, (Status.UNKNOWN, None))


_FIREBLOCKS_COMMON: dict[str, StatusEntry] = {
    "SUBMITTED": (Status.PENDING, "submitted"),
    "PENDING_AML_SCREENING": (Status.PENDING, "pending AML screening"),
    "PENDING_ENRICHMENT": (Status.PENDING, "pending enrichment (security screening)"),
    "PENDING_AUTHORIZATION": (Status.PENDING, "pending authorization"),
    "QUEUED": (Status.PENDING, "queued"),
    "PENDING_SIGNATURE": (Status.PENDING, "pending signature"),
    "PENDING_3RD_PARTY_MANUAL_APPROVAL": (Status.PENDING, "pending 3rd party manual approval"),
    "PENDING_3RD_PARTY": (Status.PENDING, "pending 3rd party"),
    "PENDING_AML_CHECKUP": (Status.PENDING, "pending AML checkup (legacy)"),
    "BROADCASTING": (Status.PROCESSING, "broadcasting"),
    "COMPLETED": (Status.COMPLETED, "completed"),
    "CANCELLING": (Status.CANCELLING, "cancelling"),
    "CANCELLED": (Status.CANCELLED, "cancelled"),
    "BLOCKED": (Status.FAILED, "blocked by policy"),
    "REJECTED": (Status.FAILED, "rejected"),
    "FAILED": (Status.FAILED, "failed"),
    "TIMEOUT": (Status.FAILED, "timed out (legacy)"),
}

FIREBLOCKS_DEPOSIT = _table({**_FIREBLOCKS_COMMON, "CONFIRMING": (Status.PENDING, "confirming (funds not yet available)")})
"""Fireblocks ``status`` of an incoming transaction (own destination). ``CONFIRMING`` is pending:
the funds are not spendable before ``COMPLETED``. An incoming ``REJECTED`` with a freeze sub-status
is ``on_hold`` (decided in the parser: it depends on the sub-status and a setting)."""

FIREBLOCKS_WITHDRAWAL = _table({**_FIREBLOCKS_COMMON, "CONFIRMING": (Status.PROCESSING, "confirming on chain")})
"""Fireblocks ``status`` of an outgoing transaction (own source): ``CONFIRMING`` is already broadcast."""
