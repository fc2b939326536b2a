"""Fireblocks' part of ``make demo`` (``bridge_testkit.demo``): its section for the service and a live
run of the simulator against the running receiver — v1 and v2 signed deliveries, a state out of
order, re-deliveries, an answer lost on the way back (retried), and one delivery that never
arrives, which the JWT-signed REST backfill brings instead."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bridge.delivery.pipeline import Outcome
from bridge.observability import metrics
from bridge.sources.fireblocks.webhook import FireblocksWebhook
from bridge_testkit.conformance import eventually
from bridge_testkit.fireblocks.simulator import WORKSPACE, FireblocksSimulator, SimDelivery, pem_private, pem_public

__all__ = ["KINDS", "section", "run_live"]

KINDS = (("withdrawal", 2), ("deposit", 1), ("internal", 2), ("rejected", 1))
"""Live transactions (kind, webhook generation): a withdrawal to completion, a deposit, a
vault-to-vault transfer (an event on each side), a withdrawal rejected by its approver."""


def section(sim: FireblocksSimulator, state_dir: Path) -> dict[str, Any]:
    """The ``fireblocks:`` section of the demo's configuration: the simulator's keys and API."""
    (state_dir / "fireblocks-legacy.pem").write_bytes(pem_public(sim.legacy_key))
    (state_dir / "fireblocks-api.key").write_bytes(pem_private(sim.api_user_key))
    return {
        "enabled": True, "workspace_id": WORKSPACE, "legacy_public_keys": [str(state_dir / "fireblocks-legacy.pem")],
        "jwks_url": sim.jwks_url, "api_key": sim.api_key, "api_private_key_file": str(state_dir / "fireblocks-api.key"),
        "base_url": sim.base_url, "backfill_interval": 300.0, "backfill_retry": 0.5, "rest_rate_per_second": 20.0,
    }  # fmt: skip


def _lanes(sim: FireblocksSimulator) -> tuple[list[list[SimDelivery]], SimDelivery, SimDelivery]:
    """Each transaction's deliveries; the withdrawal's first state sent twice and its 2nd after its
    3rd, the deposit's final state never delivered, the internal transfer's final answer lost once."""
    lanes = []
    for kind, version in KINDS:
        transaction = sim.create(kind, version=version)
        lanes.append([sim.delivery(transaction, i) for i in range(len(transaction.states))])
    withdrawal = lanes[0]
    withdrawal[1], withdrawal[2] = withdrawal[2], withdrawal[1]
    withdrawal.insert(1, sim.redelivery(withdrawal[0]))
    dropped = lanes[1][-1]
    dropped.faults.append("drop")
    lost = lanes[2][-1]
    lost.faults.append("lost_answer")
    return lanes, dropped, lost


def _counted() -> Counter[str]:
    """Fireblocks' events by pipeline outcome so far, from the service's own counters (an internal
    transfer's delivery is two events: the receiver's answers count deliveries)."""
    counts: Counter[str] = Counter()
    for metric in (metrics.EVENTS_PUBLISHED, metrics.EVENTS_DEDUPLICATED):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("provider") == "fireblocks":
                    counts[sample.labels.get("reason", Outcome.PUBLISHED.value)] += int(sample.value)
    return counts


async def run_live(sim: FireblocksSimulator, webhook: FireblocksWebhook, url: str) -> tuple[int, int, str, Counter[str]]:
    """Send every lane, then one backfill pass; returns (transfers, states, traffic, outcomes)."""
    sim.url = url
    await eventually(lambda: webhook.health.detail.get("ordering_warm") is True, 15.0, "the Fireblocks start-up backfill")
    before = _counted()
    lanes, dropped, lost = _lanes(sim)
    async with aiohttp.ClientSession() as session:
        report = await sim.send(lanes, session)
    passes = webhook.backfill_stats["passes"]
    webhook.request_backfill("demo")  # what the interval (or an ingress outage) would trigger
    await eventually(lambda: webhook.backfill_stats["passes"] > passes, 15.0, "the Fireblocks backfill pass")
    await webhook.drain(10.0)
    outcomes = _counted()
    outcomes.subtract(before)
    deliveries = [d for lane in lanes for d in lane]
    versions = Counter(d.transaction.version for d in deliveries if d.transaction is not None)
    states = sum(len(t.states) for t in sim.transactions)
    traffic = (
        f"{len(deliveries)} signed deliveries (v1 {versions[1]}, v2 {versions[2]}; 1 re-delivery, 1 late), {report.sent} posts "
        f"({_plural(int(len(lost.attempts) > 1), 'answer')} lost, retried; {int(dropped.given_up)} never delivered, "
        f"{webhook.backfill_stats['backfill.published']} via backfill), {webhook.stats['ignored.out_of_order']} older state not published"
    )
    return len(sim.transactions), states, traffic, outcomes


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
