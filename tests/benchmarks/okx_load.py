"""OKX load: frames rendered by the simulator's own transfer scripts, and the bridge worker that
reads them over real WebSockets into the real pipeline.

The provider side is ``bridge_testkit.okx.simulator.OkxSimulator`` (login, subscriptions,
keepalive, pushes). For the throughput flood the frames are rendered up front by a second,
never-started simulator stepping the same scripts (``advance`` + ``SimTransfer.item``), then
replayed through the live simulator's connections with ``send_raw``: the provider's per-step
bookkeeping would otherwise cost more CPU than the bridge and measure the simulator, not us.

The bridge worker is what the service runs: ``build_pipeline`` (SQLite dedup store, default
Kafka and pipeline settings) and one ``OkxAccountSource`` per account from ``build_okx_sources``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bridge_testkit.okx.simulator import PUSH_ONLY_SCRIPTS, SCRIPTS, OkxSimulator, SimAccount, SimTransfer
from tests.benchmarks.common import Channel, bench_accounts, kafka_settings, peak_rss_bytes, rss_bytes

__all__ = ["Flood", "build_flood", "frame_text", "bridge_worker", "okx_bridge_params"]


@dataclass
class Flood:
    frames: list[tuple[str, str]]
    """(account name, frame text) in sending order; repeats are byte-identical copies."""
    states: int
    repeats: int
    transfers: int

    @property
    def events(self) -> int:
        return len(self.frames)

    def frame_bytes(self) -> float:
        return sum(len(text.encode()) for _, text in self.frames) / max(1, len(self.frames))


def frame_text(transfer: SimTransfer, p_time_ms: int) -> str:
    """The push of the transfer's current state, shaped like the simulator's own pushes."""
    message = {"arg": {"channel": transfer.channel, "uid": transfer.owner.uid}, "data": [transfer.item(p_time_ms)]}
    return json.dumps(message, separators=(",", ":"))


def _states_per_script() -> float:
    counts = [len(SCRIPTS[name][1]) for name in PUSH_ONLY_SCRIPTS]
    return sum(counts) / len(counts)


async def build_flood(accounts: Sequence[SimAccount], events: int, *, repeat_fraction: float = 0.2, seed: int = 3) -> Flood:
    """``events`` pushes of whole lifecycles, round robin over transfers (a transfer's next state comes
    after every other transfer's: at OKX states are minutes apart), ``repeat_fraction`` of them exact
    repeats sent right after their original (scripted repeats included)."""
    renderer = OkxSimulator(list(accounts), seed=seed)  # never started: it only steps the scripts
    states_wanted = round(events * (1 - repeat_fraction))
    repeats_wanted = events - states_wanted
    names = [a.name for a in accounts]
    count = int(states_wanted / _states_per_script()) + len(PUSH_ONLY_SCRIPTS)
    transfers = renderer.create_many(count, accounts=names, scripts=PUSH_ONLY_SCRIPTS)
    scripted_repeats = 0
    rendered: list[tuple[str, str, int]] = []  # (account, text, scripted copies)
    active = deque(transfers)
    now_ms = int(time.time() * 1000)
    while active and len(rendered) < states_wanted:
        transfer = active.popleft()
        await renderer.advance(transfer)  # nobody is connected: this only moves the script on
        copies = transfer.step.repeat
        rendered.append((transfer.owner.name, frame_text(transfer, now_ms), copies))
        scripted_repeats += copies - 1
        if not transfer.finished:
            active.append(transfer)
    extra = max(0, repeats_wanted - scripted_repeats)
    every = len(rendered) / extra if extra else 0.0
    frames: list[tuple[str, str]] = []
    next_extra = every / 2
    for index, (name, text, copies) in enumerate(rendered):
        for _ in range(copies):
            frames.append((name, text))
        if extra and index >= next_extra:
            frames.append((name, text))
            next_extra += every
    repeats = len(frames) - len(rendered)
    return Flood(frames=frames, states=len(rendered), repeats=repeats, transfers=len({t.key for t in transfers if t.started}))


def okx_bridge_params(
    *,
    bootstrap: str,
    topics: dict[str, Any],
    sim: OkxSimulator,
    accounts: int,
    state_dir: Path,
    ping_interval: float = 20.0,
    backfill: bool = True,
    latency_file: Path | None = None,
    profile: Path | None = None,
    tune_gc: bool = True,
) -> dict[str, Any]:
    return {
        "bootstrap": bootstrap,
        "topics": topics,
        "ws_url": sim.ws_url,
        "rest_url": sim.rest_url,
        "accounts": accounts,
        "state_dir": str(state_dir),
        "ping_interval": ping_interval,
        "backfill": backfill,
        "latency_file": str(latency_file) if latency_file else None,
        "profile": str(profile) if profile else None,
        "tune_gc": tune_gc,
    }


# -- bridge worker ---------------------------------------------------------------------------------


class _Decisions:
    """When each offered event's fate was decided (Kafka ack or dedup), for latency joins."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int | None, str | None, str, float]] = []

    def wrap(self, offer: Callable[[Any], Awaitable[asyncio.Future[Any]]]) -> Callable[[Any], Awaitable[asyncio.Future[Any]]]:
        from bridge.contract.events import TransferEvent

        async def probed(item: Any) -> asyncio.Future[Any]:
            future = await offer(item)
            if isinstance(item, TransferEvent):
                future.add_done_callback(partial(self._decided, item))
            return future

        return probed

    def wrap_batch(self, offer_batch: Callable[[Any], Awaitable[asyncio.Future[Any]]]) -> Callable[[Any], Awaitable[asyncio.Future[Any]]]:
        """A batch resolves once its last item is decided: each of its events is timed then (for
        one-item frames, the usual case at a steady rate, that is its own decision)."""
        from bridge.contract.events import TransferEvent

        async def probed(items: Any) -> asyncio.Future[Any]:
            future = await offer_batch(items)
            for index, item in enumerate(items):
                if isinstance(item, TransferEvent):
                    future.add_done_callback(partial(self._decided_in_batch, item, index))
            return future

        return probed

    def _decided_in_batch(self, event: Any, index: int, future: asyncio.Future[Any]) -> None:
        outcome = future.result()[index] if not future.cancelled() else None
        name = outcome.value if hasattr(outcome, "value") else "failed"
        self.rows.append((event.key, event.provider_status, event.confirmations, event.tx_hash, name, time.monotonic()))

    def _decided(self, event: Any, future: asyncio.Future[Any]) -> None:
        outcome = "failed" if future.cancelled() or future.exception() else future.result().value
        self.rows.append((event.key, event.provider_status, event.confirmations, event.tx_hash, outcome, time.monotonic()))


def _outcomes(sources: Sequence[Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for source in sources:
        for name, value in source.stats.items():
            totals[name] = totals.get(name, 0) + value
    return totals


def _decided(totals: dict[str, int]) -> int:
    return sum(v for k, v in totals.items() if k.startswith(("push.", "backfill.")) or k == "failed")


async def bridge_worker(params: dict[str, Any]) -> None:
    from bridge.delivery.assemble import build_pipeline
    from bridge.delivery.settings import DedupSettings, PipelineSettings, TopicSettings
    from bridge.service.gc_tuning import tune_for_service
    from bridge.sources.okx.config import OkxConfig
    from bridge.sources.okx.service import build_okx_sources

    channel = await Channel.open()
    state = Path(params["state_dir"])
    pipeline = build_pipeline(
        kafka_settings(params["bootstrap"]),
        TopicSettings(**params["topics"]),
        DedupSettings(store="sqlite", path=state / "dedup.sqlite3"),
        PipelineSettings(),
    )
    await pipeline.start()
    decisions = None
    if params.get("latency_file"):
        decisions = _Decisions()
        pipeline.offer = decisions.wrap(pipeline.offer)  # type: ignore[method-assign]
        pipeline.offer_batch = decisions.wrap_batch(pipeline.offer_batch)  # type: ignore[method-assign]
    gc.collect()
    rss_base = rss_bytes()
    accounts = bench_accounts(params["accounts"])
    config = OkxConfig(
        enabled=True,
        ws_url=params["ws_url"],
        rest_url=params["rest_url"],
        accounts=[account.okx_account(uid=account.uid) for account in accounts],
        ping_interval=params["ping_interval"],
        backfill_enabled=params["backfill"],
    )
    sources = build_okx_sources(config, pipeline)
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    if params.get("tune_gc", True):  # as the service's process does once it runs
        tune_for_service()
    channel.tell("READY", {"rss_base": rss_base, "sources": len(sources)})
    try:
        while True:
            command, args = await channel.command()
            if command == "STOP":
                break
            if command == "SETTLE":
                await _settle(sources, params["backfill"], args.get("timeout", 120))
                gc.collect()
                channel.tell("SETTLED", {"rss": rss_bytes(), "rss_base": rss_base, "connected": sum(s.health.connected for s in sources)})
            elif command == "IDLE":
                channel.tell("RESULT", await _idle(sources, args["seconds"]))
            elif command == "EXPECT":
                result = await _expect(sources, args["count"], args.get("timeout", 600), params.get("profile"), channel)
                if decisions is not None:
                    Path(params["latency_file"]).write_text(json.dumps(decisions.rows))
                    decisions.rows = []
                result["pipeline"] = pipeline.health()
                channel.tell("RESULT", result)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.close(timeout=30)


async def _settle(sources: Sequence[Any], backfill: bool, timeout: float) -> None:
    """Every source connected (and through its first backfill pass): start-up traffic is over."""
    deadline = time.monotonic() + timeout
    while True:
        connected = all(s.health.connected for s in sources)
        passes = all(s.stats["backfill_passes"] >= 1 for s in sources) if backfill else True
        if connected and passes and not any(s.busy for s in sources):
            return
        if time.monotonic() > deadline:
            missing = sum(not s.health.connected for s in sources)
            raise TimeoutError(f"{missing} of {len(sources)} sources not connected after {timeout}s")
        await asyncio.sleep(0.05)


async def _idle(sources: Sequence[Any], seconds: float) -> dict[str, Any]:
    gc.collect()
    rss = rss_bytes()
    reconnects_before = sum(v for s in sources for k, v in s.stats.items() if k.startswith("reconnect."))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    reconnects = sum(v for s in sources for k, v in s.stats.items() if k.startswith("reconnect.")) - reconnects_before
    return {"rss": rss, "cpu_seconds": cpu, "wall_seconds": wall, "reconnects": reconnects, "connected": sum(s.health.connected for s in sources)}


async def _expect(sources: Sequence[Any], count: int, timeout: float, profile: str | None, channel: Channel) -> dict[str, Any]:
    """Say ``ARMED``, wait for the first frame, then until ``count`` offered items have their outcome."""
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
    before = _decided(_outcomes(sources))
    frames0 = sum(s.stats["frames"] for s in sources)
    channel.tell("ARMED")
    deadline = time.monotonic() + timeout
    while sum(s.stats["frames"] for s in sources) == frames0:
        if time.monotonic() > deadline:
            raise TimeoutError("no frame arrived")
        await asyncio.sleep(0.001)
    first, cpu0 = time.monotonic(), time.process_time()
    if profiler is not None:
        profiler.start()
    while _decided(_outcomes(sources)) - before < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {_decided(_outcomes(sources)) - before} of {count} decided after {timeout}s")
        await asyncio.sleep(0.002)
    last, cpu = time.monotonic(), time.process_time() - cpu0
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        Path(profile).with_suffix(".html").write_text(profiler.output_html())
        if profiler.last_session is not None:  # re-render later: pyinstrument --load FILE -r text -p flat=true
            profiler.last_session.save(str(Path(profile).with_suffix(".pyisession")))
    totals = _outcomes(sources)
    return {
        "first_frame": first,
        "last_decided": last,
        "seconds": last - first,
        "cpu_seconds": cpu,
        "peak_rss": peak_rss_bytes(),
        "rss": rss_bytes(),
        "outcomes": {k: v for k, v in totals.items() if k.startswith(("push.", "backfill.")) or k == "failed"},
        "reconnects": sum(v for k, v in totals.items() if k.startswith("reconnect.")),
        "frames": sum(s.stats["frames"] for s in sources),
    }
