"""Cluster chaos: replica processes sharing the slots, under load, while the owner is hurt.

``python -m tests.chaos.cluster [--replicas 3] [--faults kill,kill,stop,roll,broker] …`` (``make chaos
CLUSTER=1``): N replica processes of the real service (``tests.chaos.bridge_process``) in one
group, OKX and Ripio simulators (WebSocket + REST history) and Binance (polled; one cursor folder shared
by the replicas), owned by a slot, and OpenXSwitch and Fireblocks webhooks posted through a balancer
(``cluster_procs``) to every replica (the way a Kubernetes Service spreads them; a refused connection
is tried on the next replica, like an ingress proxy; Fireblocks' backfill runs on the slot holder).
Fireblocks and Binance reuse the single-process suite's drivers and checks. Faults, one after another:

``kill``   SIGKILL the replica holding the slots, then start it again;
``stop``   SIGSTOP it past its session timeout (its slots move), then SIGCONT: its late writes are
           fenced by the new owner's producer;
``roll``   SIGTERM and restart every replica one by one (a rolling update);
``broker`` SIGKILL the broker, restart it.

Read back ``read_committed``: WebSocket states lost (``lost_final`` for the final ones), webhook
deliveries answered 2xx but missing, duplicates by ``event_id`` (must be 0), the handover after each
kill or stop — from the fault to the first event committed by the new owner (record timestamps) —
and the 5xx the webhook senders saw during each fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, SimTransfer
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.chaos.binance import BinanceDriver
from tests.chaos.bridge_process import reveal
from tests.chaos.cluster_procs import Balancer, Replica, Tail, holder, new_holder
from tests.chaos.fireblocks import FireblocksDriver
from tests.chaos.report import ProviderFigures
from tests.chaos.webhooks import WebhookDriver

__all__ = ["ClusterReport", "run_cluster", "main"]

REPO = Path(__file__).resolve().parents[2]
FAULTS = ("kill", "stop", "roll", "broker")


@dataclass
class FaultFigures:
    injected: int = 0
    webhook_5xx: list[dict[str, int]] = field(default_factory=list)
    handover_seconds: list[float] = field(default_factory=list)
    fenced_producers: float = 0.0


@dataclass
class StreamFigures:
    states: int = 0
    lost: int = 0
    lost_final: int = 0


@dataclass
class ClusterReport:
    replicas: int = 0
    seconds: float = 0.0
    streams: dict[str, StreamFigures] = field(default_factory=dict)
    webhook_acked: int = 0
    webhook_acked_missing: int = 0
    duplicates: int = 0
    records: int = 0
    faults: dict[str, FaultFigures] = field(default_factory=dict)
    drivers: dict[str, ProviderFigures] = field(default_factory=dict)
    """Fireblocks and Binance, checked by their single-process chaos drivers."""
    failures: list[str] = field(default_factory=list)

    @property
    def stream_states(self) -> int:
        return sum(f.states for f in self.streams.values())

    @property
    def lost_final(self) -> int:
        return sum(f.lost_final for f in self.streams.values()) + sum(f.lost_final for f in self.drivers.values())

    @property
    def handovers(self) -> list[float]:
        return [h for f in self.faults.values() for h in f.handover_seconds]

    def table(self) -> str:
        handovers = self.handovers
        lines = [
            f"cluster chaos: {self.replicas} replicas, {self.seconds:.0f}s, {self.records} records read (read_committed)",
            *(f"  {name}: {f.states} states, lost {f.lost}, lost_final {f.lost_final}" for name, f in self.streams.items()),
            f"  openxswitch: {self.webhook_acked} deliveries answered 2xx, missing in Kafka {self.webhook_acked_missing}",
            *(
                f"  {name}: {f.states} states, lost {f.lost} (at kill {f.lost_at_bridge_kill}, superseded {f.lost_superseded}, "
                f"unexplained {f.lost_unexplained}), lost_final {f.lost_final}, older_after_newer {f.older_after_newer}, "
                f"acked missing {f.detail.get('acked_but_missing_in_kafka', 0)}"
                for name, f in self.drivers.items()
            ),
            f"  duplicates by event_id: {self.duplicates}",
        ]
        if handovers:
            lines.append(
                f"  handover (fault → first event of the new owner): p50 {statistics.median(handovers):.2f}s, "
                f"max {max(handovers):.2f}s over {len(handovers)}"
            )
        for name, figures in self.faults.items():
            lines.append(
                f"  {name}: injected {figures.injected}, webhook 5xx per fault {figures.webhook_5xx}, "
                f"handover {[round(h, 2) for h in figures.handover_seconds]}, fenced producers {figures.fenced_producers:g}"
            )
        lines.append("result: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


async def run_cluster(
    *,
    replicas: int = 3,
    faults: list[str] | None = None,
    okx_transfers: int = 120,
    webhook_transfers: int = 60,
    duration: float = 30.0,
    seed: int = 5,
    broker: LocalKafka | None = None,
    bootstrap: str | None = None,
    timeout: float = 300.0,
) -> ClusterReport:
    """One run; ``broker`` is a broker of the caller's that may be killed (else one of its own);
    ``bootstrap``: a shared broker, for runs without the ``broker`` fault."""
    faults = list(faults if faults is not None else ["kill", "stop", "roll", "broker"])
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
    if bootstrap is not None and "broker" in faults:
        raise ValueError("the broker fault needs a broker of its own, not a shared bootstrap")
    kafka = broker if broker is not None or bootstrap is not None else LocalKafka()
    owned = broker is None and kafka is not None
    began = time.monotonic()
    report = ClusterReport(replicas=replicas, faults={name: FaultFigures() for name in dict.fromkeys(faults)})
    with tempfile.TemporaryDirectory(prefix="cluster-chaos-") as scratch:
        work = Path(scratch)
        if owned and kafka is not None:
            await asyncio.to_thread(kafka.start)
        boot = bootstrap or (kafka.bootstrap if kafka is not None else "")
        members: list[Replica] = []
        try:
            suffix = uuid.uuid4().hex[:8]
            deposit, withdrawal = f"cl.{suffix}.dep", f"cl.{suffix}.wd"
            topics = {"deposit": deposit, "withdrawal": withdrawal, "dead_letter": f"cl.{suffix}.dlq", "partitions": 3}
            secret = uuid.uuid4().hex
            balancer = Balancer(members)  # fills as the replicas are made: Fireblocks needs its address first
            await balancer.start()
            port = int(balancer.base.rsplit(":", 1)[1])
            async with (
                OkxSimulator(seed=seed) as okx,
                RipioSimulator(seed=seed) as ripio,
                FireblocksDriver(port, work, seed) as fireblocks,
                BinanceDriver(work, seed) as binance,
            ):
                config = {
                    "kafka": {"bootstrap_servers": boot, "linger_ms": 5, "request_timeout_ms": 10_000},
                    "topics": topics,
                    "dedup": {"store": "kafka", "state_topic": f"cl.{suffix}.state"},
                    "cluster": {
                        "enabled": True,
                        "group_id": f"cl-{suffix}",
                        "coordination_topic": f"cl.{suffix}.coord",
                        "ingress_topic": f"cl.{suffix}.ingress",
                    },
                    "log": {"level": "INFO", "format": "text", "levels": {"aiokafka": "ERROR"}},
                    "supervisor": {"restart_initial_seconds": 0.2, "restart_max_seconds": 2.0, "min_uptime_seconds": 5.0},
                    "shutdown": {"deadline_seconds": 15.0},
                    "okx": reveal(scenario_config(okx, backfill_interval=3.0, backfill_initial_lookback=3600.0).model_dump()),
                    "ripio": reveal(ripio.config(backfill_interval=3.0, backfill_initial_lookback=3600.0).model_dump()),
                    "openxswitch": {"enabled": True, "secrets": [secret], "ack_timeout_seconds": 5.0},
                    "fireblocks": fireblocks.section(),
                    "binance": binance.section(),  # one cursor folder shared by the replicas (a shared volume)
                }
                members.extend(Replica(f"replica-{n}", config, work) for n in range(replicas))
                await asyncio.gather(*(member.start() for member in members))
                tail = Tail(boot, [deposit, withdrawal])
                await tail.start()
                async with aiohttp.ClientSession() as session:
                    try:
                        await holder(members, session)
                        await okx.wait_subscribed(timeout=60)
                        await ripio.wait_subscribed(timeout=60)
                        extra = Extra(fireblocks, binance, okx_transfers)
                        await _drive(report, members, kafka, boot, okx, ripio, balancer, tail, session, secret, faults, okx_transfers,
                                     webhook_transfers, duration, seed, timeout, extra)  # fmt: skip
                    finally:
                        await tail.stop()
                        await balancer.stop()
                        for member in members:
                            member.kill9()
        except Exception:
            for member in members:
                if member.log_path.exists():
                    sys.stderr.write(f"{member.name} log tail:\n{member.log_path.read_text(errors='replace')[-3000:]}\n")
            raise
        finally:
            if owned and kafka is not None:
                await asyncio.to_thread(kafka.cleanup)
    report.seconds = time.monotonic() - began
    report.failures = _failures(report)
    return report


@dataclass
class Extra:
    """The single-process chaos drivers of the providers added later: their own load and checks."""

    fireblocks: FireblocksDriver
    binance: BinanceDriver
    okx_transfers: int
    kills: list[float] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)

    @property
    def drivers(self) -> list[FireblocksDriver | BinanceDriver]:
        return [self.fireblocks, self.binance]


async def _no_pace(fraction: float) -> None:
    """Binance paces itself."""


async def _drive(
    report: ClusterReport,
    members: list[Replica],
    kafka: LocalKafka | None,
    bootstrap: str,
    okx: OkxSimulator,
    ripio: RipioSimulator,
    balancer: Balancer,
    tail: Tail,
    session: aiohttp.ClientSession,
    secret: str,
    faults: list[str],
    okx_transfers: int,
    webhook_transfers: int,
    duration: float,
    seed: int,
    timeout: float,
    extra: Extra,
) -> None:
    oxs = OpenXSwitchSimulator(balancer.url, secret, request_timeout=40.0, seed=seed)
    oxs.lifecycles(withdrawals=webhook_transfers // 2, deposits=webhook_transfers - webhook_transfers // 2)
    driver = WebhookDriver(oxs, oxs.transfers, seed=seed, workers=4)
    created = okx.create_many(okx_transfers)
    ripio_created = ripio.create_many(max(1, okx_transfers // 2))
    deadline = time.monotonic() + timeout
    spread = max(1.0, duration)
    began = time.monotonic()

    async def pace(fraction: float) -> None:  # webhook transfers spread over the run's duration
        while time.monotonic() - began < fraction * spread:
            await asyncio.sleep(0.05)

    ticking = asyncio.Event()

    async def ticker() -> None:
        """A fresh webhook transfer every quarter second until the last fault is over: there is always
        something for a new owner to publish, so the handover can be timed."""
        async with aiohttp.ClientSession() as own:
            posts: set[asyncio.Task[None]] = set()
            while not ticking.is_set():
                transfer = oxs.withdrawal()
                task = asyncio.create_task(_post_all(oxs, own, transfer, deadline))
                posts.add(task)
                task.add_done_callback(posts.discard)
                await asyncio.sleep(0.25)
            if posts:
                await asyncio.gather(*posts)

    for added in extra.drivers:
        added.create(max(1, extra.okx_transfers // 3), spread)
    ticks = asyncio.create_task(ticker())
    extra_runs = [asyncio.create_task(extra.fireblocks.run(pace, deadline)), asyncio.create_task(extra.binance.run(_no_pace, deadline))]
    okx_run = asyncio.create_task(okx.run_lifecycles(created, repeat_every=7, min_step_interval=spread / 8, timeout=timeout))
    ripio_run = asyncio.create_task(
        ripio.run_lifecycles(ripio_created, repeat_every=7, skip_every=60, min_step_interval=spread / 6, timeout=timeout)
    )
    webhook_run = asyncio.create_task(driver.run(pace, deadline))
    gap = spread / (len(faults) + 1)
    try:
        for fault in faults:
            await asyncio.sleep(gap)
            figures = report.faults[fault]
            figures.injected += 1
            start = time.monotonic()
            if fault in ("kill", "stop"):
                owner = await holder(members, session)
                wall = time.time()
                if fault == "kill":
                    owner.kill9()
                    extra.kills.append(time.monotonic())
                else:
                    owner.signal(signal.SIGSTOP)
                await new_holder(members, owner, session)
                handover = await _first_event_after(tail, wall, 60.0)
                if handover is not None:
                    figures.handover_seconds.append(handover)
                if fault == "kill":
                    await owner.start()
                else:
                    await asyncio.sleep(2.0)
                    owner.signal(signal.SIGCONT)
                    await asyncio.sleep(6.0)  # it learns of the rebalance; its late writes meet the new owner's fence
                    figures.fenced_producers += await owner.metric(session, "bridge_cluster_fenced_producers_total")
            elif fault == "roll":
                for member in members:
                    await member.terminate()
                    await member.start()
            else:
                assert kafka is not None
                await asyncio.to_thread(kafka.kill9)
                await asyncio.sleep(2.0)
                await asyncio.to_thread(kafka.restart)
                await holder(members, session, timeout=120)
                extra.outages.append((start, time.monotonic()))
            figures.webhook_5xx.append(dict(balancer.errors_between(start, time.monotonic())))
        ticking.set()
        runs = [okx_run, ripio_run, webhook_run, ticks, *extra_runs]
        await asyncio.wait_for(asyncio.gather(*runs), max(1.0, deadline - time.monotonic()))
    finally:
        for task in (okx_run, ripio_run, webhook_run, ticks, *extra_runs):
            task.cancel()
        await asyncio.gather(okx_run, ripio_run, webhook_run, ticks, *extra_runs, return_exceptions=True)
    await _settle(extra, bootstrap, tail.topics, max(10.0, deadline - time.monotonic()))
    await _tally(report, bootstrap, okx, ripio, oxs, tail, extra)


async def _post_all(oxs: OpenXSwitchSimulator, session: aiohttp.ClientSession, transfer: SimTransfer, deadline: float) -> None:
    """Every state of one transfer in order, each retried until 2xx, like the provider."""
    for index in range(len(transfer.states)):
        delivery = oxs.delivery(transfer, index)
        oxs.sent.append(delivery)
        while not 200 <= await oxs.post(session, delivery) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)


async def _first_event_after(tail: Tail, wall: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = tail.first_after(wall)
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    return None


async def _read(bootstrap: str, topics: list[str]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for topic in topics for r in await read_topic(bootstrap, topic, idle=3.0, timeout=60)]


async def _settle(extra: Extra, bootstrap: str, topics: list[str], timeout: float) -> None:
    """Let Fireblocks' backfill close the deliveries never made and the last Binance polls land."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        by_provider = split_values(await _read(bootstrap, topics))
        if all(driver.settled(by_provider.get(driver.name, []))[0] for driver in extra.drivers):
            return
        await asyncio.sleep(2.0)


def split_values(values: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for value in values:
        by_provider.setdefault(value["provider"], []).append(value)
    return by_provider


async def _tally(
    report: ClusterReport, bootstrap: str, okx: OkxSimulator, ripio: RipioSimulator, oxs: OpenXSwitchSimulator, tail: Tail,
    extra: Extra,
) -> None:  # fmt: skip
    values = await _read(bootstrap, tail.topics)
    by_provider = split_values(values)
    for driver in extra.drivers:
        report.drivers[driver.name] = driver.figures(by_provider.get(driver.name, []), extra.kills, extra.outages)
    report.records = len(values)
    report.duplicates = sum(n - 1 for n in Counter(v["event_id"] for v in values).values() if n > 1)
    seen = {(v["key"], v["provider_status"], v["confirmations"], v["tx_hash"]) for v in values}
    truths = {
        "okx": {k: [(s.state, s.confirmations, s.tx_hash) for s in h] for k, h in okx.truth().items()},
        "ripio": {k: [(s.status, None, s.tx_hash) for s in h] for k, h in ripio.truth().items()},
    }
    for name, truth in truths.items():
        figures = report.streams.setdefault(name, StreamFigures())
        for key, history in truth.items():
            figures.states += len(history)
            for index, state in enumerate(history):
                if (key, *state) not in seen:
                    figures.lost += 1
                    figures.lost_final += index == len(history) - 1
    published = {v["event_id"] for v in values if v["provider"] == "openxswitch"}
    acked = [d for d in oxs.sent if d.acked and d.state is not None]
    report.webhook_acked = len(acked)
    report.webhook_acked_missing = sum(1 for d in acked if d.state is not None and d.state.event.event_id not in published)


def _failures(report: ClusterReport) -> list[str]:
    failures = []
    if report.duplicates:
        failures.append(f"{report.duplicates} duplicates")
    if report.lost_final:
        failures.append(f"{report.lost_final} final WebSocket states lost")
    if report.webhook_acked_missing:
        failures.append(f"{report.webhook_acked_missing} acknowledged webhook deliveries missing")
    for name, figures in report.drivers.items():
        for what in ("lost_unexplained", "unknown_records", "same_state_different_event_ids", "older_after_newer"):
            if getattr(figures, what):
                failures.append(f"{name}: {what} {getattr(figures, what)}")
        for what in ("acked_but_missing_in_kafka", "given_up"):
            if figures.detail.get(what):
                failures.append(f"{name}: {what} {figures.detail[what]}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--faults", default="kill,kill,stop,roll,broker,kill", help=f"comma-separated, of {FAULTS}")
    parser.add_argument("--okx-transfers", type=int, default=400, help="Ripio gets half as many")
    parser.add_argument("--webhook-transfers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    report = asyncio.run(
        run_cluster(
            replicas=args.replicas,
            faults=[f for f in args.faults.split(",") if f],
            okx_transfers=args.okx_transfers,
            webhook_transfers=args.webhook_transfers,
            duration=args.duration,
            seed=args.seed,
            timeout=max(600.0, args.duration * 5),
        )
    )
    print(report.table())
    return 0 if not report.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
