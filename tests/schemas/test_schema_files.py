"""The committed contract files: versions, examples, Avro, wire format, decoding — no broker, no registry."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel, SecretStr

from bridge.consumer.reader import InvalidRecord, SchemaSource, decode_event
from bridge.contract.events import SCHEMA_MAJOR, SCHEMA_VERSION, TransferEvent, encode_event
from bridge.contract.jsonutil import dumps, loads_exact
from bridge.contract.schema import (
    SCHEMA_DIR,
    PublishedVersionChanged,
    avro_path,
    avro_schema,
    committed_versions,
    example_events,
    export,
    json_schema,
    schema_path,
    version_key,
    version_path,
)
from bridge.kafka import wire
from bridge.kafka.registry import RegistryClient, RegistryUnavailable
from bridge.service.schemas_cli import main as schemas_main

VERSIONS = committed_versions()
EXAMPLES = [(path, body) for major in {v.major for v in VERSIONS} for path, body in example_events(major)]


def _pairs() -> list[tuple[str, str, Path]]:
    """(later version, example's version, example) for every example and every version since."""
    pairs = []
    for version in VERSIONS:
        for path, body in EXAMPLES:
            written = version_key(body["schema_version"])
            if written[0] == version.major and written <= (version.major, version.minor):
                pairs.append((version.version, body["schema_version"], path))
    return pairs


@pytest.mark.parametrize(("version", "written_as", "example"), _pairs(), ids=lambda p: p.name if isinstance(p, Path) else p)
def test_every_committed_version_accepts_the_examples_of_every_earlier_version(version: str, written_as: str, example: Path) -> None:
    schema = next(v for v in VERSIONS if v.version == version).schema
    body = dict(EXAMPLES)[example]
    jsonschema.validators.validator_for(schema)(schema).validate(body)


def test_every_committed_version_has_example_events() -> None:
    declared = {body["schema_version"] for _, body in EXAMPLES}
    assert {v.version for v in VERSIONS} <= declared, "add examples/v<major>/*.json written as each new version"


@pytest.mark.parametrize("example", [p for p, _ in EXAMPLES], ids=lambda p: p.name)
def test_every_example_event_reads_into_the_model_unchanged(example: Path) -> None:
    body = dict(EXAMPLES)[example]
    event = TransferEvent.model_validate(body)
    assert loads_exact(dumps(event.model_dump(exclude_unset=True))) == body


def test_the_model_schema_is_the_committed_current_version_and_nothing_is_stale() -> None:
    assert export(write=False) == [], "run `transfer-bridge schemas export` and commit"
    assert version_path(SCHEMA_VERSION).read_text() == schema_path(SCHEMA_MAJOR).read_text()
    assert VERSIONS[-1].version == SCHEMA_VERSION


def test_the_schema_is_draft_07_because_apicurio_cannot_check_2020_12() -> None:
    schema = json_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in schema and "#/$defs/" not in str(schema)
    jsonschema.Draft7Validator.check_schema(schema)


def test_a_published_version_cannot_be_rewritten_by_export(tmp_path: Path) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, copy)
    frozen = version_path(SCHEMA_VERSION, copy)
    frozen.write_text(frozen.read_text().replace('"title": "Amount"', '"title": "Amount (old wording)"'))
    before = frozen.read_text()
    with pytest.raises(PublishedVersionChanged, match=r"bump SCHEMA_VERSION"):
        export(copy)
    assert frozen.read_text() == before


def test_export_check_names_a_stale_file_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, copy)
    avro_path(SCHEMA_MAJOR, copy).write_text("{}\n")
    assert schemas_main(["schemas", "export", "--check", "--dir", str(copy)]) == 1
    assert "transfer-event.v1.avsc" in capsys.readouterr().out
    assert avro_path(SCHEMA_MAJOR, copy).read_text() == "{}\n"  # --check writes nothing
    assert schemas_main(["schemas", "export", "--dir", str(copy)]) == 0
    assert schemas_main(["schemas", "export", "--check", "--dir", str(copy)]) == 0


# -- Avro --------------------------------------------------------------------------------------------


def _model_shape(model: type[BaseModel]) -> list[tuple[str, bool]]:
    """(field, nullable) in declaration order."""
    return [(name, type(None) in typing.get_args(info.annotation)) for name, info in model.model_fields.items()]


def _avro_shape(record: dict) -> list[tuple[str, bool]]:  # type: ignore[type-arg]
    return [(f["name"], isinstance(f["type"], list) and "null" in f["type"]) for f in record["fields"]]


def test_the_avro_schema_has_the_models_fields_in_order_with_the_same_nullability() -> None:
    committed = json.loads(avro_path().read_text())
    assert committed == avro_schema()
    assert committed["name"] == "TransferEvent" and committed["namespace"] == f"dev.transfer_bridge.v{SCHEMA_MAJOR}"
    assert _avro_shape(committed) == _model_shape(TransferEvent)
    nested = {f["name"]: f["type"] for f in committed["fields"] if isinstance(f["type"], dict) and f["type"]["type"] == "record"}
    assert _avro_shape(nested["account"]) == _model_shape(TransferEvent.model_fields["account"].annotation)  # type: ignore[arg-type]
    assert _avro_shape(nested["source"]) == _model_shape(TransferEvent.model_fields["source"].annotation)  # type: ignore[arg-type]


def test_avro_enums_carry_exactly_the_contract_values() -> None:
    enums = {f["name"]: f["type"] for f in avro_schema()["fields"] if isinstance(f["type"], dict) and f["type"]["type"] == "enum"}
    for name, enum in enums.items():
        annotation = TransferEvent.model_fields[name].annotation
        assert enum["symbols"] == [member.value for member in annotation]  # type: ignore[union-attr]
    assert enums["status"]["default"] == "unknown"


def test_json_schema_and_avro_schema_name_the_same_fields() -> None:
    committed = json.loads(schema_path().read_text())
    assert {f["name"] for f in avro_schema()["fields"]} == set(committed["properties"])


# -- wire format ---------------------------------------------------------------------------------------


def test_the_wire_prefix_is_magic_byte_zero_then_the_id_big_endian() -> None:
    assert wire.prefix(258) == b"\x00\x00\x00\x01\x02"
    assert wire.encode(7, b'{"a":1}') == b'\x00\x00\x00\x00\x07{"a":1}'


def test_wire_decode_returns_the_id_and_the_json_and_none_for_plain_json() -> None:
    assert wire.decode(b'\x00\x00\x01\x00\x00{"a":1}') == (65536, b'{"a":1}')
    assert wire.decode(b'{"a":1}') == (None, b'{"a":1}')


@pytest.mark.parametrize("value", [b"", b"\x00\x00\x01", b"\x01\x00\x00\x00\x01{}", b"\xffjunk"])
def test_wire_decode_refuses_what_is_neither_format(value: bytes) -> None:
    with pytest.raises(wire.WireFormatError):
        wire.decode(value)


def test_schema_ids_outside_the_java_int_range_are_refused() -> None:
    with pytest.raises(wire.WireFormatError):
        wire.prefix(2**31)


# -- decoding records (what the consumer does per record) ---------------------------------------------


def _example(name: str) -> dict:  # type: ignore[type-arg]
    return dict((p.name, b) for p, b in EXAMPLES)[name]


async def test_a_plain_record_decodes_into_the_event_it_was_made_from() -> None:
    event = TransferEvent.model_validate(_example("okx-deposit.json"))
    decoded, schema_id, unknown = await decode_event(encode_event(event), SchemaSource())
    assert decoded == event and schema_id is None and unknown == ()


async def test_a_wire_record_without_a_registry_is_validated_against_its_declared_version() -> None:
    event = TransferEvent.model_validate(_example("openxswitch-withdrawal-completed.json"))
    decoded, schema_id, _ = await decode_event(wire.encode(42, encode_event(event)), SchemaSource())
    assert decoded == event and schema_id == 42


async def test_a_record_of_a_newer_minor_decodes_and_reports_the_fields_it_added() -> None:
    body = dict(_example("okx-withdrawal.json"))
    major, minor = version_key(VERSIONS[-1].version)
    body.update(schema_version=f"{major}.{minor + 1}", memo="added in a later minor")
    body["source"] = {**body["source"], "sequence": 7}
    event, _, unknown = await decode_event(dumps(body), SchemaSource())
    assert set(unknown) == {"memo", "source.sequence"}
    assert event.transfer_id == body["transfer_id"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": 0.5}, "amount"),
        ({"status": "lost"}, "status"),
        ({"schema_version": "9.0"}, "v9"),
        ({"tx_hash": ""}, "tx_hash"),
    ],
)
async def test_a_record_that_breaks_its_schema_is_refused_with_the_reason(change: dict, reason: str) -> None:  # type: ignore[type-arg]
    body = {**_example("okx-deposit.json"), **change}
    with pytest.raises(InvalidRecord, match=reason):
        await decode_event(dumps(body), SchemaSource())


async def test_a_record_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="invalid JSON"):
        await decode_event(b"{not json", SchemaSource())


# -- secrets --------------------------------------------------------------------------------------------


async def test_registry_credentials_never_appear_in_reprs_or_errors() -> None:
    client = RegistryClient("http://alice:s3cret-url@127.0.0.1:9/apis/ccompat/v7", timeout=2)
    other = RegistryClient("http://127.0.0.1:9", username="bob", password=SecretStr("s3cret-setting"), timeout=2)
    for c in (client, other):
        with pytest.raises(RegistryUnavailable) as caught:
            await c.subjects()
        await c.close()
        assert "s3cret" not in str(caught.value) and "s3cret" not in repr(c) and "s3cret" not in c.url
    assert client.url == "http://127.0.0.1:9/apis/ccompat/v7"
