"""OpenXSwitch webhook deliveries in the provider's own vocabulary (field names as on the wire).

Pure (no I/O, no clock). A delivery is ``{"requestId", "method", "params"}``. This module tells a
delivery envelope apart from anything else, names method families for bounded metric labels, and
builds well-formed deliveries for the simulator — the same shapes as the provider's documented
examples (``tests/fixtures/openxswitch/``), amounts as JSON numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.contract.jsonutil import dumps
from bridge.contract.parsing import ParseError
from bridge.sources.openxswitch.parse import TRANSFER_METHODS, WEBHOOK_DLQ_CHANNEL, is_transfer_method

__all__ = [
    "WITHDRAW_UNCONFIRMED",
    "WITHDRAW_CONFIRMED",
    "DEPOSIT_PENDING",
    "DEPOSIT_UPDATED",
    "DEPOSIT_SUCCESS",
    "TRANSFER_METHODS",
    "KNOWN_OTHER_FAMILIES",
    "WEBHOOK_DLQ_CHANNEL",
    "Delivery",
    "read_delivery",
    "method_family",
    "dead_letter_channel",
    "wallet_hint",
    "withdrawal_params",
    "deposit_params",
    "delivery_body",
]

WITHDRAW_UNCONFIRMED = "withdraw.unconfirmed"
WITHDRAW_CONFIRMED = "withdraw.confirmed"
DEPOSIT_PENDING = "deposit.pending"
DEPOSIT_UPDATED = "deposit.updated"
DEPOSIT_SUCCESS = "deposit.success"

KNOWN_OTHER_FAMILIES = frozenset({"internal_transfer", "instant_swap"})
"""Documented methods that are not deposits or withdrawals: acknowledged and counted only."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The envelope of one webhook call; ``document`` is the whole parsed body."""

    request_id: str | None
    method: str
    document: Mapping[str, Any]

    @property
    def is_transfer(self) -> bool:
        return is_transfer_method(self.method)


def read_delivery(document: Any) -> Delivery:
    """The envelope, or ParseError when the JSON is not a webhook delivery (no object, no method)."""
    if not isinstance(document, Mapping):
        raise ParseError(f"body is a JSON {type(document).__name__}, not a webhook delivery object")
    method = document.get("method")
    if not isinstance(method, str) or not method.strip():
        raise ParseError("body has no 'method': not a webhook delivery")
    request_id = document.get("requestId")
    return Delivery(
        request_id=str(request_id) if isinstance(request_id, (str, int)) and not isinstance(request_id, bool) else None,
        method=method,
        document=document,
    )


def method_family(method: str) -> str:
    """Bounded label for a method that is not a transfer: its documented family, else ``unknown``."""
    family = method.split(".", 1)[0]
    return family if family in KNOWN_OTHER_FAMILIES else "unknown"


def dead_letter_channel(method: str | None) -> str:
    return method if method in TRANSFER_METHODS else WEBHOOK_DLQ_CHANNEL


def wallet_hint(document: Mapping[str, Any]) -> str | None:
    """Best-effort owner of an unparseable delivery, for the DLQ record's account header; never raises."""
    params = document.get("params")
    if not isinstance(params, Mapping):
        return None
    for name in ("fromWalletId", "toWalletId"):
        if isinstance(params.get(name), str) and params[name]:
            return str(params[name])
    wallet = params.get("wallet")
    if isinstance(wallet, Mapping) and isinstance(wallet.get("id"), str) and wallet["id"]:
        return str(wallet["id"])
    return None


# -- builders (simulator, tests) ---------------------------------------------------------------


def _wallet(wallet_id: str, coin: str, balance: Decimal | int) -> dict[str, Any]:
    return {
        "id": wallet_id,
        "clientUserId": None,
        "email": "wallet@example.invalid",
        "name": "simulated-wallet",
        "asset": {"coin": coin, "balance": balance, "frozen": 0, "updatedAt": "2025-05-04T23:58:20.494Z"},
        "isSubWallet": False,
    }


def withdrawal_params(
    *,
    transfer_id: str,
    status: str,
    amount: Decimal | int,
    updated_at: str,
    created_at: str,
    wallet_id: str,
    coin: str = "USDT",
    chain: str = "ERC20",
    network: str = "Ethereum",
    network_fee: Decimal | int | None = Decimal("0.01"),
    confirmation: int = 0,
    tx_hash: str | None = None,
    client_tx_id: str | None = None,
    workspace_id: str = "656abf1e4b5f5e0012345678",
) -> dict[str, Any]:
    """``params`` of ``withdraw.*``, field by field as in the provider's example."""
    return {
        "id": transfer_id,
        "clientTxId": client_tx_id,
        "coin": coin,
        "chain": chain,
        "network": network,
        "amount": amount,
        "fromAddress": "0x5523985926Aa12....678D7227E",
        "toAddress": "0x9a1f0b4C21dE77....1c3B0aA0e",
        "hash": tx_hash,
        "status": status,
        "networkFee": network_fee,
        "confirmation": confirmation,
        "fromWalletId": wallet_id,
        "workspaceId": workspace_id,
        "createdAt": created_at,
        "updatedAt": updated_at,
        "wallet": _wallet(wallet_id, coin, amount),
    }


def deposit_params(
    *,
    transfer_id: str,
    status: str,
    amount: Decimal | int,
    updated_at: str,
    created_at: str,
    wallet_id: str,
    confirmation: int,
    coin: str = "USDT",
    chain: str = "TRC20",
    network: str = "Tron",
    tx_hash: str | None = None,
    destination: str = "on_chain",
    tag_memo: str | None = None,
    workspace_id: str = "656abf1e4b5f5e0012345678",
) -> dict[str, Any]:
    """``params`` of ``deposit.*``: the withdrawal shape plus ``destination``, ``toWalletId``, ``tagMemo``."""
    return {
        "id": transfer_id,
        "coin": coin,
        "chain": chain,
        "network": network,
        "amount": amount,
        "fromAddress": "TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE",
        "toAddress": "TXLAQ63Xg1NAzckPwKHvzw7CSEmLMEqcdj",
        "hash": tx_hash,
        "status": status,
        "confirmation": confirmation,
        "destination": destination,
        "toWalletId": wallet_id,
        "tagMemo": tag_memo,
        "workspaceId": workspace_id,
        "createdAt": created_at,
        "updatedAt": updated_at,
        "wallet": _wallet(wallet_id, coin, amount),
    }


def delivery_body(request_id: str, method: str, params: Mapping[str, Any]) -> bytes:
    """The exact bytes a sender posts (and signs); ``Decimal`` amounts become JSON numbers."""
    return dumps({"requestId": request_id, "method": method, "params": dict(params)})
