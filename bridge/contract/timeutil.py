"""Timestamps in the one shape the contract allows: RFC 3339, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from bridge.contract.jsonutil import small_int

__all__ = ["TimestampError", "from_epoch_ms", "from_iso", "format_epoch_ms", "format_utc_ms", "to_epoch_ms"]


class TimestampError(ValueError):
    """A provider timestamp we cannot read."""


_MIN_MS = 946_684_800_000  # 2000-01-01: anything earlier is a unit mistake, not a transfer.
_MAX_MS = 4_102_444_800_000  # 2100-01-01


def format_utc_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_epoch_ms(value: str | int, *, field: str) -> str:
    """OKX sends epoch milliseconds as strings; Ripio as integers."""
    if isinstance(value, bool):
        raise TimestampError(f"{field}: boolean is not a timestamp")
    try:
        millis = small_int(value)
    except ValueError:
        raise TimestampError(f"{field}: {str(value)[:40]!r} is not epoch milliseconds") from None
    if not _MIN_MS <= millis <= _MAX_MS:
        raise TimestampError(f"{field}: {millis} is outside 2000..2100 in epoch milliseconds")
    return format_epoch_ms(millis)


def format_epoch_ms(millis: int) -> str:
    """Epoch milliseconds in the contract's shape (the caller checked the range)."""
    seconds, ms = divmod(millis, 1000)
    return f"{_second_text(seconds)}{ms:03d}Z"


@lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of an epoch second: the states of a burst share a few seconds, and
    strftime is the dearest step of a timestamp."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


@lru_cache(maxsize=4096)
def _epoch_second(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp())


def from_iso(value: object, *, field: str) -> str:
    """ISO 8601 text (``2025-05-05T00:53:29.206Z``) normalized to UTC milliseconds."""
    if not isinstance(value, str):
        raise TimestampError(f"{field}: expected an ISO 8601 string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise TimestampError(f"{field}: {value[:40]!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_utc_ms(moment)
    except OverflowError:
        raise TimestampError(f"{field}: {value[:40]!r} is outside the representable range in UTC") from None


def to_epoch_ms(rfc3339: str) -> int:
    """Inverse of the formatters above, for latency and backfill windows."""
    if len(rfc3339) == 24 and rfc3339[19] == "." and rfc3339[23] == "Z" and rfc3339[20:23].isdigit():
        return _epoch_second(rfc3339[:19]) * 1000 + int(rfc3339[20:23])  # the contract's own shape
    moment = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)
