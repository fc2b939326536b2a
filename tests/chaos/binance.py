"""Binance in the chaos run: the poll source against the simulator, history rows changed in place as
transfers progress (a transfer moves on only once a poll answer carried its current state; every
11th step moves twice between two polls, a state no poller can see), one 429 now and then.

The cursor and open-transfer files live in one directory per run, so they survive the bridge's
kill -9 like a volume survives a pod. Binance shows only each row's current state: a state a
poll read just before a SIGKILL, that moved on before the restarted bridge polled again, is gone
at the provider — counted as ``lost_at_bridge_kill`` like the WebSocket providers' (it must have
become current at most ``KILL_SLACK`` seconds of Kafka uptime before a kill). The truth required
is what some answer carried (``SimTransfer.seen``); every state the simulator went through is
known, so a record of an unseen state is not "unknown".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from bridge_testkit.binance.lifecycles import SimTransfer, snapshot_of
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import FAST_UID_LIMIT, section
from tests.chaos.checker import all_in, finals_in, stream_figures
from tests.chaos.report import ProviderFigures
from tests.chaos.sockets import Driver, Pace, Throttle

__all__ = ["BinanceDriver"]

SKIP_EVERY = 11
RATE_LIMIT_EVERY = 50


def _state(value: dict[str, Any]) -> Hashable:
    return snapshot_of(value["direction"], value["raw"])


class ChaosBinance(BinanceSimulator):
    """Remembers when each state became current (aligned with ``SimTransfer.history``)."""

    advanced_at: dict[str, list[float]]

    def create(self, script: str, account: str = "main", *, created_ms: int | None = None) -> SimTransfer:
        transfer = super().create(script, account, created_ms=created_ms)
        self.advanced_at[transfer.key] = [time.monotonic()]
        return transfer

    def advance(self, transfer: SimTransfer) -> bool:
        moved = super().advance(transfer)
        if moved:
            self.advanced_at[transfer.key].append(time.monotonic())
        return moved


class BinanceDriver(Driver):
    name = "binance"

    def __init__(self, work: Path, seed: int):
        self.sim = ChaosBinance(uid_limit=FAST_UID_LIMIT, seed=seed)
        self.sim.advanced_at = {}
        self.work = work
        self.transfers: list[SimTransfer] = []
        self.throttle = Throttle(None)
        self.steps = 0

    async def __aenter__(self) -> BinanceDriver:
        await self.sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.stop()

    def section(self) -> dict[str, Any]:
        """Two keys (HMAC master, Ed25519 sub-account) polled every 0.5 s; cursors in the run's folder."""
        accounts = [self.sim.accounts[name].entry(lookup_uid=False) for name in ("main", "sub1")]
        return section(
            self.sim, accounts, cursor_dir=str(self.work / "binance-cursors"), poll_interval=0.5, withdrawal_interval=0.5, tracker_interval=1.0
        )

    def create(self, count: int, duration: float) -> None:
        self.transfers = self.sim.create_many(count, accounts=["main", "sub1"])
        self.expected_states = sum(len(t.script) for t in self.transfers)
        self.throttle = Throttle(self.expected_states / duration if duration else None)

    def done(self) -> int:
        return self.steps + len(self.transfers)

    async def run(self, pace: Pace, deadline: float) -> None:
        """Advance a transfer only once an answer carried its current state, paced over the run."""
        while True:
            moving = [t for t in self.transfers if not t.finished]
            if not moving:
                return
            for transfer in moving:
                if not transfer.observed:
                    continue
                await self.throttle.wait()
                self.sim.advance(transfer)
                self.steps += 1
                if self.steps % SKIP_EVERY == 0 and not transfer.finished:
                    self.sim.advance(transfer)
                    self.steps += 1
                if self.steps % RATE_LIMIT_EVERY == 0:
                    self.sim.fail("429", account="main", retry_after=1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"binance: {len(moving)} transfers still moving")
            await asyncio.sleep(0.05)

    def _truth(self) -> tuple[dict[str, list[Hashable]], dict[str, list[float]], dict[str, list[Hashable]]]:
        """States some answer carried, when each became current, and every state gone through."""
        visible: dict[str, list[Hashable]] = {}
        times: dict[str, list[float]] = {}
        for transfer in self.transfers:
            seen = sorted(transfer.seen)
            visible[transfer.key] = [transfer.history[i] for i in seen]
            times[transfer.key] = [self.sim.advanced_at[transfer.key][i] for i in seen]
        return visible, times, {k: list(h) for k, h in self.sim.truth().items()}

    def settled(self, values: list[dict[str, Any]]) -> tuple[bool, bool]:
        visible, _, _ = self._truth()
        finals = all(t.finished and t.observed for t in self.transfers) and finals_in(visible, values, _state)
        return finals, finals and all_in(visible, values, _state)

    def figures(self, values: list[dict[str, Any]], kills: list[float], outages: list[tuple[float, float]]) -> ProviderFigures:
        visible, times, every = self._truth()
        figures = stream_figures(visible, values, _state, times, kills, outages, known=every)
        figures.detail.update({
            "states_gone_through": sum(len(h) for h in every.values()),
            "moved_twice_between_polls": self.steps // SKIP_EVERY,
            "polls_answered": self.sim.stats["ok /sapi/v1/capital/deposit/hisrec"] + self.sim.stats["ok /sapi/v1/capital/withdraw/history"],
            "rate_limited_429": self.sim.stats["fault 429"],
            "bans_earned": self.sim.stats["bans_earned"],
        })  # fmt: skip
        return figures

    def faults(self) -> dict[str, int]:
        return {"binance_429": self.sim.stats["fault 429"]}
