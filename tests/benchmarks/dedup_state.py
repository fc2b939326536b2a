"""Dedup state: 1,000,000 tracked transfers (quick: 100,000) — bytes per transfer in memory and on
disk, lookups per second, and the cold restart of a service to a ready, deduplicating pipeline.

The SQLite file is written through ``SQLiteStore.save`` (the bridge's own write path) with the
state a transfer has after its lifecycle: 1 to 7 published states (the OKX scripts' mix), most
of them final; the open ones (10%) carry the stuck-transfer tracking block. A sample of transfers carries the ids of real events, rebuilt by every worker
from the same seed, so lookups hit real duplicates and real new states.

* memory: ``tracemalloc`` (allocated bytes still live after ``DedupGate.open``, per transfer) and
  the RSS growth across the load;
* cold restart: from spawning a fresh process (imports included) until ``Pipeline.start`` returned
  (index loaded, Kafka connected, topics checked) and a repeated event came back ``duplicate``;
* baseline: the store a user would write — ``dict[str, set[str]]`` of keys and event ids in
  memory, and one SQLite row per (key, event id) on disk.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Channel, Child, Context, kafka_settings, rss_bytes
from tests.benchmarks.report import ScenarioResult

__all__ = ["run", "fill_worker", "memory_worker", "restart_worker", "naive_worker"]

STATES = (4, 4, 2, 7, 4, 4, 4, 6)  # published states per transfer of the push-only OKX scripts
SAMPLE = 5_000
"""Transfers whose states are real events (the lookup and restart probes)."""


def _key(index: int) -> str:
    return f"okx:{'deposit' if index % 2 else 'withdrawal'}:{9_000_000_000 + index}"


def _sample_indices(total: int) -> list[int]:
    return sorted(random.Random(5).sample(range(total), min(SAMPLE, total)))


def _events(index: int) -> list[Any]:
    """The published states of sampled transfer ``index``, as the bridge would build them."""
    from bridge.contract.events import Account, Direction, Provider, Source, Status, build_event

    states = STATES[index % len(STATES)]
    out = []
    for step in range(states + 1):  # the last one, another final state, was never published: PUBLISH
        final = step >= states - 1
        out.append(build_event(
            provider=Provider.OKX,
            direction=Direction.DEPOSIT if index % 2 else Direction.WITHDRAWAL,
            transfer_id=_key(index).rsplit(":", 1)[1],
            status=Status.COMPLETED if final else Status.PENDING,
            provider_status="2" if final else "0",
            amount="12.5",
            asset="USDT",
            confirmations=step,
            occurred_at="2025-05-05T00:53:29.206Z",
            received_at="2025-05-05T00:53:29.310Z",
            source=Source(channel="deposit-info"),
            account=Account(id="44711300000000"),
        ))
    return out


def _rows(total: int, sample: set[int]) -> Iterator[tuple[int, bytes, int | None]]:
    from bridge.contract.events import short_hash
    from bridge.delivery.dedup import FINAL_FLAG, state_id
    from bridge.delivery.open_transfers import TRACKED_FLAG, kind_code, tracking_block

    rng = random.Random(7)
    now = int(time.time() * 1000)
    for index in range(total):
        states = STATES[index % len(STATES)]
        final = rng.random() < 0.9
        if index in sample:
            ids = b"".join(state_id(e) for e in _events(index)[:states])
            final = True
        else:
            ids = rng.randbytes(8 * states)
        if final:
            yield short_hash(_key(index)), bytes((FINAL_FLAG,)) + ids, now
        else:  # open: the stuck-transfer tracking block the gate writes (kind, first seen, last change)
            first = now // 1000 - rng.randrange(86_400)
            block = tracking_block(kind_code("okx", "deposit" if index % 2 else "withdrawal"), first, now // 1000)
            yield short_hash(_key(index)), bytes((TRACKED_FLAG,)) + block + ids, None


def _uuid_text(hexdigits: str) -> str:
    return f"{hexdigits[:8]}-{hexdigits[8:12]}-5{hexdigits[13:16]}-a{hexdigits[17:20]}-{hexdigits[20:32]}"


# -- workers ---------------------------------------------------------------------------------------


async def fill_worker(params: dict[str, Any]) -> None:
    from bridge.delivery.store_sqlite import SQLiteStore

    channel = await Channel.open()
    total = params["transfers"]
    store = SQLiteStore(params["path"])
    began = time.monotonic()
    batch: list[tuple[int, bytes, int | None]] = []
    for row in _rows(total, set(_sample_indices(total))):
        batch.append(row)
        if len(batch) >= 50_000:
            store.save(batch)
            batch = []
    if batch:
        store.save(batch)
    store.close()
    channel.tell("RESULT", {"seconds": time.monotonic() - began, "bytes_on_disk": SQLiteStore(params["path"]).bytes_on_disk()})


async def memory_worker(params: dict[str, Any]) -> None:
    from bridge.delivery.dedup import Decision, DedupGate
    from bridge.delivery.store_sqlite import SQLiteStore

    channel = await Channel.open()
    total = params["transfers"]
    probes = [e for i in _sample_indices(total) for e in _events(i)]
    gc.collect()
    rss0 = rss_bytes()
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    gate = DedupGate(SQLiteStore(params["path"]))
    began = time.monotonic()
    await gate.open()
    load_seconds = time.monotonic() - began
    await asyncio.sleep(0)  # the loader's finished future (holding its row list) is released once this step ends
    await asyncio.sleep(0)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced0
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    decisions = {d.value: 0 for d in Decision}
    for event in probes:
        decisions[gate.check(event).value] += 1
    rounds = max(1, 400_000 // len(probes))
    began = time.perf_counter()
    for _ in range(rounds):
        for event in probes:
            gate.check(event)
    lookups = rounds * len(probes) / (time.perf_counter() - began)
    await gate.close()
    channel.tell("RESULT", {"transfers": gate.size, "traced_bytes": traced, "rss_bytes": rss, "load_seconds_traced": load_seconds,
                            "lookups_per_second": lookups, "probe_decisions": decisions})


async def restart_worker(params: dict[str, Any]) -> None:
    """Runs right after the process started: build, start, prove dedup works, say READY."""
    imported = time.monotonic()
    from bridge.delivery.assemble import build_pipeline
    from bridge.delivery.pipeline import Outcome
    from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings

    channel = await Channel.open()
    repeat = _events(_sample_indices(params["transfers"])[0])[0]
    modules = time.monotonic()
    rss0 = rss_bytes()
    pipeline = build_pipeline(
        kafka_settings(params["bootstrap"]),
        TopicSettings(**params["topics"]),
        DedupSettings(store="sqlite", path=Path(params["path"])),
        PipelineSettings(),
    )
    await pipeline.start()
    started = time.monotonic()
    outcome = await pipeline.submit(repeat)
    ready = time.monotonic()
    if outcome is not Outcome.DUPLICATE or not pipeline.ready:
        raise RuntimeError(f"restarted pipeline is not deduplicating: {outcome}, ready={pipeline.ready}")
    channel.tell("READY", {"at": ready, "imports_seconds": modules - imported, "start_seconds": started - modules,
                           "first_decision_seconds": ready - started, "transfers": pipeline.gate.size, "rss_delta": rss_bytes() - rss0})
    await channel.command()
    await pipeline.close(timeout=10)


async def naive_worker(params: dict[str, Any]) -> None:
    """``dict[str, set[str]]`` in memory; (key, event id) rows in SQLite on disk."""
    channel = await Channel.open()
    total = params["transfers"]
    sample = set(_sample_indices(total))
    probes = [e for i in sorted(sample) for e in _events(i)]
    db_path = Path(params["dir"]) / "naive.sqlite3"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE seen (key TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (key, event_id)) WITHOUT ROWID")
    rng = random.Random(7)
    batch: list[tuple[str, str]] = []
    for index in range(total):
        key = _key(index)
        if index in sample:
            ids = [e.event_id for e in _events(index)[:-1]]
        else:
            ids = [_uuid_text(rng.randbytes(16).hex()) for _ in range(STATES[index % len(STATES)])]
        batch += [(key, i) for i in ids]
        if len(batch) >= 100_000:
            db.execute("BEGIN")
            db.executemany("INSERT INTO seen VALUES (?, ?)", batch)
            db.execute("COMMIT")
            batch = []
    if batch:
        db.execute("BEGIN")
        db.executemany("INSERT INTO seen VALUES (?, ?)", batch)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    disk = sum(p.stat().st_size for p in Path(params["dir"]).glob("naive.sqlite3*"))
    gc.collect()
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    began = time.monotonic()
    seen: dict[str, set[str]] = {}
    for key, event_id in db.execute("SELECT key, event_id FROM seen"):
        known = seen.get(key)
        if known is None:
            seen[key] = known = set()
        known.add(event_id)
    load_traced = time.monotonic() - began
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced0
    tracemalloc.stop()
    began = time.monotonic()
    reloaded: dict[str, set[str]] = {}
    for key, event_id in db.execute("SELECT key, event_id FROM seen"):
        reloaded.setdefault(key, set()).add(event_id)
    load_seconds = time.monotonic() - began
    del reloaded
    db.close()
    rounds = max(1, 400_000 // len(probes))
    began = time.perf_counter()
    for _ in range(rounds):
        for event in probes:
            event.event_id in seen.get(event.key, ())  # noqa: B015 - the membership test is what is timed
    lookups = rounds * len(probes) / (time.perf_counter() - began)
    channel.tell("RESULT", {"transfers": len(seen), "traced_bytes": traced, "bytes_on_disk": disk, "load_seconds": load_seconds,
                            "load_seconds_traced": load_traced, "lookups_per_second": lookups})


# -- scenario ----------------------------------------------------------------------------------------


async def _one(ctx: Context, role: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    child = await Child.start(role, params, workdir=ctx.workdir)
    try:
        return await child.expect("RESULT", timeout)
    finally:
        await child.close()


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult("dedup")
    total = 100_000 if ctx.quick else 1_000_000
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as scratch:
        path = str(Path(scratch) / "dedup.sqlite3")
        fill = await _one(ctx, "dedup-fill", {"path": path, "transfers": total}, 900)
        ctx.say(f"{total:,} transfers written through SQLiteStore in {fill['seconds']:.1f}s: {fill['bytes_on_disk'] / total:.0f} B each on disk")
        memory = await _one(ctx, "dedup-memory", {"path": path, "transfers": total}, 900)
        ctx.say(f"in memory: {memory['traced_bytes'] / total:.0f} B/transfer (tracemalloc); "
                f"{memory['lookups_per_second']:,.0f} lookups/s; probes {memory['probe_decisions']}")
        topics = ctx.topics("dedup")
        restarts = []
        for _ in range(1 if ctx.quick else 3):
            child = await Child.start("dedup-restart", {"path": path, "transfers": total, "bootstrap": ctx.bootstrap, "topics": topics.model_dump()}, workdir=ctx.workdir)
            try:
                ready = await child.expect("READY", 300)
                restarts.append({**ready, "process_to_ready_seconds": ready["at"] - child.started})
            finally:
                await child.close()
        restart = min(restarts, key=lambda r: r["process_to_ready_seconds"])
        ctx.say(f"cold restart to a ready deduplicating pipeline: {[round(r['process_to_ready_seconds'], 2) for r in restarts]} s "
                f"(imports {restart['imports_seconds']:.2f}s, start {restart['start_seconds']:.2f}s, first decision {restart['first_decision_seconds'] * 1000:.1f} ms)")
        naive = await _one(ctx, "dedup-naive", {"dir": scratch, "transfers": total}, 1800)
        ctx.say(f"naive: {naive['traced_bytes'] / total:.0f} B/transfer in memory, {naive['bytes_on_disk'] / total:.0f} B on disk, "
                f"{naive['lookups_per_second']:,.0f} lookups/s, reload {naive['load_seconds']:.2f}s")
    result.figures = {"transfers": total, "fill": fill, "memory": memory, "restarts": restarts, "naive": naive, "states_per_transfer": STATES}
    per = memory["traced_bytes"] / total
    result.row("bytes per transfer in memory (tracemalloc)", per, "B", baseline="dict[str, set[str]]", baseline_value=naive["traced_bytes"] / total,
               target="≤ 160 B", met=per <= 160, note=f"{total:,} transfers")
    result.row("bytes per transfer in memory (RSS growth)", restart["rss_delta"] / total, "B",
               note="whole restarted pipeline incl. Kafka client, untraced")
    result.row("bytes per transfer on disk", fill["bytes_on_disk"] / total, "B", baseline="SQLite (key, event_id) rows", baseline_value=naive["bytes_on_disk"] / total)
    result.row("lookups/s", memory["lookups_per_second"], baseline="dict[str, set[str]]", baseline_value=naive["lookups_per_second"])
    seconds = restart["process_to_ready_seconds"]
    result.row("cold restart to ready, deduplicating", seconds, "s", baseline="naive reload of its rows", baseline_value=naive["load_seconds"],
               target="≤ 3 s", met=seconds <= 3, note="process start → first duplicate decided; best of runs" if not ctx.quick else "process start → first duplicate decided")
    return result
