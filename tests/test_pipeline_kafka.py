"""The core pipeline against a real broker: one behaviour per test."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from bridge.contract.events import SCHEMA_VERSION, DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.sources.openxswitch.parse import parse_delivery
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.support import RECEIVED, fixture_bytes

pytestmark = pytest.mark.kafka

BIG_AMOUNT = "12345678901234567890.1234567891"  # 30 significant digits


def withdrawal(status: str = "pending", *, amount: str = "9", transfer_id: str = "wd-1", confirmations: int = 0) -> TransferEvent:
    body = loads_exact(fixture_bytes("openxswitch/withdraw.unconfirmed.json"))
    body["params"].update(
        {"status": status, "amount": loads_exact(amount.encode()), "id": transfer_id, "confirmation": confirmations}
    )
    [event] = parse_delivery(body, received_at=RECEIVED)
    assert isinstance(event, TransferEvent), event
    return event


async def test_an_event_round_trips_with_key_headers_and_a_30_digit_amount(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    event = withdrawal(amount=BIG_AMOUNT)
    assert await pipeline.submit(event) is Outcome.PUBLISHED

    [record] = await read_topic(kafka_bootstrap, topics.withdrawal, expect=1)
    assert record.key == b"openxswitch:withdrawal:wd-1"
    value = json.loads(record.value)
    assert value["amount"] == BIG_AMOUNT and value["event_id"] == event.event_id
    assert b'"amount":' + BIG_AMOUNT.encode() in record.value  # raw keeps the JSON number digits
    assert record.headers["ce_id"] == event.event_id.encode()
    assert record.headers["ce_type"] == b"transfer.withdrawal.v1"
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["ce_source"] == b"/openxswitch/6812b103908d2d0d49c7ff79"
    assert record.headers["ce_time"] == event.occurred_at.encode()
    assert record.headers["content-type"] == b"application/json"
    decoded = TransferEvent.model_validate(loads_exact(record.value))
    assert decoded == event  # raw included: its numbers read back exactly as Decimals


async def test_the_same_state_pushed_three_times_yields_one_record(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    outcomes = await pipeline.submit_all([withdrawal(), withdrawal(), withdrawal()])
    assert sorted(outcomes) == sorted([Outcome.PUBLISHED, Outcome.DUPLICATE, Outcome.DUPLICATE])
    records = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)
    assert len(records) == 1


async def test_states_of_one_transfer_arrive_in_order_on_one_partition(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    states = [withdrawal(confirmations=n) for n in range(5)] + [withdrawal("success", confirmations=20)]
    await pipeline.submit_all(states)
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=6)
    assert len({r.partition for r in records}) == 1
    assert [json.loads(r.value)["event_id"] for r in records] == [e.event_id for e in states]


RESTART_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from bridge.delivery.dedup import DedupGate
    from bridge.contract.jsonutil import loads_exact
    from bridge.delivery.pipeline import Pipeline
    from bridge.delivery.publish import Publisher
    from bridge.kafka.settings import KafkaSettings
    from bridge.delivery.settings import TopicSettings
    from bridge.sources.openxswitch.parse import parse_delivery
    from bridge.delivery.store_sqlite import SQLiteStore

    async def main():
        kafka = KafkaSettings.model_validate_json(sys.argv[1])
        topics = TopicSettings.model_validate_json(sys.argv[2])
        pipeline = Pipeline(Publisher(kafka, topics), DedupGate(SQLiteStore(sys.argv[3])))
        await pipeline.start()
        [event] = parse_delivery(loads_exact(sys.stdin.buffer.read()), received_at="2026-11-22T12:00:00.000Z")
        print(await pipeline.submit(event))
        await pipeline.close()

    asyncio.run(main())
    """
)


async def test_a_restarted_pipeline_with_the_same_store_still_drops_the_repeat(
    kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings, tmp_path: Path
) -> None:
    body = fixture_bytes("openxswitch/withdraw.confirmed.json")
    store = tmp_path / "dedup.sqlite3"

    def run_process() -> str:
        done = subprocess.run(
            [sys.executable, "-c", RESTART_SCRIPT, kafka_settings.model_dump_json(), topics.model_dump_json(), str(store)],
            input=body,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().strip()

    assert await asyncio.to_thread(run_process) == "published"
    assert await asyncio.to_thread(run_process) == "duplicate"
    assert len(await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)) == 1


async def test_a_non_final_state_after_a_final_one_is_dropped_as_stale(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    assert await pipeline.submit(withdrawal("success", confirmations=20)) is Outcome.PUBLISHED
    assert await pipeline.submit(withdrawal("pending", confirmations=3)) is Outcome.STALE
    records = await read_topic(kafka_bootstrap, topics.withdrawal, idle=1.5)
    assert [json.loads(r.value)["status"] for r in records] == ["completed"]


async def test_a_malformed_payload_lands_in_the_dlq_with_its_raw_bytes_and_reason(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    raw = b'{"requestId": "x", "method": "withdraw.confirmed", "params": {"amount": "not money"'
    letter = DeadLetter(Provider.OPENXSWITCH, "webhook", "invalid JSON: unexpected end", raw, RECEIVED)
    assert await pipeline.submit(letter) is Outcome.DEAD_LETTERED
    [record] = await read_topic(kafka_bootstrap, topics.dead_letter, expect=1)
    assert record.value == raw
    assert record.headers["dlq_reason"] == b"invalid JSON: unexpected end"
    assert record.headers["dlq_provider"] == b"openxswitch"


async def test_dedup_decisions_are_kept_per_transfer_not_per_delivery(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    first, second = withdrawal(transfer_id="a"), withdrawal(transfer_id="b")
    assert await pipeline.submit_all([first, second]) == [Outcome.PUBLISHED, Outcome.PUBLISHED]
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=2)
    assert sorted(r.key for r in records) == [b"openxswitch:withdrawal:a", b"openxswitch:withdrawal:b"]


async def test_records_are_plain_json_a_consumer_can_read_without_this_library(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    await pipeline.submit(withdrawal())
    [record] = await read_topic(kafka_bootstrap, topics.withdrawal, expect=1)
    decoded = orjson.loads(record.value)
    assert isinstance(decoded["amount"], str) and decoded["schema_version"] == SCHEMA_VERSION
