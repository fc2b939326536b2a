"""The pieces that let a whole frame, page or request enter the pipeline at once.

A batch of N items used to cost N ``asyncio.Future`` objects, N done-callbacks scheduled on the loop
and N semaphore coroutines before anything reached Kafka. Here a batch has one future
(``BatchFate``), each item a slot in it (``Slot``, which the pipeline treats like the item's
future), and the in-flight window (``Window``) hands out a slot without a coroutine when there is
room. Nothing here decides anything: ordering, acks and retries stay in ``pipeline``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import StrEnum
from typing import Protocol

__all__ = ["Outcome", "Settle", "Window", "BatchFate", "Slot"]


class Outcome(StrEnum):
    PUBLISHED = "published"
    DUPLICATE = "duplicate"
    STALE = "stale_after_final"
    DEAD_LETTERED = "dead_lettered"


class Settle(Protocol):
    """Where the pipeline writes one item's fate: an ``asyncio.Future`` or a ``Slot`` of a batch."""

    def done(self) -> bool: ...

    def set_result(self, result: Outcome, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Window:
    """``asyncio.Semaphore`` semantics (FIFO waiters, a released slot goes to the first waiter), plus
    ``take_now``: a slot taken without awaiting a coroutine, the common case on the hot path."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int):
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled: the slot goes to the next one
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # handed over: the free count stays as it is
                return
        self._free += 1


class BatchFate:
    """The outcomes of one batch, in item order; ``future`` resolves once every item has one.

    An item's outcome is an ``Outcome`` or the exception it failed with (fenced producer, a dead
    letter too large for Kafka, ``CancelledError`` for items never accepted because the caller was
    cancelled half way)."""

    __slots__ = ("outcomes", "_left", "future")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop):
        self.outcomes: list[Outcome | BaseException | None] = [None] * size
        self._left = size
        self.future: asyncio.Future[list[Outcome | BaseException | None]] = loop.create_future()
        if not size:
            self.future.set_result(self.outcomes)

    def settle(self, index: int, outcome: Outcome | BaseException) -> None:
        if self.outcomes[index] is not None:
            return
        self.outcomes[index] = outcome
        self._left -= 1
        if not self._left and not self.future.done():
            self.future.set_result(self.outcomes)

    def settle_from(self, index: int, future: asyncio.Future[Outcome]) -> None:
        """Done-callback of an item that went the one-by-one way (``Pipeline.offer``)."""
        if future.cancelled():
            self.settle(index, asyncio.CancelledError())
            return
        error = future.exception()
        self.settle(index, error if error is not None else future.result())

    def abandon(self, start: int) -> None:
        """Items from ``start`` on were never accepted (the caller was cancelled)."""
        for index in range(start, len(self.outcomes)):
            self.settle(index, asyncio.CancelledError())


class Slot:
    """One item of a batch, as the pipeline's per-item ``Settle``."""

    __slots__ = ("_fate", "_index")

    def __init__(self, fate: BatchFate, index: int):
        self._fate = fate
        self._index = index

    def done(self) -> bool:
        return self._fate.outcomes[self._index] is not None

    def set_result(self, result: Outcome, /) -> None:
        self._fate.settle(self._index, result)

    def set_exception(self, exception: BaseException, /) -> None:
        self._fate.settle(self._index, exception)
