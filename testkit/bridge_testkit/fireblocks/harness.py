"""The Fireblocks conformance harness: ``FireblocksSimulator`` behind the suite's ``ProviderHarness``.

Transfers alternate between v2 and v1 deliveries. A gap is a delivery that never arrived the first
time: the harness asks the source for a backfill pass (as after an ingress outage), waits for it,
and only then does the sender's retry come — so the state lands through the REST backfill
(``via = backfill``) and the retry is acknowledged as a repeat.
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bridge.contract.jsonutil import loads_exact
from bridge.sources.fireblocks.parse import Rules, parse_delivery, parse_row
from bridge_testkit.conformance import GapState, ParserEntry, ProviderHarness, eventually
from bridge_testkit.fireblocks.simulator import (
    WORKSPACE,
    FireblocksSimulator,
    SimDelivery,
    SimTransaction,
    jwk_of,
    new_key,
    pem_private,
    pem_public,
)

if TYPE_CHECKING:
    from bridge.service.app import BridgeApp

__all__ = ["FireblocksHarness", "HARNESS", "event_ids"]

RECEIVED = "2026-11-22T10:00:00.000Z"
NOT_JSON = b'{"eventType": "transaction.status.updated", "data": {"amountInfo": {"amount": "1'
_SCRIPTS = ("withdrawal", "deposit", "rejected", "deposit")


def event_ids(transaction: SimTransaction, rules: Rules | None = None) -> list[str]:
    """The ``event_id`` of each of the transaction's states (the truth the suite compares)."""
    rules = rules or Rules()
    ids: list[str] = []
    for state in transaction.states:
        [event, *_] = parse_row(state, received_at=RECEIVED, rules=rules, workspace_id=WORKSPACE)
        ids.append(event.event_id)
    return ids


@dataclass(eq=False)
class HarnessTransfer:
    transaction: SimTransaction
    sent: int = 0

    @property
    def key(self) -> str:
        return self.transaction.key

    @property
    def finished(self) -> bool:
        return self.sent >= len(self.transaction.states)


class FireblocksHarness(ProviderHarness):
    name = "fireblocks"
    kind = "webhook"
    capabilities = frozenset({"webhook_auth", "sender_retries", "backfill"})
    parse_target = ("bridge.sources.fireblocks.webhook", "parse_delivery")

    def __init__(self) -> None:
        self.sim = FireblocksSimulator(retry_interval=0.05, retry_window=10.0, concurrency=4, seed=11)
        self.transfers: list[HarnessTransfer] = []
        self.deliveries: list[SimDelivery] = []
        self._http: aiohttp.ClientSession | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fireblocks-harness-")
        self._app: BridgeApp | None = None
        self._wrong_api_key = "fb-api-key-wrong-7d41c0e2-5b9a-4e11-8f3c"

    async def start(self) -> None:
        await self.sim.start()
        self._http = aiohttp.ClientSession()
        folder = Path(self._dir.name)
        (folder / "legacy.pem").write_bytes(pem_public(self.sim.legacy_key))
        (folder / "api.key").write_bytes(pem_private(self.sim.api_user_key))
        wrong = new_key()
        (folder / "wrong-legacy.pem").write_bytes(pem_public(wrong))
        (folder / "wrong-jwks.json").write_text(f'{{"keys": [{__import__("json").dumps(jwk_of(wrong, self.sim.kid))}]}}')

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.sim.stop()
        self._dir.cleanup()

    # -- configuration -------------------------------------------------------------------------

    def _common(self) -> dict[str, Any]:
        folder = Path(self._dir.name)
        return {
            "enabled": True,
            "workspace_id": WORKSPACE,
            "api_key": self.sim.api_key,
            "api_private_key_file": str(folder / "api.key"),
            "base_url": self.sim.base_url,
            "backfill_interval": 30.0,
            "backfill_retry": 0.2,
            "backfill_overlap": 5.0,
            "rest_rate_per_second": 100.0,
            "jwks_min_refetch_s": 0.0,
        }

    def section(self, **overrides: Any) -> dict[str, Any]:
        folder = Path(self._dir.name)
        return {**self._common(), "legacy_public_keys": [str(folder / "legacy.pem")], "jwks_url": self.sim.jwks_url, **overrides}

    def wrong_secret_section(self, **overrides: Any) -> dict[str, Any]:
        """The receiver trusts other webhook keys than the ones the sender signs with."""
        folder = Path(self._dir.name)
        return {
            **self._common(),
            "legacy_public_keys": [str(folder / "wrong-legacy.pem")],
            "jwks_file": str(folder / "wrong-jwks.json"),
            **overrides,
        }

    @property
    def source_name(self) -> str:
        return "fireblocks:webhook"

    async def ready(self, app: BridgeApp) -> None:
        host, port = app.http.addresses["webhooks"]
        self.sim.url = f"http://{host}:{port}{getattr(app.settings, self.name).path}"
        self._app = app
        await eventually(
            lambda: any(s.name == self.source_name and s.health.connected for s in app.sources), 10.0, "the webhook route is served"
        )
        source = self._source()
        if source.config.backfills:  # the start-up pass is over: later states arrive as pushes
            await eventually(lambda: source.health.detail.get("backfill_last_success") is not None, 10.0, "the start-up backfill")

    def _source(self) -> Any:
        assert self._app is not None, "ready() first"
        return next(s for s in self._app.sources if s.name == self.source_name)

    # -- scripted transfers --------------------------------------------------------------------

    def create(self, count: int) -> list[Any]:
        made = []
        for n in range(len(self.transfers), len(self.transfers) + count):
            made.append(HarnessTransfer(self.sim.create(_SCRIPTS[n % len(_SCRIPTS)], version=2 if n % 2 == 0 else 1)))
        self.transfers.extend(made)
        return made

    def _next(self, transfer: HarnessTransfer, faults: Sequence[str] = ()) -> SimDelivery:
        if transfer.finished:
            raise AssertionError(f"{transfer.key} has no further state")
        delivery = self.sim.delivery(transfer.transaction, transfer.sent)
        delivery.faults.extend(faults)
        transfer.sent += 1
        self.deliveries.append(delivery)
        return delivery

    def _again(self, delivery: SimDelivery) -> SimDelivery:
        again = self.sim.redelivery(delivery)
        self.deliveries.append(again)
        return again

    async def _send(self, lanes: Sequence[Sequence[SimDelivery]]) -> None:
        report = await self.sim.send(lanes, self._http)
        if report.given_up:
            raise AssertionError(f"{report.given_up} deliveries never acknowledged: {report.statuses}")

    async def advance(self, transfer: Any) -> None:
        await self._send([[self._next(transfer)]])

    async def run_lifecycles(self, transfers: Sequence[Any], *, repeat_every: int = 0, faults: bool = False, timeout: float = 30.0) -> None:
        """Per transfer its remaining states in order; ``faults``: every third delivery loses its
        first answer (stored, then retried), every fourth is sent twice."""
        lanes: list[list[SimDelivery]] = []
        count = 0
        for transfer in transfers:
            lane: list[SimDelivery] = []
            while not transfer.finished:
                count += 1
                delivery = self._next(transfer, ["lost_answer"] if faults and count % 3 == 0 else ())
                lane.append(delivery)
                if faults and count % 4 == 0 or repeat_every and count % repeat_every == 0:
                    lane.append(self._again(delivery))
            lanes.append(lane)
        await self._send(lanes)

    async def repeat(self, transfer: Any, times: int = 1) -> None:
        last = next(d for d in reversed(self.deliveries) if d.transaction is transfer.transaction)
        await self._send([[self._again(last) for _ in range(times)]])

    async def gap(self, transfers: Sequence[Any]) -> list[GapState]:
        deliveries = [self._next(t) for t in transfers]
        for delivery in deliveries:
            self.sim.reveal(delivery)
            delivery.attempts.append(0)  # the first attempt never reached the receiver
        if self._app is not None:  # backfill closes it before the sender's retry comes
            source = self._source()
            passes = source.backfill_stats["passes"]
            source.request_backfill("harness_gap")
            await eventually(lambda: source.backfill_stats["passes"] > passes, 15.0, "a backfill pass after the gap")
        await self._send([[d] for d in deliveries])
        return [GapState(t.key, event_ids(t.transaction)[t.sent - 1], tuple(d.attempts)) for t, d in zip(transfers, deliveries, strict=True)]

    async def send_not_json(self) -> bytes:
        assert self._http is not None, "start() first"
        status = await self.sim.post(self._http, self.sim.signed(NOT_JSON, 2))
        if status == 0:
            raise AssertionError("the receiver did not answer")
        return NOT_JSON

    async def post_state(self, transfer: Any) -> int:
        assert self._http is not None, "start() first"
        delivery = self.sim.delivery(transfer.transaction, transfer.sent)
        self.deliveries.append(delivery)
        self.sim.reveal(delivery)
        status = await self.sim.post(self._http, delivery)
        delivery.attempts.append(status)
        if 200 <= status < 300:
            delivery.acked = True
            transfer.sent += 1
        return status

    # -- truth ---------------------------------------------------------------------------------

    def truth(self) -> dict[str, list[Hashable]]:
        return {t.key: list(event_ids(t.transaction)[: t.sent]) for t in self.transfers if t.sent}

    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        return str(event["event_id"])

    def acknowledged(self) -> dict[str, list[Hashable]]:
        acked: dict[str, list[Hashable]] = {}
        for delivery in self.deliveries:
            if delivery.acked and delivery.transaction is not None:
                state = event_ids(delivery.transaction)[delivery.index]
                states = acked.setdefault(delivery.transaction.key, [])
                if state not in states:
                    states.append(state)
        return acked

    def secrets(self) -> set[str]:
        keys = {pem_private(self.sim.api_user_key).decode(), pem_private(self.sim.legacy_key).decode()}
        keys |= {pem_private(key).decode() for key in self.sim.v2_keys.values()}
        return {self.sim.api_key, self._wrong_api_key} | keys | self.sim.signatures_sent | self.sim.tokens_seen

    # -- parsers -------------------------------------------------------------------------------

    def parsers(self) -> list[ParserEntry]:
        sampler = FireblocksSimulator(seed=5)  # never sends: it only scripts the payloads
        bodies = []
        for n, kind in enumerate(("deposit", "withdrawal", "rejected", "frozen", "internal")):
            transaction = sampler.create(kind, version=1 + n % 2)
            bodies.extend(loads_exact(sampler.body(transaction, i)) for i in range(len(transaction.states)))
        rows = tuple(body["data"] for body in bodies)
        rules = Rules(workspace_id=None)
        return [
            ParserEntry(
                "fireblocks.parse_delivery",
                lambda body: parse_delivery(body, received_at=RECEIVED, rules=rules),
                tuple(bodies),
                amount=lambda raw: raw["data"]["amountInfo"]["amount"],
                fee=lambda raw: raw["data"]["feeInfo"].get("networkFee"),
                readers=(loads_exact,),
            ),
            ParserEntry(
                "fireblocks.parse_row",
                lambda row: parse_row(row, received_at=RECEIVED, rules=rules, workspace_id=WORKSPACE),
                rows,
                amount=lambda raw: raw["amountInfo"]["amount"],
                fee=lambda raw: raw["feeInfo"].get("networkFee"),
                readers=(loads_exact,),
            ),
        ]


HARNESS = FireblocksHarness
