"""Chaos suite: kill -9 the bridge and the broker under load from all five providers, then prove
that nothing a provider handed over was lost.

``python -m tests.chaos.run [--transfers N] [--bridge-kills K] [--broker-kills B] [--mode embedded|exactly-once|both]``

This module is the runner: it starts the simulators (one driver per provider, each in its own
module: ``sockets`` for OKX and Ripio, ``openxswitch``, ``fireblocks``, ``binance``), the bridge —
the real service shell in a child process (``tests.chaos.bridge_process``) — and a local Kafka
broker; it places the faults (the bridge SIGKILLed and restarted, the broker SIGKILLed and
restarted) at random points of the load, lets the last states land, and hands what Kafka holds
(read with ``read_committed``) to each driver to compare with its truth (``checker``). The
verdict and the table are ``report``'s:

* ``lost_final`` — transfers whose current (last) state is missing: must be 0;
* webhooks (OpenXSwitch, Fireblocks): every delivery answered 2xx must be in Kafka (Fireblocks:
  or a later state of its transfer, the ordering rule), and none may be given up;
* ``lost`` — any state missing, split into ``lost_at_bridge_kill`` (a provider that shows only the
  current state: an intermediate state current at a SIGKILL, before Kafka had it, that no bridge
  can recover), ``lost_superseded`` (Fireblocks: a later state was published first) and
  ``lost_unexplained`` (fails the run);
* duplicates by ``event_id``: 0 in exactly-once mode; counted in the embedded mode, where a repeat
  must carry the identical ``event_id`` (``same_state_different_event_ids`` must be 0 in both);
* ``older_after_newer`` — records of a state published after a later state of the same transfer,
  per provider (a figure, not a check: see the README's *Chaos and failure testing*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from tests.chaos.binance import BinanceDriver
from tests.chaos.bridge_process import BridgeProcess, free_port
from tests.chaos.checker import read_all, split
from tests.chaos.fireblocks import FireblocksDriver
from tests.chaos.openxswitch import OpenXSwitchDriver
from tests.chaos.report import ChaosReport, FaultFigures, add_up, failures
from tests.chaos.sockets import Driver, SocketDriver

__all__ = ["run_chaos", "main", "ChaosReport", "BridgeProcess", "LocalKafka", "read_topic", "PROVIDERS", "SHARE"]

PROVIDERS = ("okx", "ripio", "openxswitch", "fireblocks", "binance")
SHARE = {"okx": 0.3, "ripio": 0.2, "openxswitch": 0.2, "fireblocks": 0.15, "binance": 0.15}
"""Share of the scripted transfers per provider."""


def _split_count(transfers: int) -> dict[str, int]:
    counts = {name: int(transfers * share) for name, share in SHARE.items()}
    counts["okx"] += transfers - sum(counts.values())
    return counts


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def run_chaos(
    *,
    transfers: int = 5000,
    bridge_kills: int = 20,
    broker_kills: int = 2,
    mode: str = "embedded",
    seed: int = 1,
    timeout: float = 1800.0,
    broker: LocalKafka | None = None,
    settle_timeout: float = 180.0,
    duration: float = 240.0,
) -> ChaosReport:
    """One chaos run; the providers spread their states over ``duration`` seconds (the webhooks
    follow the WebSocket providers' progress). ``broker`` reuses a running ``LocalKafka`` (it is
    killed and restarted)."""
    rng = random.Random(seed)
    started = time.monotonic()
    faults = {name: FaultFigures() for name in ("bridge_kill9", "broker_kill9")}
    suffix = uuid.uuid4().hex[:8]
    topics: dict[str, Any] = {
        "deposit": f"chaos.{suffix}.deposit.v1",
        "withdrawal": f"chaos.{suffix}.withdrawal.v1",
        "dead_letter": f"chaos.{suffix}.dlq.v1",
        "partitions": 3,
    }
    owned = broker is None
    kafka = broker or LocalKafka()
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        if owned:
            await asyncio.to_thread(kafka.start)
        try:
            work = Path(scratch)
            dedup: dict[str, Any] = {"store": "sqlite", "path": str(work / "dedup.sqlite3")}
            if mode == "exactly-once":
                dedup = {"store": "kafka", "state_topic": f"chaos.{suffix}.state", "transactional_id": f"chaos-{suffix}"}
            port = free_port()
            async with contextlib.AsyncExitStack() as stack:
                okx = await stack.enter_async_context(SocketDriver("okx", seed))
                ripio = await stack.enter_async_context(SocketDriver("ripio", seed))
                oxs = await stack.enter_async_context(OpenXSwitchDriver(port, seed))
                fireblocks = await stack.enter_async_context(FireblocksDriver(port, work, seed))
                binance = await stack.enter_async_context(BinanceDriver(work, seed))
                config = {
                    "kafka": {"bootstrap_servers": kafka.bootstrap, "linger_ms": 5, "request_timeout_ms": 10_000},
                    "topics": topics,
                    "dedup": dedup,
                    "server": {"host": "127.0.0.1", "port": port, "admin_port": None},
                    "log": {"level": "WARNING", "format": "text"},
                    "supervisor": {"restart_initial_seconds": 0.2, "restart_max_seconds": 2.0, "min_uptime_seconds": 5.0},
                    "okx": okx.section(),
                    "ripio": ripio.section(),
                    "openxswitch": oxs.section(),
                    "fireblocks": fireblocks.section(),
                    "binance": binance.section(),
                }
                config_path = work / "bridge.json"
                config_path.write_text(json.dumps(config, default=str))
                os.chmod(config_path, 0o600)
                bridge = BridgeProcess(config_path, work / "bridge.log")
                drivers: list[Driver] = [okx, ripio, oxs, fireblocks, binance]
                try:
                    report = await _drive(
                        rng, drivers, bridge, kafka, faults, bridge_kills, broker_kills, timeout, settle_timeout, duration, topics,
                        _split_count(transfers),
                    )  # fmt: skip
                finally:
                    bridge.kill9()
        except Exception:
            log_path = Path(scratch) / "bridge.log"
            if log_path.exists():
                sys.stderr.write("bridge log tail:\n" + log_path.read_text(errors="replace")[-4000:] + "\n")
            raise
        finally:
            if owned:
                await asyncio.to_thread(kafka.cleanup)
    report.mode = mode
    report.seconds = round(time.monotonic() - started, 1)
    report.failures = failures(report)
    return report


async def _drive(
    rng: random.Random,
    drivers: list[Driver],
    bridge: BridgeProcess,
    kafka: LocalKafka,
    faults: dict[str, FaultFigures],
    bridge_kills: int,
    broker_kills: int,
    timeout: float,
    settle_timeout: float,
    duration: float,
    topics: dict[str, Any],
    counts: dict[str, int],
) -> ChaosReport:
    by_name = {driver.name: driver for driver in drivers}
    okx, ripio, oxs = by_name["okx"], by_name["ripio"], by_name["openxswitch"]
    assert isinstance(oxs, OpenXSwitchDriver)
    await bridge.start()
    for driver in drivers:
        await driver.recovered()
    for driver in drivers:
        driver.create(counts[driver.name], duration)
    expected = sum(driver.expected_states for driver in drivers)
    kills: list[float] = []
    outages: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    runs: dict[str, asyncio.Task[None]] = {}
    for name in ("okx", "ripio", "binance"):
        runs[name] = asyncio.create_task(by_name[name].run(_not_paced, deadline))
    sockets_done = asyncio.gather(runs["okx"], runs["ripio"])
    socket_states = max(1, okx.expected_states + ripio.expected_states)

    async def pace(fraction: float) -> None:
        """Hold a webhook transfer until the WebSocket load is that far: faults meet webhooks too."""
        while (okx.done() + ripio.done()) / socket_states < fraction and not sockets_done.done():
            await asyncio.sleep(0.05)

    for name in ("openxswitch", "fireblocks"):
        runs[name] = asyncio.create_task(by_name[name].run(pace, deadline))
    everything = asyncio.gather(*runs.values())

    # Faults land at random points spread over the whole load (by states generated), one at a time.
    plan = ["bridge"] * bridge_kills + ["broker"] * broker_kills
    rng.shuffle(plan)
    marks = sorted(rng.uniform(0.03, 0.9) * expected for _ in plan)
    try:
        for fault, mark in zip(plan, marks, strict=True):
            while sum(d.done() for d in drivers) < mark and not everything.done():
                await asyncio.sleep(0.02)
            if everything.done():
                break
            if fault == "bridge":
                bridge.kill9()
                kills.append(time.monotonic())
                faults["bridge_kill9"].injected += 1
                t0 = time.monotonic()
                await bridge.start()
                for driver in drivers:
                    await driver.recovered()
                faults["bridge_kill9"].recover_seconds.append(time.monotonic() - t0)
            else:
                await asyncio.to_thread(kafka.kill9)
                faults["broker_kill9"].injected += 1
                t0 = time.monotonic()
                acked_before = oxs.acked()
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                await asyncio.to_thread(kafka.restart)
                # Recovered once Kafka takes events again: a webhook delivery answered 2xx.
                recovered = await _until(lambda before=acked_before: runs["openxswitch"].done() or oxs.acked() > before + 3, 120)
                outages.append((t0, time.monotonic()))
                if recovered:
                    faults["broker_kill9"].recover_seconds.append(time.monotonic() - t0)
        await everything
    finally:
        for task in runs.values():
            if not task.done():
                task.cancel()
    await _settle(drivers, kafka.bootstrap, topics, settle_timeout)
    await bridge.terminate()
    records, dead = await read_all(kafka.bootstrap, topics)
    by_provider = split(records, PROVIDERS)
    providers = {driver.name: driver.figures(by_provider[driver.name], kills, outages) for driver in drivers}
    total = add_up(providers)
    total.unknown_records += sum(len(v) for k, v in by_provider.items() if k not in PROVIDERS)
    summaries = {name: fault.summary() for name, fault in faults.items()}
    for driver in drivers:
        for name, count in driver.faults().items():
            summaries.setdefault(name, FaultFigures().summary())["injected"] += count
    return ChaosReport(mode="", providers=providers, total=total, faults=summaries, dead_lettered=len(dead), seconds=0.0)


async def _not_paced(fraction: float) -> None:
    """The WebSocket and poll providers pace themselves (``Throttle``)."""


async def _settle(drivers: list[Driver], bootstrap: str, topics: dict[str, Any], settle_timeout: float) -> None:
    """Let the last backfill passes, polls and acks land: stop once every final state and every
    acknowledged webhook is in and the record count stopped moving (or all states are in)."""
    settle_deadline = time.monotonic() + settle_timeout
    previous = -1
    while True:
        await asyncio.sleep(3.0)
        records, _ = await read_all(bootstrap, topics)
        by_provider = split(records, PROVIDERS)
        settled = [driver.settled(by_provider[driver.name]) for driver in drivers]
        finals_in = all(finals for finals, _ in settled)
        everything_in = all(every for _, every in settled)
        if everything_in or (finals_in and len(records) == previous) or time.monotonic() > settle_deadline:
            return
        previous = len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=5000)
    parser.add_argument("--bridge-kills", type=int, default=20)
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--mode", choices=["embedded", "exactly-once", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=240.0, help="seconds over which the states are spread")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    args = parser.parse_args(argv)
    modes = ["embedded", "exactly-once"] if args.mode == "both" else [args.mode]
    reports = []
    for mode in modes:
        report = asyncio.run(
            run_chaos(
                transfers=args.transfers,
                bridge_kills=args.bridge_kills,
                broker_kills=args.broker_kills,
                mode=mode,
                seed=args.seed,
                duration=args.duration,
            )
        )
        print(report.table(), flush=True)
        reports.append(asdict(report))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 1 if any(r["failures"] for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
