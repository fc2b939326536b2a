"""The hot path's shortcuts give exactly what the plain code gave (benchmark optimisations, issue 8)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from bridge.contract.events import Account, Direction, Provider, Source, Status, build_event, encode_event, event_id_of
from bridge.contract.jsonutil import dumps
from bridge.delivery.dedup import DedupGate, MemoryStore, state_id
from tests.fuzz.strategies import json_values


def _event(transfer_id: str, status: Status = Status.PENDING, confirmations: int | None = 1, **optional: object):
    return build_event(
        provider=Provider.OKX,
        direction=Direction.DEPOSIT,
        transfer_id=transfer_id,
        status=status,
        provider_status="0",
        amount="0.00000001",
        asset="BTC",
        confirmations=confirmations,
        occurred_at="2025-05-05T00:53:29.206Z",
        received_at="2025-05-05T00:53:29.310Z",
        source=Source(channel="deposit-info"),
        account=Account(id="1"),
        **optional,
    )


@given(st.text(min_size=1), st.text())
def test_state_id_is_the_first_eight_bytes_of_the_event_uuid(key: str, fingerprint: str) -> None:
    event_id = event_id_of(key, fingerprint)

    class Carrier:
        pass

    carrier = Carrier()
    carrier.event_id = event_id  # type: ignore[attr-defined]
    assert state_id(carrier) == uuid.UUID(event_id).bytes[:8]  # type: ignore[arg-type]


def test_mark_records_the_same_state_bytes_state_after_announced() -> None:
    gate = DedupGate(MemoryStore())
    first, second = _event("7", confirmations=1), _event("7", confirmations=2)
    gate.mark(first, now_ms=1)
    expected = gate.state_after(second, now_ms=2)
    gate.mark(second, now_ms=2)
    assert gate._index[next(iter(gate._index))] == expected[0]
    assert gate._dirty[next(iter(gate._dirty))][1:] == expected


@given(st.text(st.characters(exclude_categories=())), st.text())
def test_event_id_is_the_uuid5_of_key_and_fingerprint(key: str, fingerprint: str) -> None:
    from bridge.contract.events import EVENT_ID_NAMESPACE

    try:
        expected: object = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key}\x1e{fingerprint}"))
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    try:
        got: object = event_id_of(key, fingerprint)
    except UnicodeEncodeError:
        got = UnicodeEncodeError
    assert got == expected


def test_event_id_of_a_known_state_is_unchanged() -> None:
    assert event_id_of("okx:deposit:1", "pending\x1f0\x1f\x1f\x1f1\x1f") == str(
        uuid.uuid5(uuid.UUID("6f1c4d2e-8a3b-5c7d-9e0f-1a2b3c4d5e6f"), "okx:deposit:1\x1epending\x1f0\x1f\x1f\x1f1\x1f")
    )


_raw_values = json_values() | st.characters(categories=["Cs"]).map(lambda c: f"x{c}")  # lone surrogates too


@given(st.dictionaries(st.text(max_size=8), _raw_values, max_size=6), st.booleans())
def test_encoded_event_is_byte_for_byte_the_model_dump_encoding(raw: dict[str, object], include_raw: bool) -> None:
    event = _event("9", raw=raw, address_tag={"memo": "m"}, network="tron", fee="0.1")
    assert encode_event(event, include_raw=include_raw) == dumps(
        event.model_dump(mode="python", exclude=None if include_raw else {"raw"})
    )


async def test_a_reopened_gate_has_every_saved_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bridge.delivery.store_sqlite import SQLiteStore

    rows = [(n - 5_000, bytes((n % 2,)) + n.to_bytes(8, "big"), None) for n in range(10_000)]
    store = SQLiteStore(tmp_path / "dedup.sqlite3")
    store.save(rows)
    store.close()
    gate = DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3"))
    await gate.open()
    assert gate._index == {key: state for key, state, _ in rows}
    gate.mark(_event("after-load"), now_ms=1)  # the store's lock was given back once loading finished
    await gate.close()


@given(st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{0,30})?\Z"))
def test_a_plain_decimal_string_is_canonicalized_as_the_decimal_path_does(text: str) -> None:
    from decimal import Decimal

    from bridge.contract.jsonutil import DecimalError, canonical_decimal

    try:
        expected: str | type[DecimalError] = canonical_decimal(Decimal(text))  # the general path
    except DecimalError:
        expected = DecimalError
    try:
        assert canonical_decimal(text) == expected
    except DecimalError:
        assert expected is DecimalError


@given(st.floats(min_value=946_684_800, max_value=4_102_444_799, allow_nan=False))
def test_receive_time_and_its_epoch_are_what_datetime_gives(clock: float) -> None:
    from datetime import UTC, datetime, timedelta

    from bridge.contract.timeutil import format_utc_ms, from_epoch_ms, to_epoch_ms
    from bridge.ingest.frames import utc_now

    text = utc_now(lambda: clock)
    assert text == format_utc_ms(datetime.fromtimestamp(clock, tz=UTC))
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert to_epoch_ms(text) == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # exact, no float
    assert from_epoch_ms(to_epoch_ms(text), field="ts") == text
