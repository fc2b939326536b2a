"""The webhook side of the chaos suite: every state posted three times, through a flaky gateway.

OpenXSwitch keeps a delivery until it gets a 2xx, so the at-least-once promise of the webhook
route is: *a delivery answered 2xx has its state in Kafka*. To test that under kill -9 of the
bridge and of the broker, every state of every scripted transfer is posted three times with fresh
``requestId``s — all three at once, two at once then one, or one after another — and every post is
retried until it gets a 2xx, the way the provider retries (5 minutes there, ``retry_interval``
here). A transfer's next state is only posted once every delivery of the current one was
acknowledged, so every acknowledged delivery must be in Kafka at the end, stale-after-final
included (nothing is re-posted after a final state).

Between the sender and the bridge sits ``FlakyFront``, a gateway that answers 503 to the first
attempt of some deliveries: before forwarding (nothing stored) or after forwarding (stored, the
answer lost on the way back — the retry must be recognised as a repeat). The bridge's own 503s
(Kafka down past ``ack_timeout_seconds``) and refused connections (bridge killed) come on top.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bridge.sources.openxswitch.signature import HEADER
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, SimDelivery, SimTransfer

__all__ = ["FlakyFront", "WebhookDriver", "DELIVERIES_PER_STATE"]

DELIVERIES_PER_STATE = 3


class FlakyFront:
    """A gateway on 127.0.0.1 that forwards to the bridge and answers 503 to some first attempts.

    ``rate`` of first attempts get a 503: half before forwarding, half after the bridge answered.
    A bridge that cannot be reached is answered 502, as a gateway does.
    """

    def __init__(self, target_url: str, *, rate: float = 0.1, seed: int = 0):
        self.target_url = target_url
        self.rate = rate
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._seen: set[bytes] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.url = f"http://127.0.0.1:{port}/front"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        digest = hashlib.sha256(body).digest()
        first = digest not in self._seen
        self._seen.add(digest)
        roll = self._rng.random() if first else 1.0
        if roll < self.rate / 2:
            self.stats["503_before_forward"] += 1
            return web.json_response({"result": "gateway"}, status=503)
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if HEADER in request.headers:
            headers[HEADER] = request.headers[HEADER]
        try:
            timeout = aiohttp.ClientTimeout(total=40)
            async with self._session.post(self.target_url, data=body, headers=headers, timeout=timeout) as answer:
                payload = await answer.read()
                status = answer.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.stats["502_bridge_unreachable"] += 1
            return web.json_response({"result": "bad_gateway"}, status=502)
        if roll < self.rate and 200 <= status < 300:
            self.stats["503_after_forward"] += 1
            return web.json_response({"result": "gateway"}, status=503)
        return web.Response(body=payload, status=status, content_type="application/json")


@dataclass
class WebhookDriver:
    """Posts every state of ``transfers`` ``DELIVERIES_PER_STATE`` times, retrying until 2xx."""

    sim: OpenXSwitchSimulator
    transfers: Sequence[SimTransfer]
    retry_interval: float = 0.5
    workers: int = 16
    others_every: int = 40
    """one non-transfer delivery (``instant_swap.completed``) per this many transfers"""
    seed: int = 0
    states_done: int = 0
    patterns: Counter[str] = field(default_factory=Counter)

    @property
    def expected_states(self) -> int:
        return sum(len(t.states) for t in self.transfers)

    async def run(self, pace: Callable[[float], Awaitable[None]], deadline: float) -> None:
        """Drive every transfer; ``pace(fraction)`` holds a transfer back until the other
        providers are that far, so the webhook load spreads over the whole run (and its faults)."""
        rng = random.Random(self.seed)
        queue: asyncio.Queue[tuple[int, SimTransfer]] = asyncio.Queue()
        for index, transfer in enumerate(self.transfers):
            queue.put_nowait((index, transfer))
        total = max(1, len(self.transfers))
        connector = aiohttp.TCPConnector(limit=self.workers * DELIVERIES_PER_STATE)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while not queue.empty():
                    index, transfer = queue.get_nowait()
                    await pace(index / total)
                    if self.others_every and index % self.others_every == 0:
                        other = self.sim.other()
                        self.sim.sent.append(other)
                        await self._deliver(session, other, deadline)
                    for position in range(len(transfer.states)):
                        await self._post_state(session, transfer, position, rng, deadline)
                        self.states_done += 1

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    async def _post_state(
        self, session: aiohttp.ClientSession, transfer: SimTransfer, position: int, rng: random.Random, deadline: float
    ) -> None:
        copies = [self.sim.delivery(transfer, position, redelivery=n > 0) for n in range(DELIVERIES_PER_STATE)]
        self.sim.sent.extend(copies)
        pattern = rng.choice(("all_at_once", "two_then_one", "one_by_one"))
        self.patterns[pattern] += 1
        if pattern == "all_at_once":
            groups = [copies]
        elif pattern == "two_then_one":
            groups = [copies[:2], copies[2:]]
        else:
            groups = [[copy] for copy in copies]
        for group in groups:
            await asyncio.gather(*(self._deliver(session, d, deadline) for d in group))

    async def _deliver(self, session: aiohttp.ClientSession, delivery: SimDelivery, deadline: float) -> None:
        """Like the provider: post until 2xx, ``retry_interval`` apart, until ``deadline``."""
        while True:
            status = await self.sim.post(session, delivery)
            if 200 <= status < 300:
                return
            if time.monotonic() > deadline:
                delivery.given_up = True
                return
            await asyncio.sleep(self.retry_interval)
