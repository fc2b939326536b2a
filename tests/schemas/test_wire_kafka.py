"""Both value formats against a real broker and a real registry, read back by the typed consumer."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from bridge.consumer.reader import ConsumedEvent, InvalidRecord, TransferEventConsumer
from bridge.contract.events import SCHEMA_VERSION, TransferEvent, encode_event
from bridge.contract.schema import example_events
from bridge.delivery.pipeline import Outcome
from bridge.delivery.publish import WIRE_CONTENT_TYPE
from bridge.delivery.settings import TopicSettings
from bridge.kafka import wire
from bridge.kafka.headers import registry_schema_url
from bridge.kafka.registry import RegistryClient
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge.service.schemas_cli import Registration, register_contract
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory

pytestmark = pytest.mark.kafka

EVENTS = {path.stem: TransferEvent.model_validate(body) for path, body in example_events()}
DEPOSITS = [EVENTS["okx-deposit"], EVENTS["ripio-deposit-crypto"]]
WITHDRAWALS = [EVENTS["okx-withdrawal"], EVENTS["openxswitch-withdrawal-pending"], EVENTS["okx-withdrawal-minimal-unknown-status"]]


async def _register_current(registry: RegistryClient, topics: TopicSettings) -> tuple[Registration, Registration]:
    """Every committed version is registered; the publisher uses the current one."""
    current = [r for r in await register_contract(registry, [topics.deposit, topics.withdrawal]) if r.contract_version == SCHEMA_VERSION]
    deposit, withdrawal = current
    return deposit, withdrawal


async def _read_events(consumer: TransferEventConsumer, expect: int, timeout: float = 10.0) -> list[ConsumedEvent]:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[ConsumedEvent] = []
    while len(got) < expect and loop.time() < deadline:
        got.extend(await consumer.getmany(timeout=0.5))
    return got


async def test_without_a_registry_values_are_plain_json(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    assert await pipeline.submit_all(WITHDRAWALS) == [Outcome.PUBLISHED] * len(WITHDRAWALS)
    records = await read_topic(kafka_bootstrap, topics.withdrawal, expect=len(WITHDRAWALS))
    assert sorted(r.value for r in records) == sorted(encode_event(e) for e in WITHDRAWALS)


async def test_with_a_registry_values_carry_the_registered_schema_id_in_the_wire_format(
    make_wire_pipeline: PipelineFactory, registry: RegistryClient, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    deposit_reg, withdrawal_reg = await _register_current(registry, topics)
    pipeline = await make_wire_pipeline()
    assert pipeline.publisher.schema_ids == {topics.deposit: deposit_reg.schema_id, topics.withdrawal: withdrawal_reg.schema_id}
    await pipeline.submit_all([*DEPOSITS, *WITHDRAWALS])

    deposits = await read_topic(kafka_bootstrap, topics.deposit, expect=len(DEPOSITS))
    withdrawals = await read_topic(kafka_bootstrap, topics.withdrawal, expect=len(WITHDRAWALS))
    assert sorted(r.value for r in deposits) == sorted(wire.encode(deposit_reg.schema_id, encode_event(e)) for e in DEPOSITS)
    assert sorted(r.value for r in withdrawals) == sorted(
        wire.encode(withdrawal_reg.schema_id, encode_event(e)) for e in WITHDRAWALS
    )
    # The value is not JSON (five bytes of schema id first): content-type says so, dataschema names the registered schema.
    assert all(r.value[:1] == b"\x00" and r.headers["content-type"] == WIRE_CONTENT_TYPE for r in deposits)
    assert {r.headers["ce_dataschema"] for r in deposits} == {
        registry_schema_url(str(pipeline.publisher.schema_registry.url), deposit_reg.schema_id).encode()  # type: ignore[union-attr]
    }


async def test_the_consumer_decodes_records_produced_in_both_formats_on_one_topic(
    make_pipeline: PipelineFactory,
    make_wire_pipeline: PipelineFactory,
    registry: RegistryClient,
    registry_settings: SchemaRegistrySettings,
    kafka_settings: KafkaSettings,
    topics: TopicSettings,
) -> None:
    _, withdrawal_reg = await _register_current(registry, topics)
    plain, wired = WITHDRAWALS[:2], WITHDRAWALS[2:]
    await (await make_pipeline()).submit_all(plain)  # before the registry was configured
    await (await make_wire_pipeline()).submit_all(wired)  # after

    async with TransferEventConsumer([topics.withdrawal], kafka=kafka_settings, registry=registry_settings) as consumer:
        consumed = await _read_events(consumer, expect=len(WITHDRAWALS))

    by_id = {c.event.event_id: c for c in consumed}
    assert len(consumed) == len(WITHDRAWALS)
    assert [by_id[e.event_id].event for e in WITHDRAWALS] == WITHDRAWALS  # typed, equal, raw digits intact
    assert {by_id[e.event_id].schema_id for e in plain} == {None}
    assert {by_id[e.event_id].schema_id for e in wired} == {withdrawal_reg.schema_id}
    assert all(c.key == c.event.key and c.unknown_fields == () for c in consumed)


async def test_the_consumer_refuses_a_broken_record_with_its_position_and_still_delivers_the_rest(
    make_pipeline: PipelineFactory, kafka_settings: KafkaSettings, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    await pipeline.submit(WITHDRAWALS[0])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:  # same key, same partition: the order is good, bad, good
        broken = encode_event(WITHDRAWALS[0]).replace(b'"amount":"2"', b'"amount":2.0')  # a float amount
        assert broken != encode_event(WITHDRAWALS[0])
        await producer.send_and_wait(topics.withdrawal, broken, key=WITHDRAWALS[0].key.encode())
        await producer.send_and_wait(topics.withdrawal, encode_event(WITHDRAWALS[1]), key=WITHDRAWALS[0].key.encode())
    finally:
        await producer.stop()

    async with TransferEventConsumer([topics.withdrawal], kafka=kafka_settings) as consumer:
        first = await _read_events(consumer, expect=1)
        with pytest.raises(InvalidRecord) as caught:
            await consumer.getmany(timeout=2)
        rest = await _read_events(consumer, expect=1)
    assert [c.event for c in first] == [WITHDRAWALS[0]]
    assert caught.value.topic == topics.withdrawal and caught.value.offset == first[0].offset + 1
    assert caught.value.reason.startswith("does not match its schema: amount:")
    assert [c.event for c in rest] == [WITHDRAWALS[1]]


async def test_a_consumer_group_resumes_after_the_last_committed_event(
    make_pipeline: PipelineFactory, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    await pipeline.submit_all(DEPOSITS[:1])
    group = f"{topics.deposit}-readers"
    async with TransferEventConsumer([topics.deposit], kafka=kafka_settings, group_id=group) as consumer:
        first = await _read_events(consumer, expect=1, timeout=20)
        await consumer.commit()
    await pipeline.submit_all(DEPOSITS[1:])
    async with TransferEventConsumer([topics.deposit], kafka=kafka_settings, group_id=group) as consumer:
        second = await _read_events(consumer, expect=1, timeout=20)
    assert [c.event for c in first] == DEPOSITS[:1]
    assert [c.event for c in second] == DEPOSITS[1:]
