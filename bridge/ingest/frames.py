"""What a stream transport and the stream engine exchange: frames, the connection, and why it ended."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from websockets.extensions.base import ClientExtensionFactory
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from bridge.contract.timeutil import format_epoch_ms

__all__ = [
    "Frame", "decode_frame", "utc_now", "Loads", "StreamConnection", "Failure", "HandshakeError", "KeepaliveTimeout", "IdleTimer", "Notice",
    "ws_extensions",
]

T = TypeVar("T")
Loads = Callable[[bytes], Any]
"""A JSON reader: ``orjson.loads`` (fast, floats) or ``loads_exact`` (numbers as exact decimals)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One data frame as received: the bytes, when, and the decoded JSON (None if it is not JSON)."""

    data: bytes
    received_at: str
    message: Any = None
    error: str | None = None


def ws_extensions() -> list[ClientExtensionFactory]:
    """What a provider connection offers in ``connect(compression=None, extensions=...)``: the
    per-message deflate of websockets' default (``memLevel`` 5, the server's window as it says),
    plus ``client_no_context_takeover``. With it our side compresses each message on its own and
    keeps no compressor between messages: websockets otherwise holds a zlib compressor per
    connection for its lifetime (about 38 KB at these settings), although all we ever send is a
    login, a subscription and a keepalive ping every few seconds. What the provider sends is
    compressed and inflated exactly as before (the server's context and window are unchanged).
    RFC 7692 §7.1.1.2 lets a client declare this on its own, whatever the server answers."""
    return [ClientPerMessageDeflateFactory(client_no_context_takeover=True, compress_settings={"memLevel": 5})]


def utc_now(clock: Callable[[], float] = time.time) -> str:
    """Receive time as the contract writes it (RFC 3339 UTC, milliseconds), once per frame: the
    second's text is cached; rounded as ``datetime.fromtimestamp`` rounds (to the microsecond)."""
    fraction, whole = math.modf(clock())
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return format_epoch_ms(int(whole) * 1000 + micros // 1000)


def decode_frame(data: bytes | str, received_at: str, loads: Loads) -> Frame:
    """Never raises: a frame that is not JSON carries the reason instead of a message."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        return Frame(raw, received_at, loads(raw))
    except ValueError as exc:  # orjson.JSONDecodeError and JSONError are ValueErrors
        return Frame(raw, received_at, None, f"frame is not JSON: {exc}")


class IdleTimer:
    """``async with asyncio.timeout(seconds): await receive()`` for a read loop, without a timer per
    frame: ``asyncio.timeout`` schedules and cancels a loop timer on every receive, which a flood
    pays per event. Here one timer stays armed and, when it fires early (frames came meanwhile),
    moves itself to the latest deadline; between receives it does nothing. The expiry cancels the
    reading task and is turned into ``TimeoutError`` exactly as ``asyncio.timeout`` does (a cancel
    from anyone else stays a cancel). ``receive`` must be safe to cancel (websockets' ``recv`` is)."""

    __slots__ = ("_loop", "_task", "_handle", "_deadline", "_waiting", "_fired")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._waiting = False
        self._fired = False

    async def wait(self, receive: Callable[[], Awaitable[T]], seconds: float) -> T:
        self._deadline = deadline = self._loop.time() + seconds
        if self._handle is None or self._handle.when() > deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(deadline, self._expire)
        cancelling = self._task.cancelling()
        self._waiting = True
        try:
            return await receive()
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if self._task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _expire(self) -> None:
        self._handle = None
        if not self._waiting:
            return  # between receives: the next one arms it again
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._expire)
            return
        self._fired = True
        self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Notice:
    """A flag the transport raises when the provider says it will close the connection soon (OKX
    notice 64008). The stream engine listens with a callback instead of waiting for it beside the
    reader: an idle connection holds no task, future or waiter queue for a notice that rarely comes
    (an ``asyncio.Event`` alone costs a 760-byte deque)."""

    __slots__ = ("_set", "_listener")

    def __init__(self) -> None:
        self._set = False
        self._listener: Callable[[], None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener()

    def listen(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` once when the notice is raised — at once if it already is; None stops
        listening. One listener: the engine serving the connection."""
        if listener is not None and self._set:
            listener()
            return
        self._listener = listener


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
