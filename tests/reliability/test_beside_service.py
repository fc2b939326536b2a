"""``dlq replay`` / ``reconcile --repair`` beside a running service, on the same dedup store.

A service pipeline and a command's pipeline (``build_side_pipeline``, as both commands build it)
share the SQLite file or the exactly-once state topic, on the real broker. The command's gate
decides against what the service published after the command started; neither process's published
states are forgotten after a restart; what both publish repeats with one ``event_id``, at most once
per process."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from bridge.contract.events import TransferEvent, short_hash
from bridge.delivery.assemble import build_pipeline, build_side_pipeline
from bridge.delivery.dedup import FINAL_FLAG, state_id
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.settings import DedupSettings, TopicSettings
from bridge.delivery.state_follower import StateFollower
from bridge.delivery.store_kafka import KafkaStateStore
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.kafka_io import read_topic
from tests.test_pipeline_kafka import withdrawal

pytestmark = pytest.mark.kafka

Started = Callable[..., Awaitable[Pipeline]]


@pytest.fixture(params=["sqlite", "kafka"])
def dedup(request: pytest.FixtureRequest, tmp_path: Path) -> DedupSettings:
    suffix = uuid.uuid4().hex[:10]
    if request.param == "sqlite":
        return DedupSettings(store="sqlite", path=tmp_path / "dedup.sqlite3")
    return DedupSettings(store="kafka", state_topic=f"t.{suffix}.state", transactional_id=f"bridge-{suffix}")


@pytest.fixture
async def start(kafka_settings: KafkaSettings, topics: TopicSettings, dedup: DedupSettings) -> AsyncIterator[Started]:
    """``await start()``: the service's pipeline; ``await start(side=True)``: the command's."""
    running: list[Pipeline] = []

    async def factory(*, side: bool = False) -> Pipeline:
        if side:
            pipeline = build_side_pipeline(kafka_settings, topics, dedup, None, None, name="dlq-replay")
        else:
            pipeline = build_pipeline(kafka_settings, topics, dedup)
        await pipeline.start()
        running.append(pipeline)
        return pipeline

    yield factory
    for pipeline in running:
        if not pipeline._closing:
            await pipeline.close(timeout=10)


async def _visible(service: Pipeline, side: Pipeline) -> None:
    """Wait (not a timed assertion) until what the service acknowledged is where the command looks:
    the SQLite row written, or the state topic read by the command's follower."""
    await service.gate.flush()
    if isinstance(side.gate.peer, StateFollower):
        await side.gate.peer.caught_up()


async def _restored(kafka: KafkaSettings, dedup: DedupSettings) -> dict[int, bytes]:
    if dedup.store == "kafka":
        return dict(await asyncio.to_thread(KafkaStateStore(kafka, dedup.state_topic).load))
    store = SQLiteStore(dedup.path, reserve_name="check.reserve")
    try:
        return dict(store.load())
    finally:
        store.close()


async def test_the_commands_gate_decides_against_what_the_service_published_after_it_started(
    start: Started, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    service = await start()
    side = await start(side=True)  # started first: its restored state knows none of what follows
    finished, moving = [f"done-{n}" for n in range(5)], [f"open-{n}" for n in range(5)]
    assert await service.submit_all([withdrawal(transfer_id=t) for t in finished + moving]) == [Outcome.PUBLISHED] * 10
    assert await service.submit_all([withdrawal("success", confirmations=20, transfer_id=t) for t in finished]) == [
        Outcome.PUBLISHED
    ] * 5
    await _visible(service, side)

    # The replay brings older and equal states of transfers the service moved on meanwhile.
    # (an intermediate state the service never received: published, it would follow the final)
    assert await side.submit_all([withdrawal(confirmations=1, transfer_id=t) for t in finished]) == [Outcome.STALE] * 5
    assert await side.submit_all([withdrawal(transfer_id=t) for t in finished]) == [Outcome.DUPLICATE] * 5
    assert await side.submit_all([withdrawal("success", confirmations=20, transfer_id=t) for t in finished]) == [
        Outcome.DUPLICATE
    ] * 5
    assert await side.submit_all([withdrawal(transfer_id=t) for t in moving]) == [Outcome.DUPLICATE] * 5
    assert await side.submit_all([withdrawal(confirmations=3, transfer_id=t) for t in moving]) == [Outcome.PUBLISHED] * 5

    records = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)
    assert len(records) == 20  # 10 pending + 5 final from the service, 5 new states from the replay
    assert len({orjson.loads(r.value)["event_id"] for r in records}) == 20


async def test_neither_process_forgets_what_the_other_published_after_a_restart(
    start: Started, kafka_settings: KafkaSettings, dedup: DedupSettings
) -> None:
    service = await start()
    side = await start(side=True)
    transfers = [f"wd-{n}" for n in range(6)]
    assert await service.submit_all([withdrawal(transfer_id=t) for t in transfers]) == [Outcome.PUBLISHED] * 6
    await _visible(service, side)
    # The replay publishes a state the service never saw (final for half of them) ...
    replayed = [withdrawal("success", confirmations=20, transfer_id=t) if n % 2 else withdrawal(confirmations=1, transfer_id=t)
                for n, t in enumerate(transfers)]
    assert await side.submit_all(replayed) == [Outcome.PUBLISHED] * 6
    await side.close()
    # ... then the service, not knowing it, writes a later state of the same transfers: last writer
    # wins would drop the replay's state from the store.
    assert await service.submit_all([withdrawal(confirmations=2, transfer_id=t) for t in transfers]) == [Outcome.PUBLISHED] * 6
    await service.close()

    restarted = await start()
    assert await restarted.submit_all(replayed) == [Outcome.DUPLICATE] * 6
    outcomes = await restarted.submit_all([withdrawal(confirmations=5, transfer_id=t) for t in transfers])
    assert outcomes == [Outcome.PUBLISHED if n % 2 == 0 else Outcome.STALE for n in range(6)]  # finals stay final


async def test_both_running_at_once_on_interleaved_states_lose_nothing_and_repeat_at_most_once(
    start: Started, kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings, dedup: DedupSettings
) -> None:
    service = await start()
    side = await start(side=True)
    transfers = [f"wd-{n}" for n in range(40)]

    def states(transfer: str) -> list[TransferEvent]:
        return [withdrawal(confirmations=c, transfer_id=transfer) for c in range(3)] + [
            withdrawal("success", confirmations=20, transfer_id=transfer)
        ]

    rng = random.Random(17)

    async def feed(pipeline: Pipeline, events: list[TransferEvent]) -> list[Outcome]:
        futures = []
        for event in events:
            futures.append(await pipeline.offer(event))
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # let the other process's acks and flushes interleave
        return list(await asyncio.gather(*futures))

    in_order = [event for t in transfers for event in states(t)]
    replayed = [event for t in transfers for event in rng.sample(states(t), 2)]  # old dead letters, any order
    served, sided = await asyncio.gather(feed(service, in_order), feed(side, replayed))
    # The service may learn the command's marks while it runs (SQLite: its flusher reads them), so
    # some of its own states can already be decided: a repeat of one the command published, or an
    # intermediate state after a final the command published (stale) — never a new loss.
    assert set(served) <= {Outcome.PUBLISHED, Outcome.DUPLICATE, Outcome.STALE}
    await service.close()
    await side.close()

    records = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)
    per_id = Counter(orjson.loads(r.value)["event_id"] for r in records)
    assert set(per_id) <= {e.event_id for e in in_order}  # nothing but the transfers' states
    for event, outcome in zip(in_order, served, strict=True):
        if outcome is Outcome.STALE:  # only after the transfer's final, which is in Kafka
            assert states(event.transfer_id)[-1].event_id in per_id
        else:
            assert event.event_id in per_id
    assert max(per_id.values()) <= 2  # a repeat only across the two processes, with its one event_id
    assert sum(per_id.values()) == Counter(served)[Outcome.PUBLISHED] + Counter(sided)[Outcome.PUBLISHED]

    restored = await _restored(kafka_settings, dedup)
    for t in transfers:
        state = restored[short_hash(f"openxswitch:withdrawal:{t}")]
        assert state[0] & FINAL_FLAG
        assert all(state_id(event) in state for event in states(t) if event.event_id in per_id)  # every published state remembered


async def test_in_sqlite_mode_the_running_service_learns_what_the_command_published_without_a_restart(
    start: Started, dedup: DedupSettings
) -> None:
    if dedup.store != "sqlite":
        pytest.skip("the service follows a command's marks in the SQLite file only (README: the window that remains)")
    service = await start()
    side = await start(side=True)
    transfers = [f"wd-{n}" for n in range(4)]
    assert await service.submit_all([withdrawal(transfer_id=t) for t in transfers]) == [Outcome.PUBLISHED] * 4
    await _visible(service, side)
    finals = [withdrawal("success", confirmations=20, transfer_id=t) for t in transfers]
    assert await side.submit_all(finals) == [Outcome.PUBLISHED] * 4  # e.g. reconcile --repair: the provider's final
    await side.gate.flush()
    await service.gate.take_news()  # what the service's flusher does every tick (it may have done it already)

    # A late redelivery of an intermediate state the service never had: after the final, it is stale.
    assert await service.submit_all([withdrawal(confirmations=1, transfer_id=t) for t in transfers]) == [Outcome.STALE] * 4
    assert await service.submit_all(finals) == [Outcome.DUPLICATE] * 4
