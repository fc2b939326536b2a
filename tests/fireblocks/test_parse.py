"""Normalization of Fireblocks transactions: direction rules, the status table, exact amounts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.contract.events import Direction, Status, TransferEvent, Via
from bridge.contract.parsing import item_bytes, refused
from bridge.contract.status_tables import FIREBLOCKS_DEPOSIT, FIREBLOCKS_WITHDRAWAL
from bridge.sources.fireblocks.parse import Rules, parse_delivery, parse_row, skip_reason

RECEIVED = "2026-11-22T10:00:00.000Z"
VAULT = {"type": "VAULT_ACCOUNT", "id": "7", "name": "customer-7", "subType": ""}
OUTSIDE = {"type": "UNKNOWN", "id": "", "name": "External", "subType": ""}
ONE_TIME = {"type": "ONE_TIME_ADDRESS", "id": None, "name": "N/A", "subType": ""}
TX: dict[str, Any] = {
    "id": "9390fb1e-552f-4357-9070-45cb8985ef51", "createdAt": 1761904800512, "lastUpdated": 1761904861117, "assetId": "ETH",
    "source": OUTSIDE, "destination": VAULT, "status": "CONFIRMING", "subStatus": "PENDING_BLOCKCHAIN_CONFIRMATIONS",
    "amount": 0.12345678901234568, "networkFee": -1, "netAmount": 0.12345678901234568,
    "sourceAddress": "0x9f2c", "destinationAddress": "0x5c3e", "destinationTag": "", "txHash": "0x4b1c", "operation": "TRANSFER",
    "feeCurrency": "ETH", "numOfConfirmations": 1, "externalTxId": None,
    "amountInfo": {"amount": "0.123456789012345678", "requestedAmount": "0.123456789012345678", "netAmount": "0.123456789012345678"},
    "feeInfo": {"networkFee": "0.002102079000378000"},
}


def tx(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(TX)
    document.update(changes)
    return document


def row(document: dict[str, Any], rules: Rules | None = None) -> list:
    return parse_row(document, received_at=RECEIVED, rules=rules or Rules(), workspace_id="ws")


def test_an_own_destination_is_a_deposit_with_the_vault_as_sub_account_exact_amount_and_no_fee() -> None:
    [event] = row(tx())
    assert (event.key, event.direction, event.account.sub_account, event.account.workspace_id) == (
        f"fireblocks:deposit:{TX['id']}", Direction.DEPOSIT, "7", "ws",
    )
    assert event.amount == "0.123456789012345678"  # the string, never the float-rounded number
    assert (event.fee, event.fee_asset, event.status, event.is_final) == (None, None, Status.PENDING, False)
    assert (event.chain, event.network, event.confirmations, event.internal) == ("ETH", "ethereum", 1, False)
    assert event.source.channel == "transactions" and event.source.via is Via.BACKFILL
    assert event.provider_status == "CONFIRMING" and "PENDING_BLOCKCHAIN_CONFIRMATIONS" in (event.provider_status_text or "")


def test_an_own_source_is_a_withdrawal_processing_while_confirming_with_the_network_fee_exact() -> None:
    [event] = row(tx(source=VAULT, destination=ONE_TIME, destinationTag="memo-1", externalTxId="wd-1"))
    assert (event.direction, event.status, event.account.sub_account) == (Direction.WITHDRAWAL, Status.PROCESSING, "7")
    assert (event.fee, event.fee_asset, event.client_transfer_id) == ("0.002102079000378", "ETH", "wd-1")
    assert event.address_tag == {"destinationTag": "memo-1"}


@pytest.mark.parametrize(
    ("mode", "directions"),
    [("both", [Direction.WITHDRAWAL, Direction.DEPOSIT]), ("withdrawal", [Direction.WITHDRAWAL]), ("deposit", [Direction.DEPOSIT]), ("skip", [])],
)
def test_a_vault_to_vault_transfer_is_internal_and_published_on_the_configured_sides(mode: str, directions: list) -> None:
    cold = {**VAULT, "id": "12"}
    events = row(tx(source=VAULT, destination=cold), Rules(internal_transfers=mode))
    assert [e.direction for e in events] == directions
    assert all(e.internal for e in events)
    assert {e.direction: e.account.sub_account for e in events} == {d: ("7" if d is Direction.WITHDRAWAL else "12") for d in directions}


def test_a_transfer_with_no_own_peer_or_another_operation_is_skipped_with_its_reason() -> None:
    assert skip_reason(tx(destination=ONE_TIME), Rules()) == "not_own"
    assert skip_reason(tx(operation="CONTRACT_CALL"), Rules()) == "operation"
    assert row(tx(destination=ONE_TIME)) == []
    owned = Rules(own_peer_types=frozenset({"VAULT_ACCOUNT", "EXCHANGE_ACCOUNT"}))
    [event] = row(tx(source={"type": "EXCHANGE_ACCOUNT", "id": "ex1"}, destination=ONE_TIME), owned)
    assert event.direction is Direction.WITHDRAWAL and event.account.sub_account == "ex1"


@pytest.mark.parametrize(
    ("status", "sub", "deposit", "withdrawal"),
    [
        ("SUBMITTED", "", Status.PENDING, Status.PENDING),
        ("PENDING_3RD_PARTY_MANUAL_APPROVAL", "", Status.PENDING, Status.PENDING),
        ("BROADCASTING", "", Status.PROCESSING, Status.PROCESSING),
        ("CONFIRMING", "", Status.PENDING, Status.PROCESSING),
        ("COMPLETED", "CONFIRMED", Status.COMPLETED, Status.COMPLETED),
        ("CANCELLING", "", Status.CANCELLING, Status.CANCELLING),
        ("CANCELLED", "CANCELLED_BY_USER", Status.CANCELLED, Status.CANCELLED),
        ("BLOCKED", "BLOCKED_BY_POLICY", Status.FAILED, Status.FAILED),
        ("FAILED", "INSUFFICIENT_FUNDS", Status.FAILED, Status.FAILED),
        ("REJECTED", "REJECTED_BY_USER", Status.FAILED, Status.FAILED),
        ("REJECTED", "AUTO_FREEZE", Status.ON_HOLD, Status.FAILED),
        ("REJECTED", "FROZEN_MANUALLY", Status.ON_HOLD, Status.FAILED),
        ("PARTIALLY_COMPLETED", "", Status.UNKNOWN, Status.UNKNOWN),
        ("SOMETHING_NEW", "", Status.UNKNOWN, Status.UNKNOWN),
    ],
)
def test_statuses_map_per_direction_and_an_incoming_frozen_rejection_is_on_hold(status: str, sub: str, deposit: Status, withdrawal: Status) -> None:
    [incoming] = row(tx(status=status, subStatus=sub))
    [outgoing] = row(tx(status=status, subStatus=sub, source=VAULT, destination=ONE_TIME))
    assert (incoming.status, outgoing.status) == (deposit, withdrawal)
    assert incoming.provider_status == status


def test_the_status_tables_cover_every_documented_status_and_only_final_ones_are_final() -> None:
    documented = {
        "SUBMITTED", "PENDING_AML_SCREENING", "PENDING_ENRICHMENT", "PENDING_AUTHORIZATION", "QUEUED", "PENDING_SIGNATURE",
        "PENDING_3RD_PARTY_MANUAL_APPROVAL", "PENDING_3RD_PARTY", "BROADCASTING", "CONFIRMING", "COMPLETED", "CANCELLING",
        "CANCELLED", "BLOCKED", "REJECTED", "FAILED", "PENDING_AML_CHECKUP", "TIMEOUT",
    }
    assert set(FIREBLOCKS_DEPOSIT) == set(FIREBLOCKS_WITHDRAWAL) == documented
    finals = {s for s, (status, _) in FIREBLOCKS_DEPOSIT.items() if status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)}
    assert finals == {"COMPLETED", "CANCELLED", "BLOCKED", "REJECTED", "FAILED", "TIMEOUT"}


def test_status_overrides_turn_a_documented_status_into_on_hold_per_sub_status() -> None:
    rules = Rules(status_overrides={"COMPLETED/COMPLETED_BUT_3RD_PARTY_FAILED": Status.ON_HOLD})
    [event] = row(tx(status="COMPLETED", subStatus="COMPLETED_BUT_3RD_PARTY_FAILED"), rules)
    assert event.status is Status.ON_HOLD and not event.is_final


def test_amounts_come_only_from_amount_info_and_a_missing_one_is_refused_not_read_from_the_number() -> None:
    letter = refused(row(tx(amountInfo={})))
    assert letter is not None and letter.reason == "missing required field 'amountInfo.amount'"
    assert (letter.channel, letter.account_id, letter.raw) == ("transactions", "ws", item_bytes(tx(amountInfo={})))
    [fallback] = row(tx(amountInfo={}, amount=__import__("decimal").Decimal("1.5")), Rules(amount_fallback="deprecated_number"))
    assert fallback.amount == "1.5"


def test_a_v1_and_a_v2_delivery_of_the_same_state_are_the_same_event_with_their_channels() -> None:
    v1 = {"type": "TRANSACTION_STATUS_UPDATED", "tenantId": "ws", "timestamp": 1761904861250, "data": tx()}
    v2 = {"id": "n-1", "eventType": "transaction.status.updated", "workspaceId": "ws", "createdAt": 1761904861250, "data": tx()}
    [a] = parse_delivery(v1, received_at=RECEIVED, rules=Rules())
    [b] = parse_delivery(v2, received_at=RECEIVED, rules=Rules())
    assert isinstance(a, TransferEvent) and isinstance(b, TransferEvent)
    assert a.event_id == b.event_id and a.account == b.account
    assert (a.source.channel, a.source.message_id, b.source.channel, b.source.message_id) == (
        "TRANSACTION_STATUS_UPDATED", None, "transaction.status.updated", "n-1",
    )
    letter = refused(parse_delivery(v2, received_at=RECEIVED, rules=Rules(workspace_id="another")))
    assert letter is not None and letter.reason == "workspace 'ws' is not the configured one"
