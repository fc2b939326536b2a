"""JSON in and out without ever turning money into a float.

Providers send amounts as JSON numbers (OpenXSwitch, Ripio). ``orjson`` would read those as
binary floats, so payloads that may carry numbers are read with the standard library and
``parse_float=Decimal``; integers stay Python ints, which are exact (past ``int()``'s digit limit
they are read as an exact ``Decimal`` instead). On the way out, ``dumps`` writes a ``Decimal`` back
as the same JSON number text it came from.

Every amount and fee, whatever form it arrives in (integer or decimal JSON number, exponent form,
decimal string), meets one bound: ``MAX_AMOUNT_DIGITS`` digits once written out as published.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

__all__ = ["JSONError", "loads_exact", "dumps", "canonical_decimal", "DecimalError", "small_int", "MAX_AMOUNT_DIGITS"]

MAX_AMOUNT_DIGITS = 100
"""The one bound of every amount and fee, in any form it arrives in (integer JSON number, decimal
JSON number, exponent form, decimal string): at most this many digits once written out as
published — plain notation, no trailing fractional zeros, ``0.`` before a fraction
(``"0.00000001"`` has 9). A uint256 in base units has 78. Past it the item is dead-lettered."""


class JSONError(ValueError):
    """The bytes are not a JSON document we accept."""


class DecimalError(ValueError):
    """A value is not an exact, finite, non-negative decimal."""


def _reject_constant(name: str) -> Any:
    raise JSONError(f"non-standard JSON constant {name} is not accepted")


class _IntDigitLimit(Exception):
    """``int()`` refused an integer literal (digit limit): the document may be read another way."""


def _long_int(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # longer than int()'s digit limit (CVE-2020-10735): exact all the same
        return Decimal(text)


_decoder = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
_long_int_decoder = json.JSONDecoder(parse_float=Decimal, parse_int=_long_int, parse_constant=_reject_constant)


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON keeping every number exact (floats become ``Decimal``)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    except UnicodeDecodeError as exc:
        raise JSONError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return _decode(_decoder, text)
    except _IntDigitLimit:
        # Rare: an integer literal past int()'s digit limit. Read again, slower, keeping it as a
        # Decimal, so the amount's bound (not the reader) refuses it, like any other form.
        try:
            return _decode(_long_int_decoder, text)
        except _IntDigitLimit as exc:
            raise JSONError(f"unreadable number: {str(exc.__cause__)[:80]}") from None


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except RecursionError:
        raise JSONError("JSON nesting too deep") from None
    except ArithmeticError:  # decimal.InvalidOperation: a number literal beyond any exact range
        raise JSONError("number out of range (exponent too large)") from None
    except json.JSONDecodeError as exc:
        raise JSONError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except JSONError:  # NaN / Infinity, from parse_constant
        raise
    except ValueError as exc:  # an integer literal longer than Python's digit limit
        raise _IntDigitLimit() from exc


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Same digits as on the wire: 0.1 stays 0.1, 1E+2 stays a JSON number.
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """orjson, plus ``Decimal`` written as a JSON number with its original digits."""
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        # Rare slow path for what orjson refuses: integers beyond 64 bits (a provider may send any
        # digits), lone surrogates (legal as JSON escapes, not encodable as UTF-8), and nesting
        # deeper than orjson writes (255 levels; ``loads_exact`` reads up to 999). Iterative, so
        # depth costs no Python stack.
        return _dumps_slow(value)


def _scalar(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return str(value).encode()
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return orjson.dumps(value, default=_default)


def _dumps_slow(value: Any) -> bytes:
    out: list[bytes] = []
    stack: list[Any] = [value]  # values to write, or bytes already written out (separators, closers)
    while stack:
        node = stack.pop()
        if isinstance(node, bytes):
            out.append(node)
        elif isinstance(node, dict):
            out.append(b"{")
            stack.append(b"}")
            pairs = list(node.items())
            for index in range(len(pairs) - 1, -1, -1):
                key, child = pairs[index]
                stack.append(child)
                stack.append((b"," if index else b"") + _scalar(str(key)) + b":")
        elif isinstance(node, (list, tuple)):
            out.append(b"[")
            stack.append(b"]")
            for index in range(len(node) - 1, -1, -1):
                stack.append(node[index])
                if index:
                    stack.append(b",")
        else:
            out.append(_scalar(node))
    return b"".join(out)


_AMOUNT_CEILING = 10**MAX_AMOUNT_DIGITS
_PLAIN_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?", re.ASCII)
"""Digits without sign, exponent or leading zeros: canonical once trailing fractional zeros go."""


def canonical_decimal(value: Any, *, field: str = "amount") -> str:
    """Exact decimal text without exponent or trailing zeros (``"0.00000001"``, never ``1e-08``).

    Accepts the string, int or ``Decimal`` a provider sent; a float is refused, since by then
    precision is already lost. At most ``MAX_AMOUNT_DIGITS`` digits, whatever the form: the size is
    checked before any text is built (``1e999999999`` is 11 bytes on the wire).
    """
    if isinstance(value, (bool, float)):
        raise DecimalError(f"{field}: {type(value).__name__} is not an exact decimal")
    if isinstance(value, int):
        if value < 0:
            raise DecimalError(f"{field}: negative value {value}")
        if value >= _AMOUNT_CEILING:
            raise DecimalError(f"{field}: more than {MAX_AMOUNT_DIGITS} digits")
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        plain = _PLAIN_DECIMAL.fullmatch(text)
        if plain is not None:  # the usual wire form: the same text the Decimal path below returns, cheaper
            if plain.group(2) is not None:
                text = text.rstrip("0").rstrip(".")
            if len(text) - ("." in text) <= MAX_AMOUNT_DIGITS:
                return text
        if not text:
            raise DecimalError(f"{field}: empty string")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise DecimalError(f"{field}: {value[:40]!r} is not a decimal number") from None
    elif isinstance(value, Decimal):
        number = value
    else:
        raise DecimalError(f"{field}: {type(value).__name__} is not a decimal number")
    if not number.is_finite():
        raise DecimalError(f"{field}: {number} is not finite")
    if number.is_signed() and number != 0:
        raise DecimalError(f"{field}: negative value {number}")
    if number == 0:
        return "0"
    if _digits_written_out(number) > MAX_AMOUNT_DIGITS:
        raise DecimalError(f"{field}: more than {MAX_AMOUNT_DIGITS} digits")
    text = format(number, "f")  # exact: no context rounding (normalize() would round to 28 digits)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _digits_written_out(number: Decimal) -> int:
    """How many digits ``number`` (finite, not zero) has in plain notation without trailing
    fractional zeros, from its coefficient and exponent alone (no text of it is built)."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:  # trailing zeros move into the exponent
        significant -= 1
    exponent += len(digits) - significant
    if exponent >= 0:
        return significant + exponent
    return max(significant + exponent, 1) + -exponent  # integer part ("0" at least) + fraction


_SMALL_INT_DIGITS = 20


def small_int(value: Any) -> int:
    """A whole number of at most 20 digits from an int, a Decimal or a digit string.

    The size is checked before any conversion: ``1e999999`` is 9 bytes of JSON but ``int()`` of it
    builds a million-digit integer (seconds of CPU on the event loop). Raises ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite() or value.adjusted() >= _SMALL_INT_DIGITS:
            raise ValueError(f"{str(value)[:40]!r} is not a whole number of at most {_SMALL_INT_DIGITS} digits")
        if value != value.to_integral_value():
            raise ValueError(f"{str(value)[:40]!r} is not a whole number")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isascii() or not digits.isdigit() or len(digits) > _SMALL_INT_DIGITS:
            raise ValueError(f"{value[:40]!r} is not a whole number of at most {_SMALL_INT_DIGITS} digits")
        return int(text)
    raise ValueError(f"expected a whole number, got {type(value).__name__}")
