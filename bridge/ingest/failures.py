"""How the stream engine reads an exception no provider hook claimed (``StreamSource.default_failure``).

Configuration errors — our ``ConfigurationError``, a malformed ``ws_url``, an upgrade refused with
a 4xx other than 429 — are retried at the slow configuration-error pace and shown as such; a
keepalive that went unanswered, a connection that could not be opened, or one that closed are
connection failures (backoff). Anything else is not a connection problem: ``None``, and the
engine lets it end ``run`` (a bug; the supervisor restarts the source).
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from bridge.ingest.frames import Failure, KeepaliveTimeout
from bridge.ingest.source import ConfigurationError

__all__ = ["common_failure", "describe_error"]


def common_failure(error: BaseException, phase: str, *, who: str, peer: str, scrub: Callable[[str], str]) -> Failure | None:
    """``phase``: ``connect`` or ``serve``; ``who``: the account as messages name it ("OKX account
    'main'"); ``peer``: the provider ("OKX"); ``scrub`` blanks out secrets a message may echo."""
    if isinstance(error, ConfigurationError):
        return Failure("config_error", scrub(str(error)), config=True)
    if isinstance(error, InvalidURI):
        return Failure("config_error", f"{who}: invalid ws_url: {error}", config=True)
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if 400 <= status < 500 and status != 429:
            return Failure("config_error", f"{who}: WebSocket upgrade refused with HTTP {status} (check ws_url)", config=True)
        return Failure("handshake", f"HTTP {status} on upgrade")
    if isinstance(error, KeepaliveTimeout):
        return Failure("keepalive", str(error))
    if phase == "connect" and isinstance(error, (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)):
        return Failure("connect_failed", describe_error(error, peer, scrub))
    if isinstance(error, (ConnectionClosed, OSError)):
        return Failure("closed", describe_error(error, peer, scrub))
    return None


def describe_error(error: BaseException, peer: str, scrub: Callable[[str], str]) -> str:
    """A connection error in a few words: the close code and reason the peer sent, else the type
    and its (scrubbed) text."""
    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return f"closed by {peer} with {error.rcvd.code} {error.rcvd.reason}".strip()
    text = scrub(str(error))
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__
