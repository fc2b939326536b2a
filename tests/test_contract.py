"""Contract v1 in code: tables, ids, exact amounts, schema — no broker needed."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from bridge.contract.events import FINAL_STATUSES, Status, TransferEvent, encode_event
from bridge.contract.jsonutil import DecimalError, JSONError, canonical_decimal, loads_exact
from bridge.contract.schema import json_schema, schema_path, schema_text
from bridge.contract.status_tables import OKX_DEPOSIT, OKX_WITHDRAWAL, OPENXSWITCH, RIPIO
from bridge.sources.okx.parse import parse_push
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.ripio.parse import parse_message
from tests.support import RECEIVED, fixture_bytes

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "design" / "transfer-event-v1.md"


def _all_fixture_events() -> list[TransferEvent]:
    events: list[TransferEvent] = []
    for name in ("okx/deposit-info.push.json", "okx/withdrawal-info.push.json"):
        events += parse_push(loads_exact(fixture_bytes(name)), received_at=RECEIVED)  # type: ignore[arg-type]
    for name in ("ripio/deposit.crypto.json", "ripio/deposit.fiat.json"):
        events += parse_message(loads_exact(fixture_bytes(name)), received_at=RECEIVED)  # type: ignore[arg-type]
    for name in ("openxswitch/withdraw.unconfirmed.json", "openxswitch/withdraw.confirmed.json"):
        events += parse_delivery(loads_exact(fixture_bytes(name)), received_at=RECEIVED)  # type: ignore[arg-type]
    return events


def test_every_documented_example_payload_normalizes_and_validates_against_the_schema() -> None:
    events = _all_fixture_events()
    assert len(events) == 6 and all(isinstance(e, TransferEvent) for e in events)
    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    for event in events:
        validator.validate(json.loads(encode_event(event)))


def test_committed_json_schema_matches_the_model() -> None:
    assert schema_path().read_text() == schema_text(), "run `transfer-bridge schemas export` and commit"


def test_okx_state_tables_cover_every_code_the_contract_names() -> None:
    assert set(OKX_DEPOSIT) == {"0", "17", "1", "2", "8", "11", "12", "13", "14"}
    assert set(OKX_WITHDRAWAL) == {"17", "10", "0", "4", "5", "6", "8", "9", "12", "19", "7", "1", "15", "16", "-3", "-2", "-1", "2"}


@pytest.mark.parametrize(
    ("table", "value", "status"),
    [
        (OKX_DEPOSIT, "1", Status.CREDITED),
        (OKX_DEPOSIT, "2", Status.COMPLETED),
        (OKX_DEPOSIT, "17", Status.PENDING),
        (OKX_DEPOSIT, "14", Status.ON_HOLD),
        (OKX_WITHDRAWAL, "-3", Status.CANCELLING),
        (OKX_WITHDRAWAL, "-2", Status.CANCELLED),
        (OKX_WITHDRAWAL, "-1", Status.FAILED),
        (OKX_WITHDRAWAL, "7", Status.PROCESSING),
        (OKX_WITHDRAWAL, "19", Status.PENDING),
        (RIPIO, "confirmed", Status.COMPLETED),
        (OPENXSWITCH, "success", Status.COMPLETED),
        (OPENXSWITCH, "canceled", Status.CANCELLED),
    ],
)
def test_status_mapping_follows_the_contract(table, value, status) -> None:  # type: ignore[no-untyped-def]
    assert table[value][0] is status


def test_contract_mapping_lines_agree_with_the_tables_when_the_contract_is_present() -> None:
    if not CONTRACT.exists():
        pytest.skip("contract document not beside the checkout")
    text = CONTRACT.read_text()
    deposit_line = re.search(r"OKX deposit `state`: (.*?)\n\n", text, re.S).group(1)  # type: ignore[union-attr]
    withdrawal_line = re.search(r"OKX withdrawal `state`: (.*?)\n\n", text, re.S).group(1)  # type: ignore[union-attr]
    for line, table in ((deposit_line, OKX_DEPOSIT), (withdrawal_line, OKX_WITHDRAWAL)):
        for codes, status in re.findall(r"((?:`-?\d+`,?)+)→(\w+)", line):
            for code in re.findall(r"`(-?\d+)`", codes):
                assert table[code][0].value == status, (code, status)


def test_event_id_is_the_same_for_the_same_state_and_differs_per_state() -> None:
    first = _all_fixture_events()
    again = _all_fixture_events()
    assert [e.event_id for e in first] == [e.event_id for e in again]
    okx_withdrawal_pending, oxs_pending, oxs_confirmed = first[1], first[4], first[5]
    assert oxs_pending.key == oxs_confirmed.key and oxs_pending.event_id != oxs_confirmed.event_id
    assert okx_withdrawal_pending.key == "okx:withdrawal:63754560"


def test_event_id_ignores_receive_time_and_delivery_id() -> None:
    body = loads_exact(fixture_bytes("openxswitch/withdraw.confirmed.json"))
    [a] = parse_delivery(body, received_at=RECEIVED)
    body["requestId"] = "another-delivery"
    [b] = parse_delivery(body, received_at="2026-11-22T11:00:00.000Z")
    assert isinstance(a, TransferEvent) and isinstance(b, TransferEvent)
    assert a.event_id == b.event_id and a.source.message_id != b.source.message_id


def test_is_final_exactly_for_completed_failed_cancelled() -> None:
    assert FINAL_STATUSES == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("0.00000001", "0.00000001"),
        ("1E-8", "0.00000001"),
        ("1.50", "1.5"),
        ("100", "100"),
        ("123456789012345678.901234567890", "123456789012345678.90123456789"),
        (Decimal("0.1"), "0.1"),
        (9, "9"),
    ],
)
def test_amounts_become_canonical_exact_decimal_strings(wire, expected) -> None:  # type: ignore[no-untyped-def]
    assert canonical_decimal(wire) == expected


@pytest.mark.parametrize("bad", [0.1, float("nan"), "NaN", "Infinity", "-1", "", "abc", True])
def test_floats_and_non_finite_amounts_are_refused(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecimalError):
        canonical_decimal(bad)


def test_json_numbers_are_read_without_float() -> None:
    value = loads_exact(b'{"a": 0.1, "b": 123456789.123456789123456789123, "c": 7}')
    assert value == {"a": Decimal("0.1"), "b": Decimal("123456789.123456789123456789123"), "c": 7}


@pytest.mark.parametrize("bad", [b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe", b"{", b"[" * 20_000])
def test_invalid_json_is_a_clear_error(bad: bytes) -> None:
    with pytest.raises(JSONError):
        loads_exact(bad)


def test_raw_keeps_numbers_as_the_provider_wrote_them() -> None:
    body = fixture_bytes("openxswitch/withdraw.unconfirmed.json").replace(b'"amount": 9', b'"amount": 0.100000000000000000000000000001')
    [event] = parse_delivery(loads_exact(body), received_at=RECEIVED)
    assert isinstance(event, TransferEvent)
    encoded = encode_event(event)
    assert b'"amount":0.100000000000000000000000000001' in encoded
    assert event.amount == "0.100000000000000000000000000001"


def test_schema_has_the_contract_fields() -> None:
    fields = set(json_schema()["properties"])
    assert {"schema_version", "event_id", "key", "provider", "direction", "transfer_id", "amount", "status", "is_final", "raw", "source"} <= fields
