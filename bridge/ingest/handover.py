"""Make-before-break, the stream engine's capability for a provider that announces a restart.

A connection with an ``upgrade_notice`` event (OKX notice 64008: the service will be upgraded,
reconnect) is replaced by a successor opened *before* it is closed. After the notice, reading goes
on for the backoff delay (notices right after every open are no tight loop); if the connection
ends meanwhile, that is an ordinary end. Otherwise a successor is opened — if that fails, the old
connection is kept and read to its end — then the old one is closed and read to the last frame it
delivered before the close: nothing pushed in between is lost, and order is kept, because the
successor's frames are read only after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine

from websockets.exceptions import ConnectionClosed

from bridge.ingest.frames import Notice, StreamConnection

__all__ = ["serve"]


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
    notice_event: asyncio.Event | None = getattr(connection, "upgrade_notice", None)
    if notice_event is None:
        await read(connection)
        return None
    reader = asyncio.create_task(read(connection), name=f"{name}-reader")
    notice = notice_event.future() if isinstance(notice_event, Notice) else asyncio.ensure_future(notice_event.wait())
    try:
        await asyncio.wait({reader, notice}, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():
            await asyncio.wait({reader}, timeout=delay())  # reading goes on meanwhile
        if reader.done():
            reader.result()
            return None
        try:
            successor = await open_successor()
        except Exception as exc:
            log.warning("%s: successor after notice failed (%s); keeping the old connection", who, failed(exc))
            await reader
            return None
        await connection.close()
        try:
            await reader  # drains what arrived before the close
        except (ConnectionClosed, OSError):
            pass
        except BaseException:
            await successor.close()
            raise
        log.info("%s: handed over to a new connection after notice", who)
        return successor
    finally:
        notice.cancel()
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, notice, return_exceptions=True)
