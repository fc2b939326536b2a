"""OKX payloads → contract v1, table-driven and pure (no broker, no clock)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from bridge.contract.events import DeadLetter, Provider, Status, TransferEvent, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import item_bytes, refused
from bridge.sources.okx.parse import parse_push, parse_rows
from tests.support import RECEIVED, fixture_bytes


def push(name: str) -> dict[str, Any]:
    return orjson.loads(fixture_bytes(f"okx/{name}"))


def with_item(name: str, **changes: Any) -> dict[str, Any]:
    message = copy.deepcopy(push(name))
    message["data"][0].update(changes)
    return message


def only_event(results: list[Any]) -> TransferEvent:
    [event] = results
    assert isinstance(event, TransferEvent), event
    return event


DEPOSIT_STATES = [
    ("0", Status.PENDING, False),
    ("1", Status.CREDITED, False),
    ("2", Status.COMPLETED, True),
    ("8", Status.ON_HOLD, False),
    ("11", Status.ON_HOLD, False),
    ("12", Status.ON_HOLD, False),
    ("13", Status.ON_HOLD, False),
    ("14", Status.ON_HOLD, False),
    ("17", Status.PENDING, False),
]

WITHDRAWAL_STATES = [
    ("17", Status.PENDING, False),
    ("10", Status.PENDING, False),
    ("0", Status.PENDING, False),
    ("4", Status.PENDING, False),
    ("5", Status.PENDING, False),
    ("6", Status.PENDING, False),
    ("8", Status.PENDING, False),
    ("9", Status.PENDING, False),
    ("12", Status.PENDING, False),
    ("19", Status.PENDING, False),
    ("7", Status.PROCESSING, False),
    ("1", Status.PROCESSING, False),
    ("15", Status.PROCESSING, False),
    ("16", Status.PROCESSING, False),
    ("-3", Status.CANCELLING, False),
    ("-2", Status.CANCELLED, True),
    ("-1", Status.FAILED, True),
    ("2", Status.COMPLETED, True),
]


@pytest.mark.parametrize(("state", "status", "final"), DEPOSIT_STATES)
def test_every_deposit_state_maps_to_its_contract_status(state: str, status: Status, final: bool) -> None:
    event = only_event(parse_push(with_item("deposit-info.push.json", state=state), received_at=RECEIVED))
    assert (event.status, event.is_final, event.provider_status) == (status, final, state)
    assert event.provider_status_text


@pytest.mark.parametrize(("state", "status", "final"), WITHDRAWAL_STATES)
def test_every_withdrawal_state_maps_to_its_contract_status(state: str, status: Status, final: bool) -> None:
    event = only_event(parse_push(with_item("withdrawal-info.push.json", state=state), received_at=RECEIVED))
    assert (event.status, event.is_final, event.provider_status) == (status, final, state)
    assert event.provider_status_text


@pytest.mark.parametrize("channel_fixture", ["deposit-info.push.json", "withdrawal-info.push.json"])
def test_an_undocumented_state_is_published_as_unknown_with_the_raw_code(channel_fixture: str) -> None:
    event = only_event(parse_push(with_item(channel_fixture, state="99"), received_at=RECEIVED))
    assert (event.status, event.provider_status, event.is_final) == (Status.UNKNOWN, "99", False)


def test_the_documented_deposit_push_becomes_a_pending_event_of_the_sub_account() -> None:
    event = only_event(parse_push(push("deposit-info.push.json"), received_at=RECEIVED))
    assert event.key == "okx:deposit:88165462"
    assert event.account.id == "289320****60975104"
    assert event.account.sub_account == "test"
    assert (event.asset, event.chain, event.network, event.amount) == ("USDT", "USDT-TRC20", "tron", "1")
    assert event.confirmations == 0
    assert event.created_at == "2023-01-19T04:47:41.123Z"
    assert event.occurred_at == "2023-01-19T04:47:41.147Z"
    assert event.received_at == RECEIVED
    assert (event.source.channel, event.source.via) == ("deposit-info", Via.PUSH)
    assert event.internal is False


def test_masked_addresses_and_hashes_are_carried_exactly_as_sent() -> None:
    event = only_event(parse_push(push("deposit-info.push.json"), received_at=RECEIVED))
    assert event.to_address == "TEhFAqpuHa3LY*****8ByNoGnrmexeGMw"
    assert event.tx_hash == "bc5376817*****************dbb0d729f6b"
    assert event.raw is not None and event.raw["to"] == "TEhFAqpuHa3LY*****8ByNoGnrmexeGMw"


def test_a_master_account_item_has_no_sub_account() -> None:
    event = only_event(parse_push(with_item("deposit-info.push.json", subAcct=""), received_at=RECEIVED))
    assert event.account.sub_account is None


def test_the_documented_withdrawal_push_with_addrEx_null_has_no_address_tag() -> None:
    event = only_event(parse_push(push("withdrawal-info.push.json"), received_at=RECEIVED))
    assert event.key == "okx:withdrawal:63754560"
    assert event.address_tag is None
    assert (event.fee, event.fee_asset) == ("0.8", "USDT")
    assert event.tx_hash is None  # "" means none yet
    assert event.client_transfer_id is None
    assert event.internal is False  # toAddrType 1: wallet address
    assert event.raw is not None and event.raw["addrEx"] is None


def test_addrEx_and_client_id_are_carried_into_the_event() -> None:
    event = only_event(parse_push(push("withdrawal-info.addrEx.push.json"), received_at=RECEIVED))
    assert event.address_tag == {"comment": "123456"}
    assert event.client_transfer_id == "payout-7781"
    assert event.account.sub_account is None
    assert event.status is Status.PROCESSING


def test_tag_memo_and_payment_id_join_the_address_tag_when_not_empty() -> None:
    message = with_item("withdrawal-info.push.json", tag="T1", memo="", pmtId="P9", addrEx={"comment": "c", "empty": ""})
    event = only_event(parse_push(message, received_at=RECEIVED))
    assert event.address_tag == {"tag": "T1", "payment_id": "P9", "comment": "c"}


def test_a_withdrawal_to_a_uid_is_internal() -> None:
    event = only_event(parse_push(with_item("withdrawal-info.push.json", toAddrType="2"), received_at=RECEIVED))
    assert event.internal is True


def test_a_deposit_from_an_internal_transfer_is_internal() -> None:
    event = only_event(parse_push(with_item("deposit-info.push.json", fromWdId="63754561"), received_at=RECEIVED))
    assert event.internal is True


def test_a_malformed_item_goes_to_the_dlq_and_the_rest_of_the_push_is_still_published() -> None:
    message = push("deposit-info.push.json")
    good = message["data"][0]
    message["data"] = [good, {**good, "depId": "2", "amt": "ten"}, {**good, "depId": "3", "state": "2"}]
    first, bad, third = parse_push(message, received_at=RECEIVED)
    assert isinstance(first, TransferEvent) and isinstance(third, TransferEvent)
    assert third.status is Status.COMPLETED
    assert isinstance(bad, DeadLetter)
    assert "amt" in bad.reason
    assert orjson.loads(bad.raw)["depId"] == "2"
    assert bad.account_id == "289320****60975104"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"depId": ""}, "depId"),
        ({"state": None}, "state"),
        ({"ts": "yesterday", "pTime": ""}, "ts"),
        ({"amt": "-1"}, "negative"),
        ({"ccy": ""}, "ccy"),
    ],
)
def test_an_item_missing_what_the_contract_needs_is_dead_lettered_with_the_reason(change: dict[str, Any], reason: str) -> None:
    [letter] = parse_push(with_item("deposit-info.push.json", **change), received_at=RECEIVED)
    assert isinstance(letter, DeadLetter)
    assert reason in letter.reason


def test_an_item_that_is_not_an_object_is_dead_lettered() -> None:
    message = push("withdrawal-info.push.json")
    message["data"].append("oops")
    good, letter = parse_push(message, received_at=RECEIVED)
    assert isinstance(good, TransferEvent)
    assert isinstance(letter, DeadLetter) and letter.raw == b'"oops"'


def test_data_that_is_not_a_list_is_dead_lettered() -> None:
    message = push("deposit-info.push.json")
    message["data"] = {"depId": "1"}
    [letter] = parse_push(message, received_at=RECEIVED)
    assert isinstance(letter, DeadLetter) and "not a list" in letter.reason


def test_a_push_for_another_channel_is_refused() -> None:
    message = push("deposit-info.push.json")
    message["arg"]["channel"] = "balance_and_position"
    letter = refused(parse_push(message, received_at=RECEIVED))
    assert letter is not None and letter.reason == "push for unexpected channel 'balance_and_position'"
    assert (letter.provider, letter.channel, letter.raw) == (Provider.OKX, "ws/v5/business", item_bytes(message))


def test_a_numeric_amount_read_exactly_keeps_every_digit() -> None:
    raw = fixture_bytes("okx/deposit-info.push.json").replace(b'"amt": "1"', b'"amt": 12345678901234567890.123456789')
    event = only_event(parse_push(loads_exact(raw), received_at=RECEIVED))
    assert event.amount == "12345678901234567890.123456789"


def test_a_float_amount_is_refused_rather_than_rounded() -> None:
    message = with_item("deposit-info.push.json", amt=0.1)
    [letter] = parse_push(message, received_at=RECEIVED)
    assert isinstance(letter, DeadLetter) and "float" in letter.reason


def test_history_rows_parse_as_backfill_with_the_accounts_uid_and_creation_time() -> None:
    rows = loads_exact(fixture_bytes("okx/deposit-history.rest.json"))["data"]
    travel_rule, internal = parse_rows("deposit-info", rows, received_at=RECEIVED, via=Via.BACKFILL, uid="44711200000001")
    assert isinstance(travel_rule, TransferEvent) and isinstance(internal, TransferEvent)
    assert (travel_rule.status, travel_rule.provider_status) == (Status.PENDING, "17")  # REST-only state
    assert travel_rule.source.via is Via.BACKFILL
    assert travel_rule.account.id == "44711200000001"
    assert travel_rule.occurred_at == travel_rule.created_at == "2022-06-15T00:00:00.000Z"
    assert travel_rule.confirmations == 2
    assert internal.internal is True and internal.tx_hash is None and internal.is_final


def test_the_rest_only_withdrawal_state_19_is_pending() -> None:
    rows = loads_exact(fixture_bytes("okx/withdrawal-history.rest.json"))["data"]
    [event] = parse_rows("withdrawal-info", rows, received_at=RECEIVED, via=Via.BACKFILL, uid="1")
    assert isinstance(event, TransferEvent)
    assert (event.status, event.provider_status) == (Status.PENDING, "19")
    assert event.address_tag == {"comment": "123456"}


def test_the_same_state_from_push_and_from_history_has_the_same_event_id() -> None:
    pushed = only_event(parse_push(push("withdrawal-info.addrEx.push.json"), received_at=RECEIVED))
    row = {k: v for k, v in push("withdrawal-info.addrEx.push.json")["data"][0].items() if k not in ("pTime", "uid", "subAcct")}
    [backfilled] = parse_rows("withdrawal-info", [row], received_at=RECEIVED, via=Via.BACKFILL, uid="1")
    assert isinstance(backfilled, TransferEvent)
    assert backfilled.event_id == pushed.event_id  # dedup makes the backfill overlap harmless


def test_a_repeated_push_yields_the_same_event_id() -> None:
    first = only_event(parse_push(push("deposit-info.push.json"), received_at=RECEIVED))
    again = only_event(parse_push(push("deposit-info.push.json"), received_at="2026-11-22T10:00:05.000Z"))
    assert first.event_id == again.event_id
