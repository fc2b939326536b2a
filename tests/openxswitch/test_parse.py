"""OpenXSwitch deliveries → contract v1: table-driven and pure (no broker, no clock)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.contract.events import Direction, Provider, Status, TransferEvent, encode_event
from bridge.contract.jsonutil import dumps, loads_exact
from bridge.contract.parsing import refused
from bridge.sources.openxswitch.parse import TRANSFER_METHODS, is_transfer_method, parse_delivery
from tests.support import RECEIVED, fixture_bytes


def delivery(name: str, **params: Any) -> dict[str, Any]:
    """A fixture read the way the receiver reads it (numbers exact), ``params`` overridden."""
    body = copy.deepcopy(loads_exact(fixture_bytes(f"openxswitch/{name}.json")))
    for field, value in params.items():
        if value is ...:
            body["params"].pop(field, None)
        else:
            body["params"][field] = value
    return body


def parse(body: dict[str, Any]) -> TransferEvent:
    [event] = parse_delivery(body, received_at=RECEIVED)
    assert isinstance(event, TransferEvent), event
    return event


def refusal_reason(body: Any) -> str:
    """The reason ``parse_delivery`` refuses ``body`` with (it never raises)."""
    letter = refused(parse_delivery(body, received_at=RECEIVED))
    assert letter is not None and letter.provider is Provider.OPENXSWITCH
    return letter.reason


def exact(text: str) -> Any:
    """A JSON number as ``loads_exact`` yields it."""
    return loads_exact(text.encode())


# -- withdrawals ---------------------------------------------------------------------------------


def test_documented_withdraw_unconfirmed_is_a_pending_withdrawal() -> None:
    event = parse(delivery("withdraw.unconfirmed"))
    assert (event.direction, event.status, event.is_final) == (Direction.WITHDRAWAL, Status.PENDING, False)
    assert event.key == "openxswitch:withdrawal:68180c09b19304fc881991c2"
    assert event.client_transfer_id == "57337eed-eef3-4123-9e83-83107c4dafa3"
    assert (event.amount, event.fee, event.fee_asset, event.asset) == ("9", "0.01", "USDT", "USDT")
    assert (event.chain, event.network) == ("ERC20", "ethereum")
    assert event.tx_hash is None and event.confirmations == 0
    assert event.provider_status == "pending"
    assert event.created_at == "2025-05-05T00:53:29.206Z" and event.occurred_at == "2025-05-05T00:53:29.206Z"
    assert event.received_at == RECEIVED


def test_documented_withdraw_confirmed_is_a_completed_final_withdrawal() -> None:
    event = parse(delivery("withdraw.confirmed"))
    assert (event.status, event.is_final, event.provider_status) == (Status.COMPLETED, True, "success")
    assert event.tx_hash == "0x09e6d323086d462d0c4d0b3890d624451a82c6c28ba07d95a946a8544780..."
    assert event.confirmations == 20


def test_method_goes_to_the_channel_and_request_id_to_the_message_id() -> None:
    event = parse(delivery("withdraw.confirmed"))
    assert event.source.channel == "withdraw.confirmed"
    assert event.source.message_id == "f71516a1a53acbc5a999ef9b6edda4"
    assert event.source.via.value == "push"


def test_wallet_fields_land_in_the_account() -> None:
    event = parse(delivery("withdraw.unconfirmed"))
    assert event.account.id == "6812b103908d2d0d49c7ff79"
    assert event.account.workspace_id == "656abf1e4b5f5e0012345678"


def test_wallet_id_is_the_account_when_from_wallet_id_is_missing() -> None:
    body = delivery("withdraw.unconfirmed", fromWalletId=...)
    body["params"]["wallet"]["id"] = "wallet-only"
    assert parse(body).account.id == "wallet-only"


@pytest.mark.parametrize(
    ("raw_status", "status", "final"),
    [
        ("pending", Status.PENDING, False),
        ("success", Status.COMPLETED, True),
        ("confirmed", Status.COMPLETED, True),
        ("failed", Status.FAILED, True),
        ("canceled", Status.CANCELLED, True),
        ("cancelled", Status.CANCELLED, True),
        ("processing", Status.UNKNOWN, False),
    ],
)
def test_params_status_maps_per_the_contract(raw_status: str, status: Status, final: bool) -> None:
    event = parse(delivery("withdraw.confirmed", status=raw_status))
    assert (event.status, event.is_final, event.provider_status) == (status, final, raw_status)


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("withdraw.unconfirmed", Status.PENDING),
        ("withdraw.confirmed", Status.COMPLETED),
        ("deposit.pending", Status.PENDING),
        ("deposit.updated", Status.PENDING),
        ("deposit.success", Status.COMPLETED),
    ],
)
def test_without_params_status_the_method_suffix_decides(method: str, status: Status) -> None:
    body = delivery("deposit.pending" if method.startswith("deposit") else "withdraw.confirmed", status=...)
    body["method"] = method
    event = parse(body)
    assert (event.status, event.provider_status) == (status, method)


def test_an_undocumented_transfer_method_is_still_published_with_its_status() -> None:
    body = delivery("withdraw.confirmed", status="failed")
    body["method"] = "withdraw.failed"
    event = parse(body)
    assert (event.status, event.source.channel) == (Status.FAILED, "withdraw.failed")


# -- deposits ------------------------------------------------------------------------------------


def test_deposit_pending_is_owned_by_the_receiving_wallet() -> None:
    event = parse(delivery("deposit.pending"))
    assert (event.direction, event.status, event.is_final) == (Direction.DEPOSIT, Status.PENDING, False)
    assert event.key == "openxswitch:deposit:68190a11c2e4f5a6b7c8d9e0"
    assert event.account.id == "6812b103908d2d0d49c7ff79"
    assert (event.amount, event.network, event.internal) == ("1250.5", "tron", False)
    assert event.address_tag is None, "an empty tagMemo is no tag"


def test_deposit_updated_carries_rising_confirmations_as_distinct_states() -> None:
    pending = parse(delivery("deposit.pending"))
    updated = parse(delivery("deposit.updated"))
    later = parse(delivery("deposit.updated", confirmation=13))
    assert [e.confirmations for e in (pending, updated, later)] == [0, 12, 13]
    assert len({pending.event_id, updated.event_id, later.event_id}) == 3
    assert updated.status is Status.PENDING and updated.source.channel == "deposit.updated"


def test_deposit_success_is_final() -> None:
    event = parse(delivery("deposit.success"))
    assert (event.status, event.is_final, event.confirmations) == (Status.COMPLETED, True, 20)


def test_internal_deposit_has_no_hash_and_keeps_its_memo() -> None:
    event = parse(delivery("deposit.success.internal"))
    assert event.internal is True
    assert event.tx_hash is None
    assert event.address_tag == {"memo": "104285"}
    assert (event.asset, event.amount, event.network) == ("XRP", "0.1", "ripple")


def test_to_wallet_id_wins_over_the_wallet_object_for_deposits() -> None:
    body = delivery("deposit.pending", toWalletId="receiver")
    assert parse(body).account.id == "receiver"


# -- exact money ---------------------------------------------------------------------------------


def test_a_30_significant_digit_amount_survives_exactly() -> None:
    body = delivery("withdraw.unconfirmed", amount=exact("123456789012345678.901234567890123"))
    event = parse(body)
    assert event.amount == "123456789012345678.901234567890123"
    assert len(event.amount.replace(".", "")) >= 30


@pytest.mark.parametrize(("wire", "expected"), [("0.1", "0.1"), ("0.3", "0.3"), ("1.10", "1.1"), ("1E-8", "0.00000001"), ("100", "100")])
def test_json_number_amounts_and_fees_are_read_without_float(wire: str, expected: str) -> None:
    event = parse(delivery("withdraw.unconfirmed", amount=exact(wire), networkFee=exact(wire)))
    assert (event.amount, event.fee) == (expected, expected)


def test_raw_keeps_the_numbers_as_the_provider_wrote_them() -> None:
    body = fixture_bytes("openxswitch/withdraw.unconfirmed.json").replace(b'"networkFee": 0.01', b'"networkFee": 0.1000000000000000055511151231257827')
    event = parse(loads_exact(body))
    assert event.fee == "0.1000000000000000055511151231257827"
    assert b'"networkFee":0.1000000000000000055511151231257827' in encode_event(event)


def test_a_missing_network_fee_is_no_fee() -> None:
    event = parse(delivery("deposit.pending"))
    assert (event.fee, event.fee_asset) == (None, None)


# -- identity across deliveries ------------------------------------------------------------------


def test_a_redelivery_with_a_new_request_id_is_the_same_event() -> None:
    first = delivery("withdraw.confirmed")
    again = copy.deepcopy(first)
    again["requestId"] = "another-delivery-of-the-same-state"
    a, b = parse(first), parse(again)
    assert a.event_id == b.event_id and a.key == b.key
    assert a.source.message_id != b.source.message_id


# -- what is not a transfer ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["instant_swap.completed", "internal_transfer.completed", "foo", "", None, 7])
def test_methods_that_are_not_transfers_are_refused(method: Any) -> None:
    body = delivery("withdraw.confirmed")
    body["method"] = method
    assert not is_transfer_method(method)
    assert refusal_reason(body)


def test_the_five_documented_methods_are_transfers() -> None:
    assert TRANSFER_METHODS == {"withdraw.unconfirmed", "withdraw.confirmed", "deposit.pending", "deposit.updated", "deposit.success"}
    assert all(is_transfer_method(method) for method in TRANSFER_METHODS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"amount": ...}, "amount"),
        ({"id": ...}, "'id'"),
        ({"coin": ...}, "coin"),
        ({"amount": exact("-1")}, "negative"),
        ({"amount": "abc"}, "not a decimal"),
        ({"confirmation": exact("1.5")}, "whole number"),
        ({"updatedAt": ..., "createdAt": ...}, "updatedAt"),
        ({"wallet": "nope"}, "params.wallet"),
    ],
)
def test_a_transfer_that_cannot_be_normalized_says_why(params: dict[str, Any], message: str) -> None:
    assert message in refusal_reason(delivery("withdraw.confirmed", **params))


def test_an_unreadable_timestamp_is_a_timestamp_error() -> None:
    """Refused with the webhook's reason: the error's type, then its words."""
    reason = refusal_reason(delivery("withdraw.confirmed", updatedAt="yesterday"))
    assert reason.startswith("TimestampError: ") and "updatedAt" in reason


def test_params_must_be_an_object() -> None:
    body = delivery("withdraw.confirmed")
    body["params"] = [1, 2]
    assert "params" in refusal_reason(body)


def test_parsing_reads_no_clock() -> None:
    body = delivery("withdraw.confirmed")
    [event] = parse_delivery(body, received_at="2030-01-01T00:00:00.000Z")
    assert isinstance(event, TransferEvent) and event.received_at == "2030-01-01T00:00:00.000Z"
    assert dumps(parse(body).raw) == dumps(body)
