"""Contract 1.1: additive over 1.0 (binance, fireblocks, source.via poll), and readers that tolerate
enum values a later minor adds (the typed consumer generalizes them, Avro enums default to them)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from bridge.consumer.reader import InvalidRecord, SchemaSource, decode, decode_event
from bridge.contract.events import (
    SCHEMA_VERSION,
    Account,
    Direction,
    Provider,
    Source,
    Status,
    TransferEvent,
    Via,
    build_event,
    encode_event,
)
from bridge.contract.jsonutil import dumps
from bridge.contract.schema import avro_schema, committed_versions, example_events, version_key

VERSIONS = {v.version: v for v in committed_versions(1)}
EXAMPLES = dict((p.name, body) for p, body in example_events(1))


def _next_minor() -> str:
    major, minor = version_key(SCHEMA_VERSION)
    return f"{major}.{minor + 1}"


def _okx_example(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLES["okx-deposit.json"], **changes}


def test_version_1_1_is_published_next_to_1_0_and_adds_only_enum_values() -> None:
    assert SCHEMA_VERSION == "1.1" and {"1.0", "1.1"} <= set(VERSIONS)
    old, new = VERSIONS["1.0"].schema, VERSIONS["1.1"].schema
    assert old["required"] == new["required"] and list(old["properties"]) == list(new["properties"])
    assert set(new["definitions"]["Provider"]["enum"]) - set(old["definitions"]["Provider"]["enum"]) == {"binance", "fireblocks", "unknown"}
    assert set(new["definitions"]["Via"]["enum"]) - set(old["definitions"]["Via"]["enum"]) == {"poll", "unknown"}
    for name in ("Provider", "Via", "Status", "Direction"):  # nothing removed
        assert set(old["definitions"][name]["enum"]) <= set(new["definitions"][name]["enum"])


@pytest.mark.parametrize("example", sorted(n for n, b in EXAMPLES.items() if b["schema_version"] == "1.0"))
def test_version_1_1_accepts_every_1_0_example_as_written(example: str) -> None:
    schema = VERSIONS["1.1"].schema
    jsonschema.validators.validator_for(schema)(schema).validate(EXAMPLES[example])


def test_version_1_0_refuses_a_binance_event_so_1_0_readers_need_the_generic_form() -> None:
    schema = VERSIONS["1.0"].schema
    with pytest.raises(jsonschema.ValidationError, match="binance"):
        jsonschema.validators.validator_for(schema)(schema).validate(EXAMPLES["binance-withdrawal-completed.json"])


def test_every_tolerant_avro_enum_defaults_to_its_generic_symbol() -> None:
    fields = {f["name"]: f["type"] for f in avro_schema()["fields"]}
    via = next(f["type"] for f in fields["source"]["fields"] if f["name"] == "via")
    for enum in (fields["provider"], fields["status"], via):
        assert enum["default"] == "unknown" and "unknown" in enum["symbols"]
    assert {"binance", "fireblocks"} <= set(fields["provider"]["symbols"]) and "poll" in via["symbols"]


async def test_a_later_minors_unknown_provider_status_and_via_are_read_as_unknown_with_the_values_kept() -> None:
    body = _okx_example(schema_version=_next_minor(), provider="kraken", status="settling")
    body["source"] = {**body["source"], "via": "stream"}
    decoded = await decode(dumps(body), SchemaSource())
    assert decoded.event.provider is Provider.UNKNOWN
    assert decoded.event.status is Status.UNKNOWN
    assert decoded.event.source.via is Via.UNKNOWN
    assert decoded.unknown_values == {"provider": "kraken", "status": "settling", "source.via": "stream"}
    assert decoded.event.key == body["key"] and decoded.event.provider_status == body["provider_status"]


async def test_known_enum_values_are_read_as_they_are_and_nothing_is_reported() -> None:
    decoded = await decode(dumps(EXAMPLES["binance-withdrawal-completed.json"]), SchemaSource())
    assert decoded.event.provider is Provider.BINANCE and decoded.event.source.via is Via.POLL
    assert decoded.unknown_values == {} and decoded.unknown_fields == ()


async def test_without_validation_unknown_enum_values_are_generalized_too() -> None:
    decoded = await decode(dumps(_okx_example(provider="kraken")), None, validate=False)
    assert decoded.event.provider is Provider.UNKNOWN and decoded.unknown_values == {"provider": "kraken"}


async def test_a_record_of_a_known_version_with_a_value_outside_its_schema_is_still_refused() -> None:
    with pytest.raises(InvalidRecord, match="provider"):
        await decode_event(dumps(_okx_example(schema_version="1.1", provider="kraken")), SchemaSource())


async def test_a_binance_event_round_trips_through_the_consumer_decoder() -> None:
    event = TransferEvent.model_validate(EXAMPLES["binance-withdrawal-completed.json"])
    decoded, schema_id, unknown = await decode_event(encode_event(event), SchemaSource())
    assert decoded == event and schema_id is None and unknown == ()
    assert json.loads(encode_event(event))["source"]["via"] == "poll"


@pytest.mark.parametrize(("provider", "via"), [(Provider.UNKNOWN, Via.POLL), (Provider.BINANCE, Via.UNKNOWN)])
def test_the_generic_forms_are_never_published(provider: Provider, via: Via) -> None:
    with pytest.raises(ValueError, match="never published"):
        build_event(
            provider=provider,
            direction=Direction.DEPOSIT,
            transfer_id="1",
            status=Status.PENDING,
            provider_status="0",
            amount="1",
            asset="BTC",
            occurred_at="2026-01-01T00:00:00.000Z",
            received_at="2026-01-01T00:00:00.000Z",
            source=Source(channel="x", via=via),
            account=Account(),
        )
