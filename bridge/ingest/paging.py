"""Paged history reads of the poll engine: windows, pages, and what cannot be read goes to the DLQ.

A history endpoint answers one filter (a creation-time window, a list of ids, …) page by page, and
often accepts only windows up to some span. ``PagedReads`` owns the loops, once, for every polled
provider; the provider fills small hooks:

* ``fetch_page(rest, query, params)``: send one page's request, return the body and the monotonic
  time the answered request was sent;
* ``parse_rows(query, channel, body, received_at)``: its pure parser over one page (the parser
  contract of ``bridge.contract.parsing``: never raises; a page that is not the provider's is
  one ``refusal``);
* ``page_params(query, index)``: the paging parameters of the ``index``-th page (offset/limit by
  default); ``window_span_ms()``: the longest window the endpoint takes (none by default);
* ``channels`` (the channel of each path, for dead letters) and ``dead_letter_account()``.

What the engine does with them: ``sweep`` splits ``[start_ms, end_ms]`` into windows of at most the
span, newest first, and pages each; ``pages`` asks page after page until a short page (or, with
``PageQuery.until_empty``, an empty one), never more than ``max_pages``. A page the parser refuses
(a ``refusal``) is dead-lettered whole and ends that read; a parser that raises anything else costs
that page only (dead-lettered, ``bridge_parser_errors_total``, a log line), never the source. Bodies
the REST client recorded in ``RestClient.not_json`` (answered with success, not JSON; the request
was retried) are dead-lettered with their bytes before the page read again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bridge.contract.events import DeadLetter, Provider
from bridge.contract.parsing import ParseResult, item_bytes, provider_text, refused
from bridge.ingest.backfill import Page
from bridge.ingest.frames import utc_now
from bridge.ingest.rest import RestClient, TransientError
from bridge.observability import metrics

__all__ = ["PageQuery", "PagedReads", "windows"]


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One paged read: the endpoint, its filters (in the order they are sent), the page size."""

    path: str
    params: Mapping[str, str]
    limit: int
    until_empty: bool = False
    """Only an empty page ends the read (an endpoint whose page limits are not known for sure)."""
    scope: str | None = None
    """Whose rows besides the account's own (a sub-account, …), for the provider's hooks."""


def windows(start_ms: int, end_ms: int, span_ms: int | None) -> Iterator[tuple[int, int]]:
    """``[start_ms, end_ms]`` as windows of at most ``span_ms`` (both ends included, no overlap),
    newest first; one window without a span."""
    window_end = end_ms
    while True:
        window_start = start_ms if span_ms is None else max(start_ms, window_end - span_ms)
        yield window_start, window_end
        if window_start <= start_ms:
            return
        window_end = window_start - 1


class PagedReads:
    """The paging half of a poll source (``bridge.ingest.poll.PollSource`` inherits it)."""

    provider: ClassVar[Provider]
    display_name: ClassVar[str]
    max_pages: ClassVar[int] = 10_000
    """Guard against a server that keeps answering full pages: a read never loops forever."""
    channels: ClassVar[Mapping[str, str]] = {}
    """The channel of each path (dead letters name it); a path not listed names itself."""
    account_name: str
    clock: Callable[[], float]
    log: logging.Logger

    # -- provider hooks ------------------------------------------------------------------------

    async def fetch_page(self, rest: RestClient, query: PageQuery, params: Mapping[str, str]) -> tuple[Any, float]:
        """One page's request: its body and the monotonic time the answered request was sent."""
        raise NotImplementedError

    def parse_rows(self, query: PageQuery, channel: str, body: Any, received_at: str) -> list[ParseResult]:
        """The provider's parser over one page's body (never raises; a ``refusal`` for a page that is
        not the provider's)."""
        raise NotImplementedError

    def page_params(self, query: PageQuery, index: int) -> dict[str, str]:
        return {"offset": str(index * query.limit), "limit": str(query.limit)}

    def window_span_ms(self) -> int | None:
        """The longest window the endpoint accepts (``None``: any)."""
        return None

    def dead_letter_account(self) -> str | None:
        return self.account_name

    # -- the reads -----------------------------------------------------------------------------

    async def sweep(self, rest: RestClient, start_ms: int, end_ms: int, query_at: Callable[[int, int], PageQuery]) -> AsyncIterator[Page]:
        """Every row of ``[start_ms, end_ms]``, window by window (``query_at(first_ms, last_ms)``
        is the read of one window)."""
        for first, last in windows(start_ms, end_ms, self.window_span_ms()):
            async for page in self.pages(rest, query_at(first, last)):
                yield page

    async def pages(self, rest: RestClient, query: PageQuery) -> AsyncIterator[Page]:
        """Page after page of one read, the same filters each time, until a short page (with
        ``until_empty``: an empty one)."""
        for index in range(self.max_pages):
            body, sent_at = await self.fetch_page(rest, query, {**query.params, **self.page_params(query, index)})
            if rest.not_json:
                yield self._not_json(rest, sent_at)
            page = self._parse(query, body, sent_at)
            yield page
            if page.rows == 0 or (page.rows < query.limit and not query.until_empty):
                return
        raise TransientError(f"{self.display_name} account {self.account_name!r}: {query.path}: more than {self.max_pages} pages")

    def _not_json(self, rest: RestClient, sent_at: float) -> Page:
        """Bodies that claimed success but were not JSON (the request was retried): to the DLQ."""
        received_at, account = utc_now(self.clock), self.dead_letter_account()
        dead = [DeadLetter(self.provider, self.channels.get(path, path), reason, body, received_at, account) for path, body, reason in rest.not_json]
        rest.not_json.clear()
        return Page(list(dead), 0, sent_at)

    def _parse(self, query: PageQuery, body: Any, sent_at: float) -> Page:
        channel = self.channels.get(query.path, query.path)
        received_at = utc_now(self.clock)
        try:
            items = self.parse_rows(query, channel, body, received_at)
        except Exception as exc:  # a parser bug costs this page (dead-lettered), never the source
            metrics.PARSER_ERRORS.labels(self.provider.value).inc()
            self.log.exception("%s account %r: the parser failed on a %s page; dead-lettered", self.provider.value, self.account_name, channel)
            reason = f"parser failed: {type(exc).__name__}: {provider_text(str(exc), 300)}"
            dead = DeadLetter(self.provider, channel, reason, item_bytes(body), received_at, self.dead_letter_account())
            return Page([dead], len(body) if isinstance(body, list) else 0, sent_at)
        whole = refused(items)
        if whole is not None:  # not the provider's page: dead-letter it whole, end this read
            dead = DeadLetter(self.provider, channel, whole.reason, item_bytes(body), received_at, self.dead_letter_account())
            return Page([dead], 0, sent_at)
        return Page(items, len(body), sent_at)
