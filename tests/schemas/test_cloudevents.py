"""Records are CloudEvents (Kafka protocol binding, binary mode) as the CloudEvents SDK reads them:
every required attribute, ``subject`` = the transfer key, ``dataschema`` an absolute URI, and a
``content-type`` true to the value's bytes in both value formats."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat

from bridge.contract.events import TransferEvent, encode_event
from bridge.contract.schema import example_events, schema_path
from bridge.delivery import publish
from bridge.delivery.pipeline import Outcome
from bridge.delivery.publish import WIRE_CONTENT_TYPE, Publisher
from bridge.delivery.settings import TopicSettings
from bridge.kafka import wire
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory

EVENTS = [TransferEvent.model_validate(body) for _, body in example_events()]


def cloud_event(headers: dict[str, bytes], key: bytes | None, value: bytes) -> Any:
    return from_binary(KafkaMessage(headers=headers, key=key, value=value), JSONFormat())


@pytest.mark.kafka
async def test_published_records_round_trip_through_the_cloudevents_sdk(
    make_pipeline: PipelineFactory, kafka_bootstrap: str, topics: TopicSettings
) -> None:
    pipeline = await make_pipeline()
    outcomes = await pipeline.submit_all(EVENTS)
    sent = [e for e, outcome in zip(EVENTS, outcomes, strict=True) if outcome is Outcome.PUBLISHED]
    records = [
        *await read_topic(kafka_bootstrap, topics.deposit, expect=sum(e.direction.value == "deposit" for e in sent)),
        *await read_topic(kafka_bootstrap, topics.withdrawal, expect=sum(e.direction.value == "withdrawal" for e in sent)),
    ]
    by_id = {e.event_id: e for e in sent}
    assert len(records) == len(sent) >= 6
    schema_id = orjson.loads(schema_path().read_bytes())["$id"]
    for record in records:
        ce = cloud_event(record.headers, record.key, record.value)
        event = by_id[ce.get_id()]
        assert ce.get_specversion() == "1.0"
        assert ce.get_subject() == event.key == record.key.decode()  # type: ignore[union-attr]
        assert ce.get_source() == f"/{event.provider.value}/{event.account.id or '-'}"
        assert ce.get_type() == f"transfer.{event.direction.value}.v1"
        assert ce.get_time() == datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00")).astimezone(UTC)
        assert ce.get_dataschema() == schema_id and urlsplit(schema_id).scheme == "https"
        assert ce.get_datacontenttype() == "application/json"
        assert ce.get_data() == orjson.loads(encode_event(event))

        again = to_binary(ce, JSONFormat())  # and back: the SDK writes the same event
        assert cloud_event(dict(again.headers), again.key, again.value).get_attributes() == ce.get_attributes()
        assert orjson.loads(again.value) == orjson.loads(record.value)


async def test_wire_format_records_name_the_registered_schema_and_are_not_labelled_json(monkeypatch: pytest.MonkeyPatch) -> None:
    async def registered(settings: SchemaRegistrySettings, topics: list[str], schema: str) -> dict[str, int]:
        return {topic: 40 + n for n, topic in enumerate(topics)}

    monkeypatch.setattr(publish, "resolve_schema_ids", registered)
    registry = SchemaRegistrySettings(url="https://user:secret@registry.example:8081/apis/ccompat/v7/")
    publisher = Publisher(KafkaSettings(), TopicSettings(), schema_registry=registry)
    await publisher.resolve_schema_ids()
    event = EVENTS[0]
    record = publisher.event_record(event)
    headers = dict(record.headers)
    schema_id = publisher.schema_ids[publisher.topic_for(event.direction)]
    assert wire.decode(record.value)[0] == schema_id
    assert headers["content-type"] == WIRE_CONTENT_TYPE
    assert headers["ce_dataschema"] == f"https://registry.example:8081/apis/ccompat/v7/schemas/ids/{schema_id}".encode()

    ce = cloud_event(headers, record.key, record.value)  # not JSON: the SDK hands the value over undecoded
    data = ce.get_data()
    assert (data.encode() if isinstance(data, str) else data) == record.value and ce.get_subject() == event.key
