"""``transfer-bridge dlq list|show`` on the real broker: filters, and hostile payloads printed safely."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from pathlib import Path

import pytest

from bridge.contract.events import DeadLetter, Provider
from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.service.cli import main
from bridge.service.dlq.render import payload_view, safe_text
from tests.conftest import PipelineFactory
from tests.service.support import service_document, write_yaml
from tests.support import RECEIVED

ESCAPES = b"\x1b]0;owned\x07\x1b[2J\xc2\x9b31m\xe2\x80\xaeevil"
"""A title change (OSC), a screen clear (CSI), a C1 CSI and a right-to-left override."""

LETTERS = [
    DeadLetter(Provider.OKX, "ws/v5/business", "frame is not JSON: unexpected character", b'{"arg": ' + ESCAPES, RECEIVED, "44882211"),
    DeadLetter(Provider.RIPIO, "stream", "message for unexpected topic 'x\x1b[31m'", b"\xff\xfe\x00binary\x80", RECEIVED),
    DeadLetter(Provider.OPENXSWITCH, "withdraw.confirmed", "field 'amount': more than 100 digits", b'{"a": "' + b"9" * 50_000 + b'"}', RECEIVED),
]


async def cli(config: Path, *args: str) -> str:
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(["-c", str(config), "dlq", *args])

    assert await asyncio.to_thread(call) == 0
    return out.getvalue()


@pytest.fixture
async def config(tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory) -> Path:
    pipeline = await make_pipeline(store_path=tmp_path / "fill.sqlite3")
    await pipeline.submit_all(LETTERS)
    return write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka_settings, topics))


@pytest.mark.kafka
async def test_list_prints_one_bounded_line_per_dead_letter_without_terminal_escapes(config: Path) -> None:
    out = await cli(config, "list", "--width", "60")
    lines = sorted(out.splitlines(), key=lambda line: [p.value in line for p in (Provider.OKX, Provider.RIPIO, Provider.OPENXSWITCH)], reverse=True)
    assert len(lines) == 3 and "okx/" in lines[0] and "ripio/" in lines[1] and "openxswitch/" in lines[2]
    assert not any(ch in out for ch in "\x1b\x07\x9b\u202e\x00")
    assert "\\x1b]0;owned\\x07" in lines[0] and "\\u202e" in lines[0]
    assert f"raw(base64)={base64.b64encode(LETTERS[1].raw).decode()}" in lines[1]  # not UTF-8
    assert len(lines[2]) < 400 and f"({len(LETTERS[2].raw):,} bytes, 60 shown)" in lines[2]


@pytest.mark.kafka
async def test_list_filters_by_provider_channel_reason_and_offset(config: Path) -> None:
    assert len((await cli(config, "list", "--provider", "ripio")).splitlines()) == 1
    assert len((await cli(config, "list", "--provider", "okx", "--provider", "openxswitch")).splitlines()) == 2
    assert "withdraw.confirmed" in await cli(config, "list", "--channel", "withdraw.confirmed")
    assert "openxswitch" in await cli(config, "list", "--reason", "100 DIGITS")
    assert await cli(config, "list", "--reason", "no such reason") == ""
    offsets = [json.loads(line)["offset"] for line in (await cli(config, "list", "--format", "json")).splitlines()]
    assert len((await cli(config, "list", "--from-offset", "1")).splitlines()) == sum(o >= 1 for o in offsets)
    assert len((await cli(config, "list", "--to-offset", "0")).splitlines()) == offsets.count(0)
    assert len((await cli(config, "list", "--since", "1h")).splitlines()) == 3
    assert await cli(config, "list", "--until", "2h") == ""


@pytest.mark.kafka
async def test_show_as_json_carries_the_exact_payload_and_every_header(config: Path) -> None:
    listed = [json.loads(line) for line in (await cli(config, "list", "--format", "json")).splitlines()]
    ripio = next(doc for doc in listed if doc["provider"] == "ripio")
    position = f"{ripio['partition']}:{ripio['offset']}"

    (shown,) = [json.loads(line) for line in (await cli(config, "show", position, "--format", "json")).splitlines()]
    assert base64.b64decode(shown["payload_base64"]) == LETTERS[1].raw
    assert shown["headers"]["__connect.errors.exception.class.name"] == "bridge.contract.parsing.ParseError"
    assert shown["headers"]["__connect.errors.topic"] == "ripio/stream"
    assert shown["reason"] == "message for unexpected topic 'x\\x1b[31m'"

    text = await cli(config, "show", position)
    assert "dlq_reason: message for unexpected topic 'x\\x1b[31m'" in text and "\x1b" not in text
    assert "payload (base64):" in text


def test_a_utf8_character_cut_by_the_budget_is_not_shown_as_binary() -> None:
    kind, shown = payload_view("ééé".encode(), 3)
    assert kind == "text" and shown.startswith("é…")


def test_safe_text_escapes_every_c0_c1_and_bidi_control() -> None:
    hostile = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2066]))
    assert safe_text(hostile).isascii() and safe_text(hostile).isprintable()
