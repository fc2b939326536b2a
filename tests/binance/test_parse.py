"""Binance rows → contract 1.1: every example of the provider reference, the status tables chosen by
endpoint, the travel-rule hold, confirmTimes, UTC applyTime, exact amounts, and the settings the
reference leaves open."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from bridge.contract.events import Account, DeadLetter, Provider, Status, TransferEvent, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import refused
from bridge.contract.schema import committed_versions, example_events
from bridge.contract.status_tables import BINANCE_DEPOSIT, BINANCE_WITHDRAWAL
from bridge.sources.binance import messages as m
from bridge.sources.binance.config import BinanceAccount
from bridge.sources.binance.parse import Rules, confirmations_of, parse_deposit, parse_page, parse_withdrawal
from tests.support import FIXTURES

AT = "2025-10-31T10:05:30.000Z"
MAIN = Account(id="main")
SCHEMA = committed_versions(1)[-1].schema


def _rows(name: str) -> Any:
    return loads_exact((FIXTURES / "binance" / name).read_bytes())


def _deposit(**changes: Any) -> dict[str, Any]:
    row = copy.deepcopy(_rows("deposit-hisrec.includeSource.json")[0])
    row.update(changes)
    return row


def _withdrawal(**changes: Any) -> dict[str, Any]:
    row = copy.deepcopy(_rows("withdraw-history.json")[0])
    row.update(changes)
    return row


def _events(results: list[Any]) -> list[TransferEvent]:
    assert all(isinstance(r, TransferEvent) for r in results), results
    return results


def test_the_reference_deposit_example_normalizes_field_by_field() -> None:
    pending, internal = _events(parse_page(m.DEPOSIT_CHANNEL, _rows("deposit-hisrec.includeSource.json"), received_at=AT, account=MAIN))
    assert pending.key == "binance:deposit:4011230000000000001" and pending.transfer_id == "4011230000000000001"
    assert (pending.status, pending.is_final, pending.provider_status, pending.provider_status_text) == (Status.PENDING, False, "0", "pending")
    assert (pending.amount, pending.asset, pending.chain, pending.network) == ("0.001", "BTC", "BTC", "bitcoin")
    assert pending.raw is not None and pending.raw["amount"] == "0.00100000"  # Binance's digits, as sent
    assert pending.confirmations == 1 and pending.tx_hash == "9f2c4b1e7a0d3c5e8b6a4f2e1d0c9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180"
    assert pending.from_address == "bc1qexamplesender00000000000000000000000x2"
    assert pending.to_address == "bc1qexampledeposit0000000000000000000000q7" and pending.address_tag is None
    assert pending.internal is False and pending.client_transfer_id is None and pending.fee is None
    assert pending.created_at == "2025-10-31T10:00:00.000Z" and pending.occurred_at == AT  # not final: observed
    assert pending.source.channel == "capital/deposit/hisrec" and pending.source.via is Via.POLL and pending.source.message_id is None
    assert (internal.status, internal.is_final, internal.amount, internal.network) == (Status.COMPLETED, True, "250.75", "bsc")
    assert internal.internal is True and internal.tx_hash == "Off-chain transfer 351234567890"
    assert internal.occurred_at == "2025-10-31T10:01:00.000Z"  # completeTime of a final row


def test_the_reference_withdrawal_example_normalizes_field_by_field() -> None:
    processing, completed = _events(parse_page(m.WITHDRAWAL_CHANNEL, _rows("withdraw-history.json"), received_at=AT, account=MAIN))
    assert processing.key == "binance:withdrawal:5d2f0c9e8b7a46a1b3c4d5e6f7a8b9c0"
    assert (processing.status, processing.provider_status, processing.provider_status_text) == (Status.PROCESSING, "4", "processing")
    assert (processing.amount, processing.fee, processing.fee_asset) == ("0.0123", "0.00002", "BTC")
    assert processing.client_transfer_id == "tb-20251031-0001" and processing.tx_hash is None and processing.confirmations == 0
    assert processing.created_at == "2025-10-31T10:00:00.000Z" and processing.occurred_at == AT
    assert processing.from_address is None and processing.to_address == "bc1qexamplepayout000000000000000000000000k4"
    assert (completed.status, completed.is_final, completed.address_tag) == (Status.COMPLETED, True, {"addressTag": "987654321"})
    assert completed.occurred_at == "2025-10-31T10:05:00.000Z" and completed.network == "ripple"
    assert completed.confirmations is None  # frozen after final (confirmNo may keep rising: unconfirmed)


def test_the_contracts_binance_example_is_what_the_parser_makes_of_the_reference_row() -> None:
    example = dict((p.name, body) for p, body in example_events(1))["binance-withdrawal-completed.json"]
    completed = parse_withdrawal(_rows("withdraw-history.json")[1], received_at=AT, account=MAIN)
    assert completed.model_dump(mode="json") == example


def test_every_reference_example_is_valid_against_the_contract_schema() -> None:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    for channel, name in ((m.DEPOSIT_CHANNEL, "deposit-hisrec.includeSource.json"), (m.WITHDRAWAL_CHANNEL, "withdraw-history.json")):
        for event in _events(parse_page(channel, _rows(name), received_at=AT, account=MAIN)):
            validator.validate(event.model_dump(mode="json"))


def test_the_error_example_is_an_api_error_the_client_resyncs_on() -> None:
    with pytest.raises(m.BinanceApiError) as caught:
        m.rows_of(_rows("error.timestamp.json"), 400)
    assert caught.value.code == -1021 and caught.value.is_timestamp and not caught.value.is_configuration_error


@pytest.mark.parametrize(
    ("code", "status"),
    [("0", Status.PENDING), ("6", Status.CREDITED), ("1", Status.COMPLETED), ("7", Status.ON_HOLD), ("8", Status.ON_HOLD), ("2", Status.FAILED)],
)
def test_deposit_codes_follow_the_contract_and_6_is_credited_not_final(code: str, status: Status) -> None:
    event = parse_deposit(_deposit(status=int(code)), received_at=AT, account=MAIN)
    assert event.status is status and event.provider_status == code
    assert event.is_final is (status in (Status.COMPLETED, Status.FAILED))


@pytest.mark.parametrize(
    ("code", "status"),
    [("0", Status.PENDING), ("2", Status.PENDING), ("4", Status.PROCESSING), ("6", Status.COMPLETED), ("1", Status.CANCELLED), ("3", Status.FAILED), ("5", Status.FAILED)],
)
def test_withdrawal_codes_follow_the_contract(code: str, status: Status) -> None:
    assert parse_withdrawal(_withdrawal(status=int(code)), received_at=AT, account=MAIN).status is status


def test_the_tables_cover_exactly_the_documented_codes() -> None:
    assert set(BINANCE_DEPOSIT) == {"0", "6", "1", "7", "8", "2"}
    assert set(BINANCE_WITHDRAWAL) == {"0", "1", "2", "3", "4", "5", "6"}


def test_code_1_is_chosen_by_endpoint_success_for_a_deposit_cancelled_for_a_withdrawal() -> None:
    assert parse_deposit(_deposit(status=1), received_at=AT, account=MAIN).status is Status.COMPLETED
    assert parse_withdrawal(_withdrawal(status=1), received_at=AT, account=MAIN).status is Status.CANCELLED


def test_an_unknown_code_is_published_as_unknown_with_the_raw_code() -> None:
    for event in (parse_deposit(_deposit(status=9), received_at=AT, account=MAIN), parse_withdrawal(_withdrawal(status=11), received_at=AT, account=MAIN)):
        assert event.status is Status.UNKNOWN and not event.is_final and event.provider_status in ("9", "11")


def test_a_travel_rule_flag_holds_a_credited_or_completed_deposit_until_it_clears() -> None:
    held_credited = parse_deposit(_deposit(status=6, travelRuleStatus=1), received_at=AT, account=MAIN)
    held_completed = parse_deposit(_deposit(status=1, travelRuleStatus=1), received_at=AT, account=MAIN)
    cleared = parse_deposit(_deposit(status=1, travelRuleStatus=0), received_at=AT, account=MAIN)
    pending = parse_deposit(_deposit(status=0, travelRuleStatus=1), received_at=AT, account=MAIN)
    assert held_credited.status is held_completed.status is Status.ON_HOLD and not held_completed.is_final
    assert "travel rule" in (held_completed.provider_status_text or "") and held_completed.provider_status == "1"
    assert cleared.status is Status.COMPLETED and cleared.event_id != held_completed.event_id
    assert pending.status is Status.PENDING
    unheld = parse_deposit(_deposit(status=6, travelRuleStatus=1), received_at=AT, account=MAIN, rules=Rules(deposit_travel_rule_hold=False))
    assert unheld.status is Status.CREDITED


@pytest.mark.parametrize(("text", "expected"), [("12/12", (12, 12)), ("1/2", (1, 2)), (" 3 / 15 ", (3, 15)), ("x", (None, None)), ("", (None, None)), (None, (None, None)), ("5", (None, None))])
def test_confirm_times_reads_seen_and_required(text: Any, expected: tuple[int | None, int | None]) -> None:
    assert confirmations_of(text) == expected


def test_confirmations_rise_per_poll_and_stop_at_the_required_count_once_final() -> None:
    rising = [parse_deposit(_deposit(status=0, confirmTimes=f"{n}/12"), received_at=AT, account=MAIN) for n in (1, 6, 12)]
    assert [e.confirmations for e in rising] == [1, 6, 12] and len({e.event_id for e in rising}) == 3
    final = [parse_deposit(_deposit(status=1, confirmTimes=f"{n}/12"), received_at=AT, account=MAIN) for n in (12, 13, 20)]
    assert {e.confirmations for e in final} == {12} and len({e.event_id for e in final}) == 1
    loose = Rules(freeze_confirmations_after_final=False)
    assert parse_deposit(_deposit(status=1, confirmTimes="13/12"), received_at=AT, account=MAIN, rules=loose).confirmations == 13
    assert parse_deposit(_deposit(confirmTimes="garbage"), received_at=AT, account=MAIN).confirmations is None


def test_withdrawal_apply_time_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    try:
        event = parse_withdrawal(_withdrawal(applyTime="2025-12-31 23:59:59"), received_at=AT, account=MAIN)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert event.created_at == "2025-12-31T23:59:59.000Z"


def test_a_malformed_apply_time_or_amount_dead_letters_that_row_alone_with_its_bytes() -> None:
    rows = [_withdrawal(applyTime="31/10/2025 10:00"), _withdrawal(id="ok1"), _withdrawal(id="bad2", amount="1e")]
    results = parse_page(m.WITHDRAWAL_CHANNEL, rows, received_at=AT, account=MAIN)
    dead = [r for r in results if isinstance(r, DeadLetter)]
    assert [r.transfer_id for r in results if isinstance(r, TransferEvent)] == ["ok1"]
    assert {d.reason.split(":")[0] for d in dead} == {"applyTime", "amount"}
    assert all(b'"id":' in d.raw for d in dead)


def test_amounts_are_exact_without_exponent_and_a_float_never_appears() -> None:
    event = parse_deposit(_deposit(amount="1E-8"), received_at=AT, account=MAIN)
    assert event.amount == "0.00000001"
    exact = loads_exact(b'[{"id": "1", "amount": 0.10000000000000000001, "coin": "BTC", "status": 1}]')
    assert parse_page(m.DEPOSIT_CHANNEL, exact, received_at=AT, account=MAIN)[0].amount == "0.10000000000000000001"  # type: ignore[union-attr]


def test_the_key_is_binances_id_never_the_tx_hash_one_transaction_funding_two_deposits() -> None:
    shared = "ab" * 32
    first = parse_deposit(_deposit(id="1001", txId=shared), received_at=AT, account=MAIN)
    second = parse_deposit(_deposit(id="1002", txId=shared), received_at=AT, account=MAIN)
    assert first.key != second.key and first.tx_hash == second.tx_hash == shared


def test_a_deposit_without_id_is_dead_lettered_unless_the_txid_fallback_is_chosen() -> None:
    row = _deposit(addressTag="memo-7")
    del row["id"]
    assert isinstance(parse_page(m.DEPOSIT_CHANNEL, [row], received_at=AT, account=MAIN)[0], DeadLetter)
    fallback = parse_deposit(row, received_at=AT, account=MAIN, rules=Rules(deposit_missing_id="txid_fallback"))
    assert fallback.transfer_id == f"tx:{row['txId']}:{row['address']}:memo-7"


def test_status_overrides_remap_a_code_per_direction() -> None:
    rules = Rules(status_overrides={"deposit": {"7": Status.FAILED}})
    assert parse_deposit(_deposit(status=7), received_at=AT, account=MAIN, rules=rules).status is Status.FAILED
    assert parse_withdrawal(_withdrawal(status=7), received_at=AT, account=MAIN, rules=rules).status is Status.UNKNOWN


def test_internal_txid_and_occurred_at_settings() -> None:
    internal = _rows("deposit-hisrec.includeSource.json")[1]
    assert parse_deposit(internal, received_at=AT, account=MAIN, rules=Rules(internal_txid_as_tx_hash=False)).tx_hash is None
    assert parse_deposit(internal, received_at=AT, account=MAIN, rules=Rules(occurred_at_mode="observed")).occurred_at == AT


def test_a_withdrawal_failure_reason_is_carried_in_the_status_text() -> None:
    event = parse_withdrawal(_withdrawal(status=5, info="The address is not valid."), received_at=AT, account=MAIN)
    assert event.provider_status_text == "failure: The address is not valid."


def test_a_sub_account_deposit_names_its_email_and_endpoint() -> None:
    owner = Account(id="master-uid", sub_account="sub1@example.com")
    event = parse_page(m.SUB_DEPOSIT_CHANNEL, [_deposit()], received_at=AT, account=owner)[0]
    assert isinstance(event, TransferEvent) and event.account == owner and event.source.channel == "capital/deposit/subHisrec"
    assert event.key == parse_deposit(_deposit(), received_at=AT, account=MAIN).key  # seen both ways: one key


@pytest.mark.parametrize("body", [{"code": -1021, "msg": "x"}, {"rows": []}, "text", 7, None])
def test_a_page_that_is_not_a_list_of_rows_is_not_binances_and_is_refused(body: Any) -> None:
    letter = refused(parse_page(m.DEPOSIT_CHANNEL, body, received_at=AT, account=MAIN))
    assert letter is not None and "not a JSON array" in letter.reason
    assert (letter.provider, letter.channel, letter.account_id) == (Provider.BINANCE, m.DEPOSIT_CHANNEL, MAIN.id)


def test_rows_that_are_not_objects_become_dead_letters_and_the_rest_is_parsed_oldest_first() -> None:
    later, earlier = _deposit(id="2", insertTime=1761904900000), _deposit(id="1", insertTime=1761904800000)
    results = parse_page(m.DEPOSIT_CHANNEL, [later, "oops", earlier], received_at=AT, account=MAIN)
    assert [r.transfer_id for r in results if isinstance(r, TransferEvent)] == ["1", "2"]
    assert [r.raw for r in results if isinstance(r, DeadLetter)] == [b'"oops"']


def _local_withdrawal(**changes: Any) -> dict[str, Any]:
    """A ``localentity/withdraw/history`` (v1) row: the capital row's fields, the code in
    ``withdrawalStatus``, plus ``trId`` and ``travelRuleStatus``."""
    row = _withdrawal()
    row = {"trId": 1234456, "withdrawalStatus": row.pop("status"), "travelRuleStatus": 0, **row}
    row.update(changes)
    return row


def test_a_travel_rule_withdrawal_row_is_keyed_by_id_its_code_read_from_withdrawal_status() -> None:
    capital = parse_withdrawal(_withdrawal(), received_at=AT, account=MAIN)
    local = parse_page(m.LOCALENTITY_WITHDRAWAL_CHANNEL, [_local_withdrawal()], received_at=AT, account=MAIN)[0]
    assert isinstance(local, TransferEvent) and local.source.channel == "localentity/withdraw/history" and local.source.via is Via.POLL
    assert (local.key, local.status, local.provider_status) == (capital.key, Status.PROCESSING, "4")
    assert local.event_id == capital.event_id  # the same state read from either history is one event
    assert local.raw is not None and local.raw["trId"] == 1234456
    pending = parse_withdrawal(_local_withdrawal(withdrawalStatus=2, travelRuleStatus=1), received_at=AT, account=MAIN,
                               channel=m.LOCALENTITY_WITHDRAWAL_CHANNEL)
    assert pending.status is Status.PENDING and pending.provider_status_text == "awaiting approval; travel rule pending"
    jsonschema.validators.validator_for(SCHEMA)(SCHEMA).validate(local.model_dump(mode="json"))


def test_a_travel_rule_withdrawal_row_without_id_or_code_is_dead_lettered_not_keyed_by_a_guess() -> None:
    no_id = {k: v for k, v in _local_withdrawal().items() if k != "id"}
    no_code = {k: v for k, v in _local_withdrawal(id="ffff0000ffff0000ffff0000ffff0000").items() if k != "withdrawalStatus"}
    results = parse_page(m.LOCALENTITY_WITHDRAWAL_CHANNEL, [no_id, no_code], received_at=AT, account=MAIN)
    assert [type(r) for r in results] == [DeadLetter, DeadLetter]
    assert {r.channel for r in results if isinstance(r, DeadLetter)} == {"localentity/withdraw/history"}


def test_poll_localentity_is_a_per_account_setting_that_replaces_the_withdrawal_history() -> None:
    entry = {"name": "main", "api_key": "api-key-value-123", "secret_key": "secret-value-456"}
    assert BinanceAccount(**entry).poll_localentity is False  # the capital history unless asked
    assert BinanceAccount(**entry, poll_localentity=True).poll_localentity is True
    with pytest.raises(ValidationError, match="poll_localentity replaces the withdrawal history"):
        BinanceAccount(**entry, poll_localentity=True, withdrawals=False)
