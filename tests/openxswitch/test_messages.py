"""Delivery envelopes, bounded labels and the builders the simulator posts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bridge.contract.events import TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.parse import parse_delivery
from tests.support import RECEIVED, fixture_bytes


def test_a_delivery_envelope_names_method_and_request_id() -> None:
    delivery = m.read_delivery(loads_exact(fixture_bytes("openxswitch/withdraw.confirmed.json")))
    assert (delivery.method, delivery.request_id, delivery.is_transfer) == ("withdraw.confirmed", "f71516a1a53acbc5a999ef9b6edda4", True)


def test_non_transfer_methods_are_envelopes_too() -> None:
    delivery = m.read_delivery(loads_exact(fixture_bytes("openxswitch/instant_swap.completed.json")))
    assert delivery.method == "instant_swap.completed" and not delivery.is_transfer


@pytest.mark.parametrize("document", [[], "text", 7, None, {}, {"method": ""}, {"method": 3}, {"params": {}}])
def test_json_that_is_no_delivery_is_refused(document: Any) -> None:
    with pytest.raises(ParseError):
        m.read_delivery(document)


@pytest.mark.parametrize(
    ("method", "family"),
    [("instant_swap.completed", "instant_swap"), ("internal_transfer.success", "internal_transfer"), ("x" * 300, "unknown"), ("kyc.done", "unknown")],
)
def test_ignored_methods_get_a_bounded_label(method: str, family: str) -> None:
    assert m.method_family(method) == family


def test_dead_letter_channel_is_the_method_only_for_documented_transfer_methods() -> None:
    assert m.dead_letter_channel("deposit.updated") == "deposit.updated"
    assert m.dead_letter_channel("withdraw.whatever-" + "x" * 100) == m.WEBHOOK_DLQ_CHANNEL
    assert m.dead_letter_channel(None) == m.WEBHOOK_DLQ_CHANNEL


def test_wallet_hint_never_raises() -> None:
    assert m.wallet_hint({"params": {"fromWalletId": "w1"}}) == "w1"
    assert m.wallet_hint({"params": {"toWalletId": "w2"}}) == "w2"
    assert m.wallet_hint({"params": {"wallet": {"id": "w3"}}}) == "w3"
    assert m.wallet_hint({"params": "nope"}) is None
    assert m.wallet_hint({"params": {"wallet": [1]}}) is None


def test_built_deliveries_keep_decimal_amounts_as_exact_json_numbers() -> None:
    params = m.withdrawal_params(
        transfer_id="t1",
        status="pending",
        amount=Decimal("0.100000000000000000000000000001"),
        network_fee=Decimal("0.1"),
        updated_at="2025-05-05T00:53:29.206Z",
        created_at="2025-05-05T00:53:29.206Z",
        wallet_id="w1",
    )
    body = m.delivery_body("r1", m.WITHDRAW_UNCONFIRMED, params)
    assert b'"amount":0.100000000000000000000000000001' in body and b'"networkFee":0.1,' in body
    [event] = parse_delivery(loads_exact(body), received_at=RECEIVED)
    assert isinstance(event, TransferEvent)
    assert (event.amount, event.fee, event.account.id) == ("0.100000000000000000000000000001", "0.1", "w1")


def test_built_deposits_have_the_documented_deposit_fields() -> None:
    params = m.deposit_params(
        transfer_id="d1",
        status="pending",
        amount=5,
        confirmation=2,
        updated_at="2025-05-05T00:53:29.206Z",
        created_at="2025-05-05T00:53:29.206Z",
        wallet_id="w9",
        destination="internal_transfer",
        tag_memo="77",
    )
    assert {"destination", "toWalletId", "tagMemo"} <= set(params)
    [event] = parse_delivery(loads_exact(m.delivery_body("r", m.DEPOSIT_UPDATED, params)), received_at=RECEIVED)
    assert isinstance(event, TransferEvent)
    assert (event.account.id, event.internal, event.address_tag, event.confirmations) == ("w9", True, {"memo": "77"}, 2)
