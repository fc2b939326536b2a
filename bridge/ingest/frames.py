"""What a stream transport and the stream engine exchange: frames, the connection, and why it ended."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.contract.timeutil import format_utc_ms

__all__ = ["Frame", "decode_frame", "utc_now", "Loads", "StreamConnection", "Failure", "HandshakeError", "KeepaliveTimeout"]

Loads = Callable[[bytes], Any]
"""A JSON reader: ``orjson.loads`` (fast, floats) or ``loads_exact`` (numbers as exact decimals)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One data frame as received: the bytes, when, and the decoded JSON (None if it is not JSON)."""

    data: bytes
    received_at: str
    message: Any = None
    error: str | None = None


def utc_now(clock: Callable[[], float] = time.time) -> str:
    """Receive time as the contract writes it (RFC 3339 UTC, milliseconds)."""
    return format_utc_ms(datetime.fromtimestamp(clock(), tz=UTC))


def decode_frame(data: bytes | str, received_at: str, loads: Loads) -> Frame:
    """Never raises: a frame that is not JSON carries the reason instead of a message."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        return Frame(raw, received_at, loads(raw))
    except ValueError as exc:  # orjson.JSONDecodeError and JSONError are ValueErrors
        return Frame(raw, received_at, None, f"frame is not JSON: {exc}")


class HandshakeError(ConnectionError):
    """A transient refusal or loss while opening (too frequent, internal error): retry with backoff."""


class KeepaliveTimeout(ConnectionError):
    """The provider's keepalive went unanswered: the connection is dead even if TCP does not know."""


class StreamConnection(Protocol):
    """An open, logged-in, subscribed connection as a provider's transport returns it."""

    def frames(self) -> AsyncIterator[Frame]:
        """Data frames until the connection ends (by raising; returning means "stream ended")."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a connection attempt or a connection ended: ``reason`` labels the metric."""

    reason: str
    message: str
    config: bool = False
