"""Make-before-break, the stream engine's capability for a provider that announces a restart.

A connection with an ``upgrade_notice`` (``frames.Notice``, raised on OKX notice 64008: the service
will be upgraded, reconnect) is replaced by a successor opened *before* it is closed. After the
notice, reading goes on for the backoff delay (notices right after every open are no tight loop);
if the connection ends meanwhile, that is an ordinary end. Otherwise a successor is opened — if
that fails, the old connection is kept and read to its end — then the old one is closed and read to
the last frame it delivered before the close: nothing pushed in between is lost, and order is kept,
because the successor's frames are read only after.

The connection is read in the caller's own task. Only a notice starts a second task, a
``Handover``, for the seconds of the handover: an idle connection costs no reader task, no future
and no waiter queue beside it for a notice that rarely comes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine

from websockets.exceptions import ConnectionClosed

from bridge.ingest.frames import Notice, StreamConnection

__all__ = ["serve", "Handover"]


async def serve(
    connection: StreamConnection,
    read: Callable[[StreamConnection], Coroutine[object, object, None]],
    open_successor: Callable[[], Awaitable[StreamConnection]],
    *,
    delay: Callable[[], float],
    failed: Callable[[Exception], str],
    log: logging.Logger,
    who: str,
    name: str,
) -> StreamConnection | None:
    """``read`` the connection until it ends (raises, or returns None when the stream ended), or
    return the successor it handed over to. ``delay``: how long to keep reading after a notice;
    ``failed``: the message of a successor that could not be opened (raises if it is a bug)."""
    notice = getattr(connection, "upgrade_notice", None)
    if notice is None:
        await read(connection)
        return None
    if not isinstance(notice, Notice):
        raise TypeError(f"{who}: upgrade_notice must be a bridge.ingest.frames.Notice, not {type(notice).__name__}")

    async def successor_or_none() -> StreamConnection | None:
        try:
            return await open_successor()
        except Exception as exc:
            log.warning("%s: successor after notice failed (%s); keeping the old connection", who, failed(exc))
            return None

    handover = Handover(connection, delay, successor_or_none, f"{name}-handover")
    notice.listen(handover.start)
    ended: Exception | None = None
    try:
        try:
            await read(connection)
        except Exception as exc:  # what it means depends on whether a successor is ready
            ended = exc
        finally:
            notice.listen(None)
        successor = await handover.outcome()
    except BaseException:
        await handover.abandon()
        raise
    if successor is None:
        if ended is not None:
            raise ended
        return None
    if ended is not None and not isinstance(ended, (ConnectionClosed, OSError)):
        await successor.close()
        raise ended
    log.info("%s: handed over to a new connection after notice", who)
    return successor


class Handover:
    """The steps after a notice, in a task that exists only from the notice on: wait for the delay
    while reading goes on, open a successor, then close the old connection, whose reading drains
    what arrived before the close and ends. Once that reading ended, ``outcome()`` is the successor."""

    __slots__ = ("connection", "delay", "open_successor", "name", "task", "opening")

    def __init__(
        self,
        connection: StreamConnection,
        delay: Callable[[], float],
        open_successor: Callable[[], Awaitable[StreamConnection | None]],
        name: str,
    ):
        self.connection = connection
        self.delay = delay
        """The pause before opening the successor, asked when the notice comes (the backoff's)."""
        self.open_successor = open_successor
        """Opens the successor; None when that failed and the old connection is kept."""
        self.name = name
        self.task: asyncio.Task[StreamConnection | None] | None = None
        self.opening = False

    def start(self) -> None:
        """The notice came: begin (the transport's ``Notice`` calls this)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _run(self) -> StreamConnection | None:
        await asyncio.sleep(self.delay())  # reading goes on meanwhile
        self.opening = True
        try:
            successor = await self.open_successor()
        except Exception:
            await self.connection.close()  # a bug, not a refusal: end the reading so the engine sees it
            raise
        if successor is None:
            return None  # keep reading the old connection until it ends
        try:
            await self.connection.close()  # its reading drains what arrived before the close, then ends
        except BaseException:
            await successor.close()
            raise
        return successor

    async def outcome(self) -> StreamConnection | None:
        """Once the old connection's reading ended: the successor, or None — no notice came, the
        connection ended while the handover still waited for its delay, or the successor could
        not be opened. A successor being opened is waited for. Raises what the handover raised."""
        task = self.task
        if task is None:
            return None
        if not task.done() and not self.opening:
            task.cancel()
        await asyncio.wait({task})
        if task.cancelled():
            return None
        error = task.exception()
        if error is not None:
            raise error
        return task.result()

    async def abandon(self) -> None:
        """The engine stops serving (cancelled, or it failed): stop, and close a successor opened."""
        task = self.task
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            successor = task.result()
            if successor is not None:
                await successor.close()
