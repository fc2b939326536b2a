"""What the Binance tests, harness, scenario and demo share: a section pointing at the simulator,
a wait for polls to settle, and Kafka compared with the simulator's ground truth."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.delivery.pipeline import Pipeline
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.service import BinanceAccountSource
from bridge_testkit.binance.lifecycles import Snapshot, snapshot_of
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.kafka_io import ConsumedRecord

__all__ = ["section", "config", "settle", "compare", "published_snapshots", "fast_simulator", "FAST", "FAST_UID_LIMIT"]

FAST_UID_LIMIT = 18_000_000
"""A UID budget of 1000 withdrawal reads a minute instead of Binance's 10 (price list unchanged),
so that lifecycles polled every 0.2 s are not paced by the minute; limit tests keep Binance's."""

FAST: Mapping[str, Any] = {
    "poll_interval": 0.2,
    "withdrawal_interval": 0.2,
    "tracker_interval": 0.5,
    "poll_overlap": 2.0,
    "poll_retry": 0.1,
    "poll_retry_max": 1.0,
    "config_error_retry": 0.5,
    "rest_rate_per_second": 10.0,
    "rest_max_retries": 3,
    "time_sync_interval": 30.0,
    "max_rate_limit_wait": 5.0,
    "uid_weight_limit": FAST_UID_LIMIT,
}
"""Intervals shrunk so that a lifecycle takes seconds; limits and windows stay Binance's."""


def fast_simulator(**options: Any) -> BinanceSimulator:
    """A simulator whose UID budget matches ``FAST`` (everything else as Binance)."""
    return BinanceSimulator(**{"uid_limit": FAST_UID_LIMIT, **options})


def section(sim: BinanceSimulator, accounts: Sequence[Mapping[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``binance:`` section (plain values, as in a config file) pointing at the simulator;
    by default every simulator key polls its own history (no uid lookup)."""
    entries = list(accounts) if accounts is not None else [a.entry(lookup_uid=False) for a in sim.accounts.values()]
    return {"enabled": True, "base_url": sim.url, **FAST, "accounts": entries, **overrides}


def config(sim: BinanceSimulator, accounts: Sequence[Mapping[str, Any]] | None = None, **overrides: Any) -> BinanceConfig:
    return BinanceConfig(**section(sim, accounts, **overrides))


async def settle(sources: Iterable[BinanceAccountSource], pipeline: Pipeline, *, polls: int = 2, timeout: float = 60.0) -> None:
    """Wait until every source completed ``polls`` more cycles (the last states were read), then
    until Kafka acknowledged everything."""
    sources = list(sources)
    targets = {source: source.stats["polls"] + polls for source in sources}
    deadline = time.monotonic() + timeout
    while any(source.stats["polls"] < target for source, target in targets.items()):
        if time.monotonic() > deadline:
            behind = [s.name for s, t in targets.items() if s.stats["polls"] < t]
            raise TimeoutError(f"sources {behind} did not complete {polls} polls within {timeout}s")
        await asyncio.sleep(0.02)
    await pipeline.drain(timeout=timeout)


def published_snapshots(records: Iterable[ConsumedRecord]) -> tuple[dict[str, list[Snapshot]], Counter[str]]:
    """Per event key, the states published (read from each event's ``raw``, as the simulator
    records them), in Kafka order; and how often each ``event_id`` was published."""
    seen: dict[str, list[Snapshot]] = {}
    ids: Counter[str] = Counter()
    for record in records:
        value = json.loads(record.value)
        ids[value["event_id"]] += 1
        seen.setdefault(value["key"], []).append(snapshot_of(value["direction"], value["raw"]))
    return seen, ids


def compare(truth: Mapping[str, Sequence[Snapshot]], records: Iterable[ConsumedRecord], *, finals: Mapping[str, Snapshot] | None = None) -> dict[str, int]:
    """Kafka against the ground truth: states and final states not published, states published
    twice (by ``event_id`` or by state), keys whose states came out of order, unexpected keys."""
    seen, ids = published_snapshots(records)
    lost = lost_finals = twice = out_of_order = 0
    for key, history in truth.items():
        got = seen.get(key, [])
        lost += sum(1 for state in history if state not in got)
        final = (finals or {}).get(key, history[-1] if history else None)
        lost_finals += final is not None and final not in got
        twice += len(got) - len(set(got))
        positions = [history.index(state) for state in got if state in history]
        out_of_order += positions != sorted(positions)
    return {
        "lost": lost,
        "lost_finals": lost_finals,
        "duplicated": sum(n - 1 for n in ids.values() if n > 1) + twice,
        "out_of_order": out_of_order,
        "unexpected": len(set(seen) - set(truth)),
    }
