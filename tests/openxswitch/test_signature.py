"""X-Webhook-Signature: HMAC-SHA256 of the raw body, hex or base64, any configured secret."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from bridge.sources.openxswitch import signature
from bridge.sources.openxswitch.signature import decode_signature, sign, verify

# RFC 4231, test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?")
KEY = b"Jefe"
DATA = b"what do ya want for nothing?"
HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
DIGEST = bytes.fromhex(HEX)


def test_hex_signature_matches_the_rfc_4231_vector() -> None:
    assert sign(KEY, DATA, "hex") == HEX


def test_base64_signature_encodes_the_same_digest() -> None:
    assert base64.b64decode(sign(KEY, DATA, "base64")) == DIGEST


@pytest.mark.parametrize(
    "header",
    [
        HEX,
        HEX.upper(),
        f"  {HEX}  ",
        f"sha256={HEX}",
        f"SHA256={HEX}",
        base64.b64encode(DIGEST).decode(),
        base64.b64encode(DIGEST).decode().rstrip("="),
        base64.urlsafe_b64encode(DIGEST).decode(),
    ],
    ids=["hex", "HEX", "padded-spaces", "sha256-prefix", "SHA256-prefix", "base64", "base64-unpadded", "base64-urlsafe"],
)
def test_both_encodings_are_accepted(header: str) -> None:
    assert decode_signature(header) == DIGEST
    assert verify(header, DATA, [KEY]) == 0


@pytest.mark.parametrize(
    "header",
    [None, "", "z" * 64, HEX[:-2], HEX + "00", "!" * 44, base64.b64encode(DIGEST[:31]).decode(), "a" * 500],
    ids=["missing", "empty", "not-hex", "short", "long", "not-base64", "31-bytes", "huge"],
)
def test_headers_that_are_no_sha256_digest_are_refused(header: str | None) -> None:
    assert decode_signature(header) is None
    assert verify(header, DATA, [KEY]) is None


def test_a_tampered_body_fails() -> None:
    assert verify(HEX, DATA + b" ", [KEY]) is None
    assert verify(HEX, DATA.replace(b"want", b"WANT"), [KEY]) is None


def test_a_different_secret_fails() -> None:
    assert verify(HEX, DATA, [b"Jeff"]) is None


def test_during_rotation_every_configured_secret_is_accepted() -> None:
    old, new = b"old-secret", b"new-secret"
    assert verify(sign(old, DATA), DATA, [new, old]) == 1
    assert verify(sign(new, DATA, "base64"), DATA, [new, old]) == 0
    assert verify(sign(b"third", DATA), DATA, [new, old]) is None


def test_verification_is_against_the_raw_bytes_not_reserialized_json() -> None:
    body = b'{"amount": 9.10, "b":1}'
    assert verify(sign(KEY, body), body, [KEY]) == 0
    assert verify(sign(KEY, body), b'{"amount":9.1,"b":1}', [KEY]) is None


def test_digests_are_compared_in_constant_time_against_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature.hmac, "compare_digest", spy)
    secrets = [b"one", KEY, b"three"]
    assert verify(HEX, DATA, secrets) == 1
    assert len(calls) == 3, "no early exit on the first match"
    assert all(claimed == DIGEST for _, claimed in calls)
    assert calls[1][0] == hmac.new(KEY, DATA, hashlib.sha256).digest()
