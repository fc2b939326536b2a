"""The chaos run's WebSocket providers (OKX, Ripio) and what every provider driver offers the runner.

OKX and Ripio push scripted lifecycles over loopback WebSocket + REST, paced evenly over the run,
with identical repeats, dropped connections, OKX upgrade notices (64008) and Ripio lost message
ids; each remembers when every state became current, to tell a loss at a kill from a real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.okx.simulator import SimTransfer as OkxTransfer
from bridge_testkit.ripio.simulator import RipioSimulator
from bridge_testkit.ripio.simulator import SimTransfer as RipioTransfer
from tests.chaos.bridge_process import reveal
from tests.chaos.checker import all_in, finals_in, fingerprint, stream_figures
from tests.chaos.report import ProviderFigures

__all__ = ["Driver", "Pace", "Throttle", "ChaosOkx", "ChaosRipio", "SocketDriver"]

Pace = Callable[[float], Awaitable[None]]
"""``pace(fraction)`` returns once the WebSocket load is that far (webhooks follow it)."""



class Driver:
    """One provider in the chaos run: its section of the bridge's config, its load, its truth."""

    name: str
    expected_states: int = 0

    def create(self, count: int, duration: float) -> None:
        """Script ``count`` transfers, spread over ``duration`` seconds (0: as fast as read)."""

    def done(self) -> int:
        """States generated so far (faults are placed by this progress)."""
        return 0

    async def run(self, pace: Pace, deadline: float) -> None:
        """Drive every transfer to its end."""

    async def recovered(self) -> None:
        """Return once the restarted bridge serves this provider again."""

    def settled(self, values: list[dict[str, Any]]) -> tuple[bool, bool]:
        """(every final state is in, everything is in) for this provider's published values."""
        return True, True

    def figures(self, values: list[dict[str, Any]], kills: list[float], outages: list[tuple[float, float]]) -> ProviderFigures:
        raise NotImplementedError

    def faults(self) -> dict[str, int]:
        """Faults the provider itself injected, by name."""
        return {}


class Throttle:
    """Spaces state changes evenly: the simulators would otherwise push as fast as the bridge
    reads, thousands of states a second, which no provider does and which would turn every
    SIGKILL into the loss of a whole socket buffer of intermediate states."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class ChaosOkx(OkxSimulator):
    """Paced; remembers when each state became current, to tell losses at a kill from real ones."""

    advanced_at: dict[str, list[float]]
    throttle: Throttle

    async def advance(self, transfer: OkxTransfer) -> bool:
        if not transfer.finished:
            await self.throttle.wait()
            self.advanced_at.setdefault(transfer.key, []).append(time.monotonic())
        return await super().advance(transfer)


class ChaosRipio(RipioSimulator):
    """Paced; remembers when each state became current, to tell losses at a kill from real ones."""

    advanced_at: dict[str, list[float]]
    throttle: Throttle

    async def advance(self, transfer: RipioTransfer) -> bool:
        if not transfer.finished:
            await self.throttle.wait()
            self.advanced_at.setdefault(transfer.key, []).append(time.monotonic())
        return await super().advance(transfer)


class SocketDriver(Driver):
    """OKX or Ripio: a WebSocket + REST simulator in this process, its truth as fingerprints."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.sim: ChaosOkx | ChaosRipio = ChaosOkx(seed=seed) if name == "okx" else ChaosRipio(seed=seed)
        self.sim.advanced_at = {}
        self.sim.throttle = Throttle(None)
        self.transfers: list[Any] = []
        self.steps = 0

    async def __aenter__(self) -> SocketDriver:
        await self.sim.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sim.__aexit__(None, None, None)

    def section(self) -> dict[str, Any]:
        """A restarted bridge must look back over the whole run: history filters on creation time."""
        if isinstance(self.sim, ChaosOkx):
            config = scenario_config(self.sim, backfill_interval=3.0, backfill_initial_lookback=3600.0)
        else:
            config = self.sim.config(backfill_interval=3.0, backfill_initial_lookback=3600.0)
        return dict(reveal(config.model_dump()))

    def create(self, count: int, duration: float) -> None:
        self.transfers = self.sim.create_many(count)
        self.expected_states = sum(len(t.script) for t in self.transfers)
        self.sim.throttle = Throttle(self.expected_states / duration if duration else None)

    def done(self) -> int:
        return self.steps

    async def run(self, pace: Pace, deadline: float) -> None:
        timeout = deadline - time.monotonic()

        def on_step(n: int) -> None:
            self.steps = n

        if isinstance(self.sim, ChaosOkx):
            notice_every = max(50, min(500, self.expected_states // 4))
            await self.sim.run_lifecycles(
                self.transfers, repeat_every=7, drop_every=100, notice_every=notice_every, timeout=timeout, on_step=on_step
            )
        else:
            await self.sim.run_lifecycles(self.transfers, repeat_every=7, skip_every=60, drop_every=100, timeout=timeout, on_step=on_step)

    async def recovered(self) -> None:
        await self.sim.wait_subscribed(timeout=60)

    def truth(self) -> dict[str, list[Hashable]]:
        if isinstance(self.sim, ChaosOkx):
            return {k: [(s.state, s.confirmations, s.tx_hash) for s in h] for k, h in self.sim.truth().items()}
        return {k: [(s.status, None, s.tx_hash) for s in h] for k, h in self.sim.truth().items()}

    def settled(self, values: list[dict[str, Any]]) -> tuple[bool, bool]:
        truth = self.truth()
        return finals_in(truth, values, fingerprint), all_in(truth, values, fingerprint)

    def figures(self, values: list[dict[str, Any]], kills: list[float], outages: list[tuple[float, float]]) -> ProviderFigures:
        figures = stream_figures(self.truth(), values, fingerprint, self.sim.advanced_at, kills, outages)
        names = ("pushes", "repeats", "drops", "notices") if isinstance(self.sim, ChaosOkx) else ("pushes", "repeats", "skipped", "drops")
        figures.detail.update({k: self.sim.stats[k] for k in (*names, "rest_requests", "rest_rate_limited")})
        return figures

    def faults(self) -> dict[str, int]:
        if isinstance(self.sim, ChaosOkx):
            return {"provider_drop": self.sim.stats["drops"], "upgrade_notice": self.sim.stats["notices"]}
        return {"provider_drop": self.sim.stats["drops"], "lost_message_id": self.sim.stats["skipped"]}
