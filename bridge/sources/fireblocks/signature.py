"""Fireblocks webhook signatures, verified on the exact bytes received (never on re-encoded JSON).

* v1 ``Fireblocks-Signature``: standard base64 of an RSASSA-PKCS1-v1_5 / SHA-512 signature of the
  raw body, checked against every configured public key (production, EU and sandbox keys differ;
  no key id exists, so any listed key may vouch).
* v2 ``Fireblocks-Webhook-Signature``: a detached compact JWS ``<header>..<signature>`` (RFC 7515
  appendix F). The algorithm is pinned to ``RS512`` whatever the header claims (``none``/``HS*``
  are refused), the key is chosen by ``kid`` from the JWKS, and the signing input is rebuilt from the
  header part and the base64url of the raw body. Done with ``cryptography`` directly: the whole
  check is these few lines, and pinning the algorithm ourselves leaves no library default to trust.

Policy (``header_policy``): a JWS header present decides alone; without one the legacy header is
checked if allowed; neither → refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "LEGACY_HEADER",
    "JWS_HEADER",
    "JwsHeader",
    "b64url",
    "b64url_decode",
    "load_public_key",
    "jwks_keys",
    "read_jws_header",
    "verify_legacy",
    "verify_jws",
]

LEGACY_HEADER = "Fireblocks-Signature"
JWS_HEADER = "Fireblocks-Webhook-Signature"
_MAX_HEADER = 8192


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2); anything outside its alphabet raises ``ValueError``."""
    if not text.isascii() or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def jwks_keys(document: Any) -> dict[str, rsa.RSAPublicKey]:
    """The RSA signing keys of a JWKS by ``kid`` (others skipped: ``use`` ≠ ``sig``, ``alg`` ≠ RS512)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS: expected an object with a 'keys' list")
    found: dict[str, rsa.RSAPublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS512") != "RS512":
            continue
        n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
        e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
        found[jwk["kid"]] = rsa.RSAPublicNumbers(e, n).public_key()
    return found


def verify_legacy(header: str | None, body: bytes, keys: Sequence[rsa.RSAPublicKey]) -> int | None:
    """Index of the first key whose RSA-SHA512 signature of ``body`` is ``header``; None if none."""
    if not header or len(header) > _MAX_HEADER:
        return None
    try:
        signature = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    for index, key in enumerate(keys):
        try:
            key.verify(signature, body, padding.PKCS1v15(), hashes.SHA512())
        except InvalidSignature:
            continue
        return index
    return None


@dataclass(frozen=True, slots=True)
class JwsHeader:
    """A detached JWS split and its protected header read (not yet verified)."""

    protected: str
    signature: bytes
    kid: str
    unencoded: bool


def read_jws_header(value: str | None, *, allow_unencoded: bool = False) -> JwsHeader | None:
    """The detached JWS's parts when it is well formed and claims RS512 with a ``kid``; else None."""
    if not value or len(value) > _MAX_HEADER:
        return None
    parts = value.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        return None
    try:
        header = json.loads(b64url_decode(parts[0]))
        signature = b64url_decode(parts[2])
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("alg") != "RS512" or not isinstance(header.get("kid"), str):
        return None
    unencoded = header.get("b64") is False
    if unencoded and (not allow_unencoded or "b64" not in (header.get("crit") or [])):
        return None
    if "b64" in header and not isinstance(header["b64"], bool):
        return None
    return JwsHeader(parts[0], signature, header["kid"], unencoded)


def verify_jws(jws: JwsHeader, body: bytes, key: rsa.RSAPublicKey) -> bool:
    """RSASSA-PKCS1-v1_5 / SHA-512 over ``header_b64 || '.' || b64url(body)`` (or the raw body, b64=false)."""
    payload = body if jws.unencoded else b64url(body).encode("ascii")
    try:
        key.verify(jws.signature, jws.protected.encode("ascii") + b"." + payload, padding.PKCS1v15(), hashes.SHA512())
    except InvalidSignature:
        return False
    return True
