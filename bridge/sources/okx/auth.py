"""OKX request signing, for the WebSocket login and for REST — the only reader of secret values.

Pure: the timestamp is an argument. ``sign = Base64(HMAC_SHA256(secret, prehash))`` where the
prehash is ``timestamp + METHOD + requestPath (+ query) + body``; the WebSocket login signs
``timestamp + "GET" + "/users/self/verify"`` with the timestamp in seconds, REST uses ISO-8601 UTC
with milliseconds. The simulator verifies with the same functions, so tests also pin them to an
independently computed vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Protocol

from pydantic import SecretStr

__all__ = [
    "Credentials",
    "WS_VERIFY_PATH",
    "sign",
    "prehash",
    "ws_timestamp",
    "rest_timestamp",
    "login_args",
    "rest_headers",
]

WS_VERIFY_PATH = "/users/self/verify"


class Credentials(Protocol):
    api_key: SecretStr
    secret_key: SecretStr
    passphrase: SecretStr


def prehash(timestamp: str, method: str, request_path: str, body: str = "") -> str:
    return f"{timestamp}{method.upper()}{request_path}{body}"


def sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def ws_timestamp(epoch_seconds: float) -> str:
    """Login timestamp: whole Unix seconds as a string."""
    return str(int(epoch_seconds))


def rest_timestamp(epoch_seconds: float) -> str:
    """REST timestamp: ``2020-12-08T09:08:57.715Z``."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def login_args(credentials: Credentials, epoch_seconds: float) -> dict[str, str]:
    """The single argument of ``{"op": "login"}``. Contains secrets: never log it."""
    timestamp = ws_timestamp(epoch_seconds)
    return {
        "apiKey": credentials.api_key.get_secret_value(),
        "passphrase": credentials.passphrase.get_secret_value(),
        "timestamp": timestamp,
        "sign": sign(credentials.secret_key.get_secret_value(), prehash(timestamp, "GET", WS_VERIFY_PATH)),
    }


def rest_headers(
    credentials: Credentials, method: str, request_path: str, body: str, epoch_seconds: float
) -> dict[str, str]:
    """Signed headers for one REST call; ``request_path`` includes the query string."""
    timestamp = rest_timestamp(epoch_seconds)
    return {
        "OK-ACCESS-KEY": credentials.api_key.get_secret_value(),
        "OK-ACCESS-SIGN": sign(credentials.secret_key.get_secret_value(), prehash(timestamp, method, request_path, body)),
        "OK-ACCESS-TIMESTAMP": timestamp,
        "OK-ACCESS-PASSPHRASE": credentials.passphrase.get_secret_value(),
        "Content-Type": "application/json",
    }
