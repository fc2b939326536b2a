"""The read loops' idle timeout: ``asyncio.timeout`` per receive, with one timer instead of one per frame."""

from __future__ import annotations

import asyncio

import pytest

from bridge.ingest.frames import IdleTimer


async def test_frames_arriving_within_the_timeout_never_time_out_even_past_the_first_deadline() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def feed() -> None:
        for n in range(12):
            await asyncio.sleep(0.02)
            queue.put_nowait(n)

    feeder = asyncio.create_task(feed())
    idle = IdleTimer()
    received = [await idle.wait(queue.get, 0.1) for _ in range(12)]  # 0.24 s in all, 0.02 s apart
    idle.close()
    await feeder
    assert received == list(range(12))


async def test_silence_longer_than_the_timeout_is_a_timeout_and_the_next_receive_still_works() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    idle = IdleTimer()
    with pytest.raises(TimeoutError):
        await idle.wait(queue.get, 0.05)
    queue.put_nowait("after")
    assert await idle.wait(queue.get, 0.05) == "after"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    idle.close()


async def test_a_shorter_timeout_after_a_longer_one_fires_at_the_shorter_deadline() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    idle = IdleTimer()
    queue.put_nowait("x")
    await idle.wait(queue.get, 30.0)  # arms a timer 30 s out
    began = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await idle.wait(queue.get, 0.05)  # the pong wait
    idle.close()
    assert asyncio.get_running_loop().time() - began < 25.0  # at its own deadline, not the earlier 30 s one


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def reader() -> str:
        idle = IdleTimer()
        try:
            return await idle.wait(queue.get, 10.0)
        finally:
            idle.close()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
