"""What must hold for anything a parser returns, whatever it was given.

* an event is a valid contract-v1 record: the model accepts it again, its Kafka value validates
  against the committed JSON Schema, it becomes a Kafka record (key and headers encodable);
* amounts and fees are exact decimal strings equal to what the provider sent, never a float;
* a dead letter carries the raw bytes and a reason, and becomes a DLQ record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from jsonschema import Draft7Validator

from bridge.contract.events import DeadLetter, TransferEvent, encode_event
from bridge.contract.jsonutil import loads_exact
from bridge.contract.schema import schema_path
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings

__all__ = ["check_results", "check_event", "check_dead_letter", "no_float"]

_SCHEMA = Draft7Validator(json.loads(schema_path().read_text()))
_RECORDS = Publisher(KafkaSettings(), TopicSettings())  # only builds records; never started

SourceField = Callable[[dict[str, Any]], Any]


def no_float(value: Any, where: str = "event") -> None:
    if isinstance(value, float):
        raise AssertionError(f"{where} is a float: {value!r}")
    if isinstance(value, dict):
        for key, child in value.items():
            no_float(child, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            no_float(child, f"{where}[{index}]")


def _exact(source: Any) -> Decimal:
    assert not isinstance(source, (float, bool)), f"a {type(source).__name__} became an amount"
    return Decimal(source.strip() if isinstance(source, str) else source)


def check_event(event: TransferEvent, *, amount: SourceField, fee: SourceField | None = None) -> None:
    TransferEvent.model_validate(event.model_dump())
    value = encode_event(event)
    document = loads_exact(value)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in _SCHEMA.iter_errors(document)]
    assert not errors, errors
    no_float(event.model_dump(exclude={"raw"}))
    assert event.raw is not None
    assert Decimal(event.amount) == _exact(amount(event.raw)), (event.amount, amount(event.raw))
    assert document["amount"] == event.amount
    if fee is not None and event.fee is not None:
        assert Decimal(event.fee) == _exact(fee(event.raw)), (event.fee, fee(event.raw))
    record = _RECORDS.event_record(event)
    assert record.key == event.key.encode()
    for _, header in record.headers:
        assert isinstance(header, bytes)


def check_dead_letter(letter: DeadLetter) -> None:
    assert isinstance(letter.raw, bytes) and letter.raw, letter
    assert isinstance(letter.reason, str) and letter.reason.strip(), letter
    record = _RECORDS.dead_letter_record(letter)
    assert record.value == letter.raw


def check_results(results: Iterable[Any], *, amount: SourceField, fee: SourceField | None = None) -> tuple[int, int]:
    """Check every item; returns (events, dead letters)."""
    events = letters = 0
    for item in results:
        if isinstance(item, TransferEvent):
            check_event(item, amount=amount, fee=fee)
            events += 1
        elif isinstance(item, DeadLetter):
            check_dead_letter(item)
            letters += 1
        else:
            raise AssertionError(f"parser returned a {type(item).__name__}")
    return events, letters
