"""Transport only: one Ripio stream connection — open, subscribe with a ticket, keep alive.

Yields every frame that may be a transfer message, with its bytes, its receive time and its JSON
read exactly (``loads_exact``: amounts are JSON numbers); it never parses transfers. Control frames
are handled here: welcome messages (``id: -1``) confirm the subscription and are dropped, pongs are
dropped, an error envelope while subscribing raises ``TicketRejected``. Reconnecting, fetching the
ticket and gap detection are the caller's job.

Keepalive: ``{"method":"ping"}`` every ``ping_interval`` seconds (public clients do so; whether
Ripio needs it is unconfirmed), WebSocket protocol pings (a dead peer closes the connection), and
optionally a liveness timeout on incoming traffic.

The subscribe frame carries the ticket, so the websockets library gets a logger pinned at INFO:
its DEBUG frame dumps would otherwise print it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.contract.jsonutil import loads_exact
from bridge.ingest.frames import Frame, decode_frame, utc_now, ws_extensions
from bridge.ingest.stream import HandshakeError, KeepaliveTimeout
from bridge.sources.ripio import messages as m

__all__ = ["Frame", "RipioConnection", "TicketRejected", "HandshakeError", "KeepaliveTimeout"]

log = logging.getLogger(__name__)

_WIRE_LOG = logging.getLogger("bridge.sources.ripio.wire")
_WIRE_LOG.setLevel(logging.INFO)  # frame dumps at DEBUG would include the ticket


class TicketRejected(HandshakeError):
    """Ripio answered our subscribe with an error (expired, used or unknown ticket)."""

    def __init__(self, account: str, reason: str):
        super().__init__(f"Ripio account {account!r}: subscription refused: {reason}")
        self.account = account
        self.reason = reason


def decode(data: bytes | str, received_at: str) -> Frame:
    return decode_frame(data, received_at, loads_exact)


class RipioConnection:
    """A subscribed stream connection. Iterate ``frames()``; ``close()`` when done."""

    def __init__(
        self,
        ws: ClientConnection,
        account: str,
        *,
        ping_interval: float | None,
        liveness_timeout: float | None,
        clock: Callable[[], float] = time.time,
    ):
        self.ws = ws
        self.account = account
        self._ping_interval = ping_interval
        self._liveness_timeout = liveness_timeout
        self._clock = clock
        self._early: list[Frame] = []  # data frames that came while subscribing (rare); a list: an empty deque costs 760 bytes
        self.pings_sent = 0
        self.welcomes = 0
        self.controls = 0
        self.confirmed = False
        """A welcome or a message arrived after subscribing (else: assumed after the confirm timeout)."""

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        account: str,
        ticket: str,
        topics: Sequence[str],
        *,
        ping_interval: float | None,
        liveness_timeout: float | None,
        ws_ping_interval: float | None,
        ws_ping_timeout: float,
        handshake_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        confirm_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> RipioConnection:
        """Connect and subscribe; returns once the subscription is confirmed, or after
        ``confirm_timeout`` without an answer (Ripio does not document an acknowledgement)."""
        ws = await connect(
            url,
            open_timeout=handshake_timeout,
            ssl=ssl_context,
            ping_interval=ws_ping_interval,
            ping_timeout=ws_ping_timeout,
            close_timeout=2,
            max_size=8 * 2**20,
            compression=None,
            extensions=ws_extensions(),
            logger=_WIRE_LOG,
        )
        connection = cls(ws, account, ping_interval=ping_interval, liveness_timeout=liveness_timeout, clock=clock)
        try:
            await ws.send(orjson.dumps(m.subscribe_request(topics, ticket)).decode())
            await connection._confirm(confirm_timeout)
        except BaseException:
            await connection.close()
            raise
        log.info("ripio account %r subscribed to %s", account, ", ".join(topics))
        return connection

    async def _confirm(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.confirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.debug("ripio account %r: no answer to subscribe within %.1fs; assuming subscribed", self.account, timeout)
                return
            try:
                async with asyncio.timeout(remaining):
                    data = await self.ws.recv(decode=False)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise HandshakeError(f"Ripio account {self.account!r}: closed while subscribing ({_close_text(exc)})") from None
            frame = decode(data, utc_now(self._clock))
            control = m.classify(frame.message) if isinstance(frame.message, dict) else None
            if isinstance(control, m.StreamError):
                raise TicketRejected(self.account, control.describe())
            if isinstance(control, m.Welcome):
                self.welcomes += 1
                self.confirmed = True
            elif control is None:
                self._early.append(frame)  # a message: the subscription works
                self.confirmed = True
            else:
                self.controls += 1

    # -- reading -------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames that may be transfer messages, until the connection ends (always by raising)."""
        while self._early:
            yield self._early.pop(0)
        next_ping = time.monotonic() + self._ping_interval if self._ping_interval else None
        last_traffic = time.monotonic()
        while True:
            now = time.monotonic()
            waits = []
            if next_ping is not None:
                waits.append(next_ping - now)
            if self._liveness_timeout is not None:
                waits.append(last_traffic + self._liveness_timeout - now)
            wait = max(0.0, min(waits)) if waits else None
            try:
                async with asyncio.timeout(wait):
                    data = await self.ws.recv(decode=False)
            except TimeoutError:
                now = time.monotonic()
                if self._liveness_timeout is not None and now - last_traffic >= self._liveness_timeout:
                    raise KeepaliveTimeout(
                        f"Ripio account {self.account!r}: nothing received for {self._liveness_timeout:g}s"
                    ) from None
                if next_ping is not None and now >= next_ping:
                    await self.ws.send(orjson.dumps(m.PING).decode())
                    self.pings_sent += 1
                    next_ping = now + self._ping_interval  # type: ignore[operator]
                continue
            last_traffic = time.monotonic()
            frame = decode(data, utc_now(self._clock))
            if isinstance(frame.message, dict):
                control = m.classify(frame.message)
                if control is not None:
                    self._on_control(control)
                    continue
            yield frame

    def _on_control(self, control: m.Control) -> None:
        self.controls += 1
        if isinstance(control, m.Welcome):
            self.welcomes += 1
            log.debug("ripio account %r: welcome on %s", self.account, control.topic)
        elif isinstance(control, m.StreamError):
            log.warning("ripio account %r: stream error: %s", self.account, control.describe())
        elif isinstance(control, m.OtherControl):
            log.debug("ripio account %r: %s frame ignored", self.account, control.method)

    async def close(self) -> None:
        try:
            await self.ws.close()
        except (TimeoutError, OSError, ConnectionClosed):  # already gone: nothing to release
            pass


def _close_text(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"{exc.rcvd.code} {exc.rcvd.reason}".strip()
    return exc.__class__.__name__
