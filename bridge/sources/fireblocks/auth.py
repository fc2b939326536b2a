"""The REST request JWT: the only module that reads the API key and the RSA private key.

Per request (developers.fireblocks.com, "signing a request"): ``X-API-Key: <api key>`` and
``Authorization: Bearer <JWT>``, the JWT RS256-signed with the API user's private key over the
claims ``uri`` (path and query exactly as sent), ``nonce`` (unique: a UUID4), ``iat`` (now, s),
``exp`` (``iat`` + 25: the docs require less than 30), ``sub`` (the API key) and ``bodyHash``
(lowercase hex SHA-256 of the exact body bytes; a GET hashes the empty string).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.sources.fireblocks.signature import b64url

__all__ = ["RequestSigner", "JWT_LIFETIME_S"]

JWT_LIFETIME_S = 25


class RequestSigner:
    """Holds the credentials; ``headers`` signs one request. Its repr names no secret."""

    def __init__(self, api_key: str, private_key_pem: bytes, *, clock: Callable[[], float] = time.time):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the Fireblocks API private key must be an RSA key")
        self._api_key = api_key
        self._key = key
        self._clock = clock

    @classmethod
    def from_file(cls, api_key: str, path: Path, *, clock: Callable[[], float] = time.time) -> RequestSigner:
        try:
            return cls(api_key, path.read_bytes(), clock=clock)
        except (ValueError, TypeError) as exc:  # never the key's bytes in the message
            raise ValueError(f"cannot load the Fireblocks API private key from {path}: {exc.__class__.__name__}") from None

    def __repr__(self) -> str:
        return "RequestSigner(api_key=**********)"

    def token(self, uri: str, body: bytes = b"") -> str:
        now = int(self._clock())
        claims = {
            "uri": uri,
            "nonce": str(uuid.uuid4()),
            "iat": now,
            "exp": now + JWT_LIFETIME_S,
            "sub": self._api_key,
            "bodyHash": hashlib.sha256(body).hexdigest(),
        }
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode("ascii")
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def headers(self, uri: str, body: bytes = b"") -> dict[str, str]:
        return {"X-API-Key": self._api_key, "Authorization": f"Bearer {self.token(uri, body)}"}
