"""Signature vectors: v1 RSA-SHA512 over the raw body, v2 detached JWS RS512 pinned, on exact bytes."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.sources.fireblocks.signature import b64url, jwks_keys, read_jws_header, verify_jws, verify_legacy
from bridge_testkit.fireblocks.simulator import jwk_of, new_key, sign_jws, sign_legacy

BODY = b'{"type":"TRANSACTION_STATUS_UPDATED","tenantId":"t","timestamp":1761904861250,"data":{"id":"x"}}'


@pytest.fixture(scope="module")
def keys() -> tuple:
    return new_key(), new_key()


def test_a_v1_signature_of_the_raw_body_is_accepted_by_the_key_that_made_it_and_names_its_index(keys: tuple) -> None:
    sandbox, production = keys
    signature = sign_legacy(production, BODY)
    assert verify_legacy(signature, BODY, [sandbox.public_key(), production.public_key()]) == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body, sig: (body.replace(b"1761904861250", b"1761904861251"), sig),  # tampered body
        lambda body, sig: (json.dumps(json.loads(body)).encode(), sig),  # re-encoded JSON: no longer the raw bytes
        lambda body, sig: (body, sig[:-4] + "AAA="),  # tampered signature
        lambda body, sig: (body, sig.replace("+", "-").replace("/", "_")),  # base64url alphabet is not v1's
        lambda body, sig: (body, ""),
    ],
)
def test_a_v1_signature_that_does_not_match_the_exact_bytes_is_refused(keys: tuple, mutate) -> None:  # type: ignore[no-untyped-def]
    _, production = keys
    body, signature = mutate(BODY, sign_legacy(production, BODY))
    assert verify_legacy(signature, body, [production.public_key()]) is None


def test_a_v1_signature_made_with_a_key_that_is_not_configured_is_refused(keys: tuple) -> None:
    sandbox, production = keys
    assert verify_legacy(sign_legacy(sandbox, BODY), BODY, [production.public_key()]) is None


def test_a_v2_detached_jws_over_the_raw_body_verifies_with_the_jwks_key_of_its_kid(keys: tuple) -> None:
    key, other = keys
    set_ = jwks_keys({"keys": [jwk_of(other, "old"), jwk_of(key, "k1")]})
    jws = read_jws_header(sign_jws(key, "k1", BODY))
    assert jws is not None and jws.kid == "k1"
    assert verify_jws(jws, BODY, set_["k1"]) is True
    assert verify_jws(jws, BODY + b" ", set_["k1"]) is False
    assert verify_jws(jws, BODY, set_["old"]) is False


def _token(header: dict, signature: bytes = b"x" * 256, payload: str = "") -> str:
    return f"{b64url(json.dumps(header).encode())}.{payload}.{b64url(signature)}"


@pytest.mark.parametrize(
    "token",
    [
        _token({"alg": "none", "kid": "k1"}),
        _token({"alg": "HS512", "kid": "k1"}),
        _token({"alg": "RS256", "kid": "k1"}),
        _token({"alg": "RS512"}),  # no kid
        _token({"alg": "RS512", "kid": "k1"}, payload="eyJ9"),  # not detached
        _token({"alg": "RS512", "kid": "k1", "b64": False, "crit": ["b64"]}),  # RFC 7797, off by default
        "not-a-jws",
        "a..b..c",
    ],
)
def test_a_v2_header_that_is_not_a_detached_rs512_jws_with_a_kid_is_refused_before_any_key_is_tried(token: str) -> None:
    assert read_jws_header(token) is None


def test_an_unencoded_payload_jws_is_accepted_only_when_the_setting_allows_it(keys: tuple) -> None:
    key, _ = keys
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = b64url(json.dumps({"alg": "RS512", "kid": "k1", "b64": False, "crit": ["b64"]}).encode())
    signature = key.sign(header.encode() + b"." + BODY, padding.PKCS1v15(), hashes.SHA512())
    token = f"{header}..{b64url(signature)}"
    assert read_jws_header(token) is None
    jws = read_jws_header(token, allow_unencoded=True)
    assert jws is not None and verify_jws(jws, BODY, key.public_key())


def test_a_jwks_keeps_only_rsa_signing_keys_for_rs512(keys: tuple) -> None:
    key, _ = keys
    document = {"keys": [jwk_of(key, "a"), {**jwk_of(key, "b"), "use": "enc"}, {**jwk_of(key, "c"), "alg": "RS256"}, {"kty": "EC", "kid": "d"}]}
    assert sorted(jwks_keys(document)) == ["a"]
    with pytest.raises(ValueError):
        jwks_keys({"keys": "nope"})
    assert base64.b64decode(sign_legacy(key, BODY))  # the simulator's v1 header is standard base64
