"""The parser contract every provider follows, and the small, pure helpers its parsers share.

**The contract.** A provider's pure parse entry point takes one payload (a decoded JSON value: a
frame, a page, a webhook body, a row) and the time it was received in, plus what the provider
needs to read it (a channel, an account, its rules), and returns ``list[ParseResult]``: events,
and dead letters carrying the reason, provider and channel. It is total: it **never raises** for
any payload. ``Parser`` is that shape once its extra arguments are bound.

* One item that cannot be normalized is a ``DeadLetter`` with that item's own bytes
  (``parse_items``), so one bad item never sinks the rest of a push or a page.
* A payload refused *as a whole* — not the parser's kind of message at all (not a push of a
  transfer channel, a page that is not a list, a body that is not a transaction), or a failure of
  a parser whose payload is one item (a webhook delivery, one row) — is one ``refusal``: a
  ``DeadLetter`` with ``refused=True``, the only result. The engine that read the payload then
  dead-letters the payload *as it received it* with that reason: the stream engine the frame's
  bytes on its DLQ channel, the paged reads the page (and that read ends), a webhook the body
  (``Quarantine`` 200: whether a body is a delivery at all, answered 400, is decided by the
  provider's envelope reader before the parser), ``dlq replay`` the whole record it read.

Inside a parse module, ``ParseError`` is the helpers' way of saying why (``require_str``, …); it
is caught at the entry point and never leaves it. Engines still catch anything else a parser
raises (a bug) and dead-letter that payload, counted in ``bridge_parser_errors_total``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import DecimalError, canonical_decimal, dumps, small_int
from bridge.contract.timeutil import TimestampError

__all__ = [
    "ParseError",
    "ParseResult",
    "require_str",
    "optional_str",
    "require_decimal",
    "optional_decimal",
    "optional_int",
    "optional_bool",
    "require_mapping",
    "parse_items",
    "Parser",
    "refusal",
    "refused",
    "error_reason",
]

ParseResult = TransferEvent | DeadLetter

Parser = Callable[[Any, str], list[ParseResult]]
"""``(payload, received_at) -> results``: a provider's parse entry point with its other arguments
bound (channel, account, rules). Total: never raises; see the module's docstring."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 120, 60, 6, 6


def provider_text(value: Any, limit: int = 200) -> str:
    """A provider-supplied code or message, made safe for a log line or an exception.

    Error frames are provider input like any other: a megabyte string, a 10,000-digit number or a
    list nested a thousand deep must not become a megabyte log line or a crash while logging.
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            text = _SHORT.repr(value) if isinstance(value, (Mapping, list, tuple)) else str(value)
        except (ValueError, RecursionError):  # ints beyond str()'s digit limit
            text = f"<{type(value).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)"


class ParseError(ValueError):
    """The payload is well-formed JSON but not a transfer we can normalize."""


def require_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _text(value: str, name: str) -> str:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(f"field {name!r}: not valid Unicode (lone surrogate)") from None
    return value


def require_str(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    if isinstance(value, str) and value.strip():
        return _text(value, name)
    if value is None or value == "":
        raise ParseError(f"missing required field {name!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ParseError(f"field {name!r}: expected a string, got {type(value).__name__}")


def optional_str(item: Mapping[str, Any], name: str) -> str | None:
    """Empty strings are the providers' way of saying 'none': they become null."""
    value = item.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return _text(value, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ParseError(f"field {name!r}: expected a string, got {type(value).__name__}")


def require_decimal(item: Mapping[str, Any], name: str) -> str:
    if name not in item or item[name] is None or item[name] == "":
        raise ParseError(f"missing required field {name!r}")
    try:
        return canonical_decimal(item[name], field=name)
    except DecimalError as exc:
        raise ParseError(str(exc)) from None


def optional_decimal(item: Mapping[str, Any], name: str) -> str | None:
    if item.get(name) is None or item.get(name) == "":
        return None
    return require_decimal(item, name)


def optional_int(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ParseError(f"field {name!r}: expected an integer, got bool")
    try:
        number = small_int(value)
    except ValueError as exc:
        raise ParseError(f"field {name!r}: {exc}") from None
    if number < 0 or number > 2**31:
        raise ParseError(f"field {name!r}: {number} is out of range")
    return number


def optional_bool(item: Mapping[str, Any], name: str) -> bool | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    raise ParseError(f"field {name!r}: expected true/false, got {type(value).__name__}")


MAX_DEPTH = 64
"""Deeper payloads cannot be carried in ``raw`` (the JSON encoder stops at 255 levels): DLQ them."""


_LEAVES = frozenset({str, int, float, bool, type(None), Decimal})
"""JSON scalars: skipped by exact type before the (slow, ABC) ``Mapping`` check."""


def check_depth(value: Any, what: str = "item") -> None:
    # Only containers are pushed: a provider item is a flat object, so this is one pass over its values.
    if not isinstance(value, (Mapping, list)):
        return
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        for child in node.values() if isinstance(node, Mapping) else node:
            if type(child) not in _LEAVES and isinstance(child, (Mapping, list)):
                stack.append((child, depth + 1))


def parse_items(
    items: Any,
    parse_one: Callable[[Mapping[str, Any]], TransferEvent],
    *,
    provider: Provider,
    channel: str,
    received_at: str,
    account_id: str | None = None,
    not_a_list: str = "items are not a list",
) -> list[ParseResult]:
    """Parse each item on its own; a failure becomes a dead letter with that item's bytes, and
    items that are not a list at all one dead letter with theirs (``not_a_list`` says what they are)."""
    if not isinstance(items, list):
        reason = f"{not_a_list} but {type(items).__name__}"
        return [DeadLetter(provider=provider, channel=channel, reason=reason, raw=item_bytes(items), received_at=received_at, account_id=account_id)]
    results: list[ParseResult] = []
    for item in items:
        try:
            check_depth(item)
            results.append(parse_one(require_mapping(item, "item")))
        except (ParseError, DecimalError, TimestampError, ValueError) as exc:
            results.append(
                DeadLetter(
                    provider=provider,
                    channel=channel,
                    reason=_reason(exc),
                    raw=item_bytes(item),
                    received_at=received_at,
                    account_id=account_id,
                )
            )
    return results


def item_bytes(item: Any) -> bytes:
    try:
        return dumps(item)
    except (TypeError, ValueError):
        return repr(item).encode("utf-8", "replace")


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic ValidationError: name the fields, keep it one line
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors()[:5]]
        return "contract validation failed: " + "; ".join(parts)
    return str(exc)


def refusal(
    reason: str, *, provider: Provider, channel: str, payload: Any, received_at: str, account_id: str | None = None
) -> DeadLetter:
    """The one result of a parser that refuses its payload as a whole (``DeadLetter.refused``);
    ``raw`` is the payload as the parser saw it (bytes kept as they are), for a caller without the
    bytes it came in."""
    return DeadLetter(
        provider=provider,
        channel=channel,
        reason=reason,
        raw=payload if isinstance(payload, bytes) else item_bytes(payload),
        received_at=received_at,
        account_id=account_id,
        refused=True,
    )


def refused(results: Sequence[ParseResult]) -> DeadLetter | None:
    """The refusal, when a parser refused its payload as a whole; None when it read it."""
    if len(results) == 1:
        only = results[0]
        if isinstance(only, DeadLetter) and only.refused:
            return only
    return None


def error_reason(exc: Exception) -> str:
    """A failure as a webhook's dead-letter reason: one line that names what failed, never a
    traceback (``ParseError``'s own words; the contract's validation errors by field; anything
    else with its type)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic ValidationError: name the fields, keep it one line
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors()[:5]]
        return "contract validation failed: " + "; ".join(parts)
    if isinstance(exc, ParseError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"
