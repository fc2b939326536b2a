"""Poll source: one Binance account's history cycle (signed REST pages → parse → dedup → Kafka ack).

The simulator holds ``ROWS`` transfers (deposits and withdrawals) inside the hot window. The
bridge worker runs two cycles of the real ``BinanceAccountSource``: the first normalizes and
publishes every row (each waits for its Kafka ack before the cycle ends, as in production); the
second reads the same rows unchanged, which the gate drops — a poll source's steady state, and the
same-run baseline of the first (read + normalize + dedup, nothing sent), so the ratio is what
publishing adds. The REST request pacing is lifted for the run: it measures the bridge, not Binance's
pacing. CPU per row is the worker's own CPU time over the cycle.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge_testkit.binance.support import fast_simulator, section
from tests.benchmarks.common import Channel, Child, Context, kafka_settings, records_in_topics
from tests.benchmarks.report import ScenarioResult

__all__ = ["run", "poll_worker"]

ROWS, QUICK_ROWS = 20_000, 4_000


async def poll_worker(params: dict[str, Any]) -> None:
    import aiohttp

    from bridge.delivery.assemble import build_pipeline
    from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings
    from bridge.ingest.rest import RateSlot
    from bridge.sources.binance.config import BinanceConfig
    from bridge.sources.binance.rest import BinanceRest
    from bridge.sources.binance.service import build_binance_sources

    channel = await Channel.open()
    state = Path(params["state_dir"])
    pipeline = build_pipeline(
        kafka_settings(params["bootstrap"]),
        TopicSettings(**params["topics"]),
        DedupSettings(store="sqlite", path=state / "dedup.sqlite3"),
        PipelineSettings(),
    )
    await pipeline.start()
    source = build_binance_sources(BinanceConfig(**params["section"], cursor_dir=state), pipeline)[0]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60.0)) as http:
            rest = source.rest_client(http)
            assert isinstance(rest, BinanceRest)
            rest.slot = RateSlot(10_000.0)  # Binance's 10 requests/s would pace the cycle, not the bridge
            await rest.sync_time()
            channel.tell("READY")
            while True:
                command, _ = await channel.command()
                if command == "STOP":
                    break
                gc.collect()
                cpu0, wall0 = time.process_time(), time.monotonic()
                rows = await source.poll_once(rest)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                channel.tell("RESULT", {"rows": rows, "cpu_seconds": cpu, "seconds": wall, "stats": dict(source.stats)})
    finally:
        await pipeline.close(timeout=30)


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult("poll")
    count = QUICK_ROWS if ctx.quick else ROWS
    topics = ctx.topics("poll")
    async with fast_simulator(seed=5) as sim:
        sim.create_many(count, accounts=["main"])
        entry = sim.accounts["main"].entry(lookup_uid=False)
        params_section = section(sim, [entry], withdrawal_interval=0.001, poll_interval=3600.0)
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as state:
            params = {"bootstrap": ctx.bootstrap, "topics": topics.model_dump(), "state_dir": state, "section": params_section}
            child = await Child.start("binance-poll", params, workdir=ctx.workdir)
            try:
                await child.expect("READY", 120)
                first = await child.request("CYCLE", timeout=600)
                second = await child.request("CYCLE", timeout=600)
            finally:
                await child.close()
    published = await records_in_topics(ctx.bootstrap, [topics.deposit, topics.withdrawal])
    ctx.say(f"cycle 1: {first['rows']:,} rows in {first['seconds']:.2f} s; cycle 2: {second['rows']:,} in {second['seconds']:.2f} s")
    result.figures = {"rows": count, "first": first, "second": second, "published_in_kafka": published}
    rate1, rate2 = first["rows"] / first["seconds"], second["rows"] / second["seconds"]
    result.row(
        "rows normalized and published per s (one cycle, all new)", rate1,
        baseline="same rows unchanged (read, normalize, dedup)", baseline_value=rate2,
    )
    result.row(
        "CPU per row, all new (published)", first["cpu_seconds"] / first["rows"] * 1e6, "µs",
        baseline="same rows unchanged", baseline_value=second["cpu_seconds"] / second["rows"] * 1e6,
    )
    result.row("published = rows, in Kafka", float(published), note=f"expected {count:,}")
    return result
