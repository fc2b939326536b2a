"""Make-before-break after an upgrade notice: ``serve`` and the handover task that exists only once a
notice came, against fake connections (the OKX source tests run it against the simulator)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bridge.ingest.frames import Frame, Notice
from bridge.ingest.handover import Handover, serve


class FakeConnection:
    """Frames put in by the test until closed; reading then drains what was put before the close."""

    def __init__(self, name: str, *, notice: bool = False) -> None:
        self.name = name
        if notice:
            self.upgrade_notice = Notice()
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.closed = False

    def push(self, text: str) -> None:
        self.queue.put_nowait(Frame(text.encode(), "2026-01-01T00:00:00.000Z"))

    def end(self) -> None:
        self.queue.put_nowait(None)

    async def frames(self) -> AsyncIterator[Frame]:
        while (frame := await self.queue.get()) is not None:
            yield frame
        raise ConnectionResetError(f"{self.name} closed")

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.end()


async def read(connection: FakeConnection) -> tuple[list[bytes], BaseException | None]:
    got: list[bytes] = []
    try:
        async for frame in connection.frames():
            got.append(frame.data)
    except Exception as exc:
        return got, exc
    return got, None


def handover(old: FakeConnection, delay: float, opened: list[FakeConnection | None]) -> Handover:
    async def open_successor() -> FakeConnection | None:
        successor = opened.pop(0)
        if successor is not None:
            successor.push("first frame of the successor")
        return successor

    return Handover(old, lambda: delay, open_successor, "test-handover")


async def test_after_the_delay_a_successor_is_opened_before_the_old_connection_is_closed_and_drained() -> None:
    old, new = FakeConnection("old"), FakeConnection("new")
    steps = handover(old, 0.05, [new])
    old.push("before the notice")
    steps.start()
    old.push("during the delay")
    frames, ended = await read(old)  # ends when the handover closes it
    assert frames == [b"before the notice", b"during the delay"] and isinstance(ended, ConnectionResetError)
    assert await steps.outcome() is new and old.closed and not new.closed


async def test_a_connection_that_ends_while_the_handover_waits_opens_no_successor() -> None:
    old = FakeConnection("old")
    opened: list[FakeConnection | None] = [FakeConnection("never")]
    steps = handover(old, 10.0, opened)
    steps.start()
    old.end()
    await read(old)
    assert await steps.outcome() is None
    assert len(opened) == 1 and steps.task is not None and steps.task.cancelled()


async def test_a_successor_that_cannot_be_opened_leaves_the_old_connection_open_until_it_ends() -> None:
    old = FakeConnection("old")
    steps = handover(old, 0.0, [None])
    steps.start()
    await asyncio.sleep(0.05)
    assert steps.task is not None and steps.task.done() and not old.closed
    old.push("still read")
    old.end()
    assert (await read(old))[0] == [b"still read"]
    assert await steps.outcome() is None


async def test_a_bug_while_opening_ends_the_reading_and_is_raised() -> None:
    old = FakeConnection("old")

    async def broken() -> FakeConnection | None:
        raise KeyError("bug")

    steps = Handover(old, lambda: 0.0, broken, "test-handover")
    steps.start()
    await read(old)  # ends: the handover closed the connection
    assert old.closed
    with pytest.raises(KeyError):
        await steps.outcome()


async def test_abandoning_after_the_successor_opened_closes_it() -> None:
    old, new = FakeConnection("old"), FakeConnection("new")
    steps = handover(old, 0.0, [new])
    steps.start()
    await asyncio.sleep(0.05)
    await steps.abandon()
    assert new.closed and old.closed


async def test_without_a_notice_there_is_no_task_and_no_successor() -> None:
    old = FakeConnection("old")
    steps = handover(old, 0.0, [FakeConnection("never")])
    old.end()
    await read(old)
    assert steps.task is None and await steps.outcome() is None


def test_a_notice_calls_its_listener_once_and_at_once_when_already_raised() -> None:
    calls: list[str] = []
    notice = Notice()
    notice.listen(lambda: calls.append("first"))
    notice.set()
    notice.set()
    assert calls == ["first"] and notice.is_set()
    notice.listen(lambda: calls.append("late"))
    assert calls == ["first", "late"]
    quiet = Notice()
    quiet.listen(lambda: calls.append("never"))
    quiet.listen(None)
    quiet.set()
    assert calls == ["first", "late"]


class Reader:
    """The engine's ``read``: what each connection delivered, in the order read."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    async def __call__(self, connection: FakeConnection) -> None:
        async for frame in connection.frames():
            self.got.append((connection.name, frame.data))


def serving(old: FakeConnection, reader: Reader, open_successor: object, delay: float = 0.0) -> asyncio.Task[object]:
    return asyncio.ensure_future(
        serve(
            old,
            reader,  # type: ignore[arg-type]
            open_successor,  # type: ignore[arg-type]
            delay=lambda: delay,
            failed=lambda exc: f"refused: {exc}",
            log=logging.getLogger("tests.handover"),
            who="test account",
            name="test",
        )
    )


async def test_serve_after_a_notice_returns_the_successor_once_the_old_connection_delivered_all_it_had() -> None:
    old, new = FakeConnection("old", notice=True), FakeConnection("new", notice=True)
    reader = Reader()

    async def open_successor() -> FakeConnection:
        old.push("pushed while the successor opened")
        return new

    served = serving(old, reader, open_successor, delay=0.02)
    old.push("before the notice")
    await asyncio.sleep(0.01)
    old.upgrade_notice.set()
    old.push("during the delay")
    assert await asyncio.wait_for(served, 2) is new
    assert reader.got == [("old", b"before the notice"), ("old", b"during the delay"), ("old", b"pushed while the successor opened")]
    assert old.closed and not new.closed


async def test_serve_keeps_the_old_connection_when_the_successor_is_refused_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    old = FakeConnection("old", notice=True)
    reader = Reader()

    async def refused() -> FakeConnection:
        raise ConnectionRefusedError("busy")

    caplog.set_level(logging.WARNING, "tests.handover")
    served = serving(old, reader, refused)
    old.upgrade_notice.set()
    await asyncio.sleep(0.05)
    assert not served.done() and not old.closed
    old.push("still read")
    old.end()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(served, 2)
    assert reader.got == [("old", b"still read")]
    assert "successor after notice failed (refused: busy); keeping the old connection" in caplog.text


async def test_serve_cancelled_after_the_successor_opened_closes_it() -> None:
    """The successor is open and the old connection closed, but a frame is still being handled
    (the pipeline is slow) when the source is stopped: the successor is not left open."""
    old, new = FakeConnection("old", notice=True), FakeConnection("new")
    busy, release = asyncio.Event(), asyncio.Event()

    async def slow_read(connection: FakeConnection) -> None:
        async for _frame in connection.frames():
            busy.set()
            await release.wait()

    async def open_successor() -> FakeConnection:
        return new

    served = serving(old, slow_read, open_successor)  # type: ignore[arg-type]
    old.push("slow to handle")
    await asyncio.wait_for(busy.wait(), 2)
    old.upgrade_notice.set()
    await asyncio.sleep(0.05)
    assert old.closed and not new.closed  # handed over, the old reading not yet drained
    served.cancel()
    with pytest.raises(asyncio.CancelledError):
        await served
    assert new.closed


async def test_serve_reads_a_connection_without_a_notice_in_the_callers_task_alone() -> None:
    old = FakeConnection("old")
    reader = Reader()
    before = asyncio.all_tasks()
    served = serving(old, reader, None)
    old.push("only frame")
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() - before == {served}
    old.end()
    with pytest.raises(ConnectionResetError):
        await served
    assert reader.got == [("old", b"only frame")]


async def test_serve_refuses_an_upgrade_notice_that_is_not_a_notice() -> None:
    old = FakeConnection("old")
    old.upgrade_notice = asyncio.Event()  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="upgrade_notice must be a bridge.ingest.frames.Notice"):
        await serving(old, Reader(), None)
