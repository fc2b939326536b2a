"""Gap recovery bookkeeping shared by every source that reads history: which window a pass reads,
and the live items held back while it runs.

``Window`` decides how far back a pass reads: since the start of the previous complete pass (the
last moment everything was known) minus an overlap, and far enough back to include every transfer
still open — a transfer created long ago can change state during a disconnect, and history
endpoints filter on creation time, not on update time. ``max_lookback`` bounds both.

``Held`` keeps live items received while a pass runs, with their monotonic receive time, so the
engine can merge them with the pass's pages by time: a page is a snapshot of the moment its
request was sent.

``BackfillLoop`` decides when passes run, for every engine that reads history (stream, webhook):
when asked (a reconnect, a sequence gap, an ingress outage, the start), every ``interval``
otherwise, and after a failed pass when its failure handler says. No exception ends it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.contract.events import TransferEvent
from bridge.contract.parsing import ParseResult
from bridge.contract.timeutil import to_epoch_ms

__all__ = ["Window", "Held", "BackfillCoordinator", "BackfillLoop", "Page"]


@dataclass(frozen=True, slots=True)
class Page:
    """One history page, parsed: its items, its row count, and when its request was sent."""

    items: list[ParseResult]
    rows: int
    sent_at: float


class Window:
    """Creation-time window of the next pass; the dedup gate drops what was already published."""

    def __init__(
        self,
        *,
        now_ms: int,
        initial_lookback_ms: int,
        overlap_ms: int,
        max_lookback_ms: int,
        open_cap: int = 100_000,
    ):
        self._covered_from = now_ms - initial_lookback_ms
        self._overlap = overlap_ms
        self._max_lookback = max_lookback_ms
        self._open: dict[str, int] = {}
        self._open_cap = open_cap
        self.last_event_ms: int | None = None

    @property
    def open_transfers(self) -> int:
        return len(self._open)

    def note(self, event: TransferEvent) -> None:
        self.last_event_ms = to_epoch_ms(event.occurred_at)
        if event.is_final:
            self._open.pop(event.key, None)
        elif event.created_at is not None and event.key not in self._open:
            if len(self._open) >= self._open_cap:
                self._open.pop(min(self._open, key=self._open.__getitem__))
            self._open[event.key] = to_epoch_ms(event.created_at)

    def since(self, now_ms: int) -> int:
        floor = now_ms - self._max_lookback
        for key in [k for k, created in self._open.items() if created < floor]:
            del self._open[key]  # older than anything we would read: give up tracking it
        start = self._covered_from - self._overlap
        if self._open:
            start = min(start, min(self._open.values()))
        return max(floor, start)

    def completed(self, pass_started_ms: int) -> None:
        """A pass that began at ``pass_started_ms`` read everything: later passes start there."""
        self._covered_from = max(self._covered_from, pass_started_ms)


class Held:
    """Live items held back while a backfill pass runs, each with its monotonic receive time."""

    def __init__(self, limit: int):
        self.items: deque[tuple[float, ParseResult]] = deque()
        self.limit = limit

    def add(self, item: ParseResult, at: float) -> None:
        self.items.append((at, item))

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit


class BackfillCoordinator:
    """Shared by the sources of one provider: whose pass is running, by account id, so a
    connection that also receives another account's pushes (an OKX master key receives its
    sub-accounts') holds them while that account's pass runs."""

    def __init__(self) -> None:
        self._running: dict[str, Held] = {}

    def begin(self, owner: str, held: Held) -> None:
        self._running[owner] = held

    def end(self, owner: str, held: Held) -> None:
        if self._running.get(owner) is held:
            del self._running[owner]

    def held_for(self, owner: str) -> Held | None:
        return self._running.get(owner)


class BackfillLoop:
    """When a source's passes run. ``request(reason)`` asks for one as soon as the running pass (if
    any) is done — a request made before ``run`` starts is the pass at start; without a request
    a pass runs every ``interval``. A pass's metric label (``trigger``) is ``interval`` for those,
    else the first of ``priority`` among the reasons asked, else ``requested``.

    ``run`` never ends on a pass's exception: ``failed(error)`` records it and returns how long
    to wait before the next pass. With ``leads`` (cluster mode) a replica that does not lead
    runs no pass: ``standby`` is called, the pass stays owed, and leadership is checked again
    every second."""

    def __init__(self, interval: float, *, priority: tuple[str, ...] = (), requested: str = "requested"):
        self.interval = interval
        self._priority = priority
        self._requested = requested
        self._reasons: set[str] = set()
        """Why a pass is owed: ``run`` starts one without waiting while this is not empty."""
        self._wake: asyncio.Future[None] | None = None
        """The wait in progress, resolved by ``request``: a future made for each wait, not an
        ``asyncio.Event`` kept per account (its waiter deque costs 760 bytes for the source's life)."""

    def request(self, reason: str) -> None:
        self._reasons.add(reason)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def run(
        self,
        run_pass: Callable[[str], Awaitable[object]],
        failed: Callable[[Exception], float],
        *,
        leads: Callable[[], bool] | None = None,
        standby: Callable[[], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        wait = self.interval
        owed = False  # a replica that stood by owes the pass it did not run
        while True:
            if not self._reasons and not owed:  # asked for during the last pass (or before the run): no wait
                wake = self._wake = loop.create_future()
                try:
                    async with asyncio.timeout(wait):  # not wait_for: no task per wait
                        await wake
                except TimeoutError:
                    pass
                finally:
                    self._wake = None
            label = next((r for r in self._priority if r in self._reasons), self._requested) if self._reasons or owed else "interval"
            owed = False
            if leads is not None and not leads():  # cluster mode: another replica runs the passes
                owed = True  # a pass is owed the moment this replica takes them over
                if standby is not None:
                    standby()
                await asyncio.sleep(1.0)
                continue
            self._reasons.clear()
            try:
                await run_pass(label)
                wait = self.interval
            except Exception as exc:  # noqa: BLE001 - this loop must outlive any single pass
                wait = failed(exc)
