"""``transfer-bridge reconcile`` against the providers' simulators and a real broker, with drift
injected: Kafka is seeded through a real pipeline with what the service would have published, minus
or plus the differences each kind of drift is about."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.contract.events import Status, TransferEvent
from bridge.contract.timeutil import format_utc_ms, to_epoch_ms
from bridge.delivery.settings import TopicSettings
from bridge.ingest.plugins import plugin_for
from bridge.kafka.settings import KafkaSettings
from bridge.service import cli
from bridge.service.reconcile_cli import parse_moment, reconcile
from bridge.service.settings import BridgeSettings
from bridge_testkit.conformance import harness_for
from tests.conftest import PipelineFactory
from tests.service.support import service_document, service_settings, write_yaml

pytestmark = [pytest.mark.kafka]


class Driver:
    """Transfers at the provider, moved one state at a time, never delivered to anyone."""

    def __init__(self, name: str, harness: Any):
        self.name = name
        self.harness = harness
        self.count = 0

    async def new(self) -> Any:
        self.count += 1
        h, n = self.harness, self.count
        if self.name in ("okx", "ripio"):
            transfer = h.sim.create(h.scripts[n % len(h.scripts)], h.account)
            await h.sim.advance(transfer)
            return transfer
        if self.name == "binance":  # the lifecycles with two non-final states in a row
            return h.sim.create(("deposit", "withdrawal")[n % 2], h.account)
        transaction = h.sim.create(("withdrawal", "deposit")[n % 2])  # an internal one is two events
        transaction.visible = 0
        return transaction

    async def step(self, transfer: Any) -> bool:
        if self.name in ("okx", "ripio"):
            return bool(await self.harness.sim.advance(transfer))
        if self.name == "binance":
            return bool(self.harness.sim.advance(transfer))
        if transfer.visible < len(transfer.states) - 1:
            transfer.visible += 1
            return True
        return False

    async def to_end(self, transfer: Any) -> None:
        while await self.step(transfer):
            pass


PROVIDERS = ("okx", "ripio", "binance", "fireblocks")


@pytest.fixture
def quiet_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command routes the root logger to stderr; keep pytest's own handlers for later tests."""
    monkeypatch.setattr("bridge.observability.logs.configure_logging", lambda *args, **kwargs: None)


def _args(**overrides: Any) -> argparse.Namespace:
    options: dict[str, Any] = {"providers": None, "repair": False, "skew": 3600.0, "spill_dir": None, "format": "json"}
    return argparse.Namespace(**{**options, **overrides})


def _window() -> Any:
    from bridge.consumer.reconcile import Window

    now = datetime.now(UTC)
    return Window(to_epoch_ms(format_utc_ms(now - timedelta(hours=1))), to_epoch_ms(format_utc_ms(now + timedelta(minutes=1))))


async def _run(settings: BridgeSettings, **overrides: Any) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = await reconcile(settings, _window(), _args(**overrides), out)
    return code, json.loads(out.getvalue())


async def _provider_view(name: str, section: Any) -> dict[str, TransferEvent]:
    """The provider's current state per key, as its history API lists it."""
    found: dict[str, TransferEvent] = {}
    window = _window()
    for history in plugin_for(name).histories(section):
        async for item in history.transfers(window.since_ms, window.until_ms):
            if isinstance(item, TransferEvent):
                found[item.key] = item
    return found


def _other_status(event: TransferEvent, *, final: bool) -> TransferEvent:
    """The same transfer in another state than the provider's (what a lost or wrong record leaves)."""
    if final:
        status = Status.FAILED if event.status is Status.COMPLETED else Status.COMPLETED
    else:
        status = Status.PROCESSING if event.status is not Status.PROCESSING else Status.PENDING
    return event.model_copy(update={"status": status, "is_final": final})


def _kinds(report: dict[str, Any]) -> dict[str, str]:
    return {row["key"]: row["kind"] for row in report["drift"]}


async def _scene(name: str, harness: Any, *, final_in_kafka_only: bool) -> tuple[list[Any], Driver]:
    """Five transfers at the provider: one matching, one missing in Kafka, one behind, one final
    at the provider only, one final in Kafka only (left out when not wanted)."""
    driver = Driver(name, harness)
    transfers = [await driver.new() for _ in range(5 if final_in_kafka_only else 4)]
    await driver.to_end(transfers[3])  # final at the provider, Kafka holds a non-final state
    if name != "ripio":  # Ripio's lifecycles have one non-final state: Kafka holds another one instead
        await driver.step(transfers[2])  # moved on at the provider; Kafka is left behind
    return transfers, driver


async def _seed(make_pipeline: PipelineFactory, tmp_path: Path, view: dict[str, TransferEvent], keys: list[str], *, final_in_kafka_only: bool) -> None:
    matching, _missing, behind, final_at_provider = keys[:4]
    seeds = [view[matching], _other_status(view[behind], final=False), _other_status(view[final_at_provider], final=False)]
    if final_in_kafka_only:
        seeds.append(_other_status(view[keys[4]], final=True))
    pipeline = await make_pipeline(store_path=tmp_path / "seed-dedup.sqlite3")
    outcomes = await pipeline.submit_all(seeds)
    assert [o.value for o in outcomes] == ["published"] * len(seeds)
    await pipeline.close(timeout=10)


def _settings(tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings, name: str, section: dict[str, Any]) -> BridgeSettings:
    return service_settings(tmp_path, kafka, topics, **{name: section, "openxswitch": {"enabled": True, "secrets": ["rec0ncile-test-secret"]}})


def _key(name: str, transfer: Any) -> str:
    if name == "fireblocks":
        return f"fireblocks:{transfer.direction}:{transfer.id}"
    return str(transfer.key)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_reconcile_reports_each_kind_of_drift_and_exits_1(
    name: str, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory
) -> None:
    async with harness_for(name) as harness:
        transfers, _ = await _scene(name, harness, final_in_kafka_only=True)
        settings = _settings(tmp_path, kafka_settings, topics, name, harness.section())
        section = getattr(settings, name)
        view = await _provider_view(name, section)
        keys = [_key(name, t) for t in transfers]
        assert set(keys) <= set(view), "the simulator lists every transfer it holds"
        assert view[keys[3]].is_final and not any(view[k].is_final for k in (keys[1], keys[2], keys[4]))
        await _seed(make_pipeline, tmp_path, view, keys, final_in_kafka_only=True)

        code, report = await _run(settings)

    assert code == 1
    assert _kinds(report) == {
        keys[1]: "missing_in_kafka",
        keys[2]: "status_differs",
        keys[3]: "final_at_provider_only",
        keys[4]: "final_in_kafka_only",
    }
    assert {row["key"] for row in report["drift"] if row["repairable"]} == {keys[1], keys[2], keys[3]}
    assert report["not_compared"] == [{"provider": "openxswitch", "reason": "no history API (webhooks only): not compared"}]
    counts = report["counts"][name]
    assert (counts["at_provider"], counts["in_kafka"], counts["matching"]) == (5, 4, 1)
    assert report["clean"] is False


@pytest.mark.parametrize("name", PROVIDERS)
async def test_repair_publishes_what_is_missing_or_behind_and_a_second_run_is_clean(
    name: str, tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory
) -> None:
    async with harness_for(name) as harness:
        transfers, _ = await _scene(name, harness, final_in_kafka_only=False)
        settings = _settings(tmp_path, kafka_settings, topics, name, harness.section())
        view = await _provider_view(name, getattr(settings, name))
        keys = [_key(name, t) for t in transfers]
        await _seed(make_pipeline, tmp_path, view, keys, final_in_kafka_only=False)

        repaired_code, repaired = await _run(settings, repair=True)
        again_code, again = await _run(settings)
        repeat_code, repeat = await _run(settings, repair=True)

    assert repaired["repair"] == {"published": 3}
    assert repaired_code == 0, "every drift row was put right"
    assert (again_code, again["drift"], again["clean"]) == (0, [], True)
    assert again["counts"][name]["matching"] == 4
    assert (repeat_code, repeat["repair"]) == (0, None), "nothing left to repair"


async def test_the_command_line_prints_a_table_and_exits_1_on_drift_2_without_kafka(
    tmp_path: Path,
    kafka_settings: KafkaSettings,
    topics: TopicSettings,
    make_pipeline: PipelineFactory,
    capsys: pytest.CaptureFixture[str],
    quiet_logs: None,
) -> None:
    await (await make_pipeline()).close(timeout=10)  # the topics exist, nothing is in them
    async with harness_for("okx") as harness:
        driver = Driver("okx", harness)
        transfer = await driver.new()
        document = service_document(tmp_path, kafka_settings, topics, okx=harness.section())
        config = write_yaml(tmp_path / "bridge.yaml", document)
        code = await asyncio.to_thread(cli.main, ["-c", str(config), "reconcile", "--since", "1h", "--until", "2026-12-31T00:00:00Z"])
        table, errors = capsys.readouterr()
        unreachable = write_yaml(tmp_path / "down.yaml", {**document, "kafka": {"bootstrap_servers": "127.0.0.1:1", "request_timeout_ms": 2000}})
        down = await asyncio.to_thread(cli.main, ["-c", str(unreachable), "reconcile", "--format", "json"])
    assert code == 1, errors
    row = next(line for line in table.splitlines() if transfer.key in line)
    assert row.split()[:2] == ["missing_in_kafka", transfer.key]
    assert "drift: 1 transfers differ, 1 repairable (run again with --repair)" in table
    assert down == 2
    assert "Kafka could not be read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)), ("7d", timedelta(days=7)), ("0s", timedelta(0))],
)
def test_a_window_bound_is_a_duration_back_from_now(text: str, expected: timedelta) -> None:
    now = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    assert parse_moment(text, now) == now - expected


def test_a_window_bound_is_an_rfc3339_time_utc_when_no_zone_is_given() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    assert parse_moment("2026-11-28T10:00:00Z", now) == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert parse_moment("2026-11-28", now) == datetime(2026, 11, 28, tzinfo=UTC)


def test_an_unreadable_window_is_a_usage_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet_logs: None) -> None:
    config = write_yaml(tmp_path / "bridge.yaml", {"okx": {"enabled": False}})
    assert cli.main(["-c", str(config), "reconcile", "--since", "yesterday"]) == 2
    assert "neither an RFC 3339 time nor a duration" in capsys.readouterr().err
    assert cli.main(["-c", str(config), "reconcile"]) == 2
    assert "no enabled provider account with a history API" in capsys.readouterr().err




def test_providers_without_a_history_api_or_its_credentials_have_no_reader() -> None:
    from bridge.sources.fireblocks.config import FireblocksConfig

    assert plugin_for("openxswitch").history is None
    assert plugin_for("fireblocks").histories(FireblocksConfig(enabled=True, jwks_file=None)) == []


def test_an_unknown_provider_filter_is_a_usage_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet_logs: None) -> None:
    config = write_yaml(tmp_path / "bridge.yaml", {"okx": {"enabled": False}})
    assert cli.main(["-c", str(config), "reconcile", "--provider", "kraken"]) == 2
    assert "no provider 'kraken' is installed" in capsys.readouterr().err


async def test_the_kafka_side_is_read_committed_from_the_window_and_keeps_each_keys_latest_state(
    kafka_settings: KafkaSettings, topics: TopicSettings, make_pipeline: PipelineFactory
) -> None:
    from aiokafka import AIOKafkaProducer

    from bridge.consumer.latest import TopicScan

    await (await make_pipeline()).close(timeout=10)  # creates the topics
    now_ms = to_epoch_ms(format_utc_ms(datetime.now(UTC)))
    event = {"key": "okx:deposit:1", "provider": "okx", "status": "pending", "is_final": False, "provider_status": "0",
             "created_at": format_utc_ms(datetime.now(UTC)), "occurred_at": format_utc_ms(datetime.now(UTC))}  # fmt: skip
    old = {**event, "key": "okx:deposit:old"}

    def value(document: dict[str, Any]) -> bytes:
        return json.dumps(document).encode()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, transactional_id=f"rec-{topics.deposit}")
    await producer.start()
    try:
        async with producer.transaction():  # written three days ago: before the window and its skew
            await producer.send(topics.deposit, value(old), key=b"okx:deposit:old", partition=0, timestamp_ms=now_ms - 3 * 86_400_000)
        async with producer.transaction():
            await producer.send(topics.deposit, value(event), key=b"okx:deposit:1", partition=0)
            await producer.send(topics.deposit, value({**event, "status": "credited", "provider_status": "1"}), key=b"okx:deposit:1", partition=0)
        await producer.begin_transaction()
        await producer.send(topics.deposit, value({**event, "status": "completed", "is_final": True}), key=b"okx:deposit:1", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topics.deposit, b"not json", key=b"garbage", partition=0)
    finally:
        await producer.stop()

    scan = TopicScan(kafka_settings, [topics.deposit, topics.withdrawal], since_ms=now_ms - 3_600_000, skew_ms=3_600_000)
    seen = [state async for batch in scan.batches() for state in batch]

    assert [(s.key, s.status) for s in seen] == [("okx:deposit:1", "pending"), ("okx:deposit:1", "credited")]
    assert (scan.records, scan.unreadable) == (3, 1)
