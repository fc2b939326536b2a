"""Reading the dead-letter topic: records as ``DeadLetter`` values again, filters, a bounded scan.

Every read is ``read_committed`` (an aborted exactly-once transaction's dead letter is not one) and
ends at the offsets the topic had when the read began, so a listing terminates and a replay never
reads what it wrote back itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.contract.events import DeadLetter, Provider
from bridge.kafka import headers as h
from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings

__all__ = ["DeadLetterRecord", "Filter", "parse_time", "scan", "consumer_for"]

_STANDARD = {h.DLQ_PROVIDER, h.DLQ_CHANNEL, h.DLQ_REASON, h.DLQ_RECEIVED_AT, h.DLQ_ACCOUNT, h.REPLAY_COUNT}
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, where it is and what its headers say."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes
    headers: Mapping[str, bytes]

    def text(self, name: str) -> str:
        return self.headers.get(name, b"").decode("utf-8", "replace")

    @property
    def provider(self) -> str:
        return self.text(h.DLQ_PROVIDER)

    @property
    def channel(self) -> str:
        return self.text(h.DLQ_CHANNEL)

    @property
    def reason(self) -> str:
        return self.text(h.DLQ_REASON)

    @property
    def replay_count(self) -> int:
        """Replays that failed again (0: never replayed; an unreadable header counts as 0)."""
        value = self.text(h.REPLAY_COUNT)
        return int(value) if value.isdigit() and len(value) < 10 else 0

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    def letter(self) -> DeadLetter:
        """The dead letter as the pipeline wrote it (``ValueError`` when the provider is not one we know)."""
        extra = {name[4:]: value.decode("utf-8", "replace") for name, value in self.headers.items()
                 if name.startswith("dlq_") and name not in _STANDARD}
        return DeadLetter(
            provider=Provider(self.provider),
            channel=self.channel,
            reason=self.reason,
            raw=self.value,
            received_at=self.text(h.DLQ_RECEIVED_AT),
            account_id=self.text(h.DLQ_ACCOUNT) or None,
            headers=extra,
        )


@dataclass(frozen=True)
class Filter:
    """What to read: every field that is set must match."""

    providers: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    reason: str | None = None
    """A substring of the reason, case-insensitive."""
    since_ms: int | None = None
    until_ms: int | None = None
    partitions: frozenset[int] = frozenset()
    from_offset: int | None = None
    to_offset: int | None = None
    """Inclusive."""
    positions: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    """Exact ``(partition, offset)`` pairs (``dlq show 0:42``)."""

    @property
    def narrows(self) -> bool:
        """True when the filter leaves records out (a replay's default group then differs)."""
        return self != Filter()

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.positions and (record.partition, record.offset) not in self.positions:
            return False
        if self.providers and record.provider not in self.providers:
            return False
        if self.channels and record.channel not in self.channels:
            return False
        if self.reason is not None and self.reason.lower() not in record.reason.lower():
            return False
        if self.since_ms is not None and record.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and record.timestamp_ms > self.until_ms:
            return False
        if self.from_offset is not None and record.offset < self.from_offset:
            return False
        return self.to_offset is None or record.offset <= self.to_offset


def parse_time(text: str, *, now: datetime | None = None) -> int:
    """``2026-11-29T04:00:00Z`` (RFC 3339, UTC when no zone) or a time ago (``90m``, ``2h``, ``7d``)
    → epoch milliseconds; ``ValueError`` otherwise."""
    match = _RELATIVE.match(text.strip())
    if match:
        moment = (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text[:40]!r} is neither an RFC 3339 time nor a time ago (30m, 2h, 7d)") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def consumer_for(kafka: KafkaSettings, *, group_id: str | None = None) -> AIOKafkaConsumer:
    """A ``read_committed`` consumer that commits only when told to."""
    return AIOKafkaConsumer(
        **kafka_client_options(kafka),
        group_id=group_id,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A scan reads records that are there already; the broker's default wait for more data
        # (500 ms per fetch) only stalls it between fetches.
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )


def _record(message: Any) -> DeadLetterRecord:
    return DeadLetterRecord(message.partition, message.offset, message.timestamp, message.value or b"", h.header_map(message.headers))


async def scan(
    consumer: AIOKafkaConsumer, topic: str, selected: Filter, *, from_committed: bool = False, batch: int = 500
) -> AsyncIterator[list[tuple[DeadLetterRecord, bool]]]:
    """Batches of ``(record, matches)`` from the start (or the group's committed offsets, or where
    the filter's offsets and time say) up to the end the topic had when the scan began.

    A started ``consumer``; without a group it is assigned every partition (or the filter's)."""
    partitions = sorted(consumer.partitions_for_topic(topic) or set())
    if not partitions:
        await consumer._client.force_metadata_update()  # no public API; the topic may be brand new
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
    if selected.partitions:
        partitions = [p for p in partitions if p in selected.partitions]
    if selected.positions:
        partitions = [p for p in partitions if any(p == wanted for wanted, _ in selected.positions)]
    assigned = [TopicPartition(topic, p) for p in partitions]
    if not assigned:
        return
    consumer.assign(assigned)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
    await _seek(consumer, assigned, selected, from_committed=from_committed)
    remaining = {tp for tp in assigned if await consumer.position(tp) < ends[tp]}
    while remaining:
        fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch)
        out: list[tuple[DeadLetterRecord, bool]] = []
        for tp, messages in fetched.items():
            for message in messages:
                if message.offset < ends[tp]:
                    record = _record(message)
                    out.append((record, selected.matches(record)))
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
        if out:
            yield sorted(out, key=lambda pair: (pair[0].partition, pair[0].offset))


async def _seek(consumer: AIOKafkaConsumer, assigned: list[TopicPartition], selected: Filter, *, from_committed: bool) -> None:
    """The first offset worth reading per partition: committed progress, the filter's offset or time."""
    starts = {tp: 0 for tp in assigned}
    begins = await consumer.beginning_offsets(assigned)
    if selected.since_ms is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(assigned, selected.since_ms))
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            starts[tp] = found[tp].offset if found.get(tp) is not None else ends[tp]
    for tp in assigned:
        start = max(starts[tp], begins[tp], selected.from_offset or 0)
        if selected.positions:
            wanted = [o for p, o in selected.positions if p == tp.partition]
            start = max(begins[tp], min(wanted)) if wanted else start
        if from_committed:
            committed = await consumer.committed(tp)
            if committed is not None:
                start = max(start, committed)
        consumer.seek(tp, start)
