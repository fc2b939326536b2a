"""When passes run (``bridge.ingest.backfill.BackfillLoop``), shared by the stream engine and the
webhook engine's backfill: what each pass is labelled, that no exception ends the loop, and that a
replica which does not lead runs no pass but owes one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from bridge.ingest.backfill import BackfillLoop


class Passes:
    """Records the label of every pass; ``fail`` makes the next ones raise."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.fail = 0
        self.failures: list[Exception] = []
        self.ran = asyncio.Event()

    async def run(self, label: str) -> None:
        self.labels.append(label)
        self.ran.set()
        if self.fail:
            self.fail -= 1
            raise KeyError("a bug inside the pass")

    def failed(self, wait: float) -> Callable[[Exception], float]:
        def record(error: Exception) -> float:
            self.failures.append(error)
            return wait

        return record

    async def next(self, timeout: float = 2.0) -> str:
        self.ran.clear()
        await asyncio.wait_for(self.ran.wait(), timeout)
        return self.labels[-1]


@contextlib.asynccontextmanager
async def running(loop: BackfillLoop, passes: Passes, wait: float = 60.0, **options: object) -> AsyncIterator[None]:
    task = asyncio.create_task(loop.run(passes.run, passes.failed(wait), **options))  # type: ignore[arg-type]
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled(), "only cancelling ends the loop"


async def test_a_request_before_the_start_is_the_pass_at_start_and_the_interval_runs_the_rest() -> None:
    loop, passes = BackfillLoop(0.1, priority=("gap", "reconnect"), requested="manual"), Passes()
    loop.request("reconnect")
    loop.request("gap")
    async with running(loop, passes):
        assert await passes.next() == "gap"  # one pass for both reasons, labelled by priority
        assert await passes.next() == "interval"
        loop.request("something else")
        assert await passes.next() == "manual"
    assert passes.labels.count("gap") == 1


async def test_no_request_means_no_pass_before_the_interval() -> None:
    loop, passes = BackfillLoop(60.0), Passes()
    async with running(loop, passes):
        await asyncio.sleep(0.1)
        assert passes.labels == []
        loop.request("after_outage")
        assert await passes.next() == "requested"


async def test_an_exception_inside_a_pass_never_ends_the_loop_and_the_next_pass_comes_after_the_handlers_wait() -> None:
    loop, passes = BackfillLoop(60.0), Passes()
    passes.fail = 2
    loop.request("start")
    async with running(loop, passes, wait=0.05):
        assert await passes.next() == "requested"
        assert await passes.next() == "interval"  # the handler's 0.05 s, not the 60 s interval
        assert await passes.next() == "interval"
        await asyncio.sleep(0.2)
    assert [type(e) for e in passes.failures] == [KeyError, KeyError]
    assert len(passes.labels) == 3  # after a good pass the wait is the interval again


@pytest.mark.parametrize("reason", ["start", "after_outage"])
async def test_a_replica_that_does_not_lead_stands_by_and_owes_the_pass_until_it_leads(reason: str) -> None:
    loop, passes = BackfillLoop(60.0), Passes()
    leading = False
    standby: list[int] = []
    loop.request(reason)
    async with running(loop, passes, leads=lambda: leading, standby=lambda: standby.append(1)):
        await asyncio.sleep(0.2)
        assert passes.labels == [] and len(standby) >= 1
        leading = True
        assert await passes.next(timeout=3.0) == "requested"  # checked again within a second


async def test_a_request_made_while_a_pass_runs_starts_the_next_pass_as_soon_as_it_is_done() -> None:
    loop, passes = BackfillLoop(60.0, priority=("gap", "reconnect"), requested="manual"), Passes()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def slow(label: str) -> None:
        await passes.run(label)
        if len(passes.labels) == 1:
            inside.set()
            await release.wait()

    loop.request("reconnect")
    task = asyncio.create_task(loop.run(slow, passes.failed(60.0)))
    try:
        await asyncio.wait_for(inside.wait(), 2)
        loop.request("other")
        loop.request("gap")
        release.set()
        assert await passes.next() == "gap"  # not after the 60 s interval
        await asyncio.sleep(0.1)
        assert passes.labels == ["reconnect", "gap"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
