"""OpenXSwitch in the chaos run: every state posted three times through a flaky gateway and retried
until 2xx (``tests.chaos.webhooks``); Kafka checked against every state and every acknowledged
delivery."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from tests.chaos.checker import duplicates, fingerprint, older_after_newer
from tests.chaos.report import ProviderFigures
from tests.chaos.sockets import Driver, Pace
from tests.chaos.webhooks import DELIVERIES_PER_STATE, FlakyFront, WebhookDriver

__all__ = ["OpenXSwitchDriver"]


class OpenXSwitchDriver(Driver):
    name = "openxswitch"

    def __init__(self, port: int, seed: int):
        self.seed = seed
        self.secret = secrets.token_hex(24)
        self.front = FlakyFront(f"http://127.0.0.1:{port}/webhooks/openxswitch", rate=0.1, seed=seed)
        self.sim: OpenXSwitchSimulator | None = None
        self.driver: WebhookDriver | None = None

    async def __aenter__(self) -> OpenXSwitchDriver:
        await self.front.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.front.stop()

    def section(self) -> dict[str, Any]:
        return {"enabled": True, "secrets": [self.secret], "ack_timeout_seconds": 5.0}

    def create(self, count: int, duration: float) -> None:
        self.sim = OpenXSwitchSimulator(self.front.url, self.secret, request_timeout=45.0, seed=self.seed)
        withdrawals = count // 2
        self.sim.lifecycles(withdrawals=withdrawals, deposits=count - withdrawals)
        self.driver = WebhookDriver(self.sim, self.sim.transfers, seed=self.seed)
        self.expected_states = self.driver.expected_states

    def done(self) -> int:
        return self.driver.states_done if self.driver else 0

    def acked(self) -> int:
        """Deliveries answered 2xx so far (the broker is back when this moves)."""
        return sum(1 for d in self.sim.sent if d.acked) if self.sim else 0

    async def run(self, pace: Pace, deadline: float) -> None:
        assert self.driver is not None
        await self.driver.run(pace, deadline)

    def _ids(self) -> tuple[dict[str, list[str]], set[str]]:
        assert self.sim is not None
        truth = {key: [state.event.event_id for state in states] for key, states in self.sim.truth().items()}
        acked = {d.state.event.event_id for d in self.sim.sent if d.acked and d.state is not None}
        return truth, acked

    def settled(self, values: list[dict[str, Any]]) -> tuple[bool, bool]:
        truth, acked = self._ids()
        have = {v["event_id"] for v in values}
        finals = all(ids[-1] in have for ids in truth.values()) and acked <= have
        return finals, finals and all(i in have for ids in truth.values() for i in ids)

    def figures(self, values: list[dict[str, Any]], kills: list[float], outages: list[tuple[float, float]]) -> ProviderFigures:
        """Kafka against the webhook sender's truth: every state, and every delivery answered 2xx."""
        assert self.sim is not None and self.driver is not None
        sim, front = self.sim, self.front
        published = Counter(value["event_id"] for value in values)
        truth, _ = self._ids()
        figures = ProviderFigures(transfers=len(truth), states=sum(len(h) for h in truth.values()), records=len(values))
        for ids in truth.values():
            missing = [i for i in ids if i not in published]
            figures.lost += len(missing)
            figures.lost_unexplained += len(missing)
            figures.lost_final += 1 if ids[-1] not in published else 0
        known = {i for ids in truth.values() for i in ids}
        figures.unknown_records = sum(1 for value in values if value["event_id"] not in known)
        transfer_deliveries = [d for d in sim.sent if d.state is not None]
        acked_missing = sum(1 for d in transfer_deliveries if d.acked and d.state is not None and d.state.event.event_id not in published)
        statuses: Counter[int] = Counter(status for d in sim.sent for status in d.attempts)
        figures.detail = {
            "deliveries": len(sim.sent),
            "deliveries_per_state": DELIVERIES_PER_STATE,
            "attempts": sum(len(d.attempts) for d in sim.sent),
            "acked": sum(1 for d in sim.sent if d.acked),
            "acked_but_missing_in_kafka": acked_missing,
            "given_up": sum(1 for d in sim.sent if d.given_up),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "patterns": dict(self.driver.patterns),
            "front": dict(front.stats),
            "bridge_503": statuses[503] - front.stats["503_before_forward"] - front.stats["503_after_forward"],
        }
        duplicates(figures, values, fingerprint)
        figures.older_after_newer = older_after_newer(values, lambda v: v["event_id"], truth)
        return figures

    def faults(self) -> dict[str, int]:
        statuses = Counter(status for d in (self.sim.sent if self.sim else []) for status in d.attempts)
        return {"webhook_503": statuses[503], "webhook_refused": statuses[0] + statuses[502]}
