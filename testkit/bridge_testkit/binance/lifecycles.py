"""Simulated Binance accounts and transfers: keys of every type, scripted lifecycles, rows in place.

A transfer is one history row (deposit or withdrawal) that changes in place as its script moves
on, exactly what Binance's history endpoints show: the current state only, no update time. Its
``history`` is the ground truth (every state it went through); ``observed`` says whether a history
answer to an account that may read it carried its current state.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from bridge.sources.binance.config import BinanceAccount

__all__ = ["SimAccount", "Step", "Snapshot", "SimTransfer", "SCRIPTS", "default_accounts", "make_account"]

KeyType = Literal["hmac", "ed25519", "rsa"]


@dataclass(frozen=True)
class SimAccount:
    """One API key of the simulated exchange. ``email`` is a sub-account's; ``master`` names the
    master whose key may read its deposits through ``subHisrec``."""

    name: str
    uid: int
    api_key: str
    key_type: KeyType
    secret: str
    """The HMAC secret, or the PEM private key the bridge signs with."""
    email: str | None = None
    master: str | None = None

    def __repr__(self) -> str:  # keep secrets out of test output
        return f"SimAccount(name={self.name!r}, uid={self.uid}, key_type={self.key_type!r}, email={self.email!r})"

    @property
    def public_key(self) -> Ed25519PublicKey | RSAPublicKey | None:
        """What Binance keeps of an asymmetric key (the user uploaded it)."""
        if self.key_type == "hmac":
            return None
        key = serialization.load_pem_private_key(self.secret.encode(), password=None)
        public = key.public_key()
        assert isinstance(public, (Ed25519PublicKey, RSAPublicKey))
        return public

    def entry(self, **overrides: Any) -> dict[str, Any]:
        """The bridge's ``binance.accounts[]`` entry for this key, credentials in clear (a config file)."""
        values: dict[str, Any] = {"name": self.name, "api_key": self.api_key, "secret_key": self.secret, "key_type": self.key_type}
        if self.email is not None:
            values["sub_account"] = self.email
        values.update(overrides)
        return values

    def binance_account(self, **overrides: Any) -> BinanceAccount:
        return BinanceAccount(**self.entry(**overrides))


def make_account(name: str, uid: int, key_type: KeyType, rng: random.Random, **options: Any) -> SimAccount:
    api_key = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(64))
    if key_type == "hmac":
        secret = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(64))
    else:
        key = Ed25519PrivateKey.generate() if key_type == "ed25519" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        secret = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return SimAccount(name, uid, api_key, key_type, secret, **options)


def default_accounts(seed: int = 7) -> list[SimAccount]:
    """A master (HMAC), its sub-account with its own Ed25519 key, and an unrelated Ed25519 account."""
    rng = random.Random(seed)
    return [
        make_account("main", 1_000_000_101, "hmac", rng),
        make_account("sub1", 1_000_000_102, "ed25519", rng, email="sub1@sim.example", master="main"),
        make_account("other", 1_000_000_201, "ed25519", rng),
    ]


@dataclass(frozen=True)
class Step:
    """One state of a script: the code and what changes with it."""

    status: int
    confirmations: int = 0
    """Deposits: confirmations seen (``confirmTimes`` ``n/required``); withdrawals: ``confirmNo``."""
    tx: bool = True
    """Withdrawals: the hash is known (``txId`` is ``""`` before the broadcast)."""
    travel: int = 0
    """Deposits: ``travelRuleStatus``."""
    info: str = ""
    """Withdrawals: the failure reason."""


@dataclass(frozen=True)
class Snapshot:
    """A state as the fingerprint sees it, read from the row (the event's ``raw``) alike."""

    status: str
    confirmations: str | None
    tx_hash: str | None
    travel: int | None


Direction = Literal["deposit", "withdrawal"]

SCRIPTS: Mapping[str, tuple[Direction, tuple[Step, ...]]] = {
    "deposit": ("deposit", (Step(0, 1), Step(0, 2), Step(6, 2), Step(1, 2))),
    "deposit-travel-rule": ("deposit", (Step(0, 1), Step(6, 2, travel=1), Step(6, 2), Step(1, 2))),
    "deposit-user-confirm": ("deposit", (Step(0, 1), Step(8, 1), Step(1, 2))),
    "deposit-rejected": ("deposit", (Step(0, 1), Step(2, 1))),
    "deposit-internal": ("deposit", (Step(0, 1), Step(1, 1))),
    "withdrawal": ("withdrawal", (Step(0, tx=False), Step(2, tx=False), Step(4, tx=False), Step(4, 0), Step(4, 1), Step(6, 1))),
    "withdrawal-memo": ("withdrawal", (Step(4, tx=False), Step(4, 0), Step(6, 1))),
    "withdrawal-cancelled": ("withdrawal", (Step(0, tx=False), Step(1, tx=False))),
    "withdrawal-failed": ("withdrawal", (Step(2, tx=False), Step(4, tx=False), Step(5, tx=False, info="The address is not valid."))),
    "withdrawal-rejected": ("withdrawal", (Step(2, tx=False), Step(3, tx=False))),
}
"""Lifecycles by name: the direction and the states in order (no two consecutive states share a
fingerprint, so every state is one event)."""

_COINS = {"deposit": (("BTC", "BTC", "0.00100000"), ("USDT", "TRX", "250.75000000"), ("ETH", "ETH", "1.50000000")),
          "withdrawal": (("BTC", "BTC", "0.01230000"), ("USDT", "BSC", "99.00000000"), ("ETH", "ARBITRUM", "0.42000000"))}
_FEES = {"BTC": "0.00002", "USDT": "0.29", "ETH": "0.0001", "XRP": "0.25"}
_REQUIRED = {"BTC": 2, "USDT": 15, "ETH": 12}


@dataclass(eq=False)
class SimTransfer:
    script_name: str
    direction: Direction
    transfer_id: str
    owner: SimAccount
    script: tuple[Step, ...]
    row: dict[str, Any]
    """The history row, changed in place by ``advance``."""
    created_ms: int
    index: int = 0
    history: list[Snapshot] = field(default_factory=list)
    observed: bool = False
    served: int = 0
    """History answers that carried this row (any state)."""
    seen: set[int] = field(default_factory=set)
    """Indices of ``history`` some answer carried: the states a poller could have read."""
    serve_limit: int | None = None
    """Once ``served`` reaches it, the row is no longer listed (lets a test count re-reads exactly)."""
    tx_hash: str = ""

    @property
    def key(self) -> str:
        return f"binance:{self.direction}:{self.transfer_id}"

    @property
    def finished(self) -> bool:
        return self.index == len(self.script) - 1

    @property
    def step(self) -> Step:
        return self.script[self.index]

    def apply(self, now_ms: int) -> None:
        """Write the current step into the row (in place) and record it in the history."""
        step, row = self.step, self.row
        row["status"] = step.status
        final = step.status in ((1, 2) if self.direction == "deposit" else (1, 3, 5, 6))
        if self.direction == "deposit":
            required = int(row["confirmTimes"].split("/")[1])
            row["confirmTimes"] = f"{step.confirmations}/{required}"
            row["travelRuleStatus"] = step.travel
            if final:
                row["completeTime"] = now_ms
        else:
            row["txId"] = self.tx_hash if step.tx else ""
            row["confirmNo"] = step.confirmations
            row["info"] = step.info
            if step.status == 6:
                row["completeTime"] = _utc_text(now_ms)
        self.history.append(self.snapshot())
        self.observed = False

    def advance(self, now_ms: int) -> bool:
        if self.finished:
            return False
        self.index += 1
        self.apply(now_ms)
        return True

    def snapshot(self) -> Snapshot:
        return snapshot_of(self.direction, self.row)


def snapshot_of(direction: Direction, row: Mapping[str, Any]) -> Snapshot:
    """The fingerprint-relevant state of a row (a simulator row or a published event's ``raw``)."""
    if direction == "deposit":
        # no travelRuleStatus (subHisrec rows) reads as Binance's 0: nothing required
        return Snapshot(str(row["status"]), str(row.get("confirmTimes")), row.get("txId") or None, row.get("travelRuleStatus", 0))
    code = row["status"] if "status" in row else row["withdrawalStatus"]  # a travel-rule (localentity) row
    return Snapshot(str(code), str(row.get("confirmNo")), row.get("txId") or None, None)


def _utc_text(ms: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def new_transfer(script_name: str, owner: SimAccount, number: int, created_ms: int, rng: random.Random) -> SimTransfer:
    """A transfer of ``script_name`` owned by ``owner``, in its first state."""
    direction, steps = SCRIPTS[script_name]
    coin, network, amount = _COINS[direction][number % 3]
    tx_hash = secrets.token_hex(32)
    if direction == "deposit":
        internal = script_name == "deposit-internal"
        transfer_id = str(4_011_240_000_000_000_000 + number)  # clear of the reference examples' ids (4011230…)
        row: dict[str, Any] = {
            "id": transfer_id, "amount": amount, "coin": coin, "network": network, "status": 0,
            "address": f"sim-deposit-address-{owner.uid}-{number % 7}", "addressTag": "",
            "txId": f"Off-chain transfer {350_000_000_000 + number}" if internal else tx_hash,
            "insertTime": created_ms, "transferType": 1 if internal else 0,
            "confirmTimes": f"0/{_REQUIRED[coin]}", "unlockConfirm": _REQUIRED[coin], "walletType": number % 2,
            "travelRuleStatus": 0,
        }
    else:
        transfer_id = f"{rng.getrandbits(128):032x}"
        memo = script_name == "withdrawal-memo"
        if memo:
            coin, network, amount = "XRP", "XRP", "28.75000000"
        row = {
            "id": transfer_id, "amount": amount, "transactionFee": _FEES[coin], "coin": coin, "status": 0,
            "address": f"sim-payout-{number}", "txId": "", "applyTime": _utc_text(created_ms), "network": network,
            "transferType": 0, "info": "", "confirmNo": 0, "walletType": 0, "txKey": "",
        }
        if memo:
            row["addressTag"] = str(900_000_000 + number)
        if number % 2:
            row["withdrawOrderId"] = f"sim-{number:06d}"
    transfer = SimTransfer(script_name, direction, transfer_id, owner, steps, row, created_ms, tx_hash=tx_hash)
    transfer.apply(created_ms)
    return transfer
