"""Latency: OKX pushes at a fixed rate (1,000 events/s for 60 s; quick: 10 s); per event the time
from the provider's push to the Kafka ack the bridge got for it.

The simulator (this process) notes ``time.monotonic()`` right before each push; the bridge worker
notes it when the event's outcome was decided (the pipeline future resolves on Kafka's ack).
``CLOCK_MONOTONIC`` is one clock for every process on the machine, so the two join exactly. The
baseline is a bare aiokafka producer with the bridge's producer options sending pre-serialized
records at the same rate: send → ack of the client alone.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from bridge_testkit.okx.simulator import PUSH_ONLY_SCRIPTS, OkxSimulator, SimAccount, SimTransfer
from tests.benchmarks.baselines import build_records, write_records
from tests.benchmarks.common import Child, Context, bench_accounts, create_topics, latency_summary
from tests.benchmarks.okx_load import build_flood, okx_bridge_params
from tests.benchmarks.report import ScenarioResult

__all__ = ["run", "paced_pushes", "join_latencies"]

RATE = 1_000.0
ACCOUNTS = 4


def _plan(transfers: list[SimTransfer], count: int) -> list[SimTransfer]:
    """Round robin over the transfers: which one steps at each tick (every state is one push)."""
    remaining = {id(t): len(t.script) for t in transfers}
    active, order = deque(transfers), []
    while active and len(order) < count:
        transfer = active.popleft()
        order.append(transfer)
        remaining[id(transfer)] -= 1
        if remaining[id(transfer)]:
            active.append(transfer)
    return order


async def paced_pushes(sim: OkxSimulator, order: list[SimTransfer], rate: float) -> list[tuple[str, str, int | None, str | None, float]]:
    """Step each transfer in ``order`` at ``rate`` per second; (key, state, confirmations, tx, push time)."""
    pushes = []
    start = time.monotonic() + 0.05
    for index, transfer in enumerate(order):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pushed = time.monotonic()
        await sim.advance(transfer)
        snap = transfer.history[-1]
        pushes.append((transfer.key, snap.state, snap.confirmations, snap.tx_hash, pushed))
    return pushes


def join_latencies(pushes: list[tuple[Any, ...]], decisions_file: Path) -> tuple[list[float], dict[str, int]]:
    """Push → ack of every published state (repeats are decided without a produce: not counted)."""
    acked: dict[tuple[Any, ...], float] = {}
    outcomes: dict[str, int] = {}
    for key, state, confirmations, tx_hash, outcome, at in json.loads(decisions_file.read_text()):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if outcome == "published":
            acked.setdefault((key, state, confirmations, tx_hash), at)
    latencies = []
    for key, state, confirmations, tx_hash, pushed in pushes:
        at = acked.get((key, state, confirmations, tx_hash))
        if at is not None:
            latencies.append(at - pushed)
    return latencies, outcomes


async def _bridge(ctx: Context, accounts: list[SimAccount], seconds: float) -> dict[str, Any]:
    topics = ctx.topics("latency")
    decisions = ctx.workdir / "latency-decisions.json"
    count = int(RATE * seconds)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as state:
        async with OkxSimulator(accounts, idle_timeout=600) as sim:
            params = okx_bridge_params(
                bootstrap=ctx.bootstrap, topics=topics.model_dump(), sim=sim, accounts=len(accounts), state_dir=Path(state), latency_file=decisions
            )
            child = await Child.start("okx-bridge", params, workdir=ctx.workdir)
            try:
                await child.expect("READY", 120)
                await sim.wait_subscribed(timeout=60)
                await child.request("SETTLE", {"timeout": 60}, tag="SETTLED", timeout=90)
                transfers = sim.create_many(count // 3, scripts=PUSH_ONLY_SCRIPTS)
                order = _plan(transfers, count)
                expected = sum(t.script[i].repeat for t, i in _indices(order))
                await child.request("EXPECT", {"count": expected, "timeout": seconds + 120}, tag="ARMED")
                began = time.monotonic()
                pushes = await paced_pushes(sim, order, RATE)
                pushing = time.monotonic() - began
                result = await child.expect("RESULT", seconds + 180)
            finally:
                await child.close()
    latencies, outcomes = join_latencies(pushes, decisions)
    return {
        "pushed_states": len(pushes),
        "pushes_with_repeats": expected,
        "achieved_rate": len(pushes) / pushing,
        "latency": latency_summary(latencies),
        "outcomes": outcomes,
        "cpu_cores": result["cpu_seconds"] / result["seconds"],
        "peak_rss": result["peak_rss"],
    }


def _indices(order: list[SimTransfer]) -> list[tuple[SimTransfer, int]]:
    seen: dict[int, int] = {}
    out = []
    for transfer in order:
        index = seen.get(id(transfer), 0)
        out.append((transfer, index))
        seen[id(transfer)] = index + 1
    return out


async def _aiokafka(ctx: Context, accounts: list[SimAccount], seconds: float) -> dict[str, Any]:
    flood = await build_flood(accounts, min(int(RATE * seconds), 20_000), repeat_fraction=0.0)
    records_file = ctx.workdir / "latency-records.jsonl"
    write_records(build_records((text for _, text in flood.frames), limit=flood.states), records_file)
    topics = ctx.topics("latency-aiokafka")
    await create_topics(ctx.bootstrap, topics)
    params = {"bootstrap": ctx.bootstrap, "topics": topics.model_dump(), "records_file": str(records_file), "rate": RATE, "duration": seconds}
    child = await Child.start("aiokafka", params, workdir=ctx.workdir)
    try:
        await child.expect("READY", 120)
        return await child.request("GO", timeout=seconds + 120)
    finally:
        await child.close()


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult("latency")
    seconds = 10.0 if ctx.quick else 60.0
    accounts = bench_accounts(ACCOUNTS)
    bridge = await _bridge(ctx, accounts, seconds)
    ctx.say(f"bridge: {bridge['pushed_states']:,} states at {bridge['achieved_rate']:,.0f}/s: {bridge['latency']}")
    bare = await _aiokafka(ctx, accounts, seconds)
    ctx.say(f"bare aiokafka at the same rate: {bare['latency']}")
    result.figures = {"rate": RATE, "seconds": seconds, "bridge": bridge, "aiokafka": bare}
    lat, base = bridge["latency"], bare["latency"]
    result.row("push → Kafka ack p50", lat["p50_ms"], "ms", baseline="aiokafka send→ack", baseline_value=base["p50_ms"],
               target="≤ baseline + 0.3 ms", met=lat["p50_ms"] <= base["p50_ms"] + 0.3)
    result.row("push → Kafka ack p99", lat["p99_ms"], "ms", baseline="aiokafka send→ack", baseline_value=base["p99_ms"], target="≤ 20 ms", met=lat["p99_ms"] <= 20)
    result.row("push → Kafka ack p99.9", lat["p999_ms"], "ms", baseline="aiokafka send→ack", baseline_value=base["p999_ms"])
    result.row("bridge CPU at 1,000 events/s", bridge["cpu_cores"] * 100, "%", note="of one core")
    return result
