"""A local Fireblocks for tests, the demo and the scenario: it signs v1 and v2 webhook deliveries,
serves a JWKS and ``GET /v1/transactions`` (checking the request JWT like Fireblocks), and sends
with Fireblocks' habits — re-deliveries, reordering, retries of unacknowledged deliveries, and
deliveries that never arrive.

Keys are generated at ``start`` (RSA 2048: the v1 signing key, the v2 signing key with its ``kid``,
and the API user's key pair whose private half the bridge signs REST calls with). Loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bridge.sources.fireblocks.signature import JWS_HEADER, LEGACY_HEADER, b64url, b64url_decode

__all__ = ["FireblocksSimulator", "SimTransaction", "SimDelivery", "Report", "new_key", "pem_private", "pem_public", "jwk_of"]

WORKSPACE = "3f6c2a1e-8b4d-4c7e-9a15-2d6b8e0f4c31"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_private(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS512", "n": b64url(n), "e": b64url(e)}


def sign_legacy(key: rsa.RSAPrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA512())).decode()


def sign_jws(key: rsa.RSAPrivateKey, kid: str, body: bytes) -> str:
    header = b64url(json.dumps({"alg": "RS512", "kid": kid}, separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{b64url(body)}".encode(), padding.PKCS1v15(), hashes.SHA512())
    return f"{header}..{b64url(signature)}"


_LIFECYCLES: dict[str, list[tuple[str, str, int | None]]] = {
    "deposit": [("CONFIRMING", "PENDING_BLOCKCHAIN_CONFIRMATIONS", 1), ("CONFIRMING", "PENDING_BLOCKCHAIN_CONFIRMATIONS", 2), ("COMPLETED", "CONFIRMED", 3)],
    "withdrawal": [("SUBMITTED", "", None), ("PENDING_SIGNATURE", "", None), ("BROADCASTING", "", 0), ("CONFIRMING", "PENDING_BLOCKCHAIN_CONFIRMATIONS", 1), ("COMPLETED", "CONFIRMED", 2)],
    "rejected": [("SUBMITTED", "", None), ("PENDING_AUTHORIZATION", "", None), ("REJECTED", "REJECTED_BY_USER", None)],
    "frozen": [("CONFIRMING", "PENDING_BLOCKCHAIN_CONFIRMATIONS", 1), ("REJECTED", "AUTO_FREEZE", 1)],
    "internal": [("SUBMITTED", "", None), ("BROADCASTING", "", 0), ("COMPLETED", "CONFIRMED", 1)],
}


@dataclass(eq=False)
class SimTransaction:
    """One Fireblocks transaction: its scripted states (full ``TransactionDetails``) and how far it got."""

    id: str
    kind: str
    states: list[dict[str, Any]]
    version: int = 2
    visible: int = -1
    """Index of the state the REST API shows (-1: not created yet)."""

    @property
    def direction(self) -> str:
        return "withdrawal" if self.kind in ("withdrawal", "rejected", "internal") else "deposit"

    @property
    def key(self) -> str:
        return f"fireblocks:{self.direction}:{self.id}"

    @property
    def finished(self) -> bool:
        return self.visible >= len(self.states) - 1


@dataclass(eq=False)
class SimDelivery:
    """One notification: its exact body and headers; every attempt's HTTP status (0 = no answer)."""

    body: bytes
    headers: dict[str, str]
    transaction: SimTransaction | None = None
    index: int = -1
    faults: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    acked: bool = False
    given_up: bool = False


@dataclass
class Report:
    sent: int = 0
    acked: int = 0
    given_up: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class FireblocksSimulator:
    def __init__(
        self,
        url: str = "",
        *,
        workspace_id: str = WORKSPACE,
        api_key: str = "fb-api-key-0c3e5a7b-91d2-4f68-b0aa-5e2c7d19f4e3",
        retry_interval: float = 0.05,
        retry_window: float = 10.0,
        concurrency: int = 4,
        seed: int = 7,
    ):
        self.url = url
        self.workspace_id = workspace_id
        self.api_key = api_key
        self.retry_interval = retry_interval
        self.retry_window = retry_window
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.legacy_key = new_key()
        self.v2_keys: dict[str, rsa.RSAPrivateKey] = {"sim-1": new_key()}
        self.kid = "sim-1"
        self.api_user_key = new_key()
        self.transactions: list[SimTransaction] = []
        self.signatures_sent: set[str] = set()
        self.tokens_seen: set[str] = set()
        self.rest_requests: list[str] = []
        self.rest_refusals: list[str] = []
        self.jwks_requests = 0
        self.jwks_down = False
        self.rest_delay = 0.0
        """Seconds ``GET /v1/transactions`` takes to answer (a slow API: a start-up pass still running)."""
        self._nonces: set[str] = set()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- server ------------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_get("/v1/transactions", self._list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FireblocksSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk_of(key, kid) for kid, key in self.v2_keys.items()]}

    def rotate(self) -> str:
        """A new v2 signing key (new ``kid``) in the JWKS; deliveries are signed with it from now on."""
        self.kid = f"sim-{len(self.v2_keys) + 1}"
        self.v2_keys[self.kid] = new_key()
        return self.kid

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if self.jwks_down:
            return web.Response(status=503)
        return web.json_response(self.jwks(), headers={"Cache-Control": "max-age=3600"})

    def _refuse(self, why: str) -> web.Response:
        self.rest_refusals.append(why)
        return web.json_response({"message": why, "code": -1}, status=401)

    def check_jwt(self, request: web.Request) -> str | None:
        """Why the request's JWT would be refused by Fireblocks, or None."""
        if request.headers.get("X-API-Key") != self.api_key:
            return "unknown API key"
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer "):
            return "no bearer token"
        token = bearer[7:]
        self.tokens_seen.add(token)
        try:
            header_b64, claims_b64, signature_b64 = token.split(".")
            header, claims = json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(claims_b64))
            self.api_user_key.public_key().verify(
                b64url_decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return "bad JWT signature"
        now = time.time()
        if header.get("alg") != "RS256" or claims.get("sub") != self.api_key:
            return "bad JWT header or sub"
        if claims.get("uri") != request.path_qs:
            return f"uri claim {claims.get('uri')!r} is not {request.path_qs!r}"
        if not (claims["iat"] - 5 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 30:
            return "JWT expired or too long-lived"
        if claims.get("bodyHash") != hashlib.sha256(b"").hexdigest():
            return "bodyHash mismatch"
        if claims.get("nonce") in self._nonces:
            return "nonce reused"
        self._nonces.add(claims["nonce"])
        return None

    async def _list(self, request: web.Request) -> web.Response:
        refused = self.check_jwt(request)
        if refused:
            return self._refuse(refused)
        self.rest_requests.append(request.path_qs)
        if self.rest_delay:
            await asyncio.sleep(self.rest_delay)
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", "200")), 500)
        rows = sorted(
            (t.states[t.visible] for t in self.transactions if t.visible >= 0 and t.states[t.visible]["createdAt"] > after),
            key=lambda row: row["createdAt"],
        )
        return web.json_response(rows[:limit])

    # -- transactions ------------------------------------------------------------------------------

    def create(self, kind: str, *, version: int = 2, amount: str | None = None) -> SimTransaction:
        n = next(self._ids)
        tx_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        created = int(time.time() * 1000) - 60_000 + n  # unique creation times: the REST cursor pages on them
        amount = amount or f"{self.rng.randint(1, 10**6)}.{self.rng.randint(0, 10**8):08d}"
        own = {"type": "VAULT_ACCOUNT", "id": str(n % 9 + 1), "name": f"vault-{n % 9 + 1}", "subType": ""}
        outside = {"type": "UNKNOWN", "id": "", "name": "External", "subType": ""}
        one_time = {"type": "ONE_TIME_ADDRESS", "id": None, "name": "N/A", "subType": ""}
        source, destination = {
            "deposit": (outside, own), "frozen": (outside, own),
            "internal": (own, {**own, "id": str(n % 9 + 10), "name": "vault-cold"}),
        }.get(kind, (own, one_time))
        states = []
        for i, (status, sub, confirmations) in enumerate(_LIFECYCLES[kind]):
            hashed = confirmations is not None
            state: dict[str, Any] = {
                "id": tx_id, "externalTxId": f"ext-{n}" if source is own else None, "status": status, "subStatus": sub,
                "operation": "TRANSFER", "assetId": "USDT_ERC20", "assetType": "ERC20", "createdAt": created,
                "lastUpdated": created + 1000 * (i + 1), "source": source, "destination": destination,
                "sourceAddress": "0x9f2c4b1e7a0d3c5e8b6a4f2e1d0c9b8a7f6e5d41" if hashed else "",
                "destinationAddress": "0x5c3e00000000000000000000000000000000a107", "destinationTag": "",
                "txHash": f"0x{hashlib.sha256(tx_id.encode()).hexdigest()}" if hashed else "",
                "amountInfo": {"amount": amount, "requestedAmount": amount, "netAmount": amount, "amountUSD": "1.00"},
                "feeInfo": {"networkFee": "0.002102079000378000", "gasPrice": "1.5"} if hashed else {},
                "feeCurrency": "ETH", "amount": float(amount), "networkFee": -1, "signedBy": [], "rejectedBy": "",
            }
            if confirmations is not None:
                state["numOfConfirmations"] = confirmations
            states.append(state)
        transaction = SimTransaction(tx_id, kind, states, version)
        self.transactions.append(transaction)
        return transaction

    def body(self, transaction: SimTransaction, index: int, *, notification_id: str | None = None) -> bytes:
        data = transaction.states[index]
        first = index == 0
        if transaction.version == 1:
            envelope: dict[str, Any] = {
                "type": "TRANSACTION_CREATED" if first else "TRANSACTION_STATUS_UPDATED",
                "tenantId": self.workspace_id, "timestamp": data["lastUpdated"] + 7, "data": data,
            }
        else:
            envelope = {
                "id": notification_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "eventType": "transaction.created" if first else "transaction.status.updated", "eventVersion": 1,
                "resourceId": transaction.id, "workspaceId": self.workspace_id, "createdAt": data["lastUpdated"] + 7, "data": data,
            }
        return json.dumps(envelope, separators=(",", ":")).encode()

    def signed(self, body: bytes, version: int, transaction: SimTransaction | None = None, index: int = -1) -> SimDelivery:
        if version == 1:
            signature = sign_legacy(self.legacy_key, body)
            headers = {LEGACY_HEADER: signature, "Fireblocks-API-Version": "1.4.0"}
        else:
            signature = sign_jws(self.v2_keys[self.kid], self.kid, body)
            headers = {JWS_HEADER: signature}
        self.signatures_sent.add(signature)
        return SimDelivery(body, {"Content-Type": "application/json", **headers}, transaction, index)

    def delivery(self, transaction: SimTransaction, index: int) -> SimDelivery:
        """A new notification of state ``index``; the REST API shows that state once it is sent (``reveal``)."""
        return self.signed(self.body(transaction, index), transaction.version, transaction, index)

    def reveal(self, delivery: SimDelivery) -> None:
        """The state of ``delivery`` happened at Fireblocks: the REST API shows it (if newest)."""
        if delivery.transaction is not None:
            delivery.transaction.visible = max(delivery.transaction.visible, delivery.index)

    def redelivery(self, delivery: SimDelivery) -> SimDelivery:
        """The same notification again (same body and signature), as a resend or a duplicate send."""
        return SimDelivery(delivery.body, dict(delivery.headers), delivery.transaction, delivery.index)

    # -- sending -----------------------------------------------------------------------------------

    async def post(self, session: aiohttp.ClientSession, delivery: SimDelivery) -> int:
        try:
            async with session.post(self.url, data=delivery.body, headers=delivery.headers) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0

    async def deliver(self, session: aiohttp.ClientSession, delivery: SimDelivery, report: Report) -> None:
        """Attempts until a 2xx, a non-retried 4xx, a ``drop`` or the retry window's end."""
        deadline = time.monotonic() + self.retry_window
        self.reveal(delivery)
        while True:
            fault = delivery.faults.pop(0) if delivery.faults else None
            if fault == "drop":  # never arrives and is never retried: only the backfill closes it
                delivery.attempts.append(0)
                delivery.given_up = True
                break
            if fault == "unreachable":
                status = 0
            else:
                status = await self.post(session, delivery)
                report.sent += 1
                report.statuses[status] = report.statuses.get(status, 0) + 1
                if fault == "lost_answer":
                    status = 0
            delivery.attempts.append(status)
            if 200 <= status < 300:
                delivery.acked = True
                report.acked += 1
                return
            if 400 <= status < 500 and status not in (408, 429) or time.monotonic() > deadline:
                delivery.given_up = True
                break
            await asyncio.sleep(self.retry_interval)
        report.given_up += 1

    async def send(self, lanes: Sequence[Sequence[SimDelivery]], session: aiohttp.ClientSession | None = None) -> Report:
        """Each lane's deliveries in order (one transfer's), ``concurrency`` lanes at a time."""
        report = Report()
        gate = asyncio.Semaphore(self.concurrency)
        own = session is None
        session = session or aiohttp.ClientSession()

        async def lane(deliveries: Sequence[SimDelivery]) -> None:
            async with gate:
                for delivery in deliveries:
                    await self.deliver(session, delivery, report)

        try:
            await asyncio.gather(*(lane(deliveries) for deliveries in lanes))
        finally:
            if own:
                await session.close()
        return report

    def shuffled_lane(self, transaction: SimTransaction, *, swap_rate: float, repeat_rate: float) -> list[SimDelivery]:
        """Every state of one transaction as Fireblocks v2 may send them: neighbours swapped at
        ``swap_rate`` (never past the final state), some re-delivered at ``repeat_rate``."""
        deliveries = [self.delivery(transaction, i) for i in range(len(transaction.states))]
        order = list(range(len(deliveries)))
        for i in range(len(order) - 2):
            if self.rng.random() < swap_rate:
                order[i], order[i + 1] = order[i + 1], order[i]
        lane: list[SimDelivery] = []
        for i in order:
            lane.append(deliveries[i])
            if self.rng.random() < repeat_rate:
                lane.append(self.redelivery(deliveries[i]))
        return lane


