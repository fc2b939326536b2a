"""Ripio request signing — the only reader of the API token's and secret's values.

Pure: the timestamp is an argument. Every private REST call carries ``Authorization`` (the API
token), ``Timestamp`` (Unix milliseconds), optionally ``Timestamp-tolerance`` (ms the server
accepts the request after ``Timestamp``; default 5000, at most 60000) and
``Signature = Base64(HMAC_SHA256(secret, Timestamp + METHOD + path + body))`` where ``body`` is
the JSON text sent (empty for GET and for the bodiless ``POST /trade/ticket``).

Whether ``path`` includes the query string is unconfirmed: ``include_query`` says which, and the
simulator verifies with the same functions (tests pin them to an independently computed vector).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Protocol

from pydantic import SecretStr

__all__ = [
    "Credentials",
    "MAX_TOLERANCE_MS",
    "DEFAULT_TOLERANCE_MS",
    "prehash",
    "sign",
    "signed_path",
    "timestamp_ms",
    "signed_headers",
]

DEFAULT_TOLERANCE_MS = 5000
MAX_TOLERANCE_MS = 60_000


class Credentials(Protocol):
    api_token: SecretStr
    api_secret: SecretStr


def prehash(timestamp: str, method: str, path: str, body: str = "") -> str:
    return f"{timestamp}{method.upper()}{path}{body}"


def sign(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_path(path: str, query: str, *, include_query: bool) -> str:
    """The ``path`` part of the prehash: the URL path, with ``?query`` when configured so."""
    return f"{path}?{query}" if include_query and query else path


def timestamp_ms(epoch_seconds: float) -> str:
    return str(int(epoch_seconds * 1000))


def signed_headers(
    credentials: Credentials,
    method: str,
    path: str,
    body: str,
    epoch_seconds: float,
    *,
    tolerance_ms: int | None = None,
) -> dict[str, str]:
    """Headers for one private call. Contains the token and a signature: never log them."""
    timestamp = timestamp_ms(epoch_seconds)
    headers = {
        "Authorization": credentials.api_token.get_secret_value(),
        "Timestamp": timestamp,
        "Signature": sign(credentials.api_secret.get_secret_value(), prehash(timestamp, method, path, body)),
        "Accept": "application/json",
    }
    if body:
        headers["Content-Type"] = "application/json"
    if tolerance_ms is not None:
        headers["Timestamp-tolerance"] = str(tolerance_ms)
    return headers
