"""Binance signing against published vectors: Binance's own HMAC example and RFC 8032's Ed25519
test vectors; RSA checked with the public key; the percent-encoded payload is what is signed."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote, urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from bridge.sources.binance.auth import API_KEY_HEADER, KeyType, Signer, hmac_signature, signed_query
from bridge.sources.binance.config import BinanceAccount

# Binance's "SIGNED endpoint examples" (HMAC), as every client library pins it.
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_PAYLOAD = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"

# RFC 8032 §7.1, TEST 2: a one-byte message 0x72 ("r").
RFC_SECRET = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
RFC_SIGNATURE = (
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


@dataclass
class Key:
    api_key: SecretStr
    secret_key: SecretStr
    key_type: KeyType
    private_key_passphrase: SecretStr | None = None


def _pem(key: Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def test_hmac_signature_matches_binances_documented_example() -> None:
    assert hmac_signature(DOC_SECRET, DOC_PAYLOAD) == DOC_SIGNATURE
    signer = Signer(Key(SecretStr("k"), SecretStr(DOC_SECRET), "hmac"))
    assert signer.signature(DOC_PAYLOAD) == DOC_SIGNATURE


def test_ed25519_signature_is_rfc_8032_base64_then_percent_encoded() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC_SECRET))
    signer = Signer(Key(SecretStr("k"), SecretStr(_pem(key)), "ed25519"))
    value = signer.signature("r")
    assert base64.b64decode(unquote(value)).hex() == RFC_SIGNATURE
    assert "+" not in value and "/" not in value and "=" not in value  # percent-encoded for the query


def test_rsa_signature_is_pkcs1_v15_sha256_verifiable_with_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = Signer(Key(SecretStr("k"), SecretStr(_pem(key)), "rsa"))
    signature = base64.b64decode(unquote(signer.signature(DOC_PAYLOAD)))
    key.public_key().verify(signature, DOC_PAYLOAD.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_the_signature_covers_exactly_the_percent_encoded_query_sent_with_signature_last() -> None:
    signer = Signer(Key(SecretStr("k"), SecretStr(DOC_SECRET), "hmac"))
    query = urlencode({"idList": "a1,b2", "email": "sub@example.com"})
    signed = signed_query(signer, query, timestamp_ms=1499827319559, recv_window_ms=5000)
    payload, _, signature = signed.rpartition("&signature=")
    assert payload == "idList=a1%2Cb2&email=sub%40example.com&recvWindow=5000&timestamp=1499827319559"
    assert signature == hmac_signature(DOC_SECRET, payload)


def test_a_pem_of_the_wrong_key_type_is_refused_without_echoing_the_key() -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(ValueError, match="not ed25519") as caught:
        Signer(Key(SecretStr("k"), SecretStr(pem), "ed25519"))
    assert "PRIVATE KEY" not in str(caught.value)
    with pytest.raises(ValueError, match="not a PEM") as caught:
        Signer(Key(SecretStr("k"), SecretStr("hmac-looking-secret"), "ed25519"))
    assert "hmac-looking-secret" not in str(caught.value)


def test_credentials_never_appear_in_reprs() -> None:
    account = BinanceAccount(name="main", api_key="api-key-value-123", secret_key=DOC_SECRET)
    signer = Signer(account)
    for text in (repr(account), str(account), repr(signer), repr(account.model_dump())):
        assert DOC_SECRET not in text and "api-key-value-123" not in text
    assert signer.headers == {API_KEY_HEADER: "api-key-value-123"}
