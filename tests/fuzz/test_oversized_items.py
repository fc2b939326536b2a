"""Items larger than the broker accepts (``message.max.bytes``, 1 MiB by default), which the
sources let in: WebSocket frames up to 8 MiB, webhook bodies up to ``max_body_bytes``.

Found by the frame fuzzing: such an event was lost (the event was refused, then its DLQ record
too), and while the refused batch was in flight the records behind it on the same partitions
waited for the pipeline's stuck-producer watchdog (45 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridge.contract.events import Account, DeadLetter, Direction, Provider, Source, Status, TransferEvent, build_event
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import TopicSettings
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.fuzz.report import outcome, tried

pytestmark = pytest.mark.kafka

RECEIVED = "2026-11-22T10:00:00.000Z"
OVER_BROKER_LIMIT = 1_100_000


def deposit(transfer_id: str, raw: dict[str, Any] | None = None, status: Status = Status.PENDING) -> TransferEvent:
    return build_event(
        provider=Provider.RIPIO,
        direction=Direction.DEPOSIT,
        transfer_id=transfer_id,
        status=status,
        provider_status=status.value,
        amount="1",
        asset="BTC",
        occurred_at="2026-11-22T09:59:59.000Z",
        received_at=RECEIVED,
        source=Source(channel="deposit"),
        account=Account(id="user-1"),
        raw=raw or {"id": transfer_id},
    )


async def test_an_event_too_large_for_the_broker_leaves_a_dead_letter_instead_of_vanishing(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    tried("pipeline.oversized")
    result = await asyncio.wait_for(pipeline.submit(deposit("huge", {"memo": "A" * OVER_BROKER_LIMIT})), 30)
    outcome("pipeline.oversized", str(result))
    assert result is Outcome.DEAD_LETTERED
    [letter] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1, timeout=10)
    assert b"huge" in letter.value or letter.headers.get("dlq_reason")


async def test_a_record_too_large_for_the_broker_does_not_hold_up_the_records_behind_it(
    make_pipeline: PipelineFactory,
) -> None:
    pipeline = await make_pipeline()
    # Partitions with history: the producer's sequence numbers there are past zero.
    warm_up = [DeadLetter(Provider.RIPIO, "stream", "r", b"warm-up", RECEIVED), deposit("big", {"n": 0}), deposit("small", {"n": 0})]
    assert await pipeline.submit_all(warm_up) == [Outcome.DEAD_LETTERED, Outcome.PUBLISHED, Outcome.PUBLISHED]
    tried("pipeline.oversized", 4)
    big_event = await pipeline.offer(deposit("big", {"memo": "A" * OVER_BROKER_LIMIT}, Status.COMPLETED))
    big_letter = await pipeline.offer(DeadLetter(Provider.RIPIO, "stream", "r", b"B" * OVER_BROKER_LIMIT, RECEIVED))
    small_letter = await pipeline.offer(DeadLetter(Provider.RIPIO, "stream", "r", b"small", RECEIVED))
    small_event = await pipeline.offer(deposit("small", status=Status.COMPLETED))
    started = time.monotonic()
    done, _ = await asyncio.wait({small_letter, small_event}, timeout=10)
    took = time.monotonic() - started
    for future in (big_event, big_letter):  # their fate is the other test's subject
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
    assert len(done) == 2, f"small records still waiting after {took:.1f}s behind an oversized one"
    assert small_letter.result() is Outcome.DEAD_LETTERED and small_event.result() is Outcome.PUBLISHED
    assert took < 5, f"small records took {took:.1f}s behind an oversized one"
