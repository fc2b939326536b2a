"""The OpenXSwitch conformance harness: ``OpenXSwitchSimulator`` (a signing, retrying webhook
sender) behind the suite's ``ProviderHarness`` protocol.

OpenXSwitch has no history API: a gap is a delivery that was not acknowledged — its answer is lost
on the way back, or it never reaches the receiver — and what closes it is the sender's retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from bridge.contract.jsonutil import loads_exact
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.parse import parse_delivery
from bridge_testkit.conformance import GapState, ParserEntry, ProviderHarness, eventually
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, Plan, SimDelivery, SimTransfer

if TYPE_CHECKING:
    from bridge.service.app import BridgeApp

__all__ = ["OpenXSwitchHarness", "HARNESS", "SECRET"]

SECRET = "whsec_7Qf3x9Lk2Vb8Nc4Rt6Yh1Jm5Zp0"
WRONG_SECRET = "whsec_G4nT8wQ2eR6yU1iO9pA3sD7fH5k"
RECEIVED = "2026-11-22T10:00:00.000Z"
NOT_JSON = b'{"requestId": "conformance-not-json", "method": "withdraw.confirmed", "params": {"amount": 1'


@dataclass(eq=False)
class WebhookTransfer:
    """A scripted transfer and how many of its states were sent so far."""

    transfer: SimTransfer
    sent: int = 0

    @property
    def key(self) -> str:
        return self.transfer.key

    @property
    def finished(self) -> bool:
        return self.sent >= len(self.transfer.states)


class OpenXSwitchHarness(ProviderHarness):
    name = "openxswitch"
    kind = "webhook"
    capabilities = frozenset({"webhook_auth", "sender_retries"})
    parse_target = ("bridge.sources.openxswitch.webhook", "parse_delivery")

    def __init__(self) -> None:
        self.sim = OpenXSwitchSimulator("", SECRET, concurrency=4, retry_interval=0.05, retry_window=10.0, seed=11)
        self.transfers: list[WebhookTransfer] = []
        self.deliveries: list[SimDelivery] = []
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    # -- configuration -------------------------------------------------------------------------

    def section(self, **overrides: Any) -> dict[str, Any]:
        return {"enabled": True, "secrets": [SECRET], **overrides}

    def wrong_secret_section(self, **overrides: Any) -> dict[str, Any]:
        """The receiver knows another secret than the one the sender signs with."""
        return {"enabled": True, "secrets": [WRONG_SECRET], **overrides}

    @property
    def source_name(self) -> str:
        return "openxswitch:webhook"

    async def ready(self, app: BridgeApp) -> None:
        host, port = app.http.addresses["webhooks"]
        self.sim.url = f"http://{host}:{port}{getattr(app.settings, self.name).path}"
        await eventually(
            lambda: any(s.name == self.source_name and s.health.connected for s in app.sources), 10.0, "the webhook route is served"
        )

    # -- scripted transfers --------------------------------------------------------------------

    def create(self, count: int) -> list[Any]:
        made = []
        for n in range(count):
            # a withdrawal, an on-chain deposit (confirmations rising), an internal deposit, again
            transfer = self.sim.withdrawal() if n % 3 == 0 else self.sim.deposit(confirmations=2, internal=n % 3 == 2)
            made.append(WebhookTransfer(transfer))
        self.transfers.extend(made)
        return made

    def _delivery(self, transfer: WebhookTransfer, index: int, *, redelivery: bool = False, faults: Sequence[str] = ()) -> SimDelivery:
        delivery = self.sim.delivery(transfer.transfer, index, redelivery=redelivery)
        delivery.faults.extend(faults)
        self.deliveries.append(delivery)
        return delivery

    def _next(self, transfer: WebhookTransfer, *, faults: Sequence[str] = ()) -> SimDelivery:
        if transfer.finished:
            raise AssertionError(f"{transfer.key} has no further state")
        delivery = self._delivery(transfer, transfer.sent, faults=faults)
        transfer.sent += 1
        return delivery

    async def _send(self, plan: Plan | Sequence[SimDelivery]) -> None:
        report = await self.sim.send(plan)
        if report.given_up:
            raise AssertionError(f"{report.given_up} deliveries never acknowledged: {dict(report.statuses)}")

    async def advance(self, transfer: Any) -> None:
        await self._send([self._next(transfer)])

    async def run_lifecycles(self, transfers: Sequence[Any], *, repeat_every: int = 0, faults: bool = False, timeout: float = 30.0) -> None:
        """Per transfer, its remaining states in order. ``faults``: every third delivery loses its
        first answer (the receiver stored it, the sender retries), every fourth state is also sent
        a second time at once with a new request id."""
        steps: list[list[list[SimDelivery]]] = []
        count = 0
        for transfer in transfers:
            own: list[list[SimDelivery]] = []
            while not transfer.finished:
                count += 1
                delivery = self._next(transfer, faults=["lost_answer"] if faults and count % 3 == 0 else ())
                step = [delivery]
                if faults and count % 4 == 0:
                    step.append(self._delivery(transfer, transfer.sent - 1, redelivery=True))
                own.append(step)
                if repeat_every and count % repeat_every == 0:
                    own.append([self._delivery(transfer, transfer.sent - 1, redelivery=True)])
            steps.append(own)
        async with asyncio.timeout(timeout):
            await self._send(Plan(steps))

    async def repeat(self, transfer: Any, times: int = 1) -> None:
        if not transfer.sent:
            raise AssertionError(f"{transfer.key} has no state to repeat")
        await self._send([self._delivery(transfer, transfer.sent - 1, redelivery=True) for _ in range(times)])

    async def gap(self, transfers: Sequence[Any]) -> list[GapState]:
        """Each transfer's next state is not acknowledged the first time: alternately its answer is
        lost (it was stored) or it never arrives (it was not); the sender retries both."""
        deliveries = [self._next(t, faults=["lost_answer" if n % 2 == 0 else "unreachable"]) for n, t in enumerate(transfers)]
        await self._send(deliveries)
        return [
            GapState(t.key, d.state.event.event_id, tuple(d.attempts))
            for t, d in zip(transfers, deliveries, strict=True)
            if d.state is not None
        ]

    async def send_not_json(self) -> bytes:
        assert self._http is not None, "start() first"
        status = await self.sim.post(self._http, SimDelivery(request_id="conformance-not-json", method=m.WITHDRAW_CONFIRMED, body=NOT_JSON))
        if status == 0:
            raise AssertionError("the receiver did not answer")
        return NOT_JSON

    async def post_state(self, transfer: Any) -> int:
        assert self._http is not None, "start() first"
        delivery = self._delivery(transfer, transfer.sent)
        status = await self.sim.post(self._http, delivery)
        if 200 <= status < 300:
            transfer.sent += 1
        return status

    # -- truth ---------------------------------------------------------------------------------

    def truth(self) -> dict[str, list[Hashable]]:
        return {t.key: [state.event.event_id for state in t.transfer.states[: t.sent]] for t in self.transfers if t.sent}

    def state_of(self, event: Mapping[str, Any]) -> Hashable:
        return str(event["event_id"])

    def acknowledged(self) -> dict[str, list[Hashable]]:
        acked: dict[str, list[Hashable]] = {}
        for delivery in self.deliveries:
            if delivery.acked and delivery.transfer is not None and delivery.state is not None:
                states = acked.setdefault(delivery.transfer.key, [])
                if delivery.state.event.event_id not in states:
                    states.append(delivery.state.event.event_id)
        return acked

    def secrets(self) -> set[str]:
        return {SECRET, WRONG_SECRET} | self.sim.signatures_sent

    # -- parsers -------------------------------------------------------------------------------

    def parsers(self) -> list[ParserEntry]:
        sampler = OpenXSwitchSimulator("", "sampler", seed=5)  # never sends: it only scripts the payloads
        sampler.lifecycles(withdrawals=2, deposits=5, confirmations=2)
        samples = tuple(
            loads_exact(m.delivery_body(f"sample-{n}", state.method, state.params))
            for n, state in enumerate(state for transfer in sampler.transfers for state in transfer.states)
        )
        return [
            ParserEntry(
                "openxswitch.parse_delivery",
                lambda delivery: parse_delivery(delivery, received_at=RECEIVED),
                samples,
                amount=lambda raw: raw["params"]["amount"],
                fee=lambda raw: raw["params"]["networkFee"],
                readers=(loads_exact,),
            )
        ]


HARNESS = OpenXSwitchHarness
