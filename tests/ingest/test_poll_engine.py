"""The poll engine on its own: a history-only provider (a tiny signed-less history server speaking
OKX's row format) polled into the real broker. What every polled provider must do is the
conformance suite's; these tests pin what the engine itself promises: windows and the cursor."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.contract.events import Provider, Via
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.ingest.backfill import Page
from bridge.ingest.frames import utc_now
from bridge.ingest.poll import PollSettings, PollSource
from bridge.ingest.rest import RestClient, TransientError, Verdict
from bridge.sources.okx import messages as okx_messages
from bridge.sources.okx.parse import parse_rows
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.support import fixture_bytes, serve_app

pytestmark = pytest.mark.kafka


class HistoryServer:
    """Serves ``/history`` rows (current state only, as a history API does) and records each window asked."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = copy.deepcopy(json.loads(fixture_bytes("okx/deposit-history.rest.json"))["data"])
        self.windows: list[tuple[int, int]] = []
        self.fail_next = 0
        self.answer_delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.windows.append((int(request.query["since"]), int(request.query["until"])))
        await asyncio.sleep(self.answer_delay)
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"code": "50001", "msg": "busy", "data": []}, status=503)
        return web.json_response({"code": "0", "msg": "", "data": self.rows})

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/history", self.handle)
        async with serve_app(app) as url:
            yield url


class History(RestClient):
    provider_name = "Example"

    def sign(self, method: str, path: str, query: str, body: str) -> Mapping[str, str]:
        return {}

    def verdict(self, error: Exception) -> Verdict:
        return Verdict.RETRY if isinstance(error, okx_messages.RestError) and error.http_status >= 500 else Verdict.FATAL


class ExamplePoll(PollSource):
    provider = Provider.OKX
    display_name = "Example"

    def __init__(self, config: PollSettings, url: str, pipeline: Pipeline, **options: Any):
        super().__init__(config, "main", pipeline, **options)
        self.url = url
        self.raise_once = False

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient:
        return History(session, self.url, "main", rate_per_second=50, max_retries=0)

    async def poll(self, rest: RestClient, since_ms: int, until_ms: int) -> AsyncIterator[Page]:
        if self.raise_once:
            self.raise_once = False
            raise RuntimeError("a bug in this provider's poll")
        rows, sent_at = await rest.request("GET", "/history", okx_messages.history_rows, {"since": str(since_ms), "until": str(until_ms)})
        yield Page(parse_rows("deposit-info", rows, received_at=utc_now(), via=Via.BACKFILL, uid="uid-1"), len(rows), sent_at)


def settings(tmp_path: Path, **overrides: Any) -> PollSettings:
    return PollSettings(
        enabled=True, poll_interval=0.2, poll_retry=0.05, poll_overlap=60, cursor_dir=tmp_path / "cursors", **overrides
    )


async def eventually(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(source: PollSource) -> AsyncIterator[PollSource]:
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        task.cancel()
        result = (await asyncio.gather(task, return_exceptions=True))[0]
        assert isinstance(result, asyncio.CancelledError), result  # a poll source only ends by being cancelled


async def test_each_state_is_published_once_and_the_cursor_survives_a_restart(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    server = HistoryServer()
    pipeline = await make_pipeline()
    async with server.serve() as url:
        async with running(ExamplePoll(settings(tmp_path), url, pipeline)) as source:
            await eventually(lambda: source.stats["polls"] >= 2)
            server.rows[0]["state"] = "1"  # the row changes in place between polls
            polls = source.stats["polls"]
            await eventually(lambda: source.stats["polls"] >= polls + 2)
        first_windows = list(server.windows)
        async with running(ExamplePoll(settings(tmp_path), url, pipeline)) as restarted:
            await eventually(lambda: restarted.stats["polls"] >= 1)
    records = await read_topic(kafka_bootstrap, topics.deposit, expect=3, timeout=10)
    assert sorted((json.loads(r.value)["transfer_id"], json.loads(r.value)["provider_status"]) for r in records) == [
        ("88165462", "2"), ("88165999", "1"), ("88165999", "17")
    ]
    since, until = first_windows[0]
    assert until - since == 86_400_000  # the first poll reads the initial lookback
    later_since, _ = server.windows[len(first_windows)]
    assert later_since >= first_windows[-1][1] - 60_000 - 1_000  # after the restart: the saved cursor minus the overlap
    assert restarted.stats["poll.published"] == 0


async def test_a_failing_poll_or_an_exception_in_the_provider_never_ends_polling(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    server = HistoryServer()
    server.fail_next = 1
    pipeline = await make_pipeline()
    async with server.serve() as url:
        source = ExamplePoll(settings(tmp_path), url, pipeline)
        source.raise_once = True
        async with running(source):
            await eventually(lambda: source.stats["polls"] >= 1)
    assert source.stats["poll_failures"] == 2 and source.health.detail["poll_error"] is None
    assert source.health.connected
    assert len(await read_topic(kafka_bootstrap, topics.deposit, expect=2, timeout=10)) == 2


async def test_a_cursor_is_advanced_only_after_every_item_of_the_cycle_was_acknowledged(
    make_pipeline: PipelineFactory, tmp_path: Path
) -> None:
    pipeline = await make_pipeline()
    server = HistoryServer()
    async with server.serve() as url:
        source = ExamplePoll(settings(tmp_path), url, pipeline)
        async with aiohttp.ClientSession() as http:
            rest = source.rest_client(http)
            await pipeline.close(timeout=5)  # nothing can be acknowledged any more
            with pytest.raises((TransientError, RuntimeError)):
                await source.poll_once(rest)
    assert source.cursor.load() is None


async def stopped_while_asking(pipeline: Pipeline, tmp_path: Path, *, answer_delay: float, grace: float) -> tuple[ExamplePoll, float]:
    """A source stopped right after its first request reached the server; how long the stop took."""
    server = HistoryServer()
    server.answer_delay = answer_delay
    async with server.serve() as url:
        source = ExamplePoll(settings(tmp_path, stop_grace=grace), url, pipeline)
        async with running(source):
            await eventually(lambda: len(server.windows) == 1)  # asked; the answer is on its way
            stopping = time.monotonic()
        return source, time.monotonic() - stopping


async def test_a_stopped_source_hands_over_what_the_poll_under_way_reads_within_the_grace(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    source, _ = await stopped_while_asking(await make_pipeline(), tmp_path, answer_delay=0.4, grace=3.0)
    assert source.stats["poll.published"] == 2 and source.cursor.load() is not None
    assert len(await read_topic(kafka_bootstrap, topics.deposit, expect=2, timeout=10)) == 2


async def test_a_stopped_source_waits_no_longer_than_the_grace_for_a_slow_answer(make_pipeline: PipelineFactory, tmp_path: Path) -> None:
    source, took = await stopped_while_asking(await make_pipeline(), tmp_path, answer_delay=5.0, grace=0.2)
    assert took < 1.5
    assert source.stats["poll.published"] == 0 and source.cursor.load() is None
