"""Fireblocks ``TransactionDetails`` → contract v1.1 events (one, or two for an internal transfer).

Pure: no I/O, no clock. Bodies are read with ``loads_exact``; amounts and fees come only from the
string objects ``amountInfo`` / ``feeInfo`` (the numeric top-level copies are float-rounded and
``-1`` while unknown). Direction is ours (no field exists): a peer is *own* when its type is in
``Rules.own_peer_types``; own destination only → deposit, own source only → withdrawal, both →
internal (both sides by default), neither → nothing (``skip_reason`` says why). The entry points
(``parse_delivery``, ``parse_row``) follow the parser contract of ``bridge.contract.parsing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.contract.events import Account, Direction, Provider, Source, Status, TransferEvent, Via, build_event
from bridge.contract.networks import canonical_network
from bridge.contract.parsing import (
    ParseError,
    ParseResult,
    check_depth,
    error_reason,
    optional_decimal,
    optional_int,
    optional_str,
    refusal,
    require_decimal,
    require_mapping,
    require_str,
)
from bridge.contract.status_tables import FIREBLOCKS_DEPOSIT, FIREBLOCKS_WITHDRAWAL, lookup
from bridge.contract.timeutil import from_epoch_ms
from bridge.sources.fireblocks.messages import BACKFILL_CHANNEL, WEBHOOK_DLQ_CHANNEL, Envelope, read_envelope

__all__ = ["Rules", "sides", "skip_reason", "parse_transaction", "parse_delivery", "parse_row", "last_updated_ms"]


@dataclass(frozen=True)
class Rules:
    """The settings that decide what a transaction becomes (``FireblocksConfig`` → ``Rules.of``)."""

    own_peer_types: frozenset[str] = frozenset({"VAULT_ACCOUNT"})
    internal_transfers: str = "both"
    operations: frozenset[str] = frozenset({"TRANSFER"})
    frozen_substatuses: frozenset[str] = frozenset({"AUTO_FREEZE", "FROZEN_MANUALLY"})
    status_overrides: Mapping[str, Status] = field(default_factory=dict)
    deposit_fee: bool = False
    chain_from: str = "fee_currency"
    amount_fallback: str = "dlq"
    workspace_id: str | None = None

    @classmethod
    def of(cls, config: Any) -> Rules:
        return cls(
            own_peer_types=frozenset(config.own_peer_types),
            internal_transfers=config.internal_transfers,
            operations=frozenset(config.operations),
            frozen_substatuses=frozenset(config.frozen_substatuses),
            status_overrides={k: Status(v) for k, v in config.status_overrides.items()},
            deposit_fee=config.deposit_fee,
            chain_from=config.chain_from,
            amount_fallback=config.amount_fallback,
            workspace_id=config.workspace_id,
        )


def _peer(tx: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return require_mapping(tx.get(name), name)


def sides(tx: Mapping[str, Any], rules: Rules) -> list[tuple[Direction, str | None]]:
    """Which sides are ours, each with its own vault id (the ``sub_account``)."""
    source, destination = _peer(tx, "source"), _peer(tx, "destination")
    source_own = optional_str(source, "type") in rules.own_peer_types
    destination_own = optional_str(destination, "type") in rules.own_peer_types
    withdrawal = (Direction.WITHDRAWAL, optional_str(source, "id"))
    deposit = (Direction.DEPOSIT, optional_str(destination, "id"))
    if source_own and destination_own:
        mode = rules.internal_transfers
        return [withdrawal, deposit] if mode == "both" else [withdrawal] if mode == "withdrawal" else [deposit] if mode == "deposit" else []
    if destination_own:
        return [deposit]
    if source_own:
        return [withdrawal]
    return []


def skip_reason(tx: Mapping[str, Any], rules: Rules) -> str | None:
    """Why a well-formed transaction is acknowledged but not published (a metric family), or None."""
    if optional_str(tx, "operation") not in rules.operations:
        return "operation"
    if not sides(tx, rules):
        return "not_own"
    return None


def last_updated_ms(tx: Mapping[str, Any]) -> int | None:
    value = tx.get("lastUpdated")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status(direction: Direction, status: str, sub: str | None, rules: Rules) -> tuple[Status, str | None]:
    table = FIREBLOCKS_DEPOSIT if direction is Direction.DEPOSIT else FIREBLOCKS_WITHDRAWAL
    mapped, text = lookup(table, status)
    if direction is Direction.DEPOSIT and status == "REJECTED" and sub in rules.frozen_substatuses:
        mapped, text = Status.ON_HOLD, "frozen on our address until unfrozen"
    for key in (f"{direction.value}:{status}/{sub or ''}", f"{status}/{sub or ''}", f"{direction.value}:{status}", status):
        if key in rules.status_overrides:
            mapped = rules.status_overrides[key]
            break
    if sub:
        text = f"{text or status} ({sub})"
    return mapped, text


def _amount(tx: Mapping[str, Any], rules: Rules) -> str:
    info = tx.get("amountInfo")
    if isinstance(info, Mapping) and info.get("amount") not in (None, ""):
        return require_decimal(info, "amount")
    if rules.amount_fallback == "deprecated_number" and tx.get("amount") is not None:
        amount = require_decimal(tx, "amount")
        if not amount.startswith("-"):
            return amount
    raise ParseError("missing required field 'amountInfo.amount'")


def _confirmations(tx: Mapping[str, Any]) -> int | None:
    try:
        return optional_int(tx, "numOfConfirmations")
    except ParseError:  # "when an integer, else null"
        return None


def parse_transaction(
    tx: Mapping[str, Any],
    *,
    rules: Rules,
    received_at: str,
    source: Source,
    workspace_id: str | None,
    fallback_ms: Any = None,
    raw: Mapping[str, Any] | None = None,
) -> list[TransferEvent]:
    """The events of one transaction's current state (empty when nothing of it is ours to publish)."""
    check_depth(tx, "data")
    transfer_id = require_str(tx, "id")
    if skip_reason(tx, rules) is not None:
        return []
    status_raw = require_str(tx, "status")
    sub = optional_str(tx, "subStatus")
    amount = _amount(tx, rules)
    asset = require_str(tx, "assetId")
    fee_currency = optional_str(tx, "feeCurrency")
    fee_info = tx.get("feeInfo")
    network_fee = optional_decimal(fee_info, "networkFee") if isinstance(fee_info, Mapping) else None
    occurred = tx.get("lastUpdated") if tx.get("lastUpdated") is not None else fallback_ms
    if occurred is None:
        raise ParseError("missing both 'lastUpdated' and the envelope's time")
    occurred_at = from_epoch_ms(occurred, field="lastUpdated")
    created_at = from_epoch_ms(tx["createdAt"], field="createdAt") if tx.get("createdAt") is not None else None
    tag = optional_str(tx, "destinationTag")
    chain = fee_currency if rules.chain_from == "fee_currency" else None
    both = _both_own(tx, rules)
    events = []
    for direction, vault in sides(tx, rules):
        status, text = _status(direction, status_raw, sub, rules)
        fee = network_fee if direction is Direction.WITHDRAWAL or rules.deposit_fee else None
        events.append(
            build_event(
                provider=Provider.FIREBLOCKS,
                direction=direction,
                transfer_id=transfer_id,
                client_transfer_id=optional_str(tx, "externalTxId"),
                status=status,
                provider_status=status_raw,
                provider_status_text=text,
                amount=amount,
                fee=fee,
                fee_asset=fee_currency.upper() if fee is not None and fee_currency else None,
                asset=asset,
                chain=chain,
                network=canonical_network(chain),
                confirmations=_confirmations(tx),
                tx_hash=optional_str(tx, "txHash"),
                from_address=optional_str(tx, "sourceAddress"),
                to_address=optional_str(tx, "destinationAddress"),
                address_tag={"destinationTag": tag} if tag else None,
                internal=both,
                created_at=created_at,
                occurred_at=occurred_at,
                received_at=received_at,
                account=Account(id=workspace_id, sub_account=vault, workspace_id=workspace_id),
                source=source,
                raw=dict(raw if raw is not None else tx),
            )
        )
    return events


def _both_own(tx: Mapping[str, Any], rules: Rules) -> bool:
    return all(optional_str(_peer(tx, name), "type") in rules.own_peer_types for name in ("source", "destination"))


def parse_delivery(document: Any, *, received_at: str, rules: Rules) -> list[ParseResult]:
    """A whole webhook body (v1 or v2 envelope) of a transaction event: its events, under the parser
    contract of ``bridge.contract.parsing`` — never raises; a body that is not a transaction event
    we can normalize is one ``refusal`` whose reason reads as the webhook's (``error_reason``)."""
    try:
        return list(delivery_events(document, received_at=received_at, rules=rules))
    except ValueError as exc:  # ParseError, TimestampError, the contract's ValidationError, int() digits
        reason = error_reason(exc)
        return [refusal(reason, provider=Provider.FIREBLOCKS, channel=WEBHOOK_DLQ_CHANNEL, payload=document, received_at=received_at)]


def parse_row(row: Any, *, received_at: str, rules: Rules, workspace_id: str | None) -> list[ParseResult]:
    """One ``GET /v1/transactions`` row (the same ``TransactionDetails``), ``via = backfill``; never
    raises: a row that cannot be normalized is one ``refusal``, as ``parse_delivery``."""
    try:
        return list(row_events(row, received_at=received_at, rules=rules, workspace_id=workspace_id))
    except ValueError as exc:
        reason = error_reason(exc)
        return [refusal(reason, provider=Provider.FIREBLOCKS, channel=BACKFILL_CHANNEL, payload=row, received_at=received_at, account_id=workspace_id)]


def delivery_events(document: Any, *, received_at: str, rules: Rules) -> list[TransferEvent]:
    """``parse_delivery``'s reading, for this package only: raises (a ``ValueError``) instead of
    refusing, so ``dlq replay`` keeps the exception's own words as its reason."""
    check_depth(document, "delivery")
    envelope: Envelope = read_envelope(document)
    if not envelope.is_transaction:
        raise ParseError(f"event type {envelope.event_type[:80]!r} is not a transaction event")
    workspace = envelope.workspace_id
    if rules.workspace_id is not None and workspace != rules.workspace_id:
        raise ParseError(f"workspace {str(workspace)[:40]!r} is not the configured one")
    source = Source(channel=envelope.event_type, message_id=envelope.message_id, via=Via.PUSH)
    return parse_transaction(
        envelope.data, rules=rules, received_at=received_at, source=source, workspace_id=workspace,
        fallback_ms=envelope.sent_ms, raw=envelope.document,
    )


def row_events(row: Any, *, received_at: str, rules: Rules, workspace_id: str | None) -> list[TransferEvent]:
    """``parse_row``'s reading, raising as ``delivery_events``."""
    tx = require_mapping(row, "transaction")
    source = Source(channel=BACKFILL_CHANNEL, via=Via.BACKFILL)
    return parse_transaction(tx, rules=rules, received_at=received_at, source=source, workspace_id=workspace_id)
