"""``python -m bridge_testkit.binance.scenario``: scripted Binance transfers through the whole bridge.

Simulator (a master key that also reads a sub-account's deposits through ``subHisrec``, a
sub-account with its own Ed25519 key, another Ed25519 account) → ``BinanceAccountSource`` per key →
pipeline → real Kafka. Rows change in place between polls; some move twice between two polls (no
poller can see the middle state); some are held until they are older than the hot window, so only
the open-transfer re-query finds their end; the sources are restarted (new processes' state: the
cursor and open-transfer files) every few seconds; Binance answers 429 and once 418 with
``Retry-After``, and its clock jumps once (-1021). Afterwards the topics are read back like a
consumer would and compared with the simulator's ground truth: no final state lost, no state
published twice, each key's states in order.

``--measure-defaults SECONDS`` instead runs one master, one sub-account and one other account at the
*default* settings (30 s polls, 7-day hot window, Binance's limits) and prints the weight each
account spent per minute, as the simulator metered it.

Kafka: ``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); topics are fresh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.sources.binance.config import DAY, BinanceConfig
from bridge.sources.binance.service import BinanceAccountSource, build_binance_sources
from bridge_testkit.binance.lifecycles import SCRIPTS, SimAccount, SimTransfer, default_accounts, make_account
from bridge_testkit.binance.simulator import BinanceSimulator
from bridge_testkit.binance.support import compare, config, fast_simulator
from bridge_testkit.kafka_io import read_topic

__all__ = ["ScenarioReport", "run_scenario", "measure_default_weights", "scenario_accounts", "main"]

SUB2_SCRIPTS = tuple(name for name, (direction, steps) in SCRIPTS.items() if direction == "deposit" and not any(s.travel for s in steps))
"""What the master sees of a sub-account through subHisrec: deposits, and no travel-rule flag
(Binance's subHisrec example omits ``travelRuleStatus``), so no hold can be seen that way."""


@dataclass
class ScenarioReport:
    transfers: int
    states: int
    """states the simulator went through"""
    visible_states: int
    """states some history answer carried (the rest moved on between two polls)"""
    published: int
    lost_finals: int
    lost_visible_states: int
    duplicated: int
    out_of_order: int
    unexpected_keys: int
    dead_lettered: int
    held_past_window: int
    """transfers kept open until older than the hot window (only the re-query sees their end)"""
    requeried: int
    polls: int
    requests: int
    restarts: int
    rate_limit_answers: int
    """429 and 418 answers Binance (the simulator) gave: injected, and earned by asking too much"""
    answers_429: int
    """HTTP 429 answers among every request the simulator received"""
    answers_418: int
    """HTTP 418 answers: the injected ban, and requests already on the wire when it came back"""
    bans_earned: int
    timestamp_rejections: int
    withdrawal_reads_deferred: int
    seconds: float
    weight_per_minute: dict[str, dict[str, int]] = field(default_factory=dict)
    """the highest weight each account spent in one minute, by budget (shrunk intervals)"""

    def lines(self) -> list[str]:
        return [f"{name:>26}: {value}" for name, value in asdict(self).items()]

    @property
    def ok(self) -> bool:
        return self.lost_finals == self.duplicated == self.out_of_order == self.unexpected_keys == self.bans_earned == 0


def scenario_accounts(seed: int = 7) -> list[SimAccount]:
    """``main`` (HMAC, master), ``sub1`` (its sub-account, own Ed25519 key), ``other`` (Ed25519), and
    ``sub2`` (a sub-account of ``main`` without a key of its own: read through subHisrec)."""
    accounts = default_accounts(seed)
    accounts.append(make_account("sub2", 1_000_000_103, "hmac", random.Random(seed + 1), email="sub2@sim.example", master="main"))
    return accounts


def _entries(sim: BinanceSimulator) -> list[dict[str, Any]]:
    main, sub1, other = (sim.accounts[n] for n in ("main", "sub1", "other"))
    return [
        main.entry(lookup_uid=True, mode="master_subhisrec", sub_account_emails="sub2@sim.example"),
        sub1.entry(lookup_uid=True),
        other.entry(lookup_uid=True),
    ]


def _create(sim: BinanceSimulator, count: int) -> list[SimTransfer]:
    scripts = list(SCRIPTS)
    made = []
    for i in range(count):
        account = ("main", "sub1", "other", "sub2")[i % 4]
        pool = SUB2_SCRIPTS if account == "sub2" else scripts
        made.append(sim.create(pool[(i // 4) % len(pool)], account))
    return made


class _Sources:
    """The bridge's Binance sources, restartable like a process: new objects read their cursor
    and open-transfer files again."""

    def __init__(self, cfg: BinanceConfig, pipeline: Pipeline):
        self.cfg, self.pipeline = cfg, pipeline
        self.sources: list[BinanceAccountSource] = []
        self.retired: list[BinanceAccountSource] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.restarts = 0

    def start(self) -> None:
        self.sources = build_binance_sources(self.cfg, self.pipeline)
        self.tasks = [asyncio.create_task(s.run(), name=s.name) for s in self.sources]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.retired.extend(self.sources)

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        self.start()


async def _drive(sim: BinanceSimulator, transfers: list[SimTransfer], sources: _Sources, *, skip_every: int, hold_every: int,
                 hold_ms: int, restart_every: float, rate_limit_every: int, timeout: float, rng: random.Random) -> int:
    """Advance every transfer to its end once a poll read its state; returns the transfers held."""
    held = {t.key for i, t in enumerate(transfers) if hold_every and i % hold_every == hold_every - 1}
    total = sum(len(t.script) - 1 for t in transfers)
    deadline, steps, next_restart = time.monotonic() + timeout, 0, time.monotonic() + restart_every
    faults = [("429", 1.0), ("500", None), ("429", 1.0), ("hangup", None)]
    banned = skewed = False
    while True:
        moving = [t for t in transfers if not t.finished]
        if not moving:
            return len(held)
        for transfer in moving:
            if not transfer.observed:
                continue
            if transfer.key in held and sim.now_ms() - transfer.created_ms < hold_ms:
                continue  # kept open until the hot window no longer reads it
            sim.advance(transfer)
            steps += 1
            if skip_every and steps % skip_every == 0 and not transfer.finished and transfer.key not in held:
                sim.advance(transfer)  # two changes between two polls: the middle one is never seen
            if rate_limit_every and steps % rate_limit_every == 0:
                kind, retry_after = faults[(steps // rate_limit_every) % len(faults)]
                sim.fail(kind, account=rng.choice(["main", "sub1", "other"]), retry_after=retry_after)
            if not banned and steps > total * 0.4:
                banned = True
                sim.fail("418", account="other", retry_after=2)
            if not skewed and steps > total * 0.6:
                skewed = True
                sim.skew_ms += 10_000  # Binance's clock jumps past recvWindow: every timestamp is now too old (-1021)
        if time.monotonic() >= next_restart:
            await sources.restart()
            next_restart = time.monotonic() + restart_every
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(moving)} transfers still moving after {timeout}s, e.g. {moving[0].key} at {moving[0].history[-1]}")
        await asyncio.sleep(0.05)


async def run_scenario(*, bootstrap: str, transfers: int = 1000, restart_every: float = 6.0, skip_every: int = 11, hold_every: int = 25,
                       rate_limit_every: int = 100, timeout: float = 300.0, seed: int = 1) -> ScenarioReport:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicSettings(deposit=f"binance-scenario.{suffix}.deposit.v1", withdrawal=f"binance-scenario.{suffix}.withdrawal.v1",
                           dead_letter=f"binance-scenario.{suffix}.dlq.v1", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, linger_ms=5)
    lookback_s = 15.0
    rng = random.Random(seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="binance-scenario-") as scratch:
        pipeline = Pipeline(Publisher(kafka, topics), DedupGate(SQLiteStore(Path(scratch) / "dedup.sqlite3")))
        await pipeline.start()
        try:
            async with fast_simulator(accounts=scenario_accounts(), seed=seed) as sim:
                cfg = config(sim, _entries(sim), cursor_dir=Path(scratch) / "cursors", poll_interval=0.5, withdrawal_interval=0.5,
                             tracker_interval=1.0, lookback_days=lookback_s / DAY, poll_overlap=1.0, page_limit=500, subhisrec_page_limit=200)
                sources = _Sources(cfg, pipeline)
                sources.start()
                try:
                    created = _create(sim, transfers)
                    held = await _drive(sim, created, sources, skip_every=skip_every, hold_every=hold_every, hold_ms=int(lookback_s * 2000),
                                        restart_every=restart_every, rate_limit_every=rate_limit_every, timeout=timeout, rng=rng)
                    await _settle(sim, sources, pipeline, timeout=60)
                finally:
                    await sources.stop()
                truth = sim.truth()
                visible = {t.key: [t.history[i] for i in sorted(t.seen)] for t in sim.transfers.values()}
                stats, weights = Counter(sim.stats), _weights(sim)
                statuses = Counter(status for _, _, _, status in sim.requests)
        finally:
            await pipeline.close(timeout=30)
    totals: Counter[str] = Counter()
    for source in sources.retired:
        totals.update(source.stats)
    records = await read_topic(bootstrap, topics.deposit, idle=2.0, timeout=60) + await read_topic(bootstrap, topics.withdrawal, idle=2.0, timeout=60)
    dead = await read_topic(bootstrap, topics.dead_letter, idle=0.5, timeout=5)
    verdict = compare(truth, records)
    visible_verdict = compare(visible, records)
    return ScenarioReport(
        transfers=len(truth),
        states=sum(len(h) for h in truth.values()),
        visible_states=sum(len(v) for v in visible.values()),
        published=len(records),
        lost_finals=verdict["lost_finals"],
        lost_visible_states=visible_verdict["lost"],
        duplicated=verdict["duplicated"],
        out_of_order=verdict["out_of_order"],
        unexpected_keys=verdict["unexpected"],
        dead_lettered=len(dead),
        held_past_window=held,
        requeried=totals["requeried"],
        polls=totals["polls"],
        requests=len(sim.requests),
        restarts=sources.restarts,
        rate_limit_answers=stats["fault 429"] + stats["fault 418"] + stats["rate_limited"] + stats["bans_earned"],
        answers_429=statuses[429],
        answers_418=statuses[418],
        bans_earned=stats["bans_earned"],
        timestamp_rejections=stats["timestamp_rejected"],
        withdrawal_reads_deferred=sum(n for name, n in totals.items() if name.startswith("deferred")),
        seconds=round(time.monotonic() - started, 1),
        weight_per_minute=weights,
    )


async def _settle(sim: BinanceSimulator, sources: _Sources, pipeline: Pipeline, *, timeout: float) -> None:
    """Until every final state was read, two more polls of every source, and Kafka's acks."""
    deadline = time.monotonic() + timeout
    while not all(t.observed for t in sim.transfers.values()):
        if time.monotonic() > deadline:
            raise TimeoutError("final states never read")
        await asyncio.sleep(0.05)
    targets = {s: s.stats["polls"] + 2 for s in sources.sources}
    while any(s.stats["polls"] < n for s, n in targets.items()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await pipeline.drain(timeout=timeout)


def _weights(sim: BinanceSimulator) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (account, scope, _), weight in sim.weight_log.items():
        scopes = out.setdefault(account, {})
        scopes[scope] = max(scopes.get(scope, 0), weight)
    return out


async def measure_default_weights(*, bootstrap: str, seconds: float = 125.0, transfers: int = 60) -> dict[str, dict[int, dict[str, int]]]:
    """Weight per account per whole minute at the default settings (Binance's limits and prices)."""
    suffix = uuid.uuid4().hex[:10]
    topics = TopicSettings(deposit=f"binance-weights.{suffix}.deposit.v1", withdrawal=f"binance-weights.{suffix}.withdrawal.v1",
                           dead_letter=f"binance-weights.{suffix}.dlq.v1", partitions=1)
    with tempfile.TemporaryDirectory(prefix="binance-weights-") as scratch:
        pipeline = Pipeline(Publisher(KafkaSettings(bootstrap_servers=bootstrap), topics), DedupGate(SQLiteStore(Path(scratch) / "d.sqlite3")))
        await pipeline.start()
        try:
            async with BinanceSimulator(accounts=scenario_accounts()) as sim:
                _create(sim, transfers)
                cfg = BinanceConfig(enabled=True, base_url=sim.url, accounts=_entries(sim), cursor_dir=Path(scratch) / "cursors")
                runner = _Sources(cfg, pipeline)
                runner.start()
                await asyncio.sleep(seconds)
                await runner.stop()
                minutes: dict[str, dict[int, dict[str, int]]] = {}
                first = min(minute for _, _, minute in sim.weight_log)
                for (account, scope, minute), weight in sorted(sim.weight_log.items()):
                    minutes.setdefault(account, {}).setdefault(minute - first, {})[scope] = weight
        finally:
            await pipeline.close(timeout=10)
    return minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--transfers", type=int, default=1000)
    parser.add_argument("--restart-every", type=float, default=6.0, help="seconds between restarts of the sources")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--measure-defaults", type=float, metavar="SECONDS", help="measure the weight per minute at the default settings")
    args = parser.parse_args(argv)
    if args.measure_defaults:
        minutes = asyncio.run(measure_default_weights(bootstrap=args.bootstrap, seconds=args.measure_defaults))
        print(json.dumps(minutes, indent=1, sort_keys=True))
        return 0
    report = asyncio.run(run_scenario(bootstrap=args.bootstrap, transfers=args.transfers, restart_every=args.restart_every, seed=args.seed))
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
