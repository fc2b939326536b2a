"""A whole frame's or page's items offered as one batch, against a real broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.contract.events import DeadLetter, Provider
from bridge.delivery.batch import Window
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import TopicSettings
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.support import RECEIVED
from tests.test_pipeline_kafka import withdrawal

pytestmark = pytest.mark.kafka


async def test_a_batch_with_states_of_one_transfer_publishes_them_in_order_and_drops_its_repeat(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    states = [withdrawal(confirmations=n) for n in range(4)] + [withdrawal("success", confirmations=9)]
    batch = [*states[:2], states[1], *states[2:], withdrawal(transfer_id="wd-2")]
    outcomes = await pipeline.submit_batch(batch)
    assert outcomes == [Outcome.PUBLISHED, Outcome.PUBLISHED, Outcome.DUPLICATE] + [Outcome.PUBLISHED] * 4
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=6)
    wd1 = [json.loads(r.value)["event_id"] for r in records if r.key == b"openxswitch:withdrawal:wd-1"]
    assert wd1 == [e.event_id for e in states]
    assert pipeline.in_flight == 0 and pipeline.queued == 0


async def test_a_batch_larger_than_the_window_waits_for_room_and_loses_nothing(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline(max_in_flight=3)
    batch = [withdrawal(transfer_id=f"wd-{n}") for n in range(20)]
    outcomes = await pipeline.submit_batch(batch)
    assert outcomes == [Outcome.PUBLISHED] * 20
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=20)
    assert len(records) == 20


async def test_a_dead_letter_in_a_batch_goes_to_the_dlq_beside_the_events(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    letter = DeadLetter(Provider.OKX, "withdrawal-info", "test: unreadable", b"{not json", RECEIVED)
    outcomes = await pipeline.submit_batch([withdrawal(), letter, withdrawal(transfer_id="wd-2")])
    assert outcomes == [Outcome.PUBLISHED, Outcome.DEAD_LETTERED, Outcome.PUBLISHED]
    [record] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert record.value == b"{not json"


async def test_the_window_hands_a_released_slot_to_the_first_waiter_and_skips_a_cancelled_one() -> None:
    window = Window(1)
    assert window.take_now() and not window.take_now()
    first = asyncio.ensure_future(window.take())
    second = asyncio.ensure_future(window.take())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    window.release()
    await asyncio.wait_for(second, 1.0)  # got the slot the cancelled waiter gave up
    assert not window.take_now()
    window.release()
    assert window.take_now()


async def test_a_batch_cancelled_while_waiting_for_room_sends_what_it_accepted_and_frees_the_rest(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline(max_in_flight=2)
    batch = [withdrawal(transfer_id=f"wd-{n}") for n in range(50)]
    offering = asyncio.ensure_future(pipeline.offer_batch(batch))
    await asyncio.sleep(0)  # the first two taken at once; the third waits for room
    offering.cancel()
    await asyncio.gather(offering, return_exceptions=True)
    assert offering.cancelled()
    assert await pipeline.drain(timeout=30)
    accepted = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)
    assert 2 <= len(accepted) < 50  # what was accepted went out; the rest was never taken
    after = await asyncio.wait_for(pipeline.submit_batch([withdrawal(transfer_id="after")]), 30)  # hangs if slots leaked
    assert after == [Outcome.PUBLISHED]
    assert pipeline.in_flight == 0 and pipeline.queued == 0
