"""Cluster mode: events/s with two replica processes on this machine, beside the same flood through
one replica of the same cluster, through one process in the default mode, and a bare aiokafka
producer sending the records the flood must produce.

Each side runs the real service shell (``tests.chaos.cluster_procs.Replica``: ``BridgeApp`` from a
config file) in processes of its own, reading a Ripio simulator's WebSockets: 8 accounts, half in
each of the 2 slots (``ripio_load.slot_accounts``), so with 2 replicas each owns half the flood. The
cluster sides are what cluster mode requires: one ``cluster.group_id``, ``dedup.store: kafka`` (each
event and its dedup state in one transaction per batch). The default side is one process with the
embedded SQLite store and no transactions, so that ratio is what the cluster's guarantees cost.

The clock runs from the first message sent to the moment a separate consumer process reading the
event topics ``read_committed`` has seen every expected event id (parsed from the flood with the
bridge's own pure parser): lost is checked, not assumed. CPU per event is each replica's own CPU
time (``/proc``) over that window divided by the events its slot received; the broker's CPU over
the same window is reported beside it, as cores and as its share of all the CPU the measured
processes spent, and the machine's busy time shows what else ran meanwhile (a shared machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bridge.delivery.settings import TopicSettings
from bridge_testkit.ripio.simulator import RipioSimulator, SimAccount
from tests.benchmarks.baselines import write_records
from tests.benchmarks.common import (
    KAFKA_OPTIONS_ENV,
    Channel,
    Child,
    Context,
    create_topics,
    machine_cpu_seconds,
    process_cpu_seconds,
)
from tests.benchmarks.report import ScenarioResult
from tests.benchmarks.ripio_load import RipioFlood, build_ripio_flood, flood_records, slot_accounts
from tests.chaos.bridge_process import reveal
from tests.chaos.cluster_procs import Replica

__all__ = ["run", "tail_worker", "Side"]

SLOTS, ACCOUNTS_PER_SLOT = 2, 4
EVENTS, QUICK_EVENTS = 100_000, 5_000


@dataclass(frozen=True)
class Side:
    tag: str
    label: str
    replicas: int
    cluster: bool


SIDES = (
    Side("cluster2", "cluster, 2 replicas", 2, True),
    Side("cluster1", "cluster, 1 replica", 1, True),
    Side("single", "one process, default mode", 1, False),
)


def _service_config(ctx: Context, side: Side, topics: TopicSettings, sim: RipioSimulator, accounts: list[SimAccount], work: Path) -> dict[str, Any]:
    from bridge.sources.ripio.config import RipioConfig

    prefix = f"bench.{ctx.run_id}.{side.tag}"
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": ctx.bootstrap, **json.loads(os.environ.get(KAFKA_OPTIONS_ENV) or "{}")},
        "topics": topics.model_dump(),
        "log": {"level": "WARNING", "format": "text", "levels": {"aiokafka": "ERROR"}},
        # Service defaults; the endpoints point at the simulator, and the protocol ping may wait:
        # the simulator shares its loop with the flood it sends, and on a loaded machine a pong
        # late by 20 s dropped a connection mid-flood (its frames would be lost to the figure).
        "ripio": reveal(
            RipioConfig(
                enabled=True, ws_url=sim.ws_url, rest_url=sim.rest_url, ws_ping_timeout=300.0,
                accounts=[a.ripio_account() for a in accounts],
            ).model_dump()
        ),
    }
    if side.cluster:
        config["dedup"] = {"store": "kafka", "state_topic": f"{prefix}.state"}
        config["cluster"] = {
            "enabled": True,
            "group_id": f"bench-{ctx.run_id}-{side.tag}",
            "slots": SLOTS,
            "coordination_topic": f"{prefix}.coord",
            "ingress_topic": f"{prefix}.ingress",
        }
        ctx.topics_created += [f"{prefix}.state", f"{prefix}.coord", f"{prefix}.ingress"]
    else:
        config["dedup"] = {"store": "sqlite", "path": str(work / f"{side.tag}.sqlite3")}
    return config


async def _held_slots(replicas: list[Replica], side: Side, timeout: float = 90.0) -> list[list[int]]:
    """Wait until the group settled: every slot held and started, each replica holding its share."""
    if not side.cluster:
        return [[]]
    deadline = time.monotonic() + timeout
    held: list[list[int]] = []
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            details = [await replica.cluster(session) for replica in replicas]
            held = [sorted(d.get("slots", [])) if d else [] for d in details]
            settled = all(d and not d.get("rebalancing") and not d.get("starting") for d in details)
            if settled and sorted(s for h in held for s in h) == list(range(SLOTS)) and all(len(h) == SLOTS // len(replicas) for h in held):
                return held
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{side.label}: slots not settled after {timeout:.0f}s: {held}")


async def _measure(ctx: Context, side: Side, accounts: list[SimAccount], flood: RipioFlood, ids_file: Path) -> dict[str, Any]:
    from bridge.service.cluster.layout import source_slot

    work = ctx.workdir / side.tag
    work.mkdir()
    async with RipioSimulator(accounts) as sim:
        topics = ctx.topics(side.tag)
        config = _service_config(ctx, side, topics, sim, accounts, work)
        await create_topics(ctx.bootstrap, topics)
        tail = await Child.start(
            "committed-tail",
            {"bootstrap": ctx.bootstrap, "topics": [topics.deposit, topics.withdrawal, topics.dead_letter]},
            workdir=ctx.workdir,
        )
        replicas = [Replica(f"{side.tag}-{n}", config, work) for n in range(side.replicas)]
        try:
            started = time.monotonic()
            await asyncio.gather(tail.expect("READY", 60), *(replica.start() for replica in replicas))
            held = await _held_slots(replicas, side)
            await sim.wait_subscribed(timeout=60)
            ready = time.monotonic() - started
            await asyncio.sleep(1.0)  # each source's first backfill pass (empty listings) is over
            await tail.send("EXPECT", {"ids_file": str(ids_file), "timeout": 900, "grace": 1.0})
            await tail.expect("ARMED", 30)
            pids = [replica.process.pid for replica in replicas if replica.process is not None]
            cpu0 = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            broker0, machine0 = process_cpu_seconds(ctx.broker_pid), machine_cpu_seconds()
            provider0, began = time.process_time(), time.monotonic()
            for name, text in flood.frames:
                if await sim.send_raw(text, name) != 1:
                    raise RuntimeError(f"{side.label}: account {name} has not exactly one live subscription")
            sending = time.monotonic() - began
            reached = await tail.expect("REACHED", 900)
            cpu1 = [process_cpu_seconds(pid) or 0.0 for pid in pids]
            broker1, machine1 = process_cpu_seconds(ctx.broker_pid), machine_cpu_seconds()
            provider = time.process_time() - provider0
            checked = await tail.expect("RESULT", 60)
        except Exception:
            for replica in replicas:
                if replica.log_path.exists():
                    print(f"{replica.name} log tail:\n{replica.log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            await asyncio.gather(*(replica.terminate() for replica in replicas), return_exceptions=True)
            for replica in replicas:
                replica.kill9()
            await tail.close()
    if reached.get("at") is None:
        raise RuntimeError(f"{side.label}: {checked['lost']} of {checked['expected']} events not in Kafka after 900s")
    per_account = Counter(name for name, _ in flood.frames)
    slot_of = {a.name: source_slot("ripio", f"ripio:{a.name}", SLOTS) for a in accounts}
    handled = [sum(n for name, n in per_account.items() if not side.cluster or slot_of[name] in slots) for slots in held]
    seconds = reached["at"] - began
    bridge_cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    broker = None if broker0 is None or broker1 is None else broker1 - broker0
    return {
        "side": side.label,
        "seconds": seconds,
        "seconds_sending": sending,
        "seconds_to_ready": ready,
        "events_per_second": flood.events / seconds,
        "replica_slots": held,
        "replica_events": handled,
        "replica_cpu_seconds": bridge_cpu,
        "replica_cpu_us_per_event": [cpu / n * 1e6 for cpu, n in zip(bridge_cpu, handled, strict=True)],
        "bridge_cpu_us_per_event": sum(bridge_cpu) / flood.events * 1e6,
        "broker_cpu_seconds": broker,
        "provider_cpu_seconds": provider,
        "tail_cpu_seconds": reached["cpu_seconds"],
        "machine_busy_seconds": machine1[0] - machine0[0],
        "machine_cpu_seconds": machine1[1] - machine0[1],
        "kafka": checked,
    }


def _shares(figures: dict[str, Any]) -> dict[str, float | None]:
    """The broker's CPU as cores and as a share of everything the measured processes spent; the
    machine's busy share and what other processes (not measured here) took of it."""
    ours = sum(figures["replica_cpu_seconds"]) + figures["provider_cpu_seconds"] + figures["tail_cpu_seconds"]
    broker = figures["broker_cpu_seconds"]
    busy, total = figures["machine_busy_seconds"], figures["machine_cpu_seconds"]
    return {
        "broker_cores": None if broker is None else broker / figures["seconds"],
        "broker_share": None if broker is None else broker / (ours + broker),
        "broker_us_per_event": None if broker is None else broker / figures["events"] * 1e6,
        "machine_busy": busy / total if total else None,
        "others_share_of_busy": None if broker is None or not busy else max(0.0, busy - ours - broker) / busy,
    }


async def run(ctx: Context) -> ScenarioResult:
    from tests.benchmarks.throughput import bare_aiokafka

    result = ScenarioResult("cluster")
    accounts = slot_accounts(ACCOUNTS_PER_SLOT, SLOTS)
    flood = await build_ripio_flood(accounts, QUICK_EVENTS if ctx.quick else EVENTS)
    event_ids, records = flood_records(flood, limit=100_000)
    ids_file, records_file = ctx.workdir / "cluster-ids.json", ctx.workdir / "cluster-records.jsonl"
    ids_file.write_text(json.dumps(sorted(event_ids)))
    write_records(records, records_file)
    ctx.say(
        f"{flood.events:,} Ripio messages ({flood.frame_bytes():.0f} B each): {flood.states:,} states of {flood.transfers:,} transfers "
        f"+ {flood.repeats:,} repeats ({flood.repeats / flood.events:.1%}), over {len(accounts)} WebSocket connections in {SLOTS} slots"
    )
    if ctx.broker_pid is None:
        ctx.say("the broker's process is not visible here: its CPU is not reported")
    sides: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        figures = await _measure(ctx, side, accounts, flood, ids_file)
        figures["events"] = flood.events
        figures.update(_shares(figures))
        sides[side.tag] = figures
        broker = "?" if figures["broker_cores"] is None else f"{figures['broker_cores']:.2f}"
        ctx.say(
            f"{side.label}: {figures['events_per_second']:,.0f} events/s, CPU/event per replica "
            f"{', '.join(f'{v:.0f} µs' for v in figures['replica_cpu_us_per_event'])}, broker {broker} cores, "
            f"lost {figures['kafka']['lost']}, duplicates {figures['kafka']['duplicates']} (ready in {figures['seconds_to_ready']:.1f}s)"
        )
    bare = await bare_aiokafka(ctx, records_file)
    ctx.say(f"bare aiokafka: {bare['per_second']:,.0f} records/s")
    result.figures = {
        "events": flood.events,
        "states": flood.states,
        "repeats": flood.repeats,
        "transfers": flood.transfers,
        "accounts": len(accounts),
        "slots": SLOTS,
        "frame_bytes": flood.frame_bytes(),
        "shared_broker": ctx.shared_broker,
        "sides": sides,
        "aiokafka": {**bare, "cpu_us_per_record": bare["cpu_seconds"] / bare["records"] * 1e6},
    }
    _rows(result, sides, bare, ctx.shared_broker)
    return result


def _rows(result: ScenarioResult, sides: dict[str, dict[str, Any]], bare: dict[str, Any], shared_broker: bool) -> None:
    two, one, single = sides["cluster2"], sides["cluster1"], sides["single"]
    rate = two["events_per_second"]
    result.row("events/s, 2 replicas vs 1 replica (cluster)", rate, baseline="cluster, 1 replica", baseline_value=one["events_per_second"])
    result.row("events/s, 2 replicas vs one process (default mode)", rate, baseline="default mode", baseline_value=single["events_per_second"])
    result.row("events/s, 2 replicas vs bare aiokafka records/s", rate, baseline="aiokafka", baseline_value=bare["per_second"])
    result.row("events/s, 1 replica (cluster) vs one process (default mode)", one["events_per_second"],
               baseline="default mode", baseline_value=single["events_per_second"])
    for index, (slots, cpu) in enumerate(zip(two["replica_slots"], two["replica_cpu_us_per_event"], strict=True)):
        result.row(f"CPU per event, replica {index} of 2 (slot {','.join(map(str, slots))}) vs 1 replica", cpu, "µs",
                   baseline="cluster, 1 replica", baseline_value=one["bridge_cpu_us_per_event"])
    result.row("CPU per event, 1 replica (cluster) vs default mode", one["bridge_cpu_us_per_event"], "µs",
               baseline="default mode", baseline_value=single["bridge_cpu_us_per_event"])
    result.row("CPU per event, default mode vs bare aiokafka per record", single["bridge_cpu_us_per_event"], "µs",
               baseline="aiokafka", baseline_value=bare["cpu_seconds"] / bare["records"] * 1e6)
    result.row("replicas' CPU while flooding, 2 replicas", sum(two["replica_cpu_seconds"]) / two["seconds"], "cores")
    if two["broker_cores"] is not None:
        shared = "given broker: other clients' load included" if shared_broker else ""
        result.row("broker CPU while flooding, 2 replicas vs 1 replica", two["broker_cores"], "cores",
                   baseline="cluster, 1 replica", baseline_value=one["broker_cores"], note=shared)
        result.row("broker CPU per event, 2 replicas vs default mode", two["broker_us_per_event"], "µs",
                   baseline="default mode", baseline_value=single["broker_us_per_event"])
        result.row("broker share of the measured CPU, 2 replicas vs 1 replica", two["broker_share"] * 100, "%",
                   baseline="cluster, 1 replica", baseline_value=one["broker_share"] * 100)
        result.row("CPU busy by processes not measured, 2 replicas", two["others_share_of_busy"] * 100, "%",
                   note=f"machine {two['machine_busy']:.0%} busy")
    for side in (two, one, single):
        kafka = side["kafka"]
        result.row(f"published read_committed, {side['side']}", float(kafka["distinct"]),
                   note=f"expected {kafka['expected']:,}; lost {kafka['lost']}, duplicates {kafka['duplicates']}, dead letters {kafka['dead_letters']}")


# -- the read_committed consumer (worker process) --------------------------------------------------


async def tail_worker(params: dict[str, Any]) -> None:
    """Reads the event and dead-letter topics ``read_committed`` from the start; on ``EXPECT`` says
    ``REACHED`` (monotonic time) once every expected event id was seen, then after ``grace`` seconds
    more (late duplicates) ``RESULT``: records, distinct, duplicates, lost, unexpected."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    channel = await Channel.open()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=params["bootstrap"], isolation_level="read_committed", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        for topic in params["topics"]:
            for _ in range(100):
                numbers = consumer.partitions_for_topic(topic)
                if numbers:
                    break
                await consumer._client.force_metadata_update()  # no public API for a brand-new topic
            partitions += [TopicPartition(topic, n) for n in sorted(numbers or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        channel.tell("READY")
        command, args = await channel.command()
        if command != "EXPECT":
            return
        expected = set(json.loads(Path(args["ids_file"]).read_text()))
        seen: Counter[str] = Counter()
        dead_letters = 0
        missing = len(expected)
        channel.tell("ARMED")
        cpu0 = time.process_time()
        deadline = time.monotonic() + args["timeout"]
        reached: float | None = None
        while time.monotonic() < (deadline if reached is None else reached + args["grace"]):
            for tp, batch in (await consumer.getmany(timeout_ms=100)).items():
                if tp.topic == params["topics"][-1]:
                    dead_letters += len(batch)
                    continue
                for record in batch:
                    event_id = next((v.decode() for k, v in record.headers if k == "ce_id"), "")
                    seen[event_id] += 1
                    if seen[event_id] == 1 and event_id in expected:
                        missing -= 1
            if reached is None and missing == 0:
                reached = time.monotonic()
                channel.tell("REACHED", {"at": reached, "cpu_seconds": time.process_time() - cpu0})
        if reached is None:
            channel.tell("REACHED", {"at": None, "cpu_seconds": time.process_time() - cpu0})
        channel.tell("RESULT", {
            "expected": len(expected),
            "records": sum(seen.values()),
            "distinct": len(seen),
            "duplicates": sum(seen.values()) - len(seen),
            "lost": len(expected - set(seen)),
            "unexpected": len(set(seen) - expected),
            "dead_letters": dead_letters,
        })
        await channel.command()  # STOP
    finally:
        await consumer.stop()
