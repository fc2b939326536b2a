"""A full disk under the dedup store: reported, bounded, honest at shutdown, and no final state regressed.

The disk is filled the way SQLite itself meets one: ``PRAGMA max_page_count`` set to the file's
current size makes every write that needs a new page fail with SQLite's own
``database or disk is full`` (SQLITE_FULL), while Kafka stays healthy. The service runs in this
event loop (``BridgeApp`` from a config file); its store is the real ``SQLiteStore`` with a switch
to fill and free that "disk".

What the adversarial run saw: every delivery still acknowledged, one ``will retry`` log line a
second, ``/readyz`` and the metrics silent, SIGTERM exiting 4 with "0 items not acknowledged", and
after a restart the bridge remembering 201 of 4,000 transfers and publishing a replayed ``pending``
after ``completed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY

from bridge.contract.events import TransferEvent
from bridge.delivery import assemble
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.service.app import ExitCode
from bridge_testkit.kafka_io import read_topic
from tests.service.support import Running, eventually, running, service_settings
from tests.test_pipeline_kafka import withdrawal

pytestmark = pytest.mark.kafka

MAX_UNPERSISTED = 40
ACK_TIMEOUT = 1.5  # what a webhook waits for Kafka's ack before answering 503
TRANSFERS = 150
SEQUENTIAL = 10


class FillableStore(SQLiteStore):
    """The real store; ``fill()`` makes its disk full (SQLITE_FULL on the next new page), ``free()`` undoes it."""

    instances: ClassVar[list[FillableStore]] = []
    full_on_open: ClassVar[bool] = False

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        FillableStore.instances.append(self)
        if FillableStore.full_on_open:
            self.fill()

    def fill(self) -> None:
        with self._mutex:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count = {pages}")

    def free(self) -> None:
        with self._mutex:
            self._db.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def fillable(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FillableStore]]:
    monkeypatch.setattr(assemble, "SQLiteStore", FillableStore)
    FillableStore.instances = []
    FillableStore.full_on_open = False
    yield FillableStore
    FillableStore.full_on_open = False


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def lifecycle(n: int) -> tuple[TransferEvent, TransferEvent]:
    return withdrawal(transfer_id=f"full-{n}"), withdrawal("success", transfer_id=f"full-{n}", confirmations=12)


def late_pending(n: int) -> TransferEvent:
    """A pending state of transfer ``n`` the provider sends (or replays) after its completed one."""
    return withdrawal(transfer_id=f"full-{n}", confirmations=3)


ACKED_AT: list[float] = []


async def hand_over(pipeline: Pipeline, event: TransferEvent, held: list[asyncio.Task[Outcome]]) -> Outcome | None:
    """As the webhook engine does: submit, wait at most ACK_TIMEOUT; None is its 503 (the item stays)."""
    task = asyncio.ensure_future(pipeline.submit(event))
    try:
        outcome = await asyncio.wait_for(asyncio.shield(task), ACK_TIMEOUT)
    except TimeoutError:
        held.append(task)
        return None
    if outcome is Outcome.PUBLISHED:
        ACKED_AT.append(time.monotonic())
    return outcome


async def deliver_lifecycles(pipeline: Pipeline, held: list[asyncio.Task[Outcome]]) -> dict[int, list[Outcome | None]]:
    """Each transfer's pending then completed, as a provider posts them (the next after the first's
    answer): a few transfers one after the other, then the rest all at once."""
    answers: dict[int, list[Outcome | None]] = {}

    async def one(n: int) -> None:
        pending, completed = lifecycle(n)
        first = await hand_over(pipeline, pending, held)
        answers[n] = [first]
        if first is Outcome.PUBLISHED:
            answers[n].append(await hand_over(pipeline, completed, held))

    for n in range(SEQUENTIAL):
        await one(n)
    await asyncio.gather(*(one(n) for n in range(SEQUENTIAL, TRANSFERS)))
    return answers


async def readiness(bridge: Running) -> tuple[int, dict[str, Any]]:
    return await bridge.get_json("/readyz")


def settings_for(tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, deadline: float = 4.0) -> Any:
    return service_settings(
        tmp_path, kafka_settings, topics, dedup={"max_unpersisted": MAX_UNPERSISTED}, shutdown={"deadline_seconds": deadline}
    )


def store_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("bridge.delivery") and "dedup store" in r.getMessage()]


async def test_a_full_disk_fails_readiness_counts_logs_once_and_holds_intake_until_freed(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, fillable: type[FillableStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    failures_before = sample("bridge_dedup_store_failures_total")
    held: list[asyncio.Task[Outcome]] = []
    async with running(settings_for(tmp_path, kafka_settings, topics), configured=False) as bridge:
        pipeline = bridge.app.pipeline
        assert pipeline is not None
        [store] = fillable.instances
        assert await pipeline.submit(withdrawal(transfer_id="before")) is Outcome.PUBLISHED
        await eventually(lambda: readiness_is(bridge, 200), what="ready before the disk fills")

        store.fill()
        ACKED_AT.clear()
        answers = await deliver_lifecycles(pipeline, held)
        acked = sum(a is Outcome.PUBLISHED for seq in answers.values() for a in seq)
        refused = sum(a is None for seq in answers.values() for a in seq)
        await asyncio.sleep(3.5)  # the store keeps failing: retries, but no log line per retry

        status, detail = await readiness(bridge)
        dedup = detail["kafka"].get("dedup", {})
        unpersisted = dedup.get("unpersisted")
        assert status == 503, detail
        assert dedup.get("persisting") is False, detail
        assert "disk is full" in (dedup.get("error") or ""), detail
        # Pages with room still took some marks after fill(); from the first failed write on, at most
        # MAX_UNPERSISTED more states were acknowledged, and the rest waited (the webhook's 503).
        failing_since = time.monotonic() - dedup["failing_seconds"]
        acked_while_failing = sum(at >= failing_since for at in ACKED_AT)
        assert acked_while_failing <= MAX_UNPERSISTED, f"{acked_while_failing} states acknowledged with a store that persists nothing"
        assert refused > 0 and held, f"intake never waited: all {acked} deliveries would have been answered 200"
        assert unpersisted is not None and 0 < unpersisted <= MAX_UNPERSISTED
        assert sample("bridge_dedup_store_failures_total") - failures_before >= 2
        assert sample("bridge_dedup_unpersisted") == unpersisted
        lines = store_lines(caplog)
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR, [r.getMessage() for r in lines]
        assert "disk is full" in lines[0].getMessage()

        # the gate still knows everything it acknowledged: a replayed pending after completed is stale
        done = [n for n, seq in answers.items() if seq == [Outcome.PUBLISHED, Outcome.PUBLISHED]]
        assert done, answers
        assert await pipeline.submit(late_pending(done[0])) is Outcome.STALE
        assert await pipeline.submit(lifecycle(done[0])[0]) is Outcome.DUPLICATE

        store.free()
        outcomes = await asyncio.wait_for(asyncio.gather(*held), 30)
        assert set(outcomes) <= {Outcome.PUBLISHED, Outcome.DUPLICATE}
        await eventually(lambda: readiness_is(bridge, 200), timeout=15, what="ready once the disk has room again")
        await eventually(lambda: pipeline.gate.unpersisted == 0, what="every mark written")
        _, detail = await readiness(bridge)
        assert detail["kafka"]["dedup"]["persisting"] is True and detail["kafka"]["dedup"]["unpersisted"] == 0
        assert sample("bridge_dedup_unpersisted") == 0
        assert any("persisting again" in r.getMessage() for r in store_lines(caplog))
        assert await bridge.stop() == ExitCode.OK


async def readiness_is(bridge: Running, expected: int) -> bool:
    status, _ = await readiness(bridge)
    return status == expected


async def test_sigterm_on_a_full_disk_names_the_store_and_a_restart_regresses_no_final_state(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, kafka_bootstrap: str,
    fillable: type[FillableStore], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = settings_for(tmp_path, kafka_settings, topics)
    held: list[asyncio.Task[Outcome]] = []
    async with running(settings, configured=False) as bridge:
        pipeline = bridge.app.pipeline
        assert pipeline is not None
        assert await pipeline.submit(withdrawal(transfer_id="before")) is Outcome.PUBLISHED
        await asyncio.sleep(0.3)  # persisted
        fillable.instances[0].fill()
        answers = await deliver_lifecycles(pipeline, held)
        code = await bridge.stop()
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    completed = sorted(n for n, seq in answers.items() if seq == [Outcome.PUBLISHED, Outcome.PUBLISHED])
    acked_pending = sorted(n for n, seq in answers.items() if seq[0] is Outcome.PUBLISHED)
    assert completed, answers

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "bridge.service.app"]
    assert code == ExitCode.CONFIG, errors
    assert errors and "dedup store" in errors[-1] and "disk is full" in errors[-1], errors
    assert not re.search(r"(?<!\d)0 items not acknowledged", " ".join(errors)), errors

    # restart, the disk still full: everything acknowledged is known, nothing older gets through
    fillable.full_on_open = True
    caplog.clear()
    async with running(settings, configured=False) as bridge:
        pipeline = bridge.app.pipeline
        assert pipeline is not None
        late = [await pipeline.submit(late_pending(n)) for n in completed]
        assert late == [Outcome.STALE] * len(completed), f"{late.count(Outcome.PUBLISHED)} of {len(completed)} pending states published after completed"
        repeats = [await pipeline.submit(event) for n in completed for event in lifecycle(n)]
        assert repeats == [Outcome.DUPLICATE] * len(repeats), "states acknowledged before the restart published again"
        status, detail = await readiness(bridge)
        assert status == 503 and detail["kafka"]["dedup"]["persisting"] is False, detail
        fillable.instances[-1].free()
        await eventually(lambda: readiness_is(bridge, 200), timeout=15, what="ready once the reserve was written")
        assert await bridge.stop() == ExitCode.OK

    # and a third start, the disk fine, still knows them (the reserve reached SQLite)
    fillable.full_on_open = False
    async with running(settings, configured=False) as bridge:
        pipeline = bridge.app.pipeline
        assert pipeline is not None
        assert [await pipeline.submit(late_pending(n)) for n in completed] == [Outcome.STALE] * len(completed)
        assert await bridge.stop() == ExitCode.OK

    records = await read_topic(kafka_bootstrap, topics.withdrawal, timeout=20, idle=2)
    assert len(records) >= 1 + len(acked_pending) + len(completed)
    statuses: dict[bytes | None, list[str]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        statuses.setdefault(r.key, []).append(json.loads(r.value)["status"])
    regressed = {k: s for k, s in statuses.items() if "completed" in s and s[s.index("completed") + 1 :]}
    assert regressed == {}, f"states published after completed: {regressed}"
