"""Event bytes are pinned: every document example, parsed and encoded as the publisher does, gives
exactly the records (key, value, headers) committed in ``fixtures/golden/records.json``.

The golden file was written by the code before the source engine refactor; a change to any byte a
consumer reads (field order, number formatting, event id, CloudEvents headers) fails here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.contract.events import TransferEvent, Via
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseResult
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.sources.okx import messages as okx_messages
from bridge.sources.okx import parse as okx
from bridge.sources.openxswitch import messages as oxs_messages
from bridge.sources.openxswitch import parse as oxs
from bridge.sources.ripio import messages as ripio_messages
from bridge.sources.ripio import parse as ripio
from tests.support import FIXTURES

AT = "2026-11-29T00:00:00.000Z"


def _read(name: str) -> Any:
    return loads_exact((FIXTURES / name).read_bytes())


def _examples() -> Iterator[tuple[str, list[ParseResult]]]:
    for name in ("okx/deposit-info.push.json", "okx/withdrawal-info.push.json", "okx/withdrawal-info.addrEx.push.json"):
        yield name, okx.parse_push(_read(name), received_at=AT)
    for name, channel in (("okx/deposit-history.rest.json", "deposit-info"), ("okx/withdrawal-history.rest.json", "withdrawal-info")):
        rows = okx_messages.history_rows(_read(name), 200)
        yield name, okx.parse_rows(channel, rows, received_at=AT, via=Via.BACKFILL, uid="44882211")
    for name in ("ripio/deposit.crypto.json", "ripio/deposit.fiat.json", "ripio/withdrawal.json"):
        yield name, ripio.parse_message(_read(name), received_at=AT)
    for name, topic in (("ripio/deposits.listing.rest.json", "deposit"), ("ripio/withdrawals.listing.rest.json", "withdrawal")):
        rows = ripio_messages.listing_page(topic, _read(name), 200).rows
        yield name, ripio.parse_rows(topic, rows, received_at=AT, user_id="user-1")
    for name in (
        "openxswitch/deposit.pending.json",
        "openxswitch/deposit.success.json",
        "openxswitch/deposit.success.internal.json",
        "openxswitch/deposit.updated.json",
        "openxswitch/withdraw.confirmed.json",
        "openxswitch/withdraw.unconfirmed.json",
    ):
        yield name, oxs.parse_delivery(oxs_messages.read_delivery(_read(name)).document, received_at=AT)


def _records() -> list[dict[str, Any]]:
    publisher = Publisher(KafkaSettings(), TopicSettings())
    out = []
    for name, results in _examples():
        for item in results:
            assert isinstance(item, TransferEvent), f"{name}: {item}"
            record = publisher.event_record(item)
            out.append(
                {
                    "example": name,
                    "topic": record.topic,
                    "key": record.key.decode(),
                    "value": base64.b64encode(record.value).decode(),
                    "headers": [[k, base64.b64encode(v).decode()] for k, v in record.headers],
                }
            )
    return out


GOLDEN = json.loads((FIXTURES / "golden" / "records.json").read_text())


def test_every_document_example_still_encodes_to_the_same_record_bytes() -> None:
    records = _records()
    assert [r["example"] for r in records] == [g["example"] for g in GOLDEN]
    for record, golden in zip(records, GOLDEN, strict=True):
        assert record == golden, f"{golden['example']} {golden['key']}: record bytes changed"


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: f"{g['example']}:{g['key']}")
def test_a_pinned_record_value_is_the_contract_json_with_amounts_as_strings(golden: dict[str, Any]) -> None:
    value = json.loads(base64.b64decode(golden["value"]))
    assert isinstance(value["amount"], str) and value["key"] == golden["key"]
