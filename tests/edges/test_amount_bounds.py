"""Finding 6 (Reliability): one bound for every form an amount arrives in.

A 4,300-digit integer amount was published while ``1e999999999`` (a few bytes of exponent form)
and a 10,000-digit integer (refused by the JSON reader, so the whole body was "not JSON") were
refused, each for a different reason. Now every form — integer JSON number, decimal JSON number,
exponent form, decimal string — meets the same bound, ``MAX_AMOUNT_DIGITS`` digits written out as
published, with the same reason; tested at and just past it, through the provider parsers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given

from bridge.contract.events import DeadLetter, TransferEvent
from bridge.contract.jsonutil import MAX_AMOUNT_DIGITS, DecimalError, canonical_decimal, dumps, loads_exact
from bridge.contract.parsing import refused
from bridge.sources.okx.parse import parse_push
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.ripio.parse import parse_message
from tests.fuzz.report import fuzz_settings
from tests.fuzz.strategies import OKX_DEPOSIT_PUSH, OXS_WITHDRAW, RECEIVED, RIPIO_DEPOSIT, decimals

N = MAX_AMOUNT_DIGITS
PLACEHOLDER = b'"@@amount@@"'

# (form, JSON literal of the amount[, what is published])
AT_THE_BOUND: list[tuple[str, str, str]] = [
    ("integer number", "9" * N, "9" * N),
    ("decimal number", "9" * (N // 2) + "." + "9" * (N // 2), "9" * (N // 2) + "." + "9" * (N // 2)),
    ("decimal number below one", "0." + "0" * (N - 2) + "1", "0." + "0" * (N - 2) + "1"),
    ("exponent form", f"1e{N - 1}", "1" + "0" * (N - 1)),
    ("negative exponent form", f"1E-{N - 1}", "0." + "0" * (N - 2) + "1"),
    ("trailing zeros do not count", "1." + "0" * 5000, "1"),
    ("decimal string", '"' + "9" * N + '"', "9" * N),
    ("decimal string below one", '"0.' + "0" * (N - 2) + '1"', "0." + "0" * (N - 2) + "1"),
    ("exponent string", f'"1e{N - 1}"', "1" + "0" * (N - 1)),
]
PAST_THE_BOUND: list[tuple[str, str]] = [
    ("integer number", "1" + "0" * N),
    ("integer of 4,300 digits (was published)", "9" * 4300),
    ("integer of 10,000 digits (was 'not JSON')", "9" * 10_000),
    ("decimal number", "9" * (N // 2) + "." + "9" * (N // 2 + 1)),
    ("decimal number below one", "0." + "0" * (N - 1) + "1"),
    ("exponent form", f"1e{N}"),
    ("negative exponent form", f"1E-{N}"),
    ("exponent form 1e999999999", "1e999999999"),
    ("decimal string", '"1' + "0" * N + '"'),
    ("decimal string below one", '"0.' + "0" * (N - 1) + '1"'),
    ("exponent string", f'"1e{N}"'),
]


def _body(base: dict[str, Any], path: tuple[str, ...], literal: str) -> bytes:
    document: Any = {**base}
    node = document
    for key in path[:-1]:
        node[key] = {**node[key]}
        node = node[key]
    node[path[-1]] = PLACEHOLDER.decode().strip('"')
    return dumps(document).replace(PLACEHOLDER, literal.encode())


def openxswitch(literal: str) -> str:
    """The published amount, or the refusal's reason (the webhook dead-letters it with that reason)."""
    document = loads_exact(_body(OXS_WITHDRAW, ("params", "amount"), literal))
    [result] = parse_delivery(document, received_at=RECEIVED)
    return result.amount if isinstance(result, TransferEvent) else f"refused: {result.reason}"


def ripio(literal: str) -> str:
    [result] = parse_message(loads_exact(_body(RIPIO_DEPOSIT, ("body", "amount"), literal)), received_at=RECEIVED)
    return result.amount if isinstance(result, TransferEvent) else f"refused: {result.reason}"


def okx(literal: str) -> str:
    """OKX sends amounts as strings only."""
    item = {**OKX_DEPOSIT_PUSH["data"][0], "amt": loads_exact(literal)}
    [result] = parse_push({**OKX_DEPOSIT_PUSH, "data": [item]}, received_at=RECEIVED)
    return result.amount if isinstance(result, TransferEvent) else f"refused: {result.reason}"


PARSERS = {"openxswitch": openxswitch, "ripio": ripio, "okx": okx}


def _cases(cases: list[Any]) -> list[Any]:
    """Each case through each parser (OKX sends amounts as strings only)."""
    return [
        pytest.param(name, *case, id=f"{case[0]}-{name}")
        for case in cases
        for name in sorted(PARSERS)
        if name != "okx" or case[1].startswith('"')
    ]


@pytest.mark.parametrize(("parser", "form", "literal", "published"), _cases(AT_THE_BOUND))
def test_every_form_at_the_bound_is_published_exactly(parser: str, form: str, literal: str, published: str) -> None:
    assert PARSERS[parser](literal) == published


@pytest.mark.parametrize(("parser", "form", "literal"), _cases(PAST_THE_BOUND))
def test_every_form_past_the_bound_is_refused_with_the_same_reason(parser: str, form: str, literal: str) -> None:
    outcome = PARSERS[parser](literal)
    assert outcome.startswith("refused: ") and f"more than {N} digits" in outcome, outcome[:200]


def test_a_fee_meets_the_same_bound() -> None:
    params = {**OXS_WITHDRAW["params"], "networkFee": Decimal("1E+100")}
    letter = refused(parse_delivery({**OXS_WITHDRAW, "params": params}, received_at=RECEIVED))
    assert letter is not None and f"networkFee: more than {N} digits" in letter.reason


def test_an_integer_literal_longer_than_python_converts_is_read_exactly() -> None:
    """Past ``int()``'s digit limit the reader keeps the number exact (a ``Decimal``) instead of
    refusing the whole document: the amount's bound, not the reader, decides."""
    assert loads_exact(b'{"amount": ' + b"9" * 10_000 + b"}") == {"amount": Decimal("9" * 10_000)}


def _digits_written_out(number: Decimal) -> int:
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return sum(character.isdigit() for character in text)


@fuzz_settings(300)
@given(decimals(max_exponent=300))
def test_any_decimal_is_published_exactly_iff_it_has_at_most_the_bound_in_digits(number: Decimal) -> None:
    if number.is_signed() and number != 0:
        return  # negative amounts are refused for their sign
    try:
        text = canonical_decimal(number)
    except DecimalError as exc:
        assert f"more than {N} digits" in str(exc)
        assert _digits_written_out(number) > N
        return
    assert Decimal(text) == number and _digits_written_out(number) <= N
    assert sum(character.isdigit() for character in text) <= N


@pytest.mark.parametrize("value", [10**N - 1, 10**N, Decimal(10**N - 1), Decimal(10**N), str(10**N - 1), str(10**N)])
def test_canonical_decimal_takes_the_bound_for_int_decimal_and_string_alike(value: Any) -> None:
    if Decimal(value) < 10**N:
        assert canonical_decimal(value) == str(10**N - 1)
    else:
        with pytest.raises(DecimalError, match=f"more than {N} digits"):
            canonical_decimal(value)


def test_a_refused_amount_is_a_dead_letter_not_an_error_in_a_provider_batch() -> None:
    """Ripio's rows: one amount past the bound is one dead letter, the rest still publish."""
    good = _body(RIPIO_DEPOSIT, ("body", "amount"), "1")
    bad = _body(RIPIO_DEPOSIT, ("body", "amount"), "9" * 4300)
    results = [parse_message(loads_exact(body), received_at=RECEIVED)[0] for body in (good, bad)]
    assert isinstance(results[0], TransferEvent) and isinstance(results[1], DeadLetter)
