"""`schemas register|check` and the publisher's id lookup against a real schema registry (no Kafka)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.contract.events import TransferEvent
from bridge.contract.schema import avro_text, committed_versions, json_schema, schema_text
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.kafka.registry import (
    IncompatibleSchema,
    InvalidSchema,
    RegistryClient,
    SchemaNotRegistered,
    resolve_schema_ids,
    subject_name,
)
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge.service.schemas_cli import main as schemas_main
from bridge.service.schemas_cli import register_contract

VERSIONS = committed_versions()


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command line as a user would (its own event loop, in a worker thread)."""
    code = await asyncio.to_thread(schemas_main, ["schemas", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _topic_args(url: str, topics: list[str]) -> list[str]:
    return ["--registry-url", url, *[arg for topic in topics for arg in ("--topic", topic)]]


def _variant(change: Callable[[dict[str, Any]], None]) -> str:
    schema = json_schema()
    change(schema)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _rename_tx_hash(schema: dict[str, Any]) -> None:
    schema["properties"]["transaction_hash"] = schema["properties"].pop("tx_hash")


def _rename_amount(schema: dict[str, Any]) -> None:
    schema["properties"]["quantity"] = schema["properties"].pop("amount")
    schema["required"] = ["quantity" if r == "amount" else r for r in schema["required"]]


def _confirmations_to_string(schema: dict[str, Any]) -> None:
    schema["properties"]["confirmations"]["anyOf"][0] = {"type": "string"}


def _is_final_to_string(schema: dict[str, Any]) -> None:
    schema["properties"]["is_final"] = {"type": "string", "title": "Is Final"}


class _WithMemo(TransferEvent):
    """The next minor as a developer would write it: one more optional field."""

    memo: str | None = None


async def test_register_puts_every_committed_version_under_each_topic_subject_as_backward_transitive(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _cli(capsys, "register", *_topic_args(schema_registry_url, event_topics))
    assert code == 0, out
    for topic in event_topics:
        subject = f"{topic}-value"
        assert await registry.versions(subject) == list(range(1, len(VERSIONS) + 1))
        for number, version in enumerate(VERSIONS, start=1):
            assert (await registry.get_version(subject, number)).schema == version.text
        assert await registry.get_compatibility(subject) == "BACKWARD_TRANSITIVE"
        assert f"{subject}  contract {VERSIONS[-1].version}" in out


async def test_register_twice_gives_the_same_ids_and_no_new_versions(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    first = await _cli(capsys, "register", *_topic_args(schema_registry_url, event_topics))
    again = await _cli(capsys, "register", *_topic_args(schema_registry_url, event_topics))
    assert first[0] == again[0] == 0
    assert again[1] == first[1]  # same subjects, versions and ids, line for line
    assert await registry.versions(subject_name(event_topics[0])) == list(range(1, len(VERSIONS) + 1))


async def test_check_passes_for_the_models_schema_once_registered(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    await register_contract(registry, event_topics)
    code, out, err = await _cli(capsys, "check", *_topic_args(schema_registry_url, event_topics))
    assert code == 0, err
    assert out.count("is compatible (level BACKWARD_TRANSITIVE") == 2


async def test_check_before_anything_is_registered_passes_and_says_so(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _cli(capsys, "check", *_topic_args(schema_registry_url, event_topics))
    assert code == 0 and out.count("nothing registered yet") == 2


@pytest.mark.parametrize(
    "change",
    [_rename_tx_hash, _rename_amount, _confirmations_to_string, _is_final_to_string],
    ids=["renamed optional field", "renamed required field", "type change int to string", "type change bool to string"],
)
async def test_check_rejects_an_incompatible_change_with_the_registrys_reason(
    change: Callable[[dict[str, Any]], None],
    registry: RegistryClient,
    schema_registry_url: str,
    event_topics: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await register_contract(registry, event_topics)
    candidate = tmp_path / "candidate.schema.json"
    candidate.write_text(_variant(change))
    code, out, err = await _cli(capsys, "check", *_topic_args(schema_registry_url, event_topics), "--schema", str(candidate))
    assert code == 1
    assert err.count("is INCOMPATIBLE") == 2
    verdict = await registry.test_compatibility(subject_name(event_topics[0]), candidate.read_text(), version=1)
    assert not verdict.is_compatible and verdict.messages
    assert all(message in err for message in verdict.messages)  # the registry's own words


async def test_check_accepts_a_model_with_an_added_optional_field(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await register_contract(registry, event_topics)
    candidate = tmp_path / "next-minor.schema.json"
    candidate.write_text(schema_text(_WithMemo))
    assert "memo" in json.loads(candidate.read_text())["properties"]
    code, out, err = await _cli(capsys, "check", *_topic_args(schema_registry_url, event_topics), "--schema", str(candidate))
    assert code == 0, err
    assert out.count("is compatible") == 2


async def test_check_fails_when_the_registry_enforces_nothing_for_the_subject(
    registry: RegistryClient, schema_registry_url: str, event_topics: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await register_contract(registry, event_topics[:1])
    await registry.set_compatibility(subject_name(event_topics[0]), "NONE")
    code, _, err = await _cli(capsys, "check", *_topic_args(schema_registry_url, event_topics[:1]))
    assert code == 1 and "enforces nothing" in err


async def test_the_registry_itself_refuses_an_incompatible_version_once_registered(
    registry: RegistryClient, event_topics: list[str]
) -> None:
    await register_contract(registry, event_topics[:1])
    subject = subject_name(event_topics[0])
    with pytest.raises(IncompatibleSchema):
        await registry.register(subject, _variant(_rename_tx_hash))
    assert await registry.versions(subject) == list(range(1, len(VERSIONS) + 1))
    assert await registry.register(subject, schema_text(_WithMemo)) > 0  # additive passes the gate


async def test_the_avro_schema_is_a_schema_the_registry_accepts_as_avro(registry: RegistryClient, event_topics: list[str]) -> None:
    subject = subject_name(event_topics[0])
    schema_id = await registry.register(subject, avro_text(), "AVRO")
    found = await registry.lookup(subject, avro_text(), "AVRO")
    assert found is not None and found.id == schema_id
    broken = avro_text().replace('"type": "boolean"', '"type": "bool"', 1)
    with pytest.raises(InvalidSchema):
        await registry.register(subject_name(event_topics[1]), broken, "AVRO")


async def test_the_publisher_refuses_to_start_when_its_schema_is_not_registered(
    registry: RegistryClient, registry_settings: SchemaRegistrySettings, event_topics: list[str]
) -> None:
    deposit, withdrawal = event_topics
    publisher = Publisher(KafkaSettings(), TopicSettings(deposit=deposit, withdrawal=withdrawal), schema_registry=registry_settings)
    with pytest.raises(SchemaNotRegistered, match="schemas register"):
        await publisher.start(timeout=1)


async def test_auto_register_registers_the_schema_when_the_publisher_resolves_its_ids(
    registry: RegistryClient, registry_settings: SchemaRegistrySettings, event_topics: list[str]
) -> None:
    settings = registry_settings.model_copy(update={"auto_register": True})
    ids = await resolve_schema_ids(settings, event_topics, schema_text())
    for topic in event_topics:
        found = await registry.lookup(subject_name(topic), schema_text())
        assert found is not None and found.id == ids[topic]


async def test_an_unreachable_registry_fails_the_start_after_the_startup_window() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = SchemaRegistrySettings(url=f"http://127.0.0.1:{closed_port}", startup_timeout_seconds=0.5, timeout_seconds=1)
    began = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionError, match="not reachable"):
        await resolve_schema_ids(settings, ["t.x.deposit.v1"], schema_text())
    assert asyncio.get_running_loop().time() - began < 5
