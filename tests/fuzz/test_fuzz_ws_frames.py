"""WebSocket sources (OKX, Ripio) fed hostile frames by their simulators, on a real pipeline.

Each example sends one frame on the live connection — a push bent field by field, broken bytes,
a binary frame that is not UTF-8, a control event with wrong types, random text — followed by a
valid sentinel push. Properties:

* the source never dies (its ``run`` task is still running) and reads on: the sentinel arrives;
* a frame that is not a JSON object is in the DLQ with its raw bytes;
* a frame over the client's size limit closes that connection only: the source reconnects and a
  transfer that changed meanwhile still arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import Phase, example, given
from hypothesis import strategies as st

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.delivery.settings import TopicSettings
from bridge.sources.okx.service import build_okx_sources
from bridge.sources.ripio.service import build_ripio_sources
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.conftest import PipelineFactory
from tests.fuzz.report import fuzz_settings, outcome, tried
from tests.fuzz.strategies import (
    OKX_DEPOSIT_PUSH,
    OKX_WITHDRAWAL_PUSH,
    RIPIO_DEPOSIT,
    RIPIO_WITHDRAWAL,
    nasty_values,
    nested,
    to_json,
    wire_bytes,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # every replay costs Kafka round trips
CLIENT_MAX_FRAME = 8 * 2**20  # both clients' websockets max_size


DLQ_HEAD_BYTES = 65_536


class Follower:
    """Collects the values a topic receives from now on."""

    def __init__(self, consumer: AIOKafkaConsumer):
        self.consumer = consumer
        self.values: list[bytes] = []

    def _holds(self, value: bytes) -> bool:
        """The value itself, or its first 64 KiB when it was too large for Kafka (the pipeline cuts it)."""
        head = value[:DLQ_HEAD_BYTES] if len(value) > DLQ_HEAD_BYTES else None
        return any(v in (value, head) for v in self.values)

    async def wait_for(self, value: bytes, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._holds(value):
            assert asyncio.get_running_loop().time() < deadline, f"no record {value[:80]!r} within {timeout}s"
            for messages in (await self.consumer.getmany(timeout_ms=100)).values():
                self.values.extend(m.value for m in messages)


@contextlib.asynccontextmanager
async def follow(bootstrap: str, topic: str, partitions: int) -> AsyncIterator[Follower]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 2**20, fetch_max_bytes=64 * 2**20,  # DLQ records up to the broker limit
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for partition in assigned:
            await consumer.position(partition)
        yield Follower(consumer)
    finally:
        await consumer.stop()


@dataclass
class Feed:
    """One running source, the simulator it reads from, and what it published."""

    provider: str
    task: asyncio.Task[None] = field(repr=False)
    source: Any = field(repr=False)
    send: Callable[[str | bytes], Awaitable[int]] = field(repr=False)
    subscribed: Callable[[], Awaitable[None]] = field(repr=False)
    sentinel: Callable[[int], bytes] = field(repr=False)
    dlq: Follower = field(repr=False)
    sentinels: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def alive(self) -> None:
        if self.task.done():
            raise AssertionError(f"the {self.provider} source stopped: {self.task.exception()!r}")


def okx_sentinel(n: int) -> bytes:
    item = {**OKX_DEPOSIT_PUSH["data"][0], "depId": f"sentinel-{n}", "state": "2"}
    return orjson.dumps({**OKX_DEPOSIT_PUSH, "arg": {"channel": "deposit-info", "uid": "44711200000001"}, "data": [item]})


def ripio_sentinel(n: int) -> bytes:
    body = {**RIPIO_DEPOSIT["body"], "id": f"SENTINEL-{n}", "status": "confirmed"}
    return to_json({"topic": "deposit", "timestamp": RIPIO_DEPOSIT["timestamp"], "body": body})


@contextlib.asynccontextmanager
async def running(task: asyncio.Task[None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        task.cancel()
        result = (await asyncio.gather(task, return_exceptions=True))[0]
        assert isinstance(result, asyncio.CancelledError), f"the source ended by itself: {result!r}"


@pytest.fixture
async def okx_feed(make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings) -> AsyncIterator[Feed]:
    async with OkxSimulator(idle_timeout=30.0) as sim:
        pipeline = await make_pipeline()
        config = scenario_config(sim, accounts=[sim.accounts["main"].okx_account()], backfill_enabled=False, config_error_retry=0.2)
        [source] = build_okx_sources(config, pipeline)
        task = asyncio.create_task(source.run(), name="okx-fuzz")
        async with running(task), follow(kafka_bootstrap, topics.dead_letter, topics.partitions) as dlq:
            await sim.wait_subscribed("main")
            yield Feed(
                "okx", task, source, lambda frame: sim.send_raw(frame, "main"),  # type: ignore[arg-type]
                lambda: sim.wait_subscribed("main"), okx_sentinel, dlq,
            )  # fmt: skip


@pytest.fixture
async def ripio_feed(make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings) -> AsyncIterator[Feed]:
    async with RipioSimulator() as sim:
        pipeline = await make_pipeline()
        config = sim.config(accounts=[sim.accounts["main"].ripio_account()], backfill_enabled=False, config_error_retry=0.2)
        [source] = build_ripio_sources(config, pipeline)
        task = asyncio.create_task(source.run(), name="ripio-fuzz")
        async with running(task), follow(kafka_bootstrap, topics.dead_letter, topics.partitions) as dlq:
            await sim.wait_subscribed("main")
            yield Feed(
                "ripio", task, source, lambda frame: sim.send_raw(frame, "main"),  # type: ignore[arg-type]
                lambda: sim.wait_subscribed("main"), ripio_sentinel, dlq,
            )  # fmt: skip


def as_frame(data: bytes) -> str | bytes:
    """Text frame when the bytes are UTF-8 (as providers send JSON), else a binary frame."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def is_json_object(data: bytes) -> bool:
    for read in (orjson.loads, loads_exact):
        try:
            if isinstance(read(data), dict):
                return True
        except (orjson.JSONDecodeError, JSONError):
            pass
    return False


async def feed_one(feed: Feed, data: bytes) -> None:
    tried(f"{feed.provider}.ws_frames")
    await feed.subscribed()  # a control event may have ended the last connection on purpose
    published = feed.source.stats["push.published"]
    assert await feed.send(as_frame(data)) == 1
    sentinel = feed.sentinel(next(feed.sentinels))
    assert await feed.send(sentinel.decode()) == 1
    deadline = time.monotonic() + 10
    while feed.source.stats["push.published"] <= published:
        feed.alive()
        if time.monotonic() > deadline:
            # the fuzzed frame legitimately ended the connection (an error event): both are gone
            outcome(f"{feed.provider}.ws_frames", "connection_ended")
            return
        await asyncio.sleep(0.005)
    feed.alive()
    if feed.provider == "okx" and data == b"pong":
        outcome(f"{feed.provider}.ws_frames", "keepalive")  # OKX's answer to our ping: protocol, not data
    elif not is_json_object(data):
        await feed.dlq.wait_for(data)
        outcome(f"{feed.provider}.ws_frames", "dead_letter")
    else:
        outcome(f"{feed.provider}.ws_frames", "object")


def frames(bases: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    control = st.fixed_dictionaries(
        {"event": nasty_values(), "code": nasty_values(), "msg": nasty_values()},
        optional={"connId": nasty_values(), "arg": nasty_values()},
    ).map(to_json)
    ripio_control = st.fixed_dictionaries(
        {"id": nasty_values()}, optional={"error_code": nasty_values(), "error": nasty_values(), "method": nasty_values(), "topic": nasty_values()}
    ).map(to_json)
    return st.one_of(
        st.sampled_from(bases).flatmap(lambda base: wire_bytes(base, floats=True)),
        control,
        ripio_control,
        st.text(max_size=200).map(str.encode),
        st.binary(min_size=1, max_size=200),
        st.sampled_from([b"", b"pong", b"ping", b"null", b"[]", b'"text"', b"{}", b"\xff\xfe", b"{" * 2000]),
    )


def okx_push(**fields: Any) -> bytes:
    return to_json({**OKX_DEPOSIT_PUSH, "data": [{**OKX_DEPOSIT_PUSH["data"][0], **fields}]})


def ripio_message(**fields: Any) -> bytes:
    return to_json({**RIPIO_DEPOSIT, "body": {**RIPIO_DEPOSIT["body"], **fields}})


@fuzz_settings(150, phases=NO_SHRINK)
@given(data=frames([OKX_DEPOSIT_PUSH, OKX_WITHDRAWAL_PUSH]))
@example(data=b'{"arg":{"channel":["deposit-info"]},"data":[]}')
@example(data=okx_push(depId="okx-deep", extra=nested(300)))
@example(data=okx_push(depId="okx-wei", amt=10**21))
@example(data=b'{"event":"error","code":{},"msg":[]}')
@example(data=b'["' + b"A" * 1_100_000 + b'"]')  # over Kafka's record limit: its head is dead-lettered
async def test_okx_source_survives_any_frame_and_dead_letters_what_is_not_an_object(okx_feed: Feed, data: bytes) -> None:
    await feed_one(okx_feed, data)


@fuzz_settings(150, phases=NO_SHRINK)
@given(data=frames([RIPIO_DEPOSIT, RIPIO_WITHDRAWAL]))
@example(data=b'{"id":1,"topic":{"deposit":1},"body":{}}')
@example(data=ripio_message(id="ripio-deep", extra=nested(300)))
@example(data=ripio_message(id="ripio-surrogate", user_id="u\udfff"))
@example(data=ripio_message(id="ripio-wei", amount=10**21))
@example(data=ripio_message(id="ripio-date", update_date="0001-01-01T00:00:00+01:00"))
@example(data=b'{"id":1,"topic":"deposit","timestamp":5,"body":{}}')
async def test_ripio_source_survives_any_frame_and_dead_letters_what_is_not_an_object(ripio_feed: Feed, data: bytes) -> None:
    await feed_one(ripio_feed, data)


async def oversized_frame(feed: Feed, bootstrap: str, topics: TopicSettings) -> None:
    target = f"{feed.provider}.ws_frames"
    tried(target)
    connections = feed.source.stats["connections"]
    oversized = b'{"arg":{"channel":"deposit-info"},"data":["' + b"A" * (CLIENT_MAX_FRAME + 1024) + b'"]}'
    assert await feed.send(oversized.decode()) == 1
    deadline = time.monotonic() + 15
    while feed.source.stats["connections"] <= connections:
        feed.alive()
        assert time.monotonic() < deadline, "the source did not reconnect after an oversized frame"
        await asyncio.sleep(0.02)
    outcome(target, "oversized_reconnect")
    await feed_one(feed, b'{"still": "reading"}')
    deposits = await read_topic(bootstrap, topics.deposit, idle=0.5, timeout=5)
    assert any(json.loads(r.value)["transfer_id"].lower().startswith("sentinel") for r in deposits)


async def test_okx_frame_over_the_size_limit_costs_one_reconnect_and_nothing_else(
    okx_feed: Feed, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    """The client refuses to buffer more than 8 MiB (close 1009), so the frame's bytes cannot be
    kept; the source reconnects and reads on."""
    await oversized_frame(okx_feed, kafka_bootstrap, topics)


async def test_ripio_frame_over_the_size_limit_costs_one_reconnect_and_nothing_else(
    ripio_feed: Feed, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    await oversized_frame(ripio_feed, kafka_bootstrap, topics)
