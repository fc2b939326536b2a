"""``dlq replay``: dead letters parsed again with today's parsers, sent through the normal pipeline.

* **Safe to repeat.** Events go through the same pipeline as the service's (built from the same
  configuration), so the dedup gate drops what was already published; a state is published with
  its one deterministic ``event_id`` whatever the number of runs.
* **Progress in a consumer group.** Offsets are committed only after every item of a batch was
  acknowledged by Kafka (or decided by the gate), so a second run continues where the first
  stopped and a crash repeats at most one batch (dropped by the gate again).
* **No loops.** A payload that still fails goes back to the DLQ with ``dlq_replay_count`` one
  higher; one at ``max_replays`` is not tried again. A run reads only up to the end the topic had
  when it began, never what it wrote back itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bridge.contract.events import DeadLetter, TransferEvent
from bridge.contract.parsing import ParseResult, provider_text, refused
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.kafka.headers import REPLAY_COUNT
from bridge.service.dlq.records import DeadLetterRecord, Filter, scan

__all__ = ["ReplayReport", "Replayer", "Verdict", "Reparsers"]

Reparsers = Mapping[str, Callable[[DeadLetter], Sequence[ParseResult]]]
"""Per provider (its ``Provider`` value), the dead-letter parser bound to its configuration section
(a ``bridge.ingest.plugins.Reparse``: never raises; a ``refusal`` when the record is still not a
transfer at all)."""

_REPLAY_KEY = REPLAY_COUNT.removeprefix("dlq_")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What today's parser makes of one dead letter."""

    kind: str
    """``normalized`` (events, maybe with dead letters for some items), ``ignored`` (nothing to
    publish), ``failing``, ``over_limit``, ``no_parser``."""
    events: tuple[TransferEvent, ...] = ()
    letters: tuple[DeadLetter, ...] = ()
    reason: str = ""


@dataclass
class ReplayReport:
    """Counts of one run; ``still_failing`` by reason (cut to one line)."""

    dry_run: bool = False
    read: int = 0
    selected: int = 0
    normalized: int = 0
    ignored: int = 0
    over_limit: int = 0
    no_parser: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    still_failing: Counter[str] = field(default_factory=Counter)
    dead_lettered_again: int = 0
    seconds: float = 0.0

    @property
    def failing(self) -> int:
        return sum(self.still_failing.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "read": self.read, "selected": self.selected, "normalized": self.normalized,
            "events": dict(self.events), "ignored": self.ignored, "still_failing": self.failing,
            "still_failing_by_reason": dict(self.still_failing.most_common()), "dead_lettered_again": self.dead_lettered_again,
            "over_limit": self.over_limit, "no_parser": dict(self.no_parser), "seconds": round(self.seconds, 3),
        }

    def text(self) -> str:
        events = ", ".join(f"{name} {count}" for name, count in sorted(self.events.items())) or "none"
        lines = [
            f"{'dry run: ' if self.dry_run else ''}read {self.read} dead letters, {self.selected} selected, in {self.seconds:.1f}s",
            f"  normalized now: {self.normalized} (events: {events})",
            f"  not a transfer (nothing to publish): {self.ignored}",
            f"  still failing: {self.failing}" + ("" if self.dry_run else f" (sent back to the DLQ: {self.dead_lettered_again})"),
        ]
        lines += [f"    {count:>6}  {reason}" for reason, count in self.still_failing.most_common(20)]
        if self.over_limit:
            lines.append(f"  not replayed, failed too often already: {self.over_limit}")
        if self.no_parser:
            lines.append("  no parser for: " + ", ".join(f"{p or '?'} {n}" for p, n in sorted(self.no_parser.items())))
        return "\n".join(lines)


def _one_line(reason: str) -> str:
    return provider_text(reason.splitlines()[0] if reason else "", 160)


class Replayer:
    """Reparse and (unless ``pipeline`` is None: a dry run) publish, batch by batch."""

    def __init__(self, reparsers: Reparsers, pipeline: Pipeline | None, *, max_replays: int = 3):
        self.reparsers = reparsers
        self.pipeline = pipeline
        self.max_replays = max_replays
        self.report = ReplayReport(dry_run=pipeline is None)

    def judge(self, record: DeadLetterRecord) -> Verdict:
        """Pure: the record through today's parser; never raises."""
        if record.replay_count >= self.max_replays:
            return Verdict("over_limit")
        parser = self.reparsers.get(record.provider)
        if parser is None:
            return Verdict("no_parser")
        try:
            letter = record.letter()
            results = list(parser(letter))
        except Exception as exc:  # noqa: BLE001 - a replay reports every reason, it never stops on one
            reason = str(exc) if isinstance(exc, ValueError) else f"parser failed: {type(exc).__name__}: {exc}"
            return Verdict("failing", reason=reason[:2000])
        whole = refused(results)
        if whole is not None:  # the record as a whole is still not a transfer: it goes back as it is
            return Verdict("failing", reason=whole.reason[:2000])
        events = tuple(r for r in results if isinstance(r, TransferEvent))
        letters = tuple(r for r in results if isinstance(r, DeadLetter))
        if events:
            return Verdict("normalized", events, letters)
        if letters:
            return Verdict("failing", letters=letters, reason=letters[0].reason)
        return Verdict("ignored")

    def _again(self, record: DeadLetterRecord, letters: Sequence[DeadLetter], reason: str) -> list[DeadLetter]:
        """What goes back to the DLQ, counted: the parser's own dead letters, or the whole record."""
        base = record.letter()
        count = {_REPLAY_KEY: str(record.replay_count + 1)}
        if not letters:
            return [replace(base, reason=reason, headers={**base.headers, **count})]
        return [replace(letter, headers={**base.headers, **letter.headers, **count}) for letter in letters]

    async def handle(self, batch: Sequence[tuple[DeadLetterRecord, bool]]) -> asyncio.Future[None]:
        """One batch: judge each selected record and hand what to send to the pipeline (waiting only
        for room in it); the returned future is done once every item was acknowledged or decided."""
        futures: list[asyncio.Future[Outcome]] = []
        for record, selected in batch:
            self.report.read += 1
            if not selected:
                continue
            self.report.selected += 1
            verdict = self.judge(record)
            if verdict.kind == "over_limit":
                self.report.over_limit += 1
            elif verdict.kind == "no_parser":
                self.report.no_parser[record.provider] += 1
            elif verdict.kind == "ignored":
                self.report.ignored += 1
            else:
                if verdict.kind == "normalized":
                    self.report.normalized += 1
                reasons = [letter.reason for letter in verdict.letters] or [verdict.reason] * (verdict.kind == "failing")
                self.report.still_failing.update(_one_line(reason) for reason in reasons)
                if self.pipeline is None:
                    continue
                for event in verdict.events:
                    futures.append(await self.pipeline.offer(event))
                if verdict.kind == "failing" or verdict.letters:
                    for letter in self._again(record, verdict.letters, verdict.reason):
                        futures.append(await self.pipeline.offer(letter))
        return asyncio.ensure_future(self._settle(futures))

    async def _settle(self, futures: list[asyncio.Future[Outcome]]) -> None:
        for outcome in await asyncio.gather(*futures):
            if outcome is Outcome.DEAD_LETTERED:
                self.report.dead_lettered_again += 1
            else:
                self.report.events[outcome.value] += 1


COMMIT_INTERVAL = 1.0
"""Seconds between two commits of the group's progress."""
MAX_UNSETTLED_BATCHES = 8
"""Batches read and handed over while earlier ones still wait for Kafka's acks: reading and
parsing go on during the acks' round trips instead of after them."""


async def replay(
    consumer: AIOKafkaConsumer, topic: str, selected: Filter, replayer: Replayer, *, commit: bool, batch: int = 500
) -> ReplayReport:
    """Every dead letter from the group's committed offset to the end the topic had at the start.

    A batch's offsets are committed once it and every batch before it settled, so the committed
    progress never passes an item Kafka has not acknowledged."""
    started = time.monotonic()
    unsettled: deque[tuple[asyncio.Future[None], dict[TopicPartition, int]]] = deque()
    settled: dict[TopicPartition, int] = {}
    committed_at = time.monotonic()

    async def commit_settled(wait_for: int) -> None:
        nonlocal committed_at
        while unsettled and (len(unsettled) > wait_for or unsettled[0][0].done()):
            settling, last = unsettled.popleft()
            await settling
            settled.update(last)
        # A commit is a round trip to the group coordinator: once a second (and at the end), not
        # per batch. A crash repeats at most that second's work, which the dedup gate drops.
        if settled and commit and (not wait_for or time.monotonic() - committed_at >= COMMIT_INTERVAL):
            await consumer.commit({tp: OffsetAndMetadata(offset + 1, "") for tp, offset in settled.items()})
            settled.clear()
            committed_at = time.monotonic()

    try:
        async for records in scan(consumer, topic, selected, from_committed=True, batch=batch):
            last: dict[TopicPartition, int] = {}
            for record, _ in records:
                tp = TopicPartition(topic, record.partition)
                last[tp] = max(last.get(tp, -1), record.offset)
            unsettled.append((await replayer.handle(records), last))
            await commit_settled(MAX_UNSETTLED_BATCHES)
        await commit_settled(0)
    finally:
        for settling, _ in unsettled:
            settling.cancel()
    replayer.report.seconds = time.monotonic() - started
    return replayer.report
