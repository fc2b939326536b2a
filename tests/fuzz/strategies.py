"""Hypothesis strategies for hostile provider input: valid messages bent field by field, and bytes.

Two levels, because providers can break us at both:

* **values** — what a JSON reader hands a parser: a valid base message with 1–4 fields replaced
  by wrong types, empty/oversized strings, huge/tiny/negative numbers, deep nesting, lone
  surrogates, or deleted (missing ids);
* **bytes** — what arrives on the wire: the same messages serialized and then broken (``NaN`` /
  ``Infinity`` literals, exponents, truncation, invalid UTF-8, a BOM, deep brackets, random bytes).

Numbers stay what ``bridge.contract.jsonutil.loads_exact`` produces (``int`` / ``Decimal``); ``floats=True``
adds binary floats for the OKX path, whose client reads frames with orjson first.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "OKX_DEPOSIT_PUSH",
    "OKX_WITHDRAWAL_PUSH",
    "RIPIO_DEPOSIT",
    "RIPIO_WITHDRAWAL",
    "OXS_WITHDRAW",
    "OXS_DEPOSIT",
    "RECEIVED",
    "decimals",
    "nasty_values",
    "json_values",
    "mutated",
    "wire_bytes",
    "nested",
    "Deep",
    "to_json",
]

RECEIVED = "2026-11-22T10:00:00.000Z"

OKX_DEPOSIT_PUSH: dict[str, Any] = {
    "arg": {"channel": "deposit-info", "uid": "289320000060975104"},
    "data": [
        {
            "actualDepBlkConfirm": "2",
            "amt": "1.5",
            "areaCodeFrom": "",
            "ccy": "USDT",
            "chain": "USDT-TRC20",
            "depId": "88165462",
            "from": "",
            "fromWdId": "",
            "pTime": "1674103661147",
            "state": "0",
            "subAcct": "test",
            "to": "TEhFAqpuHa3LY00000ByNoGnrmexeGMw",
            "ts": "1674103661123",
            "txId": "bc5376817000dbb0d729f6b",
            "uid": "289320000060975104",
        }
    ],
}

OKX_WITHDRAWAL_PUSH: dict[str, Any] = {
    "arg": {"channel": "withdrawal-info", "uid": "289333000001101696"},
    "data": [
        {
            "addrEx": {"comment": "x"},
            "amt": "2",
            "ccy": "USDT",
            "chain": "USDT-TRC20",
            "clientId": "c-1",
            "fee": "0.8",
            "feeCcy": "USDT",
            "from": "",
            "memo": "m",
            "pTime": "1674103268578",
            "pmtId": "",
            "state": "2",
            "subAcct": "",
            "tag": "",
            "to": "TN8CKTQMnpWfT00008KipbJ24ErguhF",
            "toAddrType": "1",
            "ts": "1674103268472",
            "txId": "0xabc",
            "uid": "289333000001101696",
            "wdId": "63754560",
        }
    ],
}

RIPIO_DEPOSIT: dict[str, Any] = {
    "id": 10,
    "topic": "deposit",
    "timestamp": 1673271591764,
    "body": {
        "id": "08799ECC-F6B1-498E-B89C-2A05E6A181B9",
        "user_id": "5B6A43AE-8012-402D-966F-87CF64689535",
        "amount": Decimal("0.00000001"),
        "currency_code": "ETH",
        "status": "confirmed",
        "is_internal": False,
        "hash": "0x79704c92b31061b8f51e26486d6454aff3e3c58aa0d51f0f803d6fd063be8100",
        "address": "3PQhyXH1EZs1bZ23ZafqQDyeViqxn5KdXN",
        "network": "ethereum",
        "create_date": "2023-01-09T13:39:24.057Z",
        "update_date": "2023-01-09T13:39:25.001Z",
    },
}

RIPIO_WITHDRAWAL: dict[str, Any] = {
    "id": 11,
    "topic": "withdrawal",
    "timestamp": 1673271591764,
    "body": {
        "id": "18799ECC-F6B1-498E-B89C-2A05E6A181B9",
        "user_id": "5B6A43AE-8012-402D-966F-87CF64689535",
        "amount": 1000,
        "fee": Decimal("0.0001"),
        "currency_code": "BTC",
        "status": "pending",
        "destination_address": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
        "network": "bitcoin",
        "create_date": "2023-01-09T13:39:24.057Z",
    },
}

OXS_WITHDRAW: dict[str, Any] = {
    "requestId": "f71516a1a53acbc5a999ef9b6edda4",
    "method": "withdraw.confirmed",
    "params": {
        "id": "68180c09b19304fc881991c2",
        "clientTxId": "57337eed-eef3-4123-9e83-83107c4dafa3",
        "coin": "USDT",
        "chain": "ERC20",
        "network": "Ethereum",
        "amount": 9,
        "fromAddress": "0x5523985926Aa12....678D7227E",
        "toAddress": "0x5523985926Aa12....678D7227E",
        "hash": "0x09e6d323086d462d0c4d0b3890d624451a82c6c28ba07d95a946a8544780",
        "status": "success",
        "networkFee": Decimal("0.01"),
        "confirmation": 20,
        "fromWalletId": "6812b103908d2d0d49c7ff79",
        "workspaceId": "656abf1e4b5f5e0012345678",
        "createdAt": "2025-05-05T00:53:29.206Z",
        "updatedAt": "2025-05-05T00:53:29.206Z",
        "wallet": {"id": "6812b103908d2d0d49c7ff79", "clientUserId": None, "asset": {"coin": "USDT", "balance": 9}},
    },
}

OXS_DEPOSIT: dict[str, Any] = {
    "requestId": "a71516a1a53acbc5a999ef9b6edda5",
    "method": "deposit.updated",
    "params": {
        "id": "78180c09b19304fc881991c3",
        "coin": "BTC",
        "chain": "BTC",
        "amount": Decimal("0.12345678"),
        "hash": "ab" * 32,
        "confirmation": 3,
        "toWalletId": "7812b103908d2d0d49c7ff70",
        "destination": "on_chain",
        "tagMemo": "",
        "createdAt": "2025-05-05T00:53:29.206Z",
    },
}

# -- values ----------------------------------------------------------------------------------------

# Strings that have broken parsers somewhere: blanks, numbers in words, unicode digits and
# superscripts (str.isdigit() says yes, int() says no), lone surrogates (legal as JSON \u escapes,
# illegal in UTF-8), timestamps at the edges of datetime, control and bidi characters.
NASTY_STRINGS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "\ud800",
    "a\udfffb",
    "é",
    "💸",
    "\u202e0001",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "1E-400",
    "-1",
    "-0",
    "+5",
    "0x10",
    "1_000",
    " 7 ",
    "١٢٣",
    "²",
    "0" * 30 + "1",
    "9" * 5000,
    "null",
    "true",
    "{}",
    "[]",
    "2025-13-45T99:99:99Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2025-05-05T00:53:29.206+14:00",
    "2025-05-05",
    "1674103661147",
    "99999999999999999999",
    "-1674103661147",
]


def decimals(max_exponent: int = 5000) -> st.SearchStrategy[Decimal]:
    """Finite decimals of any size and precision: tiny (1E-400), huge (1E+400), long, signed."""
    digits = st.lists(st.integers(0, 9), min_size=1, max_size=60).map(tuple)
    return st.one_of(
        st.builds(
            lambda sign, ds, exp: Decimal((sign, ds, exp)),
            st.integers(0, 1),
            digits,
            st.integers(-max_exponent, max_exponent),
        ),
        st.sampled_from([Decimal("0"), Decimal("-0"), Decimal("0E-10"), Decimal("1E-400"), Decimal("1E+400"), Decimal("0.1")]),
    )


def integers() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, -1, 1, 2**31, 2**31 + 1, 2**63, -(2**63), 946_684_799_999, 4_102_444_800_001]),
        st.integers(1, 4000).map(lambda n: 10**n),  # up to 4000 digits: below int/str conversion limits
    )


def oversized() -> st.SearchStrategy[str]:
    return st.sampled_from([10_000, 100_000, 1_000_000]).map(lambda n: "A" * n)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of alternating objects and arrays around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


@dataclass(frozen=True)
class Deep:
    """``depth`` levels of nesting, spelled out only by ``to_json``: a failure report then shows
    ``Deep(depth=900)`` instead of overflowing the printer's recursion (all runners go through
    ``to_json`` and a JSON reader, as the adapters do)."""

    depth: int


def nasty_values(*, floats: bool = False) -> st.SearchStrategy[Any]:
    """One hostile JSON value (scalars, containers, deep nesting, oversized strings)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        integers(),
        decimals(),
        st.sampled_from(NASTY_STRINGS),
        st.text(max_size=40),
        st.text(st.characters(codec="utf-8"), max_size=10),
        st.characters(categories=["Cs"]).map(lambda c: f"x{c}"),  # lone surrogate inside text
        oversized(),
        *([st.floats(allow_nan=False, allow_infinity=False)] if floats else []),
    )
    containers = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
        max_leaves=8,
    )
    deep = st.integers(1, 900).map(Deep)
    return st.one_of(scalars, scalars, containers, deep)


def json_values(*, floats: bool = False) -> st.SearchStrategy[Any]:
    """Arbitrary well-formed JSON values (numbers as ``int``/``Decimal``, like ``loads_exact``)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        integers(),
        decimals(),
        st.text(max_size=30),
        *([st.floats(allow_nan=False, allow_infinity=False)] if floats else []),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
        max_leaves=25,
    )


# -- mutation of a valid message -----------------------------------------------------------------

Path = tuple[Any, ...]


def _paths(value: Any, prefix: Path = ()) -> list[Path]:
    found: list[Path] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append(prefix + (key,))
            found.extend(_paths(child, prefix + (key,)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append(prefix + (index,))
            found.extend(_paths(child, prefix + (index,)))
    return found


def _parent(doc: Any, path: Path) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw: Callable[..., Any], base: dict[str, Any], *, floats: bool = False, max_mutations: int = 4) -> dict[str, Any]:
    """``base`` with 1..``max_mutations`` fields replaced by hostile values, deleted, or added."""
    doc = copy.deepcopy(base)
    values = nasty_values(floats=floats)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "add" or not paths:
            containers = [()] + [p for p in paths if isinstance(_parent(doc, p + (None,)), dict)]
            where = draw(st.sampled_from(containers))
            target = _parent(doc, where + (None,))
            if isinstance(target, dict):
                target[draw(st.text(max_size=12))] = draw(values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return doc


# -- bytes on the wire ---------------------------------------------------------------------------


def to_json(value: Any) -> bytes:
    """Serialize a generated value the way any JSON writer could: big integers and decimals as
    plain number text, lone surrogates as ``\\ud800`` escapes (legal JSON, not valid UTF-8)."""

    def text(v: Any) -> str:
        if v is None or isinstance(v, bool):
            return json.dumps(v)
        if isinstance(v, (int, Decimal)):
            return str(v)
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ",".join(text(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(str(k)) + ":" + text(x) for k, x in v.items()) + "}"
        if isinstance(v, Deep):
            opens = "".join('{"n":' if level % 2 else "[" for level in reversed(range(v.depth)))
            closes = "".join("}" if level % 2 else "]" for level in range(v.depth))
            return opens + "1" + closes
        raise TypeError(type(v).__name__)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))  # generated nesting goes to 900 levels
    try:
        return text(value).encode()
    finally:
        sys.setrecursionlimit(limit)


_NUMBER_TEXTS = [
    b"NaN",
    b"-NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1E-400",
    b"4.9e-324",
    b"1.7976931348623157e309",
    b"0.1",
    b"-0",
    b"-0.0",
    b"1e5000",
    b"1e99999999999999999999",
    b"123456789012345678901234567890.123456789012345678901234567890",
    b"9" * 4000,
    b"00",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"0x1F",
]


def _break(data: bytes, how: str, position: int, payload: bytes) -> bytes:
    position = min(position, len(data))
    if how == "truncate":
        return data[:position]
    if how == "insert":
        return data[:position] + payload + data[position:]
    if how == "overwrite":
        return data[:position] + payload + data[position + len(payload) :]
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "number":
        return data.replace(b"1", payload, 1) if b"1" in data else payload
    return data


@st.composite
def wire_bytes(draw: Callable[..., Any], base: dict[str, Any], *, floats: bool = False) -> bytes:
    """Bytes a provider could send in place of ``base``: valid, bent, broken or random."""
    kind = draw(st.sampled_from(["valid", "valid", "broken", "broken", "deep", "random", "other-json"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 100_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        tail = closer * depth if draw(st.booleans()) else b""
        return opener * depth + b"1" + tail
    if kind == "other-json":
        return to_json(draw(json_values(floats=floats)))
    data = to_json(draw(mutated(base, floats=floats)))
    if kind == "valid":
        return data
    how = draw(st.sampled_from(["truncate", "insert", "overwrite", "bom", "number", "number"]))
    payload = draw(
        st.one_of(
            st.sampled_from(_NUMBER_TEXTS),
            st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"\x00"]),
            st.binary(min_size=1, max_size=8),
        )
    )
    return _break(data, how, draw(st.integers(0, len(data))), payload)
