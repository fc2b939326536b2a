"""OpenXSwitch webhook deliveries (``withdraw.*``, ``deposit.*``) → contract v1.

Pure: no I/O, no clock; ``parse_delivery`` never raises. Amounts and fees are JSON numbers: the receiver reads bodies with
``bridge.contract.jsonutil.loads_exact`` so they arrive here as ``Decimal``/``int``, never float.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.contract.events import Account, Direction, Provider, Source, TransferEvent, build_event
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
from bridge.contract.status_tables import OPENXSWITCH, OPENXSWITCH_METHOD_SUFFIX, lookup
from bridge.contract.timeutil import from_iso

__all__ = ["TRANSFER_METHODS", "WEBHOOK_DLQ_CHANNEL", "direction_of", "is_transfer_method", "parse_delivery"]

_PREFIXES: dict[str, Direction] = {"withdraw": Direction.WITHDRAWAL, "deposit": Direction.DEPOSIT}
TRANSFER_METHODS = frozenset(
    {"withdraw.unconfirmed", "withdraw.confirmed", "deposit.pending", "deposit.updated", "deposit.success"}
)
WEBHOOK_DLQ_CHANNEL = "webhook"
"""DLQ channel of bodies that are not a delivery at all (not JSON, no ``method``), or whose method
is not one of the documented transfer methods: keeps the DLQ key and metric labels bounded."""


def direction_of(method: str) -> Direction | None:
    return _PREFIXES.get(method.split(".", 1)[0])


def is_transfer_method(method: object) -> bool:
    """Transfer events are normalized; others (``internal_transfer.*``, ...) are only acknowledged."""
    return isinstance(method, str) and direction_of(method) is not None


def _internal(destination: str | None) -> bool | None:
    if destination == "internal_transfer":
        return True
    if destination == "on_chain":
        return False
    return None


def parse_delivery(delivery: Any, *, received_at: str) -> list[ParseResult]:
    """A whole webhook body ``{requestId, method, params}``: its one event, under the parser
    contract of ``bridge.contract.parsing`` — never raises; a body that is not a transfer we can
    normalize is one ``refusal`` whose reason reads as the webhook's (``error_reason``)."""
    try:
        return [delivery_event(delivery, received_at=received_at)]
    except ValueError as exc:  # ParseError, TimestampError, the contract's ValidationError, int() digits
        method = delivery.get("method") if isinstance(delivery, Mapping) else None
        channel = method if isinstance(method, str) and method in TRANSFER_METHODS else WEBHOOK_DLQ_CHANNEL
        return [refusal(error_reason(exc), provider=Provider.OPENXSWITCH, channel=channel, payload=delivery, received_at=received_at)]


def delivery_event(delivery: Any, *, received_at: str) -> TransferEvent:
    """``parse_delivery``'s reading, for this package only: raises (a ``ValueError``) instead of
    refusing, so ``dlq replay`` keeps the exception's own words as its reason."""
    delivery = require_mapping(delivery, "delivery")
    check_depth(delivery, "delivery")
    method = require_str(delivery, "method")
    direction = direction_of(method)
    if direction is None:
        raise ParseError(f"method {method!r} is not a transfer event")
    params = require_mapping(delivery.get("params"), "params")
    raw_status = optional_str(params, "status")
    if raw_status is not None:
        status, text = lookup(OPENXSWITCH, raw_status)
        provider_status = raw_status
    else:
        suffix = method.split(".", 1)[1] if "." in method else ""
        status, text = lookup(OPENXSWITCH_METHOD_SUFFIX, suffix)
        provider_status = method
    wallet = params.get("wallet")
    wallet_id = optional_str(require_mapping(wallet, "params.wallet"), "id") if wallet is not None else None
    own_wallet = "fromWalletId" if direction is Direction.WITHDRAWAL else "toWalletId"
    coin = require_str(params, "coin")
    chain = optional_str(params, "chain")
    tag = optional_str(params, "tagMemo")
    fee = optional_decimal(params, "networkFee")
    created = from_iso(params["createdAt"], field="createdAt") if params.get("createdAt") else None
    occurred = from_iso(params["updatedAt"], field="updatedAt") if params.get("updatedAt") else created
    if occurred is None:
        raise ParseError("missing both 'updatedAt' and 'createdAt'")
    return build_event(
        provider=Provider.OPENXSWITCH,
        direction=direction,
        transfer_id=require_str(params, "id"),
        client_transfer_id=optional_str(params, "clientTxId"),
        status=status,
        provider_status=provider_status,
        provider_status_text=text,
        amount=require_decimal(params, "amount"),
        fee=fee,
        fee_asset=coin.upper() if fee is not None else None,
        asset=coin,
        chain=chain,
        network=canonical_network(optional_str(params, "network"), chain),
        confirmations=optional_int(params, "confirmation"),
        tx_hash=optional_str(params, "hash"),
        from_address=optional_str(params, "fromAddress"),
        to_address=optional_str(params, "toAddress"),
        address_tag={"memo": tag} if tag else None,
        internal=_internal(optional_str(params, "destination")),
        created_at=created,
        occurred_at=occurred,
        received_at=received_at,
        account=Account(
            id=optional_str(params, own_wallet) or wallet_id,
            workspace_id=optional_str(params, "workspaceId"),
        ),
        source=Source(channel=method, message_id=optional_str(delivery, "requestId")),
        raw=dict(delivery),
    )
