"""Gap recovery over Ripio's listing endpoints (the window of a pass is the engine's
``bridge.ingest.backfill.Window``; the listings filter on ``start_date``, i.e. creation time).

``listing_pages`` walks one listing with
Ripio's cursor (``nc`` → ``c``), falling back to page numbers (``pagination``) for servers without.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bridge.contract.timeutil import format_utc_ms
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.rest import RipioRest

__all__ = ["listing_pages", "MAX_PAGES", "start_date"]

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
"""Guard against a server that keeps pointing to a next page: a pass never loops forever."""


def start_date(epoch_ms: int) -> str:
    """``start_date`` parameter: RFC 3339 UTC with milliseconds (the listings' own date format)."""
    return format_utc_ms(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


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
