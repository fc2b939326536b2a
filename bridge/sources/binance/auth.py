"""Binance request signing — the only module that reads secret values.

The payload is the query string exactly as sent (percent-encoded, Binance requires it since
2026-01-15) followed by the body (always empty for these GETs). ``signature`` is appended as the
last parameter:

* HMAC keys: ``hex(HMAC-SHA256(secret, payload))``;
* Ed25519 keys (Binance's recommendation): ``base64(Ed25519(private key, payload))``, percent-encoded;
* RSA keys (PKCS#8): ``base64(RSASSA-PKCS1-v1_5-SHA256(private key, payload))``, percent-encoded.

Pure: the timestamp is an argument. The simulator verifies with its own code (``hmac`` and
``cryptography`` directly), and tests pin these functions to Binance's documented HMAC vector and
to RFC 8032's Ed25519 vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal, Protocol
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr

__all__ = ["KeyType", "Credentials", "Signer", "signer_for", "hmac_signature", "signed_query", "API_KEY_HEADER"]

KeyType = Literal["hmac", "ed25519", "rsa"]
API_KEY_HEADER = "X-MBX-APIKEY"


class Credentials(Protocol):
    api_key: SecretStr
    secret_key: SecretStr
    key_type: KeyType
    private_key_passphrase: SecretStr | None


def hmac_signature(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Signer:
    """Signs payloads with one account's key; the key is loaded once, its text never kept in a
    repr, a log line or an exception."""

    def __init__(self, credentials: Credentials):
        self.key_type: KeyType = credentials.key_type
        self._api_key = credentials.api_key.get_secret_value()
        secret = credentials.secret_key.get_secret_value()
        self._hmac_secret: str | None = None
        self._ed25519: Ed25519PrivateKey | None = None
        self._rsa: RSAPrivateKey | None = None
        if self.key_type == "hmac":
            self._hmac_secret = secret
            return
        password = credentials.private_key_passphrase.get_secret_value().encode() if credentials.private_key_passphrase else None
        try:
            key = serialization.load_pem_private_key(secret.encode(), password=password)
        except (ValueError, TypeError):
            raise ValueError(f"secret_key is not a PEM (PKCS#8) {self.key_type} private key, or its passphrase is wrong") from None
        if self.key_type == "ed25519" and isinstance(key, Ed25519PrivateKey):
            self._ed25519 = key
        elif self.key_type == "rsa" and isinstance(key, RSAPrivateKey):
            self._rsa = key
        else:
            raise ValueError(f"secret_key holds a {type(key).__name__.removesuffix('PrivateKey')} key, not {self.key_type}")

    def __repr__(self) -> str:
        return f"Signer(key_type={self.key_type!r})"

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every signed call (the API key). Contains a secret: never log it."""
        return {API_KEY_HEADER: self._api_key}

    def signature(self, payload: str) -> str:
        """The ``signature`` parameter's value, ready for the query string."""
        data = payload.encode()
        if self._hmac_secret is not None:
            return hmac_signature(self._hmac_secret, payload)
        if self._ed25519 is not None:
            raw = self._ed25519.sign(data)
        else:
            assert self._rsa is not None
            raw = self._rsa.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return quote(base64.b64encode(raw).decode(), safe="")

    @property
    def secrets(self) -> tuple[str, ...]:
        """What a provider message could echo back and must be scrubbed of."""
        return tuple(s for s in (self._api_key, self._hmac_secret) if s)


def signer_for(credentials: Credentials) -> Signer:
    return Signer(credentials)


def signed_query(signer: Signer, query: str, *, timestamp_ms: int, recv_window_ms: int) -> str:
    """``query`` + ``recvWindow`` + ``timestamp``, then ``signature`` over exactly those bytes."""
    payload = "&".join(part for part in (query, f"recvWindow={recv_window_ms}", f"timestamp={timestamp_ms}") if part)
    return f"{payload}&signature={signer.signature(payload)}"
