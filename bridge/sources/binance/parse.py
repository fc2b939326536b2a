"""Binance capital history rows → contract 1.1 events (``source.via = poll``).

Pure: a page's body and the time it was received in, events or dead letters out, never an
exception; a body that is not a list of rows is one ``refusal`` (the source dead-letters it whole). Each row is the
*current* state of one transfer, keyed by Binance's ``id`` (never ``txId``: one transaction can
fund several deposits, and internal transfers carry a pseudo hash). The status table is chosen by
endpoint: code ``1`` is a deposit's success but a withdrawal's cancellation.

What the provider reference leaves open is a ``Rules`` field (a setting of the ``binance:``
section), never a guess hidden here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.contract.events import Account, Direction, Provider, Source, Status, TransferEvent, Via, build_event
from bridge.contract.networks import canonical_network
from bridge.contract.parsing import (
    ParseResult,
    optional_decimal,
    optional_int,
    optional_str,
    parse_items,
    refusal,
    require_decimal,
    require_str,
)
from bridge.contract.status_tables import BINANCE_DEPOSIT, BINANCE_WITHDRAWAL, lookup
from bridge.contract.timeutil import TimestampError, format_utc_ms, from_epoch_ms
from bridge.sources.binance.messages import DEPOSIT_CHANNEL, LOCALENTITY_WITHDRAWAL_CHANNEL, SUB_DEPOSIT_CHANNEL, WITHDRAWAL_CHANNEL

__all__ = ["Rules", "DEFAULT_RULES", "parse_deposit", "parse_withdrawal", "parse_page", "utc_text", "confirmations_of", "DIRECTION_OF"]

DIRECTION_OF = {
    DEPOSIT_CHANNEL: Direction.DEPOSIT,
    SUB_DEPOSIT_CHANNEL: Direction.DEPOSIT,
    WITHDRAWAL_CHANNEL: Direction.WITHDRAWAL,
    LOCALENTITY_WITHDRAWAL_CHANNEL: Direction.WITHDRAWAL,
}
_TRAVEL_RULE = {1: "travel rule pending", 2: "travel rule failed"}
"""``travelRuleStatus`` of a localentity withdrawal (0: completed, the withdrawal proceeds)."""
_UTC_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CONFIRM_TIMES = re.compile(r"^\s*(\d{1,9})\s*/\s*(\d{1,9})\s*$")


@dataclass(frozen=True)
class Rules:
    """How the points the reference leaves open are read (each one a setting, see ``config``)."""

    status_overrides: Mapping[str, Mapping[str, Status]] = field(default_factory=dict)
    """Per direction (``deposit``/``withdrawal``) and code: the contract status to publish instead."""
    deposit_travel_rule_hold: bool = True
    """A deposit that would be credited or completed while ``travelRuleStatus`` is 1 is on_hold."""
    deposit_missing_id: Literal["dlq", "txid_fallback"] = "dlq"
    """A deposit row without ``id``: dead-letter it, or key it ``tx:{txId}:{address}:{addressTag}``."""
    internal_txid_as_tx_hash: bool = True
    """Internal transfers' ``txId`` (``Off-chain transfer …``) as ``tx_hash``; else null."""
    occurred_at_mode: Literal["complete_time", "observed"] = "complete_time"
    """``completeTime`` of a final row that has one, else the observation; or always the observation."""
    freeze_confirmations_after_final: bool = True
    """Final rows stop counting confirmations (a count still rising after the end would publish
    another ``completed``): deposits cap at the required count, withdrawals publish none."""


DEFAULT_RULES = Rules()


def utc_text(value: Any, *, field: str) -> str:
    """A withdrawal time, ``YYYY-MM-DD HH:MM:SS`` in UTC without a zone marker (never local time)."""
    if not isinstance(value, str) or not _UTC_TEXT.match(value):
        raise TimestampError(f"{field}: {str(value)[:40]!r} is not 'YYYY-MM-DD HH:MM:SS'")
    try:
        moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise TimestampError(f"{field}: {value!r} is not a calendar time") from None
    return format_utc_ms(moment)


def confirmations_of(value: Any) -> tuple[int | None, int | None]:
    """``"12/12"`` → (12, 12): seen and required; (None, None) when absent or malformed."""
    match = _CONFIRM_TIMES.match(value) if isinstance(value, str) else None
    if match is None:
        return None, None
    return int(match.group(1)), int(match.group(2))


def _status(rules: Rules, direction: Direction, code: str) -> tuple[Status, str | None]:
    table = BINANCE_DEPOSIT if direction is Direction.DEPOSIT else BINANCE_WITHDRAWAL
    status, text = lookup(table, code)
    override = rules.status_overrides.get(direction.value, {}).get(code)
    return (override if override is not None else status), text


def _address_tag(row: Mapping[str, Any]) -> dict[str, str] | None:
    tag = optional_str(row, "addressTag")
    return {"addressTag": tag} if tag is not None else None


def _internal(row: Mapping[str, Any]) -> bool | None:
    kind = optional_int(row, "transferType")
    return None if kind is None else kind == 1


def _tx_hash(row: Mapping[str, Any], internal: bool | None, rules: Rules) -> str | None:
    tx = optional_str(row, "txId")
    return None if internal and not rules.internal_txid_as_tx_hash else tx


def _deposit_id(row: Mapping[str, Any], rules: Rules) -> str:
    if optional_str(row, "id") is not None or rules.deposit_missing_id == "dlq":
        return require_str(row, "id")
    tx = require_str(row, "txId")
    return f"tx:{tx}:{optional_str(row, 'address') or ''}:{optional_str(row, 'addressTag') or ''}"


def parse_deposit(
    row: Mapping[str, Any],
    *,
    received_at: str,
    account: Account,
    channel: str = DEPOSIT_CHANNEL,
    rules: Rules = DEFAULT_RULES,
) -> TransferEvent:
    code = require_str(row, "status")
    status, text = _status(rules, Direction.DEPOSIT, code)
    if rules.deposit_travel_rule_hold and optional_int(row, "travelRuleStatus") == 1 and status in (Status.CREDITED, Status.COMPLETED):
        status, text = Status.ON_HOLD, f"{text or code}; travel rule information required"
    seen, required = confirmations_of(row.get("confirmTimes"))
    final = status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    if final and rules.freeze_confirmations_after_final and seen is not None and required is not None:
        seen = min(seen, required)
    internal = _internal(row)
    chain = optional_str(row, "network")
    occurred = received_at
    if final and rules.occurred_at_mode == "complete_time" and row.get("completeTime") not in (None, "", 0):
        occurred = from_epoch_ms(row["completeTime"], field="completeTime")
    return build_event(
        provider=Provider.BINANCE,
        direction=Direction.DEPOSIT,
        transfer_id=_deposit_id(row, rules),
        status=status,
        provider_status=code,
        provider_status_text=text,
        amount=require_decimal(row, "amount"),
        asset=require_str(row, "coin"),
        chain=chain,
        network=canonical_network(chain),
        confirmations=seen,
        tx_hash=_tx_hash(row, internal, rules),
        from_address=optional_str(row, "sourceAddress"),
        to_address=optional_str(row, "address"),
        address_tag=_address_tag(row),
        internal=internal,
        created_at=from_epoch_ms(row["insertTime"], field="insertTime") if row.get("insertTime") not in (None, "") else None,
        occurred_at=occurred,
        received_at=received_at,
        account=account,
        source=Source(channel=channel, via=Via.POLL),
        raw=dict(row),
    )


def parse_withdrawal(
    row: Mapping[str, Any], *, received_at: str, account: Account, channel: str = WITHDRAWAL_CHANNEL, rules: Rules = DEFAULT_RULES
) -> TransferEvent:
    """A ``capital/withdraw/history`` row, or a ``localentity/withdraw/history`` one: the same
    fields with the code in ``withdrawalStatus`` and a ``travelRuleStatus`` (shown in the status
    text, the code decides the status). Binance documents ``id`` and ``withdrawalStatus`` there
    for API withdrawals only: a row without them is dead-lettered, never keyed by a guess."""
    local = channel == LOCALENTITY_WITHDRAWAL_CHANNEL
    code = require_str(row, "withdrawalStatus" if local else "status")
    status, text = _status(rules, Direction.WITHDRAWAL, code)
    travel = _TRAVEL_RULE.get(optional_int(row, "travelRuleStatus") or 0) if local else None
    if travel is not None:
        text = f"{text or code}; {travel}"
    info = optional_str(row, "info")
    if info is not None:
        text = f"{text or code}: {info}"
    final = status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    confirmations = None if final and rules.freeze_confirmations_after_final else optional_int(row, "confirmNo")
    fee = optional_decimal(row, "transactionFee")
    coin = require_str(row, "coin")
    internal = _internal(row)
    chain = optional_str(row, "network")
    occurred = received_at
    if status is Status.COMPLETED and rules.occurred_at_mode == "complete_time" and row.get("completeTime") not in (None, ""):
        occurred = utc_text(row["completeTime"], field="completeTime")
    return build_event(
        provider=Provider.BINANCE,
        direction=Direction.WITHDRAWAL,
        transfer_id=require_str(row, "id"),
        client_transfer_id=optional_str(row, "withdrawOrderId"),
        status=status,
        provider_status=code,
        provider_status_text=text,
        amount=require_decimal(row, "amount"),
        fee=fee,
        fee_asset=coin.upper() if fee is not None else None,
        asset=coin,
        chain=chain,
        network=canonical_network(chain),
        confirmations=confirmations,
        tx_hash=_tx_hash(row, internal, rules),
        to_address=optional_str(row, "address"),
        address_tag=_address_tag(row),
        internal=internal,
        created_at=utc_text(row["applyTime"], field="applyTime") if row.get("applyTime") not in (None, "") else None,
        occurred_at=occurred,
        received_at=received_at,
        account=account,
        source=Source(channel=channel, via=Via.POLL),
        raw=dict(row),
    )


def _order(row: Any) -> tuple[int, str, str]:
    """Sort key: creation time then ``id`` (Binance does not specify the order of a page)."""
    if not isinstance(row, Mapping):
        return 1, "", ""
    created, ident = row.get("insertTime", row.get("applyTime", "")), row.get("id", "")
    if isinstance(created, int) and not isinstance(created, bool) and 0 <= created < 10**20:
        return 0, str(created).zfill(20), ident if isinstance(ident, str) else ""
    return 0, created if isinstance(created, str) else "", ident if isinstance(ident, str) else ""


def parse_page(
    channel: str, body: Any, *, received_at: str, account: Account, rules: Rules = DEFAULT_RULES
) -> list[ParseResult]:
    """One history page (a bare JSON array of rows), each row parsed on its own, oldest first.

    Never raises (the parser contract of ``bridge.contract.parsing``): a body that is not a list
    of rows, or a channel with no parser, is one ``refusal`` (the poll engine dead-letters the
    page whole and ends that read)."""
    reason = None
    if channel not in DIRECTION_OF:
        reason = f"unknown Binance channel {channel!r}"
    elif not isinstance(body, list):
        reason = f"{channel}: the page is not a JSON array but {type(body).__name__}"
    if reason is not None:
        return [refusal(reason, provider=Provider.BINANCE, channel=channel, payload=body, received_at=received_at, account_id=account.id)]
    rows = sorted(body, key=_order)
    if DIRECTION_OF[channel] is Direction.WITHDRAWAL:
        return parse_items(
            rows,
            lambda row: parse_withdrawal(row, received_at=received_at, account=account, channel=channel, rules=rules),
            provider=Provider.BINANCE,
            channel=channel,
            received_at=received_at,
            account_id=account.id,
        )
    return parse_items(
        rows,
        lambda row: parse_deposit(row, received_at=received_at, account=account, channel=channel, rules=rules),
        provider=Provider.BINANCE,
        channel=channel,
        received_at=received_at,
        account_id=account.id,
    )
