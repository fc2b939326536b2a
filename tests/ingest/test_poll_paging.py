"""The poll engine's paged reads on their own: a provider that only fills the hooks (fetch one page,
parse its rows, the longest window) gets window splitting, offset paging and dead-lettering. The
history server pages OKX-format rows by ``offset``/``limit`` inside a ``since``/``until`` window."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.contract.events import DeadLetter, Provider, TransferEvent, Via
from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.parsing import ParseResult, refusal
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.ingest.backfill import Page
from bridge.ingest.paging import PageQuery, windows
from bridge.ingest.poll import PollSettings, PollSource
from bridge.ingest.rest import RestClient, TransientError, Verdict
from bridge.observability import metrics
from bridge.sources.okx.parse import parse_rows
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.support import serve_app

HOUR = 3_600_000


def test_windows_cover_the_span_newest_first_without_overlap() -> None:
    assert list(windows(0, 25, 10)) == [(15, 25), (4, 14), (0, 3)]
    assert list(windows(0, 10, 10)) == [(0, 10)]
    assert list(windows(5, 100, None)) == [(5, 100)]
    assert list(windows(7, 7, 3)) == [(7, 7)]


class PagedServer:
    """``GET /paged?since&until&offset&limit``: the rows created in the window, newest first."""

    def __init__(self, now_ms: int, count: int = 7):
        self.rows = [
            {"depId": f"9000{i}", "ccy": "USDT", "chain": "USDT-TRC20", "amt": f"{i + 1}.5", "state": "2",
             "ts": str(now_ms - i * 40 * 60_000), "txId": f"{i:064x}", "to": "T" + "x" * 33}
            for i in range(count)
        ]
        self.queries: list[dict[str, int]] = []
        self.not_an_array_for: set[int] = set()
        """``since`` of the windows answered with an object instead of an array (not this provider's page)."""
        self.not_json_once = False

    async def handle(self, request: web.Request) -> web.Response:
        query = {name: int(request.query[name]) for name in ("since", "until", "offset", "limit")}
        self.queries.append(query)
        if self.not_json_once:
            self.not_json_once = False
            return web.Response(body=b'[{"depId": ', content_type="application/json")
        if query["since"] in self.not_an_array_for:
            return web.json_response({"rows": "elsewhere"})
        rows = [r for r in self.rows if query["since"] <= int(r["ts"]) <= query["until"]]
        rows.sort(key=lambda r: -int(r["ts"]))
        return web.json_response(rows[query["offset"] : query["offset"] + query["limit"]])

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/paged", self.handle)
        async with serve_app(app) as url:
            yield url


class PagedHistory(RestClient):
    """Records answers that claimed success but were not JSON (the engine dead-letters them)."""

    provider_name = "Example"

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        return {}

    def verdict(self, error: Exception) -> Verdict:
        return Verdict.FATAL

    async def send(self, method: str, path: str, query: str) -> tuple[int, bytes, float | None]:
        status, payload, retry_after = await super().send(method, path, query)
        try:
            loads_exact(payload)
        except JSONError as exc:
            self.not_json.append((path, payload, f"response is not JSON: {exc}"))
        return status, payload, retry_after


class PagedPoll(PollSource):
    """A polled provider that writes only its hooks: no paging, splitting or DLQ code of its own."""

    provider = Provider.OKX
    display_name = "Example"
    channels = {"/paged": "deposit-info"}

    def __init__(self, config: PollSettings, url: str, pipeline: Pipeline, *, limit: int = 2, span_ms: int = HOUR):
        super().__init__(config, "main", pipeline)
        self.url, self.limit, self.span_ms = url, limit, span_ms
        self.parser_bugs = 0

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        return PagedHistory(session, self.url, "main", rate_per_second=200, max_retries=1, retry_initial=0.01)

    def window_span_ms(self) -> int:
        return self.span_ms

    async def fetch_page(self, rest: RestClient, query: PageQuery, params: Mapping[str, str]) -> tuple[Any, float]:
        return await rest.request("GET", query.path, lambda body, status: body, params)

    def parse_rows(self, query: PageQuery, channel: str, body: Any, received_at: str) -> list[ParseResult]:
        if self.parser_bugs:
            self.parser_bugs -= 1
            raise RuntimeError("a bug in this provider's parser")
        if not isinstance(body, list):
            reason = f"a page is a list, not a {type(body).__name__}"
            return [refusal(reason, provider=Provider.OKX, channel=channel, payload=body, received_at=received_at)]
        return parse_rows(channel, body, received_at=received_at, via=Via.BACKFILL, uid="uid-1")

    def poll(self, rest: RestClient, since_ms: int, until_ms: int) -> AsyncIterator[Page]:
        return self.sweep(rest, since_ms, until_ms, lambda first, last: PageQuery("/paged", {"since": str(first), "until": str(last)}, self.limit))


def settings(tmp_path: Path) -> PollSettings:
    return PollSettings(enabled=True, poll_interval=0.2, poll_initial_lookback=6 * 3600, cursor_dir=tmp_path / "cursors")


async def read_all(source: PagedPoll, url: str, start_ms: int, end_ms: int) -> list[Page]:
    async with aiohttp.ClientSession() as http:
        rest = source.rest_client(http)
        return [page async for page in source.poll(rest, start_ms, end_ms)]


@pytest.mark.kafka
async def test_a_poll_is_split_into_windows_and_paged_until_a_short_page_and_every_row_is_published_once(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    server = PagedServer(now_ms)
    async with server.serve() as url:
        source = PagedPoll(settings(tmp_path), url, await make_pipeline())
        async with aiohttp.ClientSession() as http:
            assert await source.poll_once(source.rest_client(http)) == 7
    records = await read_topic(kafka_bootstrap, topics.deposit, expect=7, timeout=10)
    assert sorted(json.loads(r.value)["transfer_id"] for r in records) == sorted(r["depId"] for r in server.rows)
    spans = sorted({(q["since"], q["until"]) for q in server.queries}, reverse=True)
    assert all(until - since <= HOUR for since, until in spans)
    assert all(newer[0] == older[1] + 1 for newer, older in zip(spans, spans[1:], strict=False))  # contiguous, no overlap
    assert spans[0][1] - spans[-1][0] == 6 * HOUR  # the windows cover the first poll's lookback, no more
    for since, until in spans:
        offsets = [q["offset"] for q in server.queries if (q["since"], q["until"]) == (since, until)]
        answered = [int(r["ts"]) for r in server.rows if since <= int(r["ts"]) <= until]
        assert offsets == [2 * i for i in range(len(answered) // 2 + 1)]  # until a short (or empty) page
    assert source.cursor.load() == spans[0][1]


async def test_a_page_the_parser_refuses_or_fails_on_and_an_answer_that_is_not_json_are_dead_lettered(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    server = PagedServer(now_ms, count=6)  # rows at 0, 40, 80, … 200 minutes back
    first_window = (now_ms - HOUR, now_ms)
    server.not_an_array_for = {now_ms - 3 * HOUR - 2}  # the third window is not this provider's answer
    server.not_json_once = True
    failures = metrics.PARSER_ERRORS.labels(Provider.OKX.value)._value.get()
    async with server.serve() as url:
        source = PagedPoll(settings(tmp_path), url, pipeline=None, limit=2)  # type: ignore[arg-type]
        source.parser_bugs = 1
        pages = await read_all(source, url, now_ms - 4 * HOUR, now_ms)
    dead = [item for page in pages for item in page.items if isinstance(item, DeadLetter)]
    events = [item for page in pages for item in page.items if isinstance(item, TransferEvent)]
    assert [d.reason.split(":")[0] for d in dead] == ["response is not JSON", "parser failed", "a page is a list, not a dict"]
    assert dead[0].raw == b'[{"depId": '
    assert [(d.channel, d.account_id) for d in dead] == [("deposit-info", "main")] * 3
    assert [row["depId"] for row in json.loads(dead[1].raw)] == ["90000", "90001"]  # the failed page, whole
    assert metrics.PARSER_ERRORS.labels(Provider.OKX.value)._value.get() == failures + 1
    # the read went on after the failed page and after the refused window (whose row 90004 is in the DLQ's page)
    assert sorted(e.transfer_id for e in events) == ["90002", "90003", "90005"]
    assert (server.queries[0]["since"], server.queries[0]["until"]) == first_window


async def test_a_read_that_never_ends_is_bounded_by_max_pages(tmp_path: Path) -> None:
    server = PagedServer(int(time.time() * 1000), count=50)
    async with server.serve() as url:
        source = PagedPoll(settings(tmp_path), url, pipeline=None, limit=1, span_ms=10 * HOUR)  # type: ignore[arg-type]
        source.max_pages = 3  # type: ignore[misc]
        with pytest.raises(TransientError, match="more than 3 pages"):
            await read_all(source, url, 0, int(time.time() * 1000))
    assert [q["offset"] for q in server.queries] == [0, 1, 2]
