"""Connections: many OKX accounts (500; quick: 100), one logged-in, subscribed WebSocket each, idle
with the text keepalive, then a burst of pushes on every connection at once.

Memory per connection is the bridge worker's RSS once every source is connected and through its
first backfill pass, minus its RSS before the sources started, divided by the accounts. Idle CPU is
the worker's CPU time over a quiet window that spans keepalive rounds. The baseline is the same
number of bare ``websockets`` client connections to the same simulator, keeping alive the same way
(no login, no pipeline): what the WebSocket library itself costs.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge_testkit.okx.simulator import PUSH_ONLY_SCRIPTS, OkxSimulator, SimAccount
from tests.benchmarks.common import Channel, Child, Context, bench_accounts, latency_summary, rss_bytes
from tests.benchmarks.latency import join_latencies
from tests.benchmarks.okx_load import okx_bridge_params
from tests.benchmarks.report import ScenarioResult

__all__ = ["run", "bare_ws_worker"]

BURST_PER_ACCOUNT = 10


async def bare_ws_worker(params: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    channel = await Channel.open()
    gc.collect()
    base = rss_bytes()
    interval = params["ping_interval"]

    async def keepalive(ws: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            await ws.send("ping")
            await ws.recv()

    sockets = []
    for _ in range(params["count"]):
        sockets.append(await connect(params["ws_url"], ping_interval=None, max_size=8 * 2**20))
    tasks = [asyncio.create_task(keepalive(ws)) for ws in sockets]
    channel.tell("READY", {"rss_base": base})
    try:
        while True:
            command, args = await channel.command()
            if command == "STOP":
                break
            if command == "IDLE":
                gc.collect()
                rss = rss_bytes()
                cpu0, wall0 = time.process_time(), time.monotonic()
                await asyncio.sleep(args["seconds"])
                channel.tell("RESULT", {"rss": rss, "cpu_seconds": time.process_time() - cpu0, "wall_seconds": time.monotonic() - wall0,
                                        "open": sum(ws.state.name == "OPEN" for ws in sockets)})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _bridge(ctx: Context, accounts: list[SimAccount], ping_interval: float, idle: float) -> dict[str, Any]:
    topics = ctx.topics("connections")
    decisions = ctx.workdir / "burst-decisions.json"
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as state:
        async with OkxSimulator(accounts, idle_timeout=30.0) as sim:
            params = okx_bridge_params(
                bootstrap=ctx.bootstrap, topics=topics.model_dump(), sim=sim, accounts=len(accounts), state_dir=Path(state),
                ping_interval=ping_interval, latency_file=decisions,
            )
            child = await Child.start("okx-bridge", params, workdir=ctx.workdir)
            try:
                ready = await child.expect("READY", 120)
                connect_began = time.monotonic()
                await sim.wait_subscribed(timeout=180)
                connected_in = time.monotonic() - connect_began
                settled = await child.request("SETTLE", {"timeout": 180}, tag="SETTLED", timeout=240)
                pings_before = sim.stats["pings"]
                quiet = await child.request("IDLE", {"seconds": idle}, timeout=idle + 60)
                pings = sim.stats["pings"] - pings_before
                transfers = [sim.create(PUSH_ONLY_SCRIPTS[i % len(PUSH_ONLY_SCRIPTS)], a.name) for a in accounts for i in range(BURST_PER_ACCOUNT)]
                await child.request("EXPECT", {"count": len(transfers), "timeout": 120}, tag="ARMED")
                pushes = []
                began = time.monotonic()
                for transfer in transfers:  # every connection at once, as fast as the sockets take it
                    pushed = time.monotonic()
                    await sim.advance(transfer)
                    snap = transfer.history[-1]
                    pushes.append((transfer.key, snap.state, snap.confirmations, snap.tx_hash, pushed))
                burst = await child.expect("RESULT", 180)
                burst_seconds = burst["last_decided"] - began
            finally:
                await child.close()
    latencies, outcomes = join_latencies(pushes, decisions)
    return {
        "connections": len(accounts),
        "connected_in_seconds": connected_in,
        "rss_base": ready["rss_base"],
        "rss_connected": quiet["rss"],
        "rss_settled": settled["rss"],
        "idle": {**quiet, "keepalive_pings": pings, "ping_interval": ping_interval},
        "burst": {"events": len(transfers), "seconds": burst_seconds, "latency": latency_summary(latencies), "outcomes": outcomes,
                  "cpu_seconds": burst["cpu_seconds"]},
    }


async def _bare(ctx: Context, accounts: list[SimAccount], ping_interval: float, idle: float) -> dict[str, Any]:
    async with OkxSimulator(accounts, idle_timeout=30.0) as sim:
        child = await Child.start("ws-bare", {"ws_url": sim.ws_url, "count": len(accounts), "ping_interval": ping_interval}, workdir=ctx.workdir)
        try:
            ready = await child.expect("READY", 180)
            quiet = await child.request("IDLE", {"seconds": idle}, timeout=idle + 60)
        finally:
            await child.close()
    return {"rss_base": ready["rss_base"], "rss_connected": quiet["rss"], "idle": quiet}


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult("connections")
    count = 100 if ctx.quick else 500
    ping_interval = 5.0 if ctx.quick else 20.0
    idle = 12.0 if ctx.quick else 45.0
    accounts = bench_accounts(count)
    bridge = await _bridge(ctx, accounts, ping_interval, idle)
    per_connection = (bridge["rss_connected"] - bridge["rss_base"]) / count
    idle_share = bridge["idle"]["cpu_seconds"] / bridge["idle"]["wall_seconds"]
    ctx.say(f"bridge: {count} connections in {bridge['connected_in_seconds']:.1f}s, {per_connection / 1024:.1f} KiB each, idle {idle_share:.2%} of a core "
            f"({bridge['idle']['keepalive_pings']} keepalive pings in {idle:.0f}s), burst {bridge['burst']}")
    bare = await _bare(ctx, accounts, ping_interval, idle)
    bare_per = (bare["rss_connected"] - bare["rss_base"]) / count
    bare_idle = bare["idle"]["cpu_seconds"] / bare["idle"]["wall_seconds"]
    ctx.say(f"bare websockets: {bare_per / 1024:.1f} KiB each, idle {bare_idle:.2%} of a core")
    result.figures = {"connections": count, "ping_interval": ping_interval, "idle_window": idle, "bridge": bridge, "bare_websockets": bare}
    note = f"{count} connections, text ping every {ping_interval:g}s"
    result.row("idle CPU", idle_share * 100, "%", baseline="bare websockets", baseline_value=bare_idle * 100, target="< 5 % of a core", met=idle_share < 0.05, note=note)
    result.row("memory per connection", per_connection / 1024, "KiB", baseline="bare websockets", baseline_value=bare_per / 1024,
               target="≤ 1.4× bare", met=per_connection <= 1.4 * bare_per)
    burst = bridge["burst"]
    result.row("burst on every connection: events/s", burst["events"] / burst["seconds"], note=f"{burst['events']:,} events")
    result.row("burst push → Kafka ack p99", burst["latency"]["p99_ms"], "ms")
    return result
