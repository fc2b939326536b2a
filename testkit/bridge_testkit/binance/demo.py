"""Binance's part of ``make demo`` (``bridge_testkit.demo``): its section for the service and a live
run of the simulator against the running sources."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bridge.delivery.pipeline import Outcome
from bridge.sources.binance.service import BinanceAccountSource
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import section as simulator_section
from bridge_testkit.conformance import eventually

__all__ = ["SCRIPTS", "section", "run_live"]

SCRIPTS = ("deposit-travel-rule", "withdrawal", "deposit-internal", "withdrawal-failed")
"""Live Binance transfers: a deposit held by the travel rule, a withdrawal to completion, an
internal deposit, a failed withdrawal; the first two on the master (HMAC), the others on the
sub-account's own Ed25519 key."""


def section(sim: BinanceSimulator, state_dir: Path) -> dict[str, Any]:
    """The ``binance:`` section of the demo's configuration: two keys, intervals shrunk."""
    accounts = [sim.accounts["main"].entry(), sim.accounts["sub1"].entry()]
    return simulator_section(sim, accounts, cursor_dir=str(state_dir / "cursors"))


async def run_live(sim: BinanceSimulator, sources: list[BinanceAccountSource]) -> tuple[int, int, str, Counter[str]]:
    """Drive the scripts through polls, with one 429 on the way; returns (transfers, states,
    traffic, pipeline outcomes) once every source read every final state twice."""
    await eventually(lambda: all(s.health.connected for s in sources), 15.0, "first Binance polls")
    transfers = [sim.create(script, ("main", "main", "sub1", "sub1")[i]) for i, script in enumerate(SCRIPTS)]
    sim.fail("429", account="main", retry_after=1)
    await sim.run_lifecycles(transfers, timeout=30)
    polls = {s: s.stats["polls"] + 2 for s in sources}
    await eventually(lambda: all(s.stats["polls"] >= n for s, n in polls.items()), 15.0, "the last Binance polls")
    outcomes: Counter[str] = Counter()
    for source in sources:
        for name, count in source.stats.items():
            kind, _, result = name.partition(".")
            if kind == "poll" and result in {o.value for o in Outcome}:
                outcomes[result] += count
    polled = sum(s.stats["polls"] for s in sources)
    spent = Counter({scope: w for (account, scope, _), w in sim.weight_log.items() if account != "?"})
    traffic = (
        f"{polled} polls, {len(sim.requests)} signed requests ({sim.stats['fault 429']} answered 429, Retry-After obeyed), "
        f"weight {spent['uid']} UID + {spent['ip']} IP"
    )
    return len(transfers), sum(len(t.history) for t in transfers), traffic, outcomes
