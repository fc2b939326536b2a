"""``transfer-bridge dlq replay`` on the real broker: a DLQ filled by a broken parser, fixed, replayed.

The DLQ is filled the way the service fills it: OKX pushes through ``parse_push`` with the deposit
parser replaced by one that refuses every item, each dead letter sent by a pipeline. The command
then runs as an operator runs it (``main([...])``, the service's configuration file), with the
real parser back.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.contract.events import DeadLetter, Provider, TransferEvent
from bridge.contract.jsonutil import loads_exact
from bridge.contract.parsing import ParseError
from bridge.delivery.assemble import build_pipeline
from bridge.delivery.pipeline import Outcome
from bridge.delivery.settings import DedupSettings, TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.service.cli import main
from bridge.sources.okx import parse as okx
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from tests.conftest import PipelineFactory
from tests.service.support import service_document, write_yaml
from tests.support import RECEIVED, fixture_bytes

pytestmark = pytest.mark.kafka


@contextlib.contextmanager
def broken_deposit_parser() -> Iterator[None]:
    """The bug being fixed: the OKX deposit parser refuses every item."""
    original = okx._PARSERS[okx.DEPOSIT_CHANNEL]

    def broken(item: Mapping[str, Any], **_: Any) -> TransferEvent:
        raise ParseError("deposit parser broken: field 'state' not understood")

    okx._PARSERS[okx.DEPOSIT_CHANNEL] = broken
    try:
        yield
    finally:
        okx._PARSERS[okx.DEPOSIT_CHANNEL] = original


def deposit_push(deposit_ids: list[str]) -> dict[str, Any]:
    """The documented OKX deposit push, one item per id."""
    push = loads_exact(fixture_bytes("okx/deposit-info.push.json"))
    template = push["data"][0]
    push["data"] = [{**template, "depId": dep_id} for dep_id in deposit_ids]
    return push


async def fill(make_pipeline: PipelineFactory, tmp_path: Path, letters: list[DeadLetter]) -> None:
    pipeline = await make_pipeline(store_path=tmp_path / f"fill-{len(letters)}-{id(letters)}.sqlite3")
    assert set(await pipeline.submit_all(letters)) == {"dead_lettered"}


def broken_letters(deposit_ids: list[str]) -> list[DeadLetter]:
    with broken_deposit_parser():
        results = okx.parse_push(deposit_push(deposit_ids), received_at=RECEIVED)
    assert all(isinstance(item, DeadLetter) for item in results)
    return results  # type: ignore[return-value]


def hopeless_letter() -> DeadLetter:
    """An item no parser will ever read: it has no state."""
    push = deposit_push(["9999"])
    del push["data"][0]["state"]
    (letter,) = okx.parse_push(push, received_at=RECEIVED)
    assert isinstance(letter, DeadLetter)
    return letter


async def dlq(config: Path, *args: str) -> dict[str, Any]:
    """Run ``transfer-bridge -c config dlq replay --format json …`` as a process would; its report."""
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(["-c", str(config), "dlq", "replay", "--format", "json", *args])

    assert await asyncio.to_thread(call) == 0
    report: dict[str, Any] = json.loads(out.getvalue().splitlines()[-1])
    return report


@pytest.fixture
def config(tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings) -> Path:
    return write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka_settings, topics))


async def published(kafka: KafkaSettings, topics: TopicSettings, expect: int | None = None) -> list[ConsumedRecord]:
    return await read_topic(kafka.bootstrap_servers, topics.deposit, expect=expect, timeout=10, idle=1.0)


async def test_a_dlq_filled_by_a_broken_parser_is_published_once_the_parser_is_fixed(
    make_pipeline: PipelineFactory, tmp_path: Path, config: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    ids = [str(88_000_000 + n) for n in range(6)]
    await fill(make_pipeline, tmp_path, [*broken_letters(ids), hopeless_letter()])

    report = await dlq(config)

    assert report["read"] == report["selected"] == 7
    assert report["normalized"] == 6 and report["events"] == {"published": 6}
    assert report["still_failing"] == 1 and report["dead_lettered_again"] == 1
    assert report["still_failing_by_reason"] == {"missing required field 'state'": 1}
    records = await published(kafka_settings, topics, expect=6)
    assert sorted(r.key.decode() for r in records) == sorted(f"okx:deposit:{i}" for i in ids)
    assert all(r.headers["ce_subject"] == r.key for r in records)

    letters = await read_topic(kafka_settings.bootstrap_servers, topics.dead_letter, expect=8, timeout=10)
    again = [r for r in letters if "dlq_replay_count" in r.headers]
    assert len(again) == 1 and again[0].headers["dlq_replay_count"] == b"1"
    assert again[0].headers["__connect.errors.exception.message"] == b"missing required field 'state'"
    assert again[0].headers["__connect.errors.topic"] == b"okx/deposit-info"
    assert again[0].headers["dlq_account"] == letters[0].headers["dlq_account"]


async def test_a_payload_the_parser_still_refuses_as_a_whole_goes_back_byte_for_byte_with_its_reason(
    make_pipeline: PipelineFactory, tmp_path: Path, config: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    """A whole frame (not a push of a transfer channel) and bytes that are not JSON: the dead-letter
    parser refuses them (it never raises), and the replay sends the record it read back as it was,
    with the refusal's reason — the raw bytes as received, not the parser's re-encoding."""
    frame = b'{ "arg" : {"channel": "balance_and_position", "uid": "77"},  "data": [] }'
    letters = [
        DeadLetter(Provider.OKX, "ws/v5/business", "push for unexpected channel 'balance_and_position'", frame, RECEIVED, "77", {"account": "main"}),
        DeadLetter(Provider.OKX, "ws/v5/business", "response is not JSON", b'{"arg": ', RECEIVED, "77", {"account": "main"}),
    ]
    await fill(make_pipeline, tmp_path, letters)

    report = await dlq(config)

    assert (report["read"], report["normalized"], report["still_failing"], report["dead_lettered_again"]) == (2, 0, 2, 2)
    back = [r for r in await read_topic(kafka_settings.bootstrap_servers, topics.dead_letter, expect=4, timeout=10) if "dlq_replay_count" in r.headers]
    assert [r.value for r in back] == [frame, b'{"arg": ']
    assert back[0].headers["dlq_reason"] == b"push for unexpected channel 'balance_and_position'"
    with pytest.raises(ValueError) as not_json:
        loads_exact(b'{"arg": ')
    assert back[1].headers["dlq_reason"] == str(not_json.value).encode()  # today's reason, as before: the decoder's
    assert [(r.headers["dlq_channel"], r.headers.get("dlq_account")) for r in back] == [(b"ws/v5/business", b"main")] * 2


async def test_a_second_run_continues_from_the_committed_progress_and_publishes_nothing_twice(
    make_pipeline: PipelineFactory, tmp_path: Path, config: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    first, later = ["101", "102", "103"], ["104", "105"]
    await fill(make_pipeline, tmp_path, broken_letters(first))
    assert (await dlq(config))["events"] == {"published": 3}

    await fill(make_pipeline, tmp_path, broken_letters([*first[:1], *later]))  # one of them dead-lettered again
    second = await dlq(config)
    assert second["read"] == 3, "the first run's records were committed: not read again"
    assert second["events"] == {"published": 2, "duplicate": 1}

    again = await dlq(config, "--group", "a-fresh-group")  # everything from the start: the dedup gate drops it
    assert again["read"] == 6 and again["events"] == {"duplicate": 6}

    records = await published(kafka_settings, topics)
    event_ids = [r.headers["ce_id"] for r in records]
    assert len(event_ids) == len(set(event_ids)) == 5


async def test_a_dry_run_reports_what_would_happen_and_changes_nothing(
    make_pipeline: PipelineFactory, tmp_path: Path, config: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    await fill(make_pipeline, tmp_path, [*broken_letters(["201", "202"]), hopeless_letter()])

    dry = await dlq(config, "--dry-run")
    assert dry["dry_run"] is True and dry["normalized"] == 2 and dry["still_failing"] == 1
    assert dry["events"] == {} and dry["dead_lettered_again"] == 0
    assert await published(kafka_settings, topics) == []
    assert len(await read_topic(kafka_settings.bootstrap_servers, topics.dead_letter, timeout=5)) == 3

    real = await dlq(config)  # the dry run committed no progress
    assert real["read"] == 3 and real["events"] == {"published": 2}


async def test_a_payload_that_keeps_failing_is_sent_back_counted_and_not_replayed_past_the_limit(
    make_pipeline: PipelineFactory, tmp_path: Path, config: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    await fill(make_pipeline, tmp_path, [hopeless_letter()])

    counts = []
    for _ in range(3):
        report = await dlq(config, "--max-replays", "2")
        counts.append((report["read"], report["still_failing"], report["dead_lettered_again"], report["over_limit"]))
    # run 1 fails it (count 1), run 2 reads only that copy and fails it again (count 2),
    # run 3 finds it at the limit: counted, not tried, not sent back.
    assert counts == [(1, 1, 1, 0), (1, 1, 1, 0), (1, 0, 0, 1)]
    letters = await read_topic(kafka_settings.bootstrap_servers, topics.dead_letter, timeout=5)
    assert [r.headers.get("dlq_replay_count") for r in letters] == [None, b"1", b"2"]
    assert (await dlq(config))["read"] == 0, "nothing left: the loop ended"


async def test_in_exactly_once_mode_a_replay_beside_the_service_neither_fences_it_nor_republishes_its_states(
    make_pipeline: PipelineFactory, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    suffix = uuid.uuid4().hex[:10]
    dedup = DedupSettings(store="kafka", state_topic=f"t.{suffix}.state", transactional_id=f"bridge-{suffix}")
    config = write_yaml(tmp_path / "eos.yaml", service_document(tmp_path, kafka_settings, topics, dedup=dedup.model_dump(mode="json")))
    service = build_pipeline(kafka_settings, topics, dedup)
    await service.start()
    try:
        (already,) = okx.parse_push(deposit_push(["301"]), received_at=RECEIVED)  # the service published this state itself
        assert await service.submit(already) is Outcome.PUBLISHED
        await fill(make_pipeline, tmp_path, broken_letters(["301", "302"]))

        report = await dlq(config)

        assert report["events"] == {"published": 1, "duplicate": 1}, "the state restored from Kafka drops the repeat"
        (later,) = okx.parse_push(deposit_push(["303"]), received_at=RECEIVED)
        assert await service.submit(later) is Outcome.PUBLISHED, "the service's producer was not fenced"
    finally:
        await service.close()
    records = await published(kafka_settings, topics, expect=3)
    assert sorted(r.key.decode() for r in records) == ["okx:deposit:301", "okx:deposit:302", "okx:deposit:303"]


async def test_in_cluster_mode_a_replay_is_refused_before_publishing_and_a_dry_run_still_reports(
    make_pipeline: PipelineFactory, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    suffix = uuid.uuid4().hex[:10]
    cluster = {"enabled": True, "group_id": f"c-{suffix}", "coordination_topic": f"c.{suffix}.coord", "ingress_topic": f"c.{suffix}.ingress"}
    dedup = {"store": "kafka", "state_topic": f"t.{suffix}.state", "transactional_id": f"bridge-{suffix}"}
    config = write_yaml(tmp_path / "cluster.yaml", service_document(tmp_path, kafka_settings, topics, dedup=dedup, cluster=cluster))
    await fill(make_pipeline, tmp_path, broken_letters(["401"]))

    code = await asyncio.to_thread(main, ["-c", str(config), "dlq", "replay"])

    assert code == 2
    assert "not supported in cluster mode" in capsys.readouterr().err
    assert (await dlq(config, "--dry-run"))["normalized"] == 1
    assert await published(kafka_settings, topics) == []
