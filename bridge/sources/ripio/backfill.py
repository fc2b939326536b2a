"""Gap recovery over Ripio's listing endpoints: which window to read, and its pages.

``Window`` decides how far back a pass reads: since the start of the previous complete pass (the
last moment everything was known) minus an overlap, and far enough back to include every transfer
still open — a transfer created long ago can change state during a disconnect, and the listings
filter on ``start_date`` (creation), not on update time. ``listing_pages`` walks one listing with
Ripio's cursor (``nc`` → ``c``), falling back to page numbers (``pagination``) for servers without.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from bridge.events import TransferEvent
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.rest import RipioRest
from bridge.timeutil import format_utc_ms, to_epoch_ms

__all__ = ["Window", "listing_pages", "MAX_PAGES", "start_date"]

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
"""Guard against a server that keeps pointing to a next page: a pass never loops forever."""


def start_date(epoch_ms: int) -> str:
    """``start_date`` parameter: RFC 3339 UTC with milliseconds (the listings' own date format)."""
    return format_utc_ms(datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc))


async def listing_pages(
    rest: RipioRest,
    path: str,
    topic: str,
    *,
    since_ms: int,
    currency: str | None = None,
    page_size: int = 200,
) -> AsyncIterator[tuple[list[Any], float]]:
    """Pages of rows created at or after ``since_ms``, each with the monotonic time its request was
    sent: the moment that page's snapshot is ordered against live messages."""
    cursor: str | None = None
    page_number: int | None = None
    seen_cursors: set[str] = set()
    for _ in range(MAX_PAGES):
        params: dict[str, str] = {}
        if currency:
            params["currency_code"] = currency
        params["start_date"] = start_date(since_ms)
        params["page_size"] = str(page_size)
        if cursor is not None:
            params["c"] = cursor
        elif page_number is not None:
            params["current_page"] = str(page_number)
        page, sent_at = await rest.request("GET", path, lambda body, status: m.listing_page(topic, body, status), params)
        yield page.rows, sent_at
        if page.next_cursor is not None:
            if page.next_cursor in seen_cursors:
                log.warning("ripio account %r: %s cursor repeats; stopping this pass", rest.account, path)
                return
            seen_cursors.add(page.next_cursor)
            cursor, page_number = page.next_cursor, None
            continue
        if cursor is None:
            following = page.next_page_number()
            if following is not None and page.rows:
                page_number = following
                continue
        return
    raise m.RestError(200, None, f"{path}: more than {MAX_PAGES} pages")


class Window:
    """Creation-time window of the next pass.

    Everything created after the previous complete pass began is read again (minus ``overlap``),
    and every transfer still open is included by reaching back to its creation; the dedup gate
    drops what was already published. ``max_lookback`` bounds both.
    """

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
