"""Every provider parser, fed hostile input: never an exception, and whatever comes out is
a valid, exact, publishable event or a dead letter with bytes and a reason.

Inputs reach a parser the way the adapters deliver them: generated values are written as JSON
and read back with ``loads_exact`` (and, for OKX, also with orjson, which its client reads frames
with first), so numbers are what a real reader yields; a top-level value that is not an object
is the adapter's to dead-letter (tested with the adapters), not a parser's.

None of them raises (the parser contract of ``bridge.contract.parsing``): a message that is not
their kind at all — not a push (``parse_push``, OKX), not a transfer topic (``parse_message``,
Ripio), a delivery that cannot be normalized (``parse_delivery``, OpenXSwitch) — is one refusal,
a dead letter with a reason that the adapter replaces with the payload as it received it (the
stream's frame; the webhook's body, answered 200). ``parse_rows`` gives a dead letter per bad row.
From bytes, ``loads_exact`` adds ``JSONError`` (the transport's to dead-letter).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.contract.events import DeadLetter, TransferEvent, Via
from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.parsing import refused
from bridge.sources.okx.parse import parse_push
from bridge.sources.okx.parse import parse_rows as parse_okx_rows
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.ripio.parse import parse_message
from bridge.sources.ripio.parse import parse_rows as parse_ripio_rows
from tests.fuzz.properties import check_results
from tests.fuzz.report import fuzz_settings, outcome, tried
from tests.fuzz.strategies import (
    OKX_DEPOSIT_PUSH,
    OKX_WITHDRAWAL_PUSH,
    OXS_DEPOSIT,
    OXS_WITHDRAW,
    RECEIVED,
    RIPIO_DEPOSIT,
    RIPIO_WITHDRAWAL,
    json_values,
    mutated,
    nasty_values,
    nested,
    to_json,
    wire_bytes,
)

STRUCTURED = 300
BYTES = 300


def _okx_amount(raw: dict[str, Any]) -> Any:
    return raw["amt"]


def _okx_fee(raw: dict[str, Any]) -> Any:
    return raw["fee"]


def _ripio_amount(raw: dict[str, Any]) -> Any:
    return raw["amount"]


def _ripio_fee(raw: dict[str, Any]) -> Any:
    return raw["fee"]


def _oxs_amount(raw: dict[str, Any]) -> Any:
    return raw["params"]["amount"]


def _oxs_fee(raw: dict[str, Any]) -> Any:
    return raw["params"]["networkFee"]


def record(target: str, results: tuple[int, int]) -> None:
    events, letters = results
    outcome(target, "events", events)
    outcome(target, "dead_letters", letters)


def decoded(data: bytes, *, orjson_too: bool = False) -> Iterator[Any]:
    """What the adapters' readers make of ``data``; nothing when they refuse it (→ DLQ there)."""
    readers: list[Callable[[bytes], Any]] = [loads_exact]
    if orjson_too:
        readers.insert(0, orjson.loads)
    for read in readers:
        try:
            yield read(data)
        except (JSONError, orjson.JSONDecodeError):
            continue


def okx_push(data: bytes) -> None:
    for message in decoded(data, orjson_too=True):
        if not isinstance(message, dict):
            continue
        tried("okx.parse_push")
        results = parse_push(message, received_at=RECEIVED)
        if refused(results) is not None:
            outcome("okx.parse_push", "refused")
            continue
        record("okx.parse_push", check_results(results, amount=_okx_amount, fee=_okx_fee))


def okx_rows(channel: str, data: bytes) -> None:
    for rows in decoded(data):
        tried("okx.parse_rows")
        results = parse_okx_rows(channel, rows, received_at=RECEIVED, via=Via.BACKFILL, uid="42")
        record("okx.parse_rows", check_results(results, amount=_okx_amount, fee=_okx_fee))


def ripio_message(data: bytes) -> None:
    for message in decoded(data):
        if not isinstance(message, dict):
            continue
        tried("ripio.parse_message")
        results = parse_message(message, received_at=RECEIVED)
        if refused(results) is not None:
            outcome("ripio.parse_message", "refused")
            continue
        record("ripio.parse_message", check_results(results, amount=_ripio_amount, fee=_ripio_fee))


def ripio_rows(topic: str, data: bytes) -> None:
    for rows in decoded(data):
        tried("ripio.parse_rows")
        results = parse_ripio_rows(topic, rows, received_at=RECEIVED)
        record("ripio.parse_rows", check_results(results, amount=_ripio_amount, fee=_ripio_fee))


def oxs_delivery(data: bytes) -> None:
    for delivery in decoded(data):
        if not isinstance(delivery, dict):
            continue
        tried("openxswitch.parse_delivery")
        results = parse_delivery(delivery, received_at=RECEIVED)
        letter = refused(results)
        if letter is not None:
            assert letter.reason
            outcome("openxswitch.parse_delivery", "refused")
            continue
        assert len(results) == 1
        record("openxswitch.parse_delivery", check_results(results, amount=_oxs_amount, fee=_oxs_fee))


# -- OKX ---------------------------------------------------------------------------------------

OKX_BASES = st.sampled_from([OKX_DEPOSIT_PUSH, OKX_WITHDRAWAL_PUSH])


@fuzz_settings(STRUCTURED)
@given(OKX_BASES.flatmap(lambda base: mutated(base, floats=True)))
def test_okx_pushes_with_bent_fields_give_valid_events_or_dead_letters(message: dict[str, Any]) -> None:
    okx_push(to_json(message))


@fuzz_settings(STRUCTURED)
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=8), json_values(floats=True), max_size=4),
        st.fixed_dictionaries(
            {
                "arg": st.one_of(json_values(), st.fixed_dictionaries({"channel": nasty_values(), "uid": nasty_values()})),
                "data": st.one_of(json_values(floats=True), st.lists(nasty_values(floats=True), max_size=3)),
            }
        ),
    )
)
def test_okx_arbitrary_objects_are_a_refusal_or_a_push(message: dict[str, Any]) -> None:
    okx_push(to_json(message))


@fuzz_settings(BYTES)
@given(OKX_BASES.flatmap(wire_bytes))
@example(b'{"arg":{"channel":"deposit-info","uid":"x\\ud800"},"data":null}')  # lone surrogate in arg.uid
@example(b'{"arg":{"channel":"deposit-info","uid":"x\\ud800"},"data":[{"ccy":"USDT"}]}')
def test_okx_frames_from_the_wire_never_raise(data: bytes) -> None:
    okx_push(data)


@fuzz_settings(STRUCTURED)
@given(
    st.sampled_from(["deposit-info", "withdrawal-info"]),
    st.one_of(st.lists(OKX_BASES.flatmap(lambda b: mutated(b["data"][0], floats=True)), max_size=4), json_values()),
)
def test_okx_history_rows_never_raise(channel: str, rows: Any) -> None:
    okx_rows(channel, to_json(rows))


# -- Ripio -------------------------------------------------------------------------------------

RIPIO_BASES = st.sampled_from([RIPIO_DEPOSIT, RIPIO_WITHDRAWAL])


@fuzz_settings(STRUCTURED)
@given(RIPIO_BASES.flatmap(mutated))
def test_ripio_messages_with_bent_fields_give_valid_events_or_dead_letters(message: dict[str, Any]) -> None:
    ripio_message(to_json(message))


@fuzz_settings(STRUCTURED)
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=8), json_values(), max_size=4),
        st.fixed_dictionaries(
            {
                "id": nasty_values(),
                "topic": st.one_of(st.sampled_from(["deposit", "withdrawal"]), nasty_values()),
                "timestamp": nasty_values(),
                "body": json_values(),
            }
        ),
    )
)
def test_ripio_arbitrary_objects_are_a_refusal_or_a_message(message: dict[str, Any]) -> None:
    ripio_message(to_json(message))


@fuzz_settings(BYTES)
@given(RIPIO_BASES.flatmap(wire_bytes))
def test_ripio_frames_from_the_wire_never_raise(data: bytes) -> None:
    ripio_message(data)


@fuzz_settings(STRUCTURED)
@given(
    st.sampled_from(["deposit", "withdrawal"]),
    st.one_of(st.lists(RIPIO_BASES.flatmap(lambda b: mutated(b["body"])), max_size=4), json_values()),
)
def test_ripio_listing_rows_never_raise(topic: str, rows: Any) -> None:
    ripio_rows(topic, to_json(rows))


# -- OpenXSwitch -------------------------------------------------------------------------------

OXS_BASES = st.sampled_from([OXS_WITHDRAW, OXS_DEPOSIT])


@fuzz_settings(STRUCTURED)
@given(OXS_BASES.flatmap(mutated))
def test_openxswitch_deliveries_with_bent_fields_give_a_valid_event_or_a_refusal(delivery: dict[str, Any]) -> None:
    oxs_delivery(to_json(delivery))


@fuzz_settings(STRUCTURED)
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=8), json_values(), max_size=4),
        st.fixed_dictionaries({"requestId": nasty_values(), "method": nasty_values(), "params": json_values()}),
    )
)
def test_openxswitch_arbitrary_objects_are_a_refusal_or_a_delivery(delivery: dict[str, Any]) -> None:
    oxs_delivery(to_json(delivery))


@fuzz_settings(BYTES)
@given(OXS_BASES.flatmap(wire_bytes))
def test_openxswitch_bodies_from_the_wire_never_raise(data: bytes) -> None:
    oxs_delivery(data)


# -- inputs the fuzzing found, pinned ------------------------------------------------------------


def test_okx_push_naming_a_channel_that_is_not_a_string_is_a_refusal() -> None:
    """``{"arg": {"channel": []}}`` made ``channel not in _PARSERS`` raise TypeError (unhashable)."""
    letter = refused(parse_push({"arg": {"channel": ["deposit-info"]}, "data": []}, received_at=RECEIVED))
    assert letter is not None and letter.reason == "push for unexpected channel ['deposit-info']"


def test_ripio_message_naming_a_topic_that_is_not_a_string_is_a_refusal() -> None:
    letter = refused(parse_message({"id": 1, "topic": {"deposit": 1}, "body": {}}, received_at=RECEIVED))
    assert letter is not None and letter.reason.startswith("message for unexpected topic")


def test_ripio_message_with_an_out_of_range_timestamp_is_a_refusal_or_a_dead_letter() -> None:
    """``timestamp`` is read outside ``parse_items``: its TimestampError escaped parse_message."""
    message = {**RIPIO_DEPOSIT, "timestamp": 5}
    results = parse_message(message, received_at=RECEIVED)
    assert all(isinstance(item, (TransferEvent, DeadLetter)) for item in results)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_iso_timestamps_at_the_edge_of_the_calendar_are_a_dead_letter_not_an_overflow(moment: str) -> None:
    """``from_iso`` converted to UTC with ``astimezone``, which raises OverflowError past year 1..9999."""
    body = {**RIPIO_DEPOSIT["body"], "update_date": moment}
    [item] = parse_ripio_rows("deposit", [body], received_at=RECEIVED)
    assert isinstance(item, DeadLetter)


def test_an_item_nested_deeper_than_the_encoder_allows_is_a_dead_letter_not_an_unpublishable_event() -> None:
    """orjson refuses more than 254 levels; a parsed event whose ``raw`` nests deeper could not
    become a Kafka record (TypeError in ``Pipeline.offer``, killing the source)."""
    body = {**RIPIO_DEPOSIT["body"], "extra": nested(300)}
    [item] = parse_ripio_rows("deposit", [body], received_at=RECEIVED)
    if isinstance(item, TransferEvent):
        check_results([item], amount=_ripio_amount)


def test_a_lone_surrogate_in_a_field_is_a_dead_letter_not_an_unpublishable_event() -> None:
    """``"\\udfff"`` is legal JSON and a legal Python str, but not UTF-8: orjson cannot write it."""
    body = loads_exact(to_json({**RIPIO_DEPOSIT["body"], "network": "\udfff"}))
    [item] = parse_ripio_rows("deposit", [body], received_at=RECEIVED)
    if isinstance(item, TransferEvent):
        check_results([item], amount=_ripio_amount)


def test_an_amount_beyond_64_bits_gives_a_publishable_event() -> None:
    """10**21 wei is a real amount; the event must still encode (its ``raw`` keeps the integer)."""
    body = loads_exact(to_json({**RIPIO_DEPOSIT["body"], "amount": 10**21}))
    [item] = parse_ripio_rows("deposit", [body], received_at=RECEIVED)
    assert isinstance(item, TransferEvent)
    check_results([item], amount=_ripio_amount)


def test_a_whole_number_field_with_a_huge_exponent_is_refused_quickly() -> None:
    """``1e150000`` is 8 bytes of JSON; ``int()`` of it builds a 150,000-digit integer (seconds of
    CPU; ``1e999999`` takes ~25 s) before any range check. The event loop must not stall."""
    delivery = loads_exact(to_json({**OXS_WITHDRAW, "params": {**OXS_WITHDRAW["params"], "confirmation": Decimal("1e150000")}}))
    started = time.perf_counter()
    letter = refused(parse_delivery(delivery, received_at=RECEIVED))
    assert time.perf_counter() - started < 0.2
    assert letter is not None and "confirmation" in letter.reason


def test_an_epoch_timestamp_with_a_huge_exponent_is_refused_quickly() -> None:
    item = {**OKX_DEPOSIT_PUSH["data"][0], "pTime": Decimal("1e150000")}
    started = time.perf_counter()
    [result] = parse_okx_rows("deposit-info", [item], received_at=RECEIVED, via=Via.PUSH)
    assert isinstance(result, DeadLetter)
    assert time.perf_counter() - started < 0.2
