"""Typed consumer for downstream teams: Kafka records in, validated ``TransferEvent`` values out.

* Reads with ``isolation_level=read_committed`` and never auto-commits: ``commit()`` stores the
  offsets of what was handed out, so a crash re-delivers instead of losing (at least once;
  ``event.event_id`` is the idempotency key).
* Accepts both value formats the bridge publishes: plain JSON, and the Confluent wire format
  (magic byte 0 + 4-byte schema id + JSON). The first byte tells them apart.
* Validates each record against the schema version it was written with: a wire-format record
  against the schema its id names in the registry (fetched once per id), a plain record against
  the committed ``schemas/versions`` file of its ``schema_version``. A record of a newer minor
  than this library knows is validated against the newest known minor after dropping the fields
  it added (minor versions only add optional fields, so nothing it relies on is lost); the
  dropped names are reported in ``ConsumedEvent.unknown_fields``.
* Enum values this library does not know (``provider``, ``status``, ``source.via``), as a later
  minor adds them, are read as the generic ``unknown`` instead of failing the record; the values
  sent are kept in ``ConsumedEvent.unknown_values``. A record of a version this library knows
  exactly must still match that version's schema (an unknown value there is a broken record).
* Numbers stay exact (``loads_exact``): ``raw`` keeps the provider's digits as ``Decimal``.

Validation uses ``jsonschema-rs`` (compiled, PyPI ``jsonschema-rs``, the ``fast`` extra) when it is
installed, else the ``jsonschema`` package; pass ``validate=False`` to rely on the model alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import typing
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import BaseModel, ValidationError

from bridge.contract.events import Provider, Status, TransferEvent, Via
from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.schema import SCHEMA_DIR, committed_versions, version_key
from bridge.kafka.client import kafka_client_options
from bridge.kafka.registry import RegistryClient, RegistryError
from bridge.kafka.settings import KafkaSettings, SchemaRegistrySettings
from bridge.kafka.wire import WireFormatError
from bridge.kafka.wire import decode as _wire_decode

Validator = Callable[[dict[str, Any]], str | None]
"""A compiled schema: the first problem of a record (``path: message``), or None when it is valid."""

__all__ = ["ConsumedEvent", "Decoded", "InvalidRecord", "SchemaSource", "TransferEventConsumer", "decode", "decode_event"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    event: TransferEvent
    topic: str
    partition: int
    offset: int
    key: str | None
    schema_id: int | None
    """The wire-format schema id; None for a plain JSON value."""
    unknown_fields: tuple[str, ...] = ()
    """Fields of a newer contract minor that this library's model does not have (ignored)."""
    headers: dict[str, bytes] = field(default_factory=dict)
    unknown_values: dict[str, str] = field(default_factory=dict)
    """Enum values this library does not know, by dotted field (``{"provider": "kraken"}``): the
    event carries the generic ``unknown`` in their place."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One record value, decoded: the event and what this library could not represent of it."""

    event: TransferEvent
    schema_id: int | None
    unknown_fields: tuple[str, ...] = ()
    unknown_values: dict[str, str] = field(default_factory=dict)


class InvalidRecord(ValueError):
    """A record that is not a valid transfer event; ``reason`` says why, the position says where."""

    def __init__(self, reason: str, *, topic: str = "", partition: int = -1, offset: int = -1):
        where = f"{topic}[{partition}]@{offset}: " if topic else ""
        super().__init__(where + reason)
        self.reason = reason
        self.topic, self.partition, self.offset = topic, partition, offset


class SchemaSource:
    """The JSON Schema a record must satisfy: by registry id, or by its declared contract version."""

    def __init__(self, registry: SchemaRegistrySettings | None = None, *, directory: Path = SCHEMA_DIR):
        self._registry = RegistryClient.from_settings(registry) if registry is not None and registry.url else None
        self._directory = directory
        self._by_id: dict[int, Validator] = {}
        self._by_version: dict[str, tuple[Validator, bool]] = {}
        self._lock = asyncio.Lock()

    @property
    def has_registry(self) -> bool:
        return self._registry is not None

    async def for_id(self, schema_id: int) -> Validator:
        if schema_id in self._by_id:
            return self._by_id[schema_id]
        if self._registry is None:
            raise InvalidRecord(f"wire-format record names schema id {schema_id} but no registry is configured")
        async with self._lock:
            if schema_id not in self._by_id:
                try:
                    schema_type, text = await self._registry.schema_by_id(schema_id)
                except RegistryError as exc:
                    raise InvalidRecord(f"schema id {schema_id}: {exc}") from None
                if schema_type != "JSON":
                    raise InvalidRecord(f"schema id {schema_id} is {schema_type}, not a JSON Schema")
                self._by_id[schema_id] = _validator(loads_exact(text))
        return self._by_id[schema_id]

    def for_version(self, version: object) -> tuple[Validator, bool]:
        """(validator, exact): the committed schema of ``version``, or the newest known of its major."""
        if not isinstance(version, str) or _VERSION.match(version) is None:
            raise InvalidRecord(f"schema_version {version!r} is not a contract version like '1.0'")
        if version not in self._by_version:
            self._by_version[version] = self._load(version)
        return self._by_version[version]

    def _load(self, version: str) -> tuple[Validator, bool]:
        major, minor = version_key(version)
        known = committed_versions(major, self._directory)
        if not known:
            raise InvalidRecord(f"contract v{major} is unknown to this consumer: upgrade transfer-bridge")
        exact = next((v for v in known if v.minor == minor), None)
        if exact is not None:
            return _validator(exact.schema), True
        if minor < known[-1].minor:
            raise InvalidRecord(f"contract {version} was never published")
        return _validator(known[-1].schema), False

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()


def _validator(schema: dict[str, Any]) -> Validator:
    """The fastest validator installed: jsonschema-rs, else jsonschema (imported here, so
    ``validate=False`` works without either)."""
    try:
        import jsonschema_rs
    except ImportError:
        return _python_validator(schema)
    compiled = jsonschema_rs.validator_for(schema)

    def first_error(data: dict[str, Any]) -> str | None:
        if compiled.is_valid(data):  # the common case: no error objects built at all
            return None
        errors = sorted(compiled.iter_errors(data), key=lambda e: [str(p) for p in e.instance_path])
        return _problem(errors[0].instance_path, errors[0].message)

    return first_error


def _python_validator(schema: dict[str, Any]) -> Validator:
    try:
        from jsonschema.validators import validator_for
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("validating records needs the jsonschema package, or pass validate=False") from None
    cls = validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)

    def first_error(data: dict[str, Any]) -> str | None:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        return _problem(errors[0].absolute_path, errors[0].message) if errors else None

    return first_error


def _problem(path: Iterable[object], message: str) -> str:
    return f"{'/'.join(str(p) for p in path) or '(record)'}: {message[:300]}"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _project(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Keep the fields ``model`` knows (recursively); list the others by dotted name."""
    fields = model.model_fields
    kept: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in data.items():
        info = fields.get(name)
        if info is None:
            unknown.append(prefix + name)
            continue
        nested = _nested_model(info.annotation)
        if nested is not None and isinstance(value, dict):
            value, more = _project(nested, value, f"{prefix}{name}.")
            unknown.extend(more)
        kept[name] = value
    return kept, unknown


_TOLERANT_ENUMS: tuple[tuple[tuple[str, ...], frozenset[str], str], ...] = (
    (("provider",), frozenset(p.value for p in Provider), Provider.UNKNOWN.value),
    (("status",), frozenset(s.value for s in Status), Status.UNKNOWN.value),
    (("source", "via"), frozenset(v.value for v in Via), Via.UNKNOWN.value),
)
"""(path, values this library knows, generic form) of the enums a later minor may extend."""


def _generalize(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``data`` with every unknown value of a tolerant enum replaced by its generic form (copied
    only where something changes), and the replaced values by dotted field."""
    replaced: dict[str, str] = {}
    for path, known, generic in _TOLERANT_ENUMS:
        parent: Any = data
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if not isinstance(value, str) or value in known:
            continue
        replaced[".".join(path)] = value
        data = dict(data)
        target = data
        for part in path[:-1]:
            target[part] = dict(target[part])
            target = target[part]
        target[path[-1]] = generic
    return data, replaced


async def decode(value: bytes, source: SchemaSource | None, *, validate: bool = True) -> Decoded:
    """One record value → ``Decoded``; ``InvalidRecord`` if it is not a transfer event.

    A record is checked against its own schema (the registry's by id, or its version's file) as
    sent; only one of a newer minor than this library knows, checked against the newest known
    version, is checked after its new fields were dropped and its unknown enum values generalized.
    """
    try:
        schema_id, payload = _wire_decode(value)
        data = loads_exact(payload)
    except (WireFormatError, JSONError) as exc:
        raise InvalidRecord(str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidRecord(f"value is a JSON {type(data).__name__}, not an object")
    projected, unknown = _project(TransferEvent, data)
    generic, replaced = _generalize(projected)
    if validate:
        if source is None:
            raise ValueError("validate=True needs a SchemaSource")
        if schema_id is not None and source.has_registry:
            validator, whole = await source.for_id(schema_id), True
        else:
            validator, whole = source.for_version(data.get("schema_version"))
        problem = validator(data if whole else generic)
        if problem is not None:
            raise InvalidRecord(f"does not match its schema: {problem}")
    try:
        event = TransferEvent.model_validate(generic)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRecord(f"not a transfer event: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return Decoded(event, schema_id, tuple(unknown), replaced)


async def decode_event(value: bytes, source: SchemaSource | None, *, validate: bool = True) -> tuple[TransferEvent, int | None, tuple[str, ...]]:
    """One record value → (event, schema id or None, unknown fields); ``InvalidRecord`` if it is not one.
    ``decode`` also returns the enum values that were generalized."""
    decoded = await decode(value, source, validate=validate)
    return decoded.event, decoded.schema_id, decoded.unknown_fields


class TransferEventConsumer:
    """``async with TransferEventConsumer([...topics], group_id="my-service") as c: async for e in c: …``

    Without ``group_id`` every partition is assigned directly (no group, no commits): handy for
    tools and tests that read a topic from the start.
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        kafka: KafkaSettings | None = None,
        group_id: str | None = None,
        registry: SchemaRegistrySettings | None = None,
        validate: bool = True,
        from_beginning: bool = True,
        on_invalid: Literal["raise", "skip"] = "raise",
        schema_dir: Path = SCHEMA_DIR,
        **consumer_options: Any,
    ):
        self.topics = list(topics)
        self.group_id = group_id
        self.validate = validate
        self.on_invalid = on_invalid
        self.skipped = 0
        self._source = SchemaSource(registry, directory=schema_dir) if validate else None
        self._from_beginning = from_beginning
        options = kafka_client_options(kafka or KafkaSettings())
        options.update(consumer_options)
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=group_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
        self._next_offsets: dict[TopicPartition, int] = {}
        self._pending: deque[ConsumerRecord[bytes, bytes]] = deque()

    async def __aenter__(self) -> TransferEventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, partition_timeout: float = 10.0) -> None:
        await self._consumer.start()
        if self.group_id is not None:
            self._consumer.subscribe(self.topics)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + partition_timeout
        assigned: list[TopicPartition] = []
        for topic in self.topics:
            partitions = self._consumer.partitions_for_topic(topic)
            while not partitions:
                if loop.time() > deadline:
                    await self._consumer.stop()
                    raise LookupError(f"topic {topic} not found within {partition_timeout:.0f}s")
                await self._consumer._client.force_metadata_update()  # the topic may be brand new
                partitions = self._consumer.partitions_for_topic(topic)
            assigned.extend(TopicPartition(topic, p) for p in sorted(partitions))
        self._consumer.assign(assigned)
        if self._from_beginning:
            await self._consumer.seek_to_beginning(*assigned)
        else:
            await self._consumer.seek_to_end(*assigned)

    async def stop(self) -> None:
        await self._consumer.stop()
        if self._source is not None:
            await self._source.close()

    async def __aiter__(self) -> AsyncIterator[ConsumedEvent]:
        while True:
            for item in await self.getmany(timeout=1.0):
                yield item

    async def getmany(self, *, timeout: float = 1.0, max_records: int | None = None) -> list[ConsumedEvent]:
        """What arrived within ``timeout`` seconds, decoded, in partition order.

        Records fetched but not handed out yet (because an earlier one raised ``InvalidRecord``)
        stay queued for the next call: an invalid record never takes valid ones down with it.
        """
        if not self._pending:
            batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
            for records in batches.values():
                self._pending.extend(records)
        out: list[ConsumedEvent] = []
        while self._pending:
            record = self._pending[0]
            try:
                item = await self._decode(record)
            except InvalidRecord:
                if out:  # hand out the good ones first; the bad one raises on the next call
                    return out
                self._pending.popleft()
                self._next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
                raise
            self._pending.popleft()
            self._next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            if item is not None:
                out.append(item)
        return out

    async def commit(self) -> None:
        """Store the position after every record handed out (or skipped) so far."""
        if self.group_id is None:
            raise RuntimeError("commit needs a group_id")
        if self._next_offsets:
            await self._consumer.commit(dict(self._next_offsets))

    async def _decode(self, record: ConsumerRecord[bytes, bytes]) -> ConsumedEvent | None:
        try:
            if record.value is None:
                raise InvalidRecord("tombstone (null value)")
            decoded = await decode(record.value, self._source, validate=self.validate)
        except InvalidRecord as exc:
            located = InvalidRecord(exc.reason, topic=record.topic, partition=record.partition, offset=record.offset)
            if self.on_invalid == "raise":
                raise located from None
            self.skipped += 1
            log.warning("skipping invalid record %s", located)
            return None
        return ConsumedEvent(
            event=decoded.event,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            schema_id=decoded.schema_id,
            unknown_fields=decoded.unknown_fields,
            headers={k: v for k, v in record.headers or ()},
            unknown_values=decoded.unknown_values,
        )
