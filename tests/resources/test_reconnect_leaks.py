"""1,000 reconnects leak neither file descriptors nor asyncio tasks (nor memory worth a mention).

Each simulator is set to hang up right after every subscription — a venue that accepts and drops
at once — and the source's backoff is shrunk to milliseconds, so a thousand full connection cycles
(OKX: connect, login, subscribe; Ripio: signed ticket over HTTP, connect, subscribe) take seconds.
Counts are taken for the whole process (client and simulator side) at the same point of the
cycle's rhythm, as the minimum of a few samples, so a connection caught mid-way does not count.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge.sources.okx.service import build_okx_sources
from bridge.sources.ripio.service import build_ripio_sources
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.conftest import PipelineFactory
from tests.resources.figures import mib, open_fds, record, rss_bytes

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RECONNECTS = 1000
WARM_UP = 20
# min_uptime 0: the backoff restarts from ``reconnect_initial`` after every connection that got as
# far as subscribed (test_retry_caps covers a thousand consecutive failures on its own).
FAST = {"reconnect_initial": 0.001, "reconnect_max": 0.004, "min_uptime": 0.0, "backfill_enabled": False}


async def snapshot() -> tuple[int, int, int]:
    """(fds, tasks, rss) as the minimum of five samples 5 ms apart."""
    samples = []
    for _ in range(5):
        gc.collect()
        samples.append((open_fds(), len(asyncio.all_tasks()), rss_bytes()))
        await asyncio.sleep(0.005)
    return min(s[0] for s in samples), min(s[1] for s in samples), min(s[2] for s in samples)


async def settled_task_count(target: int, within: float = 3.0) -> int:
    """Task count once the simulator's side of the last hang-up has finished (or ``within`` s passed).

    The count is whole-process: the simulator's handler for the last connection (or the ticket
    request's keep-alive handler) can still be closing when the source has already stopped, so a
    fixed short sleep made this a race; a real leak stays above ``target`` for the whole wait.
    """
    deadline = time.monotonic() + within
    while True:
        count = len(asyncio.all_tasks())
        if count <= target or time.monotonic() >= deadline:
            return count
        await asyncio.sleep(0.02)


def describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return f"{task.get_name()}:{getattr(coro, '__qualname__', type(coro).__name__)}"


async def cycle(
    name: str, source: Any, attempts: Callable[[], int], ready: Callable[[], Awaitable[None]] | None = None
) -> None:
    tasks_before_start = len(asyncio.all_tasks())
    task = asyncio.create_task(source.run(), name=f"{name}-reconnects")
    try:
        deadline = time.monotonic() + 30
        while attempts() < WARM_UP:
            assert time.monotonic() < deadline and not task.done(), f"{name}: no reconnect loop ({source.health.last_error})"
            await asyncio.sleep(0.01)
        fds0, tasks0, rss0 = await snapshot()
        start, started = attempts(), time.monotonic()
        deadline = started + 60
        while attempts() < start + RECONNECTS:
            assert not task.done(), f"{name}: the source stopped: {task.exception()!r}"
            assert time.monotonic() < deadline, f"{name}: only {attempts() - start} reconnects in 60 s"
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        fds1, tasks1, rss1 = await snapshot()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    tasks_after_stop = await settled_task_count(tasks_before_start)
    record(
        f"{name}: {attempts() - start} reconnects ({source.stats['connections']} got as far as subscribed) in {took:.1f}s; fds {fds0} -> {fds1}; "
        f"asyncio tasks {tasks0} -> {tasks1} (before start {tasks_before_start}, after stop {tasks_after_stop}); "
        f"RSS {mib(rss0)} -> {mib(rss1)}"
    )
    assert fds1 - fds0 <= 4, f"{name}: {fds1 - fds0} file descriptors more after {RECONNECTS} reconnects"
    assert tasks1 - tasks0 <= 2, f"{name}: {tasks1 - tasks0} asyncio tasks more after {RECONNECTS} reconnects"
    assert tasks_after_stop <= tasks_before_start, (
        f"{name}: tasks left behind after the source stopped: {sorted(describe(t) for t in asyncio.all_tasks())}"
    )
    assert rss1 - rss0 < 64 * 2**20, f"{name}: RSS grew {mib(rss1 - rss0)} over {RECONNECTS} reconnects"


async def test_okx_source_leaks_no_fds_or_tasks_across_1000_reconnects(make_pipeline: PipelineFactory) -> None:
    async with OkxSimulator() as sim:
        sim.close_on_subscribe = True
        config = scenario_config(sim, accounts=[sim.accounts["main"].okx_account()], **FAST)
        [source] = build_okx_sources(config, await make_pipeline())
        await cycle("okx", source, lambda: source.stats["connect_attempts"])


async def test_ripio_source_leaks_no_fds_or_tasks_across_1000_reconnects(make_pipeline: PipelineFactory) -> None:
    async with RipioSimulator(rest_rate_limit=100_000) as sim:
        sim.close_on_subscribe = True
        config = sim.config(accounts=[sim.accounts["main"].ripio_account()], rest_rate_per_second=100_000, **FAST)
        [source] = build_ripio_sources(config, await make_pipeline())
        await cycle("ripio", source, lambda: source.stats["connect_attempts"])
