"""Transport only: one OKX ``/ws/v5/business`` connection — open, log in, subscribe, keep alive.

Yields every data frame with its receive time; it never parses transfers. Reacts to control events
by code: login/sign/passphrase/key/timestamp errors and invalid requests during the handshake raise
``ConfigurationError`` subclasses (slow retry), a missing ``pong`` raises ``KeepaliveTimeout``, a
``notice`` 64008 sets ``upgrade_notice`` and reading goes on — the caller opens a successor
connection and only then closes this one, so the pushes in between are not lost. Reconnecting is
the caller's job.

The login frame carries the API key, passphrase and signature, so the websockets library gets a
logger pinned at INFO: its DEBUG frame dumps would otherwise print them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.ingest.frames import Frame, IdleTimer, Notice, decode_frame, utc_now, ws_extensions
from bridge.ingest.source import ConfigurationError
from bridge.ingest.stream import HandshakeError, KeepaliveTimeout
from bridge.sources.okx import messages as m
from bridge.sources.okx.auth import Credentials, login_args

__all__ = [
    "Frame",
    "OkxConnection",
    "LoginRejected",
    "RequestRejected",
    "HandshakeError",
    "KeepaliveTimeout",
]

log = logging.getLogger(__name__)

_WIRE_LOG = logging.getLogger("bridge.sources.okx.wire")
_WIRE_LOG.setLevel(logging.INFO)  # frame dumps at DEBUG would include the login secrets


class LoginRejected(ConfigurationError):
    """OKX refused the login (key, passphrase, signature, clock). Names the account, no secret."""

    def __init__(self, account: str, reason: str, code: str | None = None):
        super().__init__(f"OKX account {account!r}: login refused: {reason}")
        self.account = account
        self.code = code


class RequestRejected(ConfigurationError):
    """OKX refused our subscription (URL, channel or arguments wrong)."""

    def __init__(self, account: str, reason: str, code: str | None = None):
        super().__init__(f"OKX account {account!r}: subscription refused: {reason}")
        self.account = account
        self.code = code


def _decode(data: bytes, received_at: str) -> Frame:
    return decode_frame(data, received_at, orjson.loads)


def _close_code(exc: ConnectionClosed) -> tuple[int | None, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""


class OkxConnection:
    """A logged-in, subscribed connection. Iterate ``frames()``; ``close()`` when done."""

    def __init__(
        self,
        ws: ClientConnection,
        account: str,
        *,
        ping_interval: float,
        pong_timeout: float,
        clock: Callable[[], float] = time.time,
    ):
        self.ws = ws
        self.account = account
        self.conn_id: str | None = None
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._clock = clock
        self._early: list[Frame] = []
        """Data frames that came during the handshake (rare): a list, as a deque costs 760 bytes empty."""
        self.pings_sent = 0
        self.upgrade_notice = Notice()
        """Set on notice 64008: OKX will close this connection soon."""
        self._sent_secrets: tuple[str, ...] = ()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        account: str,
        credentials: Credentials,
        subscriptions: Sequence[Mapping[str, str]],
        *,
        ping_interval: float,
        pong_timeout: float,
        handshake_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> OkxConnection:
        """Connect, log in, subscribe; returns once every subscription is acknowledged."""
        ws = await connect(
            url,
            open_timeout=handshake_timeout,
            ssl=ssl_context,
            ping_interval=None,  # OKX wants its text ping; protocol pings do not count
            close_timeout=2,
            max_size=8 * 2**20,
            compression=None,
            extensions=ws_extensions(),
            logger=_WIRE_LOG,
        )
        connection = cls(ws, account, ping_interval=ping_interval, pong_timeout=pong_timeout, clock=clock)
        try:
            async with asyncio.timeout(handshake_timeout):
                await connection._login(credentials)
                await connection._subscribe(subscriptions)
        except BaseException:
            await connection.close()
            raise
        return connection

    async def _send_json(self, message: Mapping[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def _control(self) -> tuple[m.Control | None, Frame | None]:
        """The next frame during the handshake: a control event, or a data frame to keep for later."""
        try:
            data = await self.ws.recv(decode=False)
        except ConnectionClosed as exc:
            self._raise_for_close(exc)
            raise
        if data == m.PONG.encode():
            return None, None
        frame = _decode(data, utc_now(self._clock))
        if isinstance(frame.message, dict):
            control = m.classify(frame.message)
            if control is not None:
                return control, None
        return None, frame

    def _raise_for_close(self, exc: ConnectionClosed) -> None:
        code, reason = _close_code(exc)
        if code in m.CONFIGURATION_CLOSE_CODES:
            raise LoginRejected(self.account, f"connection closed {code} ({m.CONFIGURATION_CLOSE_CODES[code]}) {reason}".strip()) from None

    def _describe(self, error: m.ErrorEvent) -> str:
        """The error for logs and exceptions, with anything we sent at login blanked out: OKX
        echoes invalid requests in ``msg``."""
        text = error.describe()
        for secret in self._sent_secrets:
            text = text.replace(secret, "***")
        return text

    async def _login(self, credentials: Credentials) -> None:
        args = login_args(credentials, self._clock())
        self._sent_secrets = tuple(v for v in (args["apiKey"], args["passphrase"], args["sign"], credentials.secret_key.get_secret_value()) if v)
        await self._send_json(m.login_request(args))
        while True:
            control, frame = await self._control()
            if frame is not None:
                self._early.append(frame)
            if isinstance(control, m.LoginAck):
                self.conn_id = control.conn_id
                log.info("okx account %r logged in (connId %s)", self.account, control.conn_id)
                return
            if isinstance(control, m.ErrorEvent):
                if control.is_configuration_error or control.is_invalid_request:
                    raise LoginRejected(self.account, self._describe(control), control.code)
                raise HandshakeError(f"OKX account {self.account!r}: login failed: {self._describe(control)}")

    async def _subscribe(self, subscriptions: Sequence[Mapping[str, str]]) -> None:
        await self._send_json(m.subscribe_request("sub1", subscriptions))
        waiting = {(arg["channel"], arg.get("ccy")) for arg in subscriptions}
        while waiting:
            control, frame = await self._control()
            if frame is not None:
                self._early.append(frame)
            if isinstance(control, m.SubscribeAck):
                waiting.discard((control.channel, control.ccy))
            elif isinstance(control, m.ErrorEvent):
                if control.is_configuration_error:
                    raise LoginRejected(self.account, self._describe(control), control.code)
                if control.is_invalid_request:
                    raise RequestRejected(self.account, self._describe(control), control.code)
                raise HandshakeError(f"OKX account {self.account!r}: subscribe failed: {self._describe(control)}")
            elif isinstance(control, m.Notice):
                self._on_control(control)
        log.info(
            "okx account %r subscribed to %s",
            self.account,
            ", ".join(arg["channel"] + (f"[{arg['ccy']}]" if arg.get("ccy") else "") for arg in subscriptions),
        )

    # -- reading -------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        """Data frames until the connection ends (it always ends by raising)."""
        while self._early:
            yield self._early.pop(0)
        awaiting_pong = False
        pong = m.PONG.encode()
        receive = cast(Callable[[], Awaitable[bytes]], partial(self.ws.recv, decode=False))
        idle = IdleTimer()
        try:
            while True:
                try:
                    data = await idle.wait(receive, self._pong_timeout if awaiting_pong else self._ping_interval)
                except TimeoutError:
                    if awaiting_pong:
                        raise KeepaliveTimeout(
                            f"OKX account {self.account!r}: no pong within {self._pong_timeout:g}s"
                        ) from None
                    await self.ws.send(m.PING)
                    self.pings_sent += 1
                    awaiting_pong = True
                    continue
                except ConnectionClosed as exc:
                    self._raise_for_close(exc)
                    raise
                awaiting_pong = False  # any message proves the connection alive
                if data == pong:
                    continue
                frame = _decode(data, utc_now(self._clock))
                message = frame.message
                if isinstance(message, dict) and "event" in message:
                    self._on_control(m.classify(message))
                    continue
                yield frame
        finally:
            idle.close()

    def _on_control(self, control: m.Control | None) -> None:
        if isinstance(control, m.Notice):
            if control.is_service_upgrade:
                log.info("okx account %r: notice %s (%s); opening a successor", self.account, control.code, control.msg)
                self.upgrade_notice.set()
                return
            log.info("okx account %r: notice %s: %s", self.account, control.code, control.msg)
        elif isinstance(control, m.ErrorEvent):
            if control.is_invalid_request:
                log.error("okx account %r: request refused: %s", self.account, self._describe(control))
            elif control.is_configuration_error:
                raise LoginRejected(self.account, self._describe(control), control.code)
            else:
                log.warning("okx account %r: %s", self.account, self._describe(control))
        elif isinstance(control, m.OtherEvent):
            log.debug("okx account %r: event %s", self.account, control.event)

    async def close(self) -> None:
        try:
            await self.ws.close()
        except (TimeoutError, OSError, ConnectionClosed):  # already gone: nothing to release
            pass
