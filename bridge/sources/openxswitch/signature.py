"""``X-Webhook-Signature``: HMAC-SHA256 of the raw request body with the webhook secret.

Pure (no I/O). The provider documents a "SHA-256 signature of the raw body made with the webhook
secret" without settling the text encoding, so both readings are accepted: 64 hex digits (either
case) and base64 (standard or URL-safe alphabet, padding optional) of the 32-byte digest. The two
cannot be confused: hex is 64 characters, base64 of 32 bytes is 43-44. A ``sha256=`` prefix, the
common convention of other webhook senders, is tolerated.

Verification recomputes the HMAC over the exact bytes received (never a re-serialized JSON, which
would change number spelling and key order) and compares digests with ``hmac.compare_digest``.
Every configured secret is tried, without stopping at the first match, so rotation (old and new
secret both valid for a while) costs no timing signal about which one matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Literal

__all__ = ["HEADER", "Encoding", "sign", "decode_signature", "verify"]

HEADER = "X-Webhook-Signature"
Encoding = Literal["hex", "base64"]

_DIGEST_SIZE = hashlib.sha256().digest_size
_MAX_HEADER_LENGTH = 200  # anything longer is not a signature; don't spend work decoding it


def sign(secret: bytes, body: bytes, encoding: Encoding = "hex") -> str:
    """The header value a sender computes (the simulator uses this)."""
    digest = hmac.new(secret, body, hashlib.sha256).digest()
    if encoding == "hex":
        return digest.hex()
    return base64.b64encode(digest).decode("ascii")


def decode_signature(header: str | None) -> bytes | None:
    """The 32-byte digest a header carries, or None when it is not a hex or base64 SHA-256 digest."""
    if not header or len(header) > _MAX_HEADER_LENGTH:
        return None
    text = header.strip()
    if text[:7].lower() == "sha256=":
        text = text[7:].strip()
    if len(text) == 2 * _DIGEST_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None
    if len(text) in (43, 44):
        padded = text.rstrip("=")
        padded += "=" * (-len(padded) % 4)
        altchars = b"-_" if ("-" in padded or "_" in padded) else None
        try:
            digest = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            return None
        return digest if len(digest) == _DIGEST_SIZE else None
    return None


def verify(header: str | None, body: bytes, secrets: Sequence[bytes]) -> int | None:
    """Index of the secret whose HMAC of ``body`` matches ``header``; None when none does."""
    claimed = decode_signature(header)
    if claimed is None:
        return None
    matched: int | None = None
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, claimed) and matched is None:
            matched = index
    return matched
