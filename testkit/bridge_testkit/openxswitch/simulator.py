"""A webhook sender that behaves like OpenXSwitch, for tests, the demo and benchmarks.

It scripts transfer lifecycles — withdrawals ``withdraw.unconfirmed`` → ``withdraw.confirmed``,
deposits ``deposit.pending`` → ``deposit.updated`` (confirmations rising) → ``deposit.success``,
internal deposits without a hash — and posts them signed (HMAC-SHA256 of the body, hex or base64)
the way the provider does (``shared/providers/NOTES.md``):

* each delivery has its own ``requestId``; a re-delivery of the same state (operator replay,
  provider retry after a lost answer) gets a new one, and may be sent at the same time as the
  original (``concurrent``);
* a non-2xx answer, a connection error or a timeout is retried after ``retry_interval`` (the real
  provider: 5 minutes) until ``retry_window`` (12 hours) has passed, while the transfer's later
  states go out meanwhile — so states arrive out of order, as they do in production; a transfer's
  states can also be scripted out of order (``out_of_order``);
* methods that are not transfers (``instant_swap.completed``, ``internal_transfer.*``) are mixed in.

Ground truth for "nothing lost" checks: every state of every transfer (``truth()``), every delivery
with its attempts and whether it was acknowledged, and ``verdict(published_event_ids)``:

* ``must``: states a correct bridge has published — every acknowledged final state, and every
  acknowledged state whose 2xx came before any final state of its transfer was first posted
  (before that, the bridge could not have ruled it stale);
* ``may``: every state that was posted at least once (a later one may be stale after the final);
* lost = ``must`` − published; invented = published − ``may``; duplicated = published twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

import aiohttp

from bridge.contract.events import FINAL_STATUSES, TransferEvent
from bridge.contract.timeutil import format_utc_ms
from bridge.sources.openxswitch import messages as m
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.openxswitch.signature import HEADER, Encoding, sign

__all__ = [
    "State",
    "SimTransfer",
    "SimDelivery",
    "Plan",
    "SendReport",
    "Verdict",
    "OpenXSwitchSimulator",
    "main",
]

_TRUTH_RECEIVED = "2000-01-01T00:00:00.000Z"  # event ids do not depend on the receive time


@dataclass(frozen=True)
class State:
    """One state of a transfer as the provider reports it: the method and its ``params``."""

    method: str
    params: dict[str, Any]

    @cached_property
    def event(self) -> TransferEvent:
        """What the bridge must make of this state (the event id ignores request id and receive time)."""
        [event] = parse_delivery({"requestId": "truth", "method": self.method, "params": self.params}, received_at=_TRUTH_RECEIVED)
        if not isinstance(event, TransferEvent):
            raise AssertionError(f"the simulator scripted a state the parser refuses: {event.reason}")
        return event

    @property
    def is_final(self) -> bool:
        return self.event.status in FINAL_STATUSES


@dataclass
class SimTransfer:
    transfer_id: str
    direction: str  # "withdrawal" | "deposit"
    states: list[State]

    @property
    def key(self) -> str:
        return f"openxswitch:{self.direction}:{self.transfer_id}"


@dataclass
class SimDelivery:
    """One webhook call (with its retries). ``state`` is None for non-transfer methods."""

    request_id: str
    method: str
    body: bytes
    transfer: SimTransfer | None = None
    state: State | None = None
    redelivery: bool = False
    attempts: list[int] = field(default_factory=list)
    """HTTP status of every attempt; 0 = connection error or timeout."""
    first_post_at: float | None = None
    acked_at: float | None = None
    given_up: bool = False
    faults: list[str] = field(default_factory=list)
    """Per attempt, in order, what goes wrong with it: ``"lost_answer"`` — posted and answered, but
    the answer never reaches the sender; ``"unreachable"`` — it never reaches the receiver. Either
    way the attempt counts as status 0 and is retried like any failure."""

    @property
    def acked(self) -> bool:
        return self.acked_at is not None


@dataclass
class Plan:
    """Per transfer, the steps in sending order; the deliveries of one step go out concurrently."""

    steps: list[list[list[SimDelivery]]]

    @property
    def deliveries(self) -> list[SimDelivery]:
        return [d for transfer in self.steps for step in transfer for d in step]


@dataclass
class SendReport:
    deliveries: int
    acked: int
    given_up: int
    attempts: int
    statuses: Counter[int]
    seconds: float
    latencies: list[float]
    """Seconds per attempt, from request to answer."""

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass
class Verdict:
    must: set[str]
    may: set[str]
    lost: set[str]
    invented: set[str]
    duplicated: set[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.invented or self.duplicated)


class OpenXSwitchSimulator:
    """Scripts lifecycles, posts them signed with retries, and remembers the ground truth."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        encoding: Encoding = "hex",
        concurrency: int = 8,
        retry_interval: float = 300.0,
        retry_window: float = 12 * 3600.0,
        request_timeout: float = 60.0,
        seed: int = 0,
        start: datetime | None = None,
    ):
        self.url = url
        self.encoding: Encoding = encoding
        self.concurrency = concurrency
        self.retry_interval = retry_interval
        self.retry_window = retry_window
        self.request_timeout = request_timeout
        self.transfers: list[SimTransfer] = []
        self.sent: list[SimDelivery] = []
        self._secret = secret.encode()
        self._rng = random.Random(seed)
        self._clock = start or datetime.now(UTC).replace(microsecond=0)
        self._wallet = self._hex(24)
        self.signatures_sent: set[str] = set()
        """Every signature header sent (for "no secret in the logs" checks)."""

    def __repr__(self) -> str:  # never the secret
        return f"OpenXSwitchSimulator(url={self.url!r}, encoding={self.encoding!r})"

    # -- scripting -----------------------------------------------------------------------------

    def _hex(self, length: int) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(length))

    def _tick(self, seconds: float = 7.0) -> str:
        self._clock += timedelta(seconds=seconds)
        return format_utc_ms(self._clock)

    def _amount(self) -> Decimal:
        """Exact decimals with up to 18 places, the kind a float would damage."""
        places = self._rng.choice((0, 1, 2, 6, 8, 18))
        whole = self._rng.randint(1, 10**6)
        if not places:
            return Decimal(whole)
        return Decimal(f"{whole}.{self._rng.randint(0, 10**places - 1):0{places}d}")

    def withdrawal(self, *, amount: Decimal | int | None = None, coin: str = "USDT") -> SimTransfer:
        """``withdraw.unconfirmed`` (pending, no hash) → ``withdraw.confirmed`` (success, 20 confirmations)."""
        transfer_id, created = self._hex(24), self._tick()
        common = dict(
            transfer_id=transfer_id,
            amount=self._amount() if amount is None else amount,
            created_at=created,
            wallet_id=self._wallet,
            coin=coin,
            client_tx_id=f"{self._hex(8)}-{self._hex(4)}-{self._hex(4)}-{self._hex(4)}-{self._hex(12)}",
        )
        states = [
            State(m.WITHDRAW_UNCONFIRMED, m.withdrawal_params(status="pending", updated_at=created, **common)),
            State(
                m.WITHDRAW_CONFIRMED,
                m.withdrawal_params(status="success", confirmation=20, tx_hash="0x" + self._hex(64), updated_at=self._tick(), **common),
            ),
        ]
        return self._add(SimTransfer(transfer_id, "withdrawal", states))

    def deposit(
        self,
        *,
        confirmations: int = 3,
        amount: Decimal | int | None = None,
        internal: bool = False,
        tag_memo: str | None = None,
        coin: str = "USDT",
    ) -> SimTransfer:
        """``deposit.pending`` → ``deposit.updated`` × confirmations (rising) → ``deposit.success``.

        An internal deposit has no hash and no confirmations: ``deposit.pending`` → ``deposit.success``.
        """
        transfer_id, created = self._hex(24), self._tick()
        common = dict(
            transfer_id=transfer_id,
            amount=self._amount() if amount is None else amount,
            created_at=created,
            wallet_id=self._wallet,
            coin=coin,
            destination="internal_transfer" if internal else "on_chain",
            tag_memo=tag_memo,
        )
        tx_hash = None if internal else self._hex(64)
        states = [State(m.DEPOSIT_PENDING, m.deposit_params(status="pending", confirmation=0, tx_hash=tx_hash, updated_at=created, **common))]
        if not internal:
            for seen in range(1, confirmations + 1):
                params = m.deposit_params(status="pending", confirmation=seen, tx_hash=tx_hash, updated_at=self._tick(), **common)
                states.append(State(m.DEPOSIT_UPDATED, params))
        final_confirmations = 0 if internal else confirmations + 1
        states.append(
            State(
                m.DEPOSIT_SUCCESS,
                m.deposit_params(status="success", confirmation=final_confirmations, tx_hash=tx_hash, updated_at=self._tick(), **common),
            )
        )
        return self._add(SimTransfer(transfer_id, "deposit", states))

    def lifecycles(self, *, withdrawals: int = 0, deposits: int = 0, confirmations: int = 3) -> list[SimTransfer]:
        made = [self.withdrawal() for _ in range(withdrawals)]
        made += [self.deposit(confirmations=confirmations, internal=n % 5 == 4) for n in range(deposits)]
        return made

    def _add(self, transfer: SimTransfer) -> SimTransfer:
        self.transfers.append(transfer)
        return transfer

    def delivery(self, transfer: SimTransfer, index: int, *, redelivery: bool = False) -> SimDelivery:
        """A fresh delivery of one state: new ``requestId``, same params."""
        state = transfer.states[index]
        request_id = self._hex(30)
        return SimDelivery(
            request_id=request_id,
            method=state.method,
            body=m.delivery_body(request_id, state.method, state.params),
            transfer=transfer,
            state=state,
            redelivery=redelivery,
        )

    def other(self, method: str = "instant_swap.completed") -> SimDelivery:
        """A delivery of a method that is not a transfer: to be acknowledged, never published."""
        request_id = self._hex(30)
        params = {"id": self._hex(24), "fromCoin": "USDT", "toCoin": "BTC", "amount": self._amount(), "status": "success"}
        return SimDelivery(request_id=request_id, method=method, body=m.delivery_body(request_id, method, params))

    def plan(
        self,
        transfers: Iterable[SimTransfer] | None = None,
        *,
        redeliver: float = 0.0,
        concurrent: float = 0.0,
        out_of_order: float = 0.0,
        others: int = 0,
    ) -> Plan:
        """Sending order per transfer. ``redeliver``: chance a state is sent again later with a new
        requestId; ``concurrent``: chance a state is sent twice at once; ``out_of_order``: chance a
        transfer's states are shuffled."""
        steps: list[list[list[SimDelivery]]] = []
        for transfer in self.transfers if transfers is None else transfers:
            order = list(range(len(transfer.states)))
            if self._rng.random() < out_of_order:
                while len(order) > 1 and order == sorted(order):
                    self._rng.shuffle(order)
            own: list[list[SimDelivery]] = []
            for index in order:
                step = [self.delivery(transfer, index)]
                if self._rng.random() < concurrent:
                    step.append(self.delivery(transfer, index, redelivery=True))
                own.append(step)
            for index in order:
                if self._rng.random() < redeliver:
                    original = next(i for i, step in enumerate(own) if step[0].state is transfer.states[index] and not step[0].redelivery)
                    position = self._rng.randint(original + 1, len(own))
                    own.insert(position, [self.delivery(transfer, index, redelivery=True)])
            steps.append(own)
        steps.extend([[self.other()]] for _ in range(others))
        self._rng.shuffle(steps)
        return Plan(steps)

    # -- sending -------------------------------------------------------------------------------

    def headers(self, body: bytes) -> dict[str, str]:
        signature = sign(self._secret, body, self.encoding)
        self.signatures_sent.add(signature)
        return {"Content-Type": "application/json", HEADER: signature}

    async def post(self, session: aiohttp.ClientSession, delivery: SimDelivery, latencies: list[float] | None = None) -> int:
        """One attempt; records its status and, on 2xx, when the acknowledgement came."""
        began = time.monotonic()
        if delivery.first_post_at is None:
            delivery.first_post_at = began
        fault = delivery.faults.pop(0) if delivery.faults else None
        try:
            if fault == "unreachable":
                raise aiohttp.ClientConnectionError("simulated: the delivery never reached the receiver")
            timeout = aiohttp.ClientTimeout(total=self.request_timeout)
            async with session.post(self.url, data=delivery.body, headers=self.headers(delivery.body), timeout=timeout) as response:
                await response.read()
                status = 0 if fault == "lost_answer" else response.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            status = 0
        delivery.attempts.append(status)
        if latencies is not None:
            latencies.append(time.monotonic() - began)
        if 200 <= status < 300 and delivery.acked_at is None:
            delivery.acked_at = time.monotonic()
        return status

    async def send(self, plan: Plan | Sequence[SimDelivery]) -> SendReport:
        """Post every delivery, per transfer in plan order; retry failures like the provider does."""
        steps = plan.steps if isinstance(plan, Plan) else [[[d]] for d in plan]
        gate = asyncio.Semaphore(self.concurrency)
        latencies: list[float] = []
        retries: list[asyncio.Task[None]] = []
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.concurrency)

        async with aiohttp.ClientSession(connector=connector) as session:

            async def attempt(delivery: SimDelivery) -> None:
                async with gate:
                    status = await self.post(session, delivery, latencies)
                if not 200 <= status < 300:
                    retries.append(asyncio.create_task(retry(delivery)))

            async def retry(delivery: SimDelivery) -> None:
                assert delivery.first_post_at is not None
                while not delivery.acked:
                    if time.monotonic() - delivery.first_post_at + self.retry_interval > self.retry_window:
                        delivery.given_up = True
                        return
                    await asyncio.sleep(self.retry_interval)
                    async with gate:
                        await self.post(session, delivery, latencies)

            async def one_transfer(transfer_steps: list[list[SimDelivery]]) -> None:
                for step in transfer_steps:
                    self.sent.extend(step)
                    await asyncio.gather(*(attempt(d) for d in step))

            try:
                await asyncio.gather(*(one_transfer(s) for s in steps))
                while retries:
                    pending, retries[:] = list(retries), []
                    await asyncio.gather(*pending)
            finally:  # cancelled mid-way: no retry outlives the session
                for task in retries:
                    task.cancel()
                await asyncio.gather(*retries, return_exceptions=True)

        deliveries = [d for transfer in steps for step in transfer for d in step]
        statuses: Counter[int] = Counter(status for d in deliveries for status in d.attempts)
        return SendReport(
            deliveries=len(deliveries),
            acked=sum(d.acked for d in deliveries),
            given_up=sum(d.given_up for d in deliveries),
            attempts=sum(len(d.attempts) for d in deliveries),
            statuses=statuses,
            seconds=time.monotonic() - started,
            latencies=latencies,
        )

    # -- ground truth --------------------------------------------------------------------------

    def truth(self) -> dict[str, list[State]]:
        """Every state of every scripted transfer, in lifecycle order, by event key."""
        return {t.key: list(t.states) for t in self.transfers}

    def expected(self, deliveries: Iterable[SimDelivery] | None = None) -> tuple[set[str], set[str]]:
        """(must, may) event ids: see the module docstring."""
        deliveries = list(self.sent if deliveries is None else deliveries)
        final_posted: dict[str, float] = {}
        for d in deliveries:
            if d.transfer is not None and d.state is not None and d.first_post_at is not None and d.state.is_final:
                key = d.transfer.key
                final_posted[key] = min(final_posted.get(key, d.first_post_at), d.first_post_at)
        must: set[str] = set()
        may: set[str] = set()
        for d in deliveries:
            if d.state is None or d.transfer is None or d.first_post_at is None:
                continue
            event_id = d.state.event.event_id
            may.add(event_id)
            if d.acked_at is not None and (d.state.is_final or d.acked_at < final_posted.get(d.transfer.key, float("inf"))):
                must.add(event_id)
        return must, may

    def verdict(self, published_event_ids: Sequence[str], deliveries: Iterable[SimDelivery] | None = None) -> Verdict:
        must, may = self.expected(deliveries)
        counts = Counter(published_event_ids)
        published = set(counts)
        return Verdict(
            must=must,
            may=may,
            lost=must - published,
            invented=published - may,
            duplicated={event_id for event_id, n in counts.items() if n > 1},
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Post scripted lifecycles at a running bridge (the secret comes from the environment)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080/webhooks/openxswitch")
    parser.add_argument("--secret-env", default="OPENXSWITCH_WEBHOOK_SECRET", help="variable holding the webhook secret")
    parser.add_argument("--withdrawals", type=int, default=5)
    parser.add_argument("--deposits", type=int, default=5)
    parser.add_argument("--others", type=int, default=2, help="non-transfer deliveries (acknowledged, not published)")
    parser.add_argument("--encoding", choices=("hex", "base64"), default="hex")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--redeliver", type=float, default=0.3)
    parser.add_argument("--concurrent", type=float, default=0.1)
    parser.add_argument("--out-of-order", type=float, default=0.1)
    parser.add_argument("--retry-interval", type=float, default=5.0, help="seconds; the provider waits 300")
    parser.add_argument("--retry-window", type=float, default=60.0, help="seconds; the provider keeps trying 12 h")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        parser.error(f"set {args.secret_env} to the webhook secret the bridge is configured with")
    simulator = OpenXSwitchSimulator(
        args.url,
        secret,
        encoding=args.encoding,
        concurrency=args.concurrency,
        retry_interval=args.retry_interval,
        retry_window=args.retry_window,
        seed=args.seed,
    )
    simulator.lifecycles(withdrawals=args.withdrawals, deposits=args.deposits)
    plan = simulator.plan(redeliver=args.redeliver, concurrent=args.concurrent, out_of_order=args.out_of_order, others=args.others)
    report = asyncio.run(simulator.send(plan))
    must, may = simulator.expected()
    print(
        json.dumps(
            {
                "deliveries": report.deliveries,
                "acked": report.acked,
                "given_up": report.given_up,
                "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
                "states_to_publish": len(must),
                "states_possible": len(may),
                "p99_ms": round(report.percentile(99) * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
