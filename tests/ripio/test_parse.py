"""Ripio messages and listing rows → contract v1, table-driven and pure (no broker, no clock)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from bridge.contract.events import DeadLetter, Direction, Provider, Status, TransferEvent, Via, encode_event
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import item_bytes, refused
from bridge.sources.ripio.parse import parse_message, parse_rows
from tests.support import RECEIVED, fixture_bytes


def message(name: str, **body_changes: Any) -> dict[str, Any]:
    loaded = copy.deepcopy(loads_exact(fixture_bytes(f"ripio/{name}")))
    loaded["body"].update(body_changes)
    return loaded  # type: ignore[no-any-return]


def listing(name: str) -> list[Any]:
    body = loads_exact(fixture_bytes(f"ripio/{name}"))
    return body["data"]["deposits" if "deposits" in body["data"] else "withdrawals"]  # type: ignore[no-any-return]


def only_event(results: list[Any]) -> TransferEvent:
    [event] = results
    assert isinstance(event, TransferEvent), event
    return event


def only_letter(results: list[Any]) -> DeadLetter:
    [letter] = results
    assert isinstance(letter, DeadLetter), letter
    return letter


STATUSES = [
    ("pending", Status.PENDING, False),
    ("confirmed", Status.COMPLETED, True),
    ("failed", Status.FAILED, True),
]


@pytest.mark.parametrize("fixture", ["deposit.crypto.json", "deposit.fiat.json", "withdrawal.json"])
@pytest.mark.parametrize(("value", "status", "final"), STATUSES)
def test_every_documented_status_maps_to_its_contract_status(fixture: str, value: str, status: Status, final: bool) -> None:
    event = only_event(parse_message(message(fixture, status=value), received_at=RECEIVED))
    assert (event.status, event.is_final, event.provider_status) == (status, final, value)
    assert event.provider_status_text


@pytest.mark.parametrize("fixture", ["deposit.crypto.json", "withdrawal.json"])
def test_an_unknown_status_is_published_as_unknown_with_the_raw_value(fixture: str) -> None:
    event = only_event(parse_message(message(fixture, status="under_review"), received_at=RECEIVED))
    assert (event.status, event.is_final, event.provider_status, event.provider_status_text) == (
        Status.UNKNOWN,
        False,
        "under_review",
        None,
    )


def test_a_crypto_deposit_maps_field_by_field() -> None:
    event = only_event(parse_message(message("deposit.crypto.json"), received_at=RECEIVED))
    assert event.model_dump(exclude={"event_id", "raw", "provider_status_text", "schema_version"}) == {
        "key": "ripio:deposit:08799ECC-F6B1-498E-B89C-2A05E6A181B9",
        "provider": "ripio",
        "direction": "deposit",
        "transfer_id": "08799ECC-F6B1-498E-B89C-2A05E6A181B9",
        "client_transfer_id": None,
        "account": {"id": "5B6A43AE-8012-402D-966F-87CF64689535", "sub_account": None, "workspace_id": None},
        "asset": "ETH",
        "chain": "ethereum",
        "network": "ethereum",
        "amount": "1",
        "fee": None,
        "fee_asset": None,
        "status": "completed",
        "is_final": True,
        "provider_status": "confirmed",
        "confirmations": None,
        "tx_hash": "0x79704c92b31061b8f51e26486d6454aff3e3c58aa0d51f0f803d6fd063be8100",
        "from_address": None,
        "to_address": "3PQhyXH1EZs1bZ23ZafqQDyeViqxn5KdXN",
        "address_tag": None,
        "internal": False,
        "created_at": "2023-01-09T13:39:24.057Z",
        "occurred_at": "2023-01-09T13:39:25.001Z",
        "received_at": RECEIVED,
        "source": {"channel": "deposit", "message_id": "10", "via": "push"},
    }


def test_a_fiat_deposit_is_internal_without_hash_address_or_network() -> None:
    event = only_event(parse_message(message("deposit.fiat.json"), received_at=RECEIVED))
    assert (event.asset, event.amount, event.internal) == ("BRL", "1000", True)
    assert (event.tx_hash, event.to_address, event.chain, event.network) == (None, None, None, None)


def test_a_withdrawal_carries_destination_fee_and_external_id_and_keeps_the_miner_fee_exact_in_raw() -> None:
    event = only_event(parse_message(message("withdrawal.json"), received_at=RECEIVED))
    assert event.direction is Direction.WITHDRAWAL and event.key == "ripio:withdrawal:A1DCD3B6-1CBD-4F17-ADA0-230ADEC04173"
    assert (event.amount, event.fee, event.fee_asset) == ("0.1", "0.0001", "BTC")
    assert (event.to_address, event.client_transfer_id) == ("bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh", "rtd-9012-lkju-908")
    assert (event.tx_hash, event.network, event.status) == (None, "bitcoin", Status.PENDING)
    assert b'"miner_fee":0.00002' in encode_event(event)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"0.1", "0.1"),
        (b"0.30000000000000004", "0.30000000000000004"),
        (b"1234567890123456.78901234567891", "1234567890123456.78901234567891"),  # 30 significant digits
        (b"0.000000000000000000000000000001", "0.000000000000000000000000000001"),
        (b"98765432109876543210987654321", "98765432109876543210987654321"),
        (b"1E-8", "0.00000001"),
        (b"2.50", "2.5"),
    ],
)
def test_numeric_amounts_read_exactly_keep_every_digit(wire: bytes, expected: str) -> None:
    frame = fixture_bytes("ripio/withdrawal.json").replace(b'"amount": 0.1', b'"amount": ' + wire)
    event = only_event(parse_message(loads_exact(frame), received_at=RECEIVED))
    assert event.amount == expected
    assert Decimal(event.amount) == Decimal(wire.decode())


def test_an_amount_read_as_a_float_is_refused_rather_than_rounded() -> None:
    letter = only_letter(parse_message(message("deposit.crypto.json", amount=0.1), received_at=RECEIVED))
    assert "float" in letter.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": None}, "status"),
        ({"id": None}, "id"),
        ({"amount": None}, "amount"),
        ({"amount": "1,5"}, "amount"),
        ({"amount": Decimal("-1")}, "negative"),
        ({"currency_code": ""}, "currency_code"),
        ({"create_date": "yesterday"}, "create_date"),
        ({"update_date": "2023-13-45T00:00:00Z"}, "update_date"),
        ({"is_internal": "no"}, "is_internal"),
        ({"hash": 42.5}, "hash"),
    ],
)
def test_a_malformed_body_becomes_a_dead_letter_with_its_bytes_and_the_reason(change: dict[str, Any], reason: str) -> None:
    letter = only_letter(parse_message(message("deposit.crypto.json", **change), received_at=RECEIVED))
    assert reason in letter.reason
    assert (letter.channel, letter.received_at) == ("deposit", RECEIVED)
    assert loads_exact(letter.raw)["id"] == message("deposit.crypto.json", **change)["body"]["id"]


def test_a_body_that_is_not_an_object_becomes_a_dead_letter() -> None:
    loaded = message("deposit.crypto.json")
    loaded["body"] = ["not", "an", "object"]
    assert "object" in only_letter(parse_message(loaded, received_at=RECEIVED)).reason


@pytest.mark.parametrize("topic", ["balance", "order_status", None, 5, ["deposit"]])
def test_a_message_for_another_topic_is_refused(topic: Any) -> None:
    loaded = message("deposit.crypto.json")
    loaded["topic"] = topic
    letter = refused(parse_message(loaded, received_at=RECEIVED))
    assert letter is not None and letter.reason.startswith("message for unexpected topic")
    assert (letter.provider, letter.channel, letter.raw) == (Provider.RIPIO, "stream", item_bytes(loaded))


def test_a_welcome_message_yields_nothing() -> None:
    assert parse_message(loads_exact(fixture_bytes("ripio/welcome.json")), received_at=RECEIVED) == []


@pytest.mark.parametrize(
    ("dates", "occurred"),
    [
        ({}, "2023-01-09T13:39:25.001Z"),
        ({"update_date": None}, "2023-01-09T13:39:25.001Z"),  # confirmation_date
        ({"update_date": None, "confirmation_date": None}, "2023-01-09T13:39:24.057Z"),  # create_date
        ({"update_date": None, "confirmation_date": None, "create_date": None}, "2023-01-09T13:39:51.764Z"),  # timestamp
    ],
)
def test_occurred_at_is_the_first_present_of_update_confirmation_creation_and_message_time(dates: dict[str, Any], occurred: str) -> None:
    event = only_event(parse_message(message("deposit.crypto.json", **dates), received_at=RECEIVED))
    assert event.occurred_at == occurred


def test_an_unreadable_message_timestamp_does_not_matter_while_the_body_has_dates() -> None:
    loaded = message("deposit.crypto.json")
    loaded["timestamp"] = 5
    assert only_event(parse_message(loaded, received_at=RECEIVED)).occurred_at == "2023-01-09T13:39:25.001Z"
    loaded["body"].update(update_date=None, confirmation_date=None, create_date=None)
    assert "timestamp" in only_letter(parse_message(loaded, received_at=RECEIVED)).reason


def test_listing_rows_arrive_via_backfill_named_for_the_configured_user() -> None:
    events = parse_rows("deposit", listing("deposits.listing.rest.json"), received_at=RECEIVED, user_id="USER-1")
    confirmed, pending = events
    assert isinstance(confirmed, TransferEvent) and isinstance(pending, TransferEvent)
    assert {e.source.via for e in (confirmed, pending)} == {Via.BACKFILL}
    assert {e.source.message_id for e in (confirmed, pending)} == {None}
    assert {e.account.id for e in (confirmed, pending)} == {"USER-1"}
    assert (confirmed.amount, confirmed.occurred_at, confirmed.status) == (
        "1234567890123456.78901234567891",
        "2023-01-09T13:49:25.001Z",
        Status.COMPLETED,
    )
    assert (pending.amount, pending.tx_hash, pending.address_tag, pending.network) == ("0.1", None, {"tag": "104857"}, "ripple")


def test_a_withdrawal_row_and_its_push_in_the_same_state_share_the_event_id() -> None:
    [row] = parse_rows("withdrawal", listing("withdrawals.listing.rest.json"), received_at=RECEIVED)
    pushed = message("withdrawal.json", status="confirmed", fee=0, hash=row.raw["hash"])  # type: ignore[union-attr]
    event = only_event(parse_message(pushed, received_at=RECEIVED))
    assert isinstance(row, TransferEvent)
    assert row.event_id == event.event_id and row.source.via is Via.BACKFILL and event.source.via is Via.PUSH


def test_one_bad_row_is_dead_lettered_and_the_others_are_kept() -> None:
    rows = listing("deposits.listing.rest.json")
    rows.insert(1, {**rows[0], "id": "BROKEN", "amount": "lots"})
    results = parse_rows("deposit", rows, received_at=RECEIVED)
    assert [type(item).__name__ for item in results] == ["TransferEvent", "DeadLetter", "TransferEvent"]
    assert b"BROKEN" in results[1].raw  # type: ignore[union-attr]


def test_rows_that_are_not_a_list_become_one_dead_letter() -> None:
    letter = only_letter(parse_rows("withdrawal", {"withdrawals": []}, received_at=RECEIVED))
    assert "not a list" in letter.reason and letter.raw
