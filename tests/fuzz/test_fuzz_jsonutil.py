"""``loads_exact`` on anything: a value with exact numbers, or ``JSONError`` — nothing else, no float."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.contract.jsonutil import JSONError, dumps, loads_exact
from tests.fuzz.properties import no_float
from tests.fuzz.report import fuzz_settings, outcome, tried
from tests.fuzz.strategies import OXS_WITHDRAW, json_values, to_json, wire_bytes


def _load(data: bytes | str) -> Any:
    tried("jsonutil.loads_exact")
    try:
        value = loads_exact(data)
    except JSONError as exc:
        assert str(exc), "a JSONError must say why"
        outcome("jsonutil.loads_exact", "json_errors")
        return None
    no_float(value, "value")
    outcome("jsonutil.loads_exact", "values")
    return value


@fuzz_settings(400)
@given(st.binary(max_size=2000))
@example(b"\xff\xfe{}")
@example(b"NaN")
@example(b"[-Infinity]")
@example(b'{"a": Infinity}')
@example(b"[" * 100_000)
def test_any_bytes_give_a_value_or_a_json_error(data: bytes) -> None:
    _load(data)


@fuzz_settings(400)
@given(wire_bytes(OXS_WITHDRAW))
def test_broken_provider_bodies_give_a_value_or_a_json_error(data: bytes) -> None:
    _load(data)


@fuzz_settings(300)
@given(json_values())
def test_what_loads_exact_reads_dumps_writes_back_with_the_same_numbers(value: Any) -> None:
    """Events carry the provider's item in ``raw``: every value ``loads_exact`` produces must be
    writable by ``dumps`` and read back equal (same numbers, no float)."""
    read = _load(to_json(value))
    if read is None:
        return
    assert loads_exact(dumps(read)) == read


@fuzz_settings(200)
@given(st.sampled_from(["NaN", "Infinity", "-Infinity"]), st.sampled_from(["{0}", "[{0}]", '{{"amount": {0}}}', "[1, {0}]"]))
def test_nan_and_infinity_literals_are_refused(literal: str, shape: str) -> None:
    tried("jsonutil.loads_exact")
    outcome("jsonutil.loads_exact", "json_errors")
    with pytest.raises(JSONError, match="non-standard JSON constant"):
        loads_exact(shape.format(literal))


@fuzz_settings(200)
@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_a_json_error_or_a_value_never_a_recursion_error(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    _load(opener * depth + "0" + closer * depth)


def test_integers_longer_than_python_converts_are_exact_or_a_json_error() -> None:
    """4301+ digits: ``int()`` refuses (the CVE-2020-10735 limit) with a bare ValueError."""
    try:
        value = loads_exact(b'{"amount": ' + b"9" * 4301 + b"}")
    except JSONError:
        return
    assert value["amount"] == 10**4301 - 1


def test_exponents_beyond_the_decimal_range_are_a_json_error() -> None:
    """``Decimal('1e99999999999999999999')`` raises ``InvalidOperation``, an ArithmeticError,
    which escaped ``loads_exact`` (callers catch JSONError: the webhook answered 500)."""
    with pytest.raises(JSONError):
        loads_exact(b'{"amount": 1e99999999999999999999}')


def test_integers_beyond_64_bits_are_written_back_exactly() -> None:
    """A wei amount (10**21) read by ``loads_exact`` must be writable by ``dumps`` (events carry
    the provider's item in ``raw``); orjson alone refuses integers beyond 64 bits."""
    body = loads_exact(b'{"amount": 1000000000000000000000}')
    assert dumps(body) == b'{"amount":1000000000000000000000}'


def test_tiny_and_huge_numbers_keep_every_digit() -> None:
    value = loads_exact(b'[1E-400, 1e400, 0.1, 123456789012345678901234567890.000000000000000000001]')
    assert value == [Decimal("1E-400"), Decimal("1E+400"), Decimal("0.1"), Decimal("123456789012345678901234567890.000000000000000000001")]


def test_a_megabyte_of_nesting_brackets_is_refused_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(JSONError):
        loads_exact(b"[" * 1_000_000)
    assert time.perf_counter() - started < 1.0
    assert json.loads("[]") == []  # the interpreter is still usable after the deep recursion
