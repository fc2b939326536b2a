"""Fireblocks in the chaos run: signed transaction webhooks (v1 and v2 alternating) sent the way
Fireblocks may send them — neighbours swapped, some re-delivered, some answers lost on the way
back, every delivery retried until 2xx, a few never delivered at all (only the bridge's REST
backfill brings those) — against the real receiver, while the bridge and the broker are killed.

The promise checked is Fireblocks': a delivery answered 2xx has its state in Kafka, *or* a later
state of the same transfer is there (a state older than one already published is acknowledged
and not published: the ordering rule, which must hold across the bridge's kill -9 too); every
transfer's last state is published; nothing is published twice under two ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bridge.contract.events import TransferEvent
from bridge.sources.fireblocks.parse import Rules, parse_row
from bridge_testkit.fireblocks.simulator import WORKSPACE, FireblocksSimulator, Report, SimDelivery, pem_private, pem_public
from tests.chaos.checker import duplicates, older_after_newer
from tests.chaos.report import ProviderFigures
from tests.chaos.sockets import Driver, Pace

__all__ = ["FireblocksDriver"]

KINDS = ("deposit", "withdrawal", "deposit", "rejected", "internal", "frozen", "withdrawal")
DROP_RATE = 0.03
"""Deliveries Fireblocks never makes (nor retries): closed by the backfill only."""
LOST_ANSWER_RATE = 0.05
"""Deliveries whose 2xx is lost on the way back: the retry must be answered as a repeat."""
WORKERS = 8
LATE_BY = 2.0
"""A state sent after its successor comes this much later (as a retry of a failed first attempt
would), so that kills fall between the two: the ordering rule must hold across a restart."""


def _state(value: dict[str, Any]) -> tuple[Any, ...]:
    return (value["provider_status"], value["confirmations"], value["tx_hash"], value["status"])


class FireblocksDriver(Driver):
    name = "fireblocks"

    def __init__(self, port: int, work: Path, seed: int):
        self.sim = FireblocksSimulator(f"http://127.0.0.1:{port}/webhooks/fireblocks", retry_interval=0.5, seed=seed)
        self.work = work
        self.lanes: list[list[SimDelivery]] = []
        self.dropped: set[int] = set()
        self.lost_answers = 0
        self.report = Report()
        self.delivered = 0
        self.ids: dict[tuple[int, int], list[tuple[str, str]]] = {}
        """(transaction number, state index) → the (key, event_id) of its event(s)."""
        self.truth: dict[str, list[str]] = {}

    async def __aenter__(self) -> FireblocksDriver:
        await self.sim.start()
        (self.work / "fireblocks-legacy.pem").write_bytes(pem_public(self.sim.legacy_key))
        (self.work / "fireblocks-api.key").write_bytes(pem_private(self.sim.api_user_key))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()

    def section(self) -> dict[str, Any]:
        return {
            "enabled": True, "workspace_id": WORKSPACE, "ack_timeout_seconds": 5.0,
            "legacy_public_keys": [str(self.work / "fireblocks-legacy.pem")], "jwks_url": self.sim.jwks_url, "jwks_min_refetch_s": 0.0,
            "api_key": self.sim.api_key, "api_private_key_file": str(self.work / "fireblocks-api.key"), "base_url": self.sim.base_url,
            "backfill_interval": 3.0, "backfill_retry": 0.5, "backfill_overlap": 5.0, "backfill_initial_lookback": 3600.0,
            "rest_rate_per_second": 50.0,
        }  # fmt: skip

    def create(self, count: int, duration: float) -> None:
        rules = Rules(workspace_id=WORKSPACE)
        for n in range(count):
            transaction = self.sim.create(KINDS[n % len(KINDS)], version=1 + n % 2)
            for index, state in enumerate(transaction.states):
                events = parse_row(state, received_at="2026-01-01T00:00:00.000Z", rules=rules, workspace_id=WORKSPACE)
                assert all(isinstance(e, TransferEvent) for e in events), events
                self.ids[(n, index)] = [(e.key, e.event_id) for e in events]
                for key, event_id in self.ids[(n, index)]:
                    history = self.truth.setdefault(key, [])
                    if not history or history[-1] != event_id:
                        history.append(event_id)
            lane = self.sim.shuffled_lane(transaction, swap_rate=0.25, repeat_rate=0.3)
            for delivery in lane:
                roll = self.sim.rng.random()
                if roll < DROP_RATE:
                    delivery.faults.append("drop")
                    self.dropped.add(id(delivery))
                elif roll < DROP_RATE + LOST_ANSWER_RATE:
                    delivery.faults.append("lost_answer")
                    self.lost_answers += 1
            self.lanes.append(lane)
        self.expected_states = sum(len(h) for h in self.truth.values())

    @property
    def deliveries(self) -> list[SimDelivery]:
        return [d for lane in self.lanes for d in lane]

    def done(self) -> int:
        """States' worth of deliveries made (faults are placed by it)."""
        total = max(1, len(self.deliveries))
        return self.delivered * self.expected_states // total

    async def run(self, pace: Pace, deadline: float) -> None:
        """Each transfer's lane in order (a late state ``LATE_BY`` after its successor), ``WORKERS``
        lanes at a time, held back to follow the load."""
        self.sim.retry_window = max(1.0, deadline - time.monotonic())
        queue: asyncio.Queue[tuple[int, list[SimDelivery]]] = asyncio.Queue()
        for index, lane in enumerate(self.lanes):
            queue.put_nowait((index, lane))
        total = max(1, len(self.lanes))
        held: list[asyncio.Task[None]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def deliver(delivery: SimDelivery, delay: float = 0.0) -> None:
                await asyncio.sleep(delay)
                await self.sim.deliver(session, delivery, self.report)
                self.delivered += 1

            async def worker() -> None:
                while not queue.empty():
                    index, lane = queue.get_nowait()
                    await pace(index / total)
                    highest = -1
                    for delivery in lane:
                        if delivery.index < highest:
                            held.append(asyncio.create_task(deliver(delivery, LATE_BY)))
                        else:
                            await deliver(delivery)
                        highest = max(highest, delivery.index)

            await asyncio.gather(*(worker() for _ in range(WORKERS)))
            await asyncio.gather(*held)

    def _missing_acked(self, published: set[str]) -> tuple[int, int]:
        """Acknowledged deliveries whose event is not in Kafka: (superseded by a later state of
        the transfer that is, missing outright)."""
        later = {key: history for key, history in self.truth.items()}
        superseded = missing = 0
        numbers = {id(t): n for n, t in enumerate(self.sim.transactions)}
        for delivery in self.deliveries:
            if not delivery.acked or delivery.transaction is None:
                continue
            for key, event_id in self.ids[(numbers[id(delivery.transaction)], delivery.index)]:
                if event_id in published:
                    continue
                history = later[key]
                if any(i in published for i in history[history.index(event_id) + 1 :]):
                    superseded += 1
                else:
                    missing += 1
        return superseded, missing

    def settled(self, values: list[dict[str, Any]]) -> tuple[bool, bool]:
        published = {v["event_id"] for v in values}
        finals = all(history[-1] in published for history in self.truth.values()) and self._missing_acked(published)[1] == 0
        return finals, finals

    def figures(self, values: list[dict[str, Any]], kills: list[float], outages: list[tuple[float, float]]) -> ProviderFigures:
        published = {v["event_id"] for v in values}
        figures = ProviderFigures(transfers=len(self.sim.transactions), states=self.expected_states, records=len(values))
        for history in self.truth.values():
            for position, event_id in enumerate(history):
                if event_id in published:
                    continue
                figures.lost += 1
                if position == len(history) - 1:
                    figures.lost_final += 1
                elif any(i in published for i in history[position + 1 :]):
                    figures.lost_superseded += 1
                else:
                    figures.lost_unexplained += 1
        known = {i for history in self.truth.values() for i in history}
        figures.unknown_records = sum(1 for v in values if v["event_id"] not in known)
        duplicates(figures, values, _state)
        figures.older_after_newer = older_after_newer(values, lambda v: v["event_id"], self.truth)
        superseded, missing = self._missing_acked(published)
        deliveries = self.deliveries
        statuses: Counter[int] = Counter(status for d in deliveries for status in d.attempts)
        figures.detail = {
            "deliveries": len(deliveries),
            "v1_deliveries": sum(1 for d in deliveries if d.transaction is not None and d.transaction.version == 1),
            "late_deliveries": self._late(),
            "attempts": sum(len(d.attempts) for d in deliveries),
            "acked": sum(1 for d in deliveries if d.acked),
            "acked_superseded": superseded,
            "acked_but_missing_in_kafka": missing,
            "never_delivered": len(self.dropped),
            "answers_lost": self.lost_answers,
            "given_up": sum(1 for d in deliveries if d.given_up and id(d) not in self.dropped),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "via": dict(Counter(v["source"]["via"] for v in values)),
            "rest_requests": len(self.sim.rest_requests),
        }
        return figures

    def _late(self) -> int:
        """Deliveries of a state older than one of the same transfer delivered before."""
        late = 0
        for lane in self.lanes:
            highest = -1
            for delivery in lane:
                late += delivery.index < highest
                highest = max(highest, delivery.index)
        return late

    def faults(self) -> dict[str, int]:
        statuses = Counter(status for d in self.deliveries for status in d.attempts)
        return {"fireblocks_never_delivered": len(self.dropped), "fireblocks_answer_lost": self.lost_answers, "fireblocks_503": statuses[503]}
