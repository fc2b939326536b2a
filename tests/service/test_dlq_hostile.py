"""Dead letters that are not as the bridge writes them: foreign records with hostile headers, and
reasons long enough to be cut at the header budget."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from bridge.contract.events import DeadLetter, Provider
from bridge.delivery.settings import TopicSettings
from bridge.kafka import headers as h
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings
from bridge.service.cli import main
from bridge_testkit.kafka_io import read_topic
from tests.conftest import PipelineFactory
from tests.service.support import service_document, write_yaml
from tests.support import RECEIVED

pytestmark = pytest.mark.kafka

HOSTILE = b"\x1b]0;owned\x07\x1b[2J\xe2\x80\xae"
"""A title change (OSC), a screen clear (CSI) and a right-to-left override."""


async def _cli(config: Path, *args: str) -> str:
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(["-c", str(config), "dlq", *args])

    assert await asyncio.to_thread(call) == 0
    return out.getvalue()


async def test_dlq_list_escapes_every_header_it_prints_of_a_foreign_record(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory
) -> None:
    await make_pipeline(store_path=tmp_path / "dedup.sqlite3")  # creates the topics
    producer = AIOKafkaProducer(**kafka_client_options(kafka_settings))
    await producer.start()
    try:
        headers = [(name, b"x" + HOSTILE) for name in (h.DLQ_PROVIDER, h.DLQ_CHANNEL, h.DLQ_REASON, h.DLQ_RECEIVED_AT)]
        await producer.send_and_wait(topics.dead_letter, b"payload", headers=headers)
    finally:
        await producer.stop()
    config = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka_settings, topics))

    out = await _cli(config, "list")

    assert len(out.splitlines()) == 1
    assert not any(ch in out for ch in "\x1b\x07\u202e")
    assert out.count("x\\x1b]0;owned\\x07") == 4  # each of the four headers, escaped


async def test_a_reason_cut_at_the_header_budget_stays_valid_utf8_in_both_reason_headers(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory
) -> None:
    # 1 ASCII byte, then 2-byte characters: the byte budget (even) falls inside a character.
    reason = "x" + "é" * h.MAX_REASON_BYTES
    pipeline = await make_pipeline(store_path=tmp_path / "dedup.sqlite3")
    await pipeline.submit_all([DeadLetter(Provider.OKX, "deposit-info", reason, b"{}", RECEIVED)])

    (record,) = await read_topic(kafka_settings.bootstrap_servers, topics.dead_letter, expect=1)

    for name in (h.DLQ_REASON, h.CONNECT_EXCEPTION_MESSAGE):
        text = record.headers[name].decode("utf-8")  # Connect tooling reads these as UTF-8 strings
        assert reason.startswith(text) and len(text.encode()) > h.MAX_REASON_BYTES - 4, name
    config = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka_settings, topics))
    shown = json.loads(await _cli(config, "list", "--format", "json"))
    assert "\\x" not in shown["reason"]
