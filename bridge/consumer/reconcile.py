"""Reconciliation: the provider's current state of every transfer against the latest one in Kafka.

Both sides are spilled into a temporary SQLite file keyed by transfer key and joined there, so
memory stays flat however many transfers the window holds (a million-transfer window uses the
page cache, ``CACHE_KIB``, not a dictionary per side). Both tables are clustered by key
(``WITHOUT ROWID``), so the join walks them in key order without a sort.

A transfer belongs to the window by its creation time (``created_at``, else ``occurred_at``), as
the providers' history endpoints filter. Each transfer is at most one drift row, of one kind:

* ``missing_in_kafka``: the provider lists it, Kafka has no record of it;
* ``final_at_provider_only``: final at the provider, not final in Kafka;
* ``final_in_kafka_only``: final in Kafka, not final at the provider (or not listed there at all);
* ``status_differs``: both sides have it with different statuses otherwise (both final, or both not);
* ``missing_at_provider``: a non-final transfer in Kafka that the provider does not list.

``repairable``: the provider's current state can be published for it (Kafka does not hold a final
state, which the dedup gate would keep anyway).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bridge.consumer.latest import KafkaState
from bridge.contract.events import TransferEvent
from bridge.contract.timeutil import to_epoch_ms

__all__ = ["CACHE_KIB", "Drift", "DriftKind", "Ledger", "Window"]

CACHE_KIB = 32_768
"""SQLite page cache of the spill file (the bound of the comparison's memory)."""


class DriftKind(StrEnum):
    MISSING_IN_KAFKA = "missing_in_kafka"
    FINAL_AT_PROVIDER_ONLY = "final_at_provider_only"
    FINAL_IN_KAFKA_ONLY = "final_in_kafka_only"
    STATUS_DIFFERS = "status_differs"
    MISSING_AT_PROVIDER = "missing_at_provider"


@dataclass(frozen=True, slots=True)
class Window:
    """``[since_ms, until_ms)`` of creation time."""

    since_ms: int
    until_ms: int

    def __contains__(self, created_ms: object) -> bool:
        return isinstance(created_ms, int) and self.since_ms <= created_ms < self.until_ms


@dataclass(frozen=True, slots=True)
class Drift:
    kind: DriftKind
    key: str
    provider: str
    account: str | None
    """The configured account whose history listed it (None: only Kafka has it)."""
    created_ms: int
    at_provider: str | None
    """The provider's current status (canonical), None when it does not list the transfer."""
    provider_detail: str | None
    in_kafka: str | None
    kafka_detail: str | None
    kafka_position: str | None
    """``topic/partition@offset`` of the latest record, to look it up."""

    kafka_final: bool = False

    @property
    def repairable(self) -> bool:
        """The provider lists it and Kafka holds no final state of it."""
        return self.at_provider is not None and not self.kafka_final


_SCHEMA = """
CREATE TABLE provider (
    key TEXT PRIMARY KEY, provider TEXT NOT NULL, account TEXT NOT NULL, status TEXT NOT NULL,
    final INTEGER NOT NULL, detail TEXT, created_ms INTEGER NOT NULL, occurred_ms INTEGER NOT NULL, event BLOB
) WITHOUT ROWID;
CREATE TABLE kafka (
    key TEXT PRIMARY KEY, provider TEXT NOT NULL, status TEXT NOT NULL, final INTEGER NOT NULL, detail TEXT,
    created_ms INTEGER NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL
) WITHOUT ROWID;
"""

_PROVIDER_UPSERT = """
INSERT INTO provider VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET account = excluded.account, status = excluded.status, final = excluded.final,
    detail = excluded.detail, occurred_ms = excluded.occurred_ms, event = excluded.event
WHERE excluded.occurred_ms >= provider.occurred_ms
"""
# The same transfer listed twice (overlapping pages, two accounts' views): the later state wins.

_KAFKA_UPSERT = """
INSERT INTO kafka VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET status = excluded.status, final = excluded.final, detail = excluded.detail,
    topic = excluded.topic, partition = excluded.partition, offset = excluded.offset
WHERE excluded.offset > kafka.offset OR excluded.topic != kafka.topic OR excluded.partition != kafka.partition
"""
# A key lives on one partition, read in offset order: the higher offset is the later state.

_PROVIDER_SIDE = """
SELECT p.key, p.provider, p.account, p.created_ms, p.status, p.final, p.detail,
       k.status, k.final, k.detail, k.topic, k.partition, k.offset
FROM provider p LEFT JOIN kafka k ON k.key = p.key
WHERE k.key IS NULL OR k.status != p.status
ORDER BY p.key
"""

_KAFKA_ONLY = """
SELECT k.key, k.provider, k.created_ms, k.status, k.final, k.detail, k.topic, k.partition, k.offset
FROM kafka k WHERE NOT EXISTS (SELECT 1 FROM provider p WHERE p.key = k.key)
ORDER BY k.key
"""

_REPAIRABLE = """
SELECT p.event FROM provider p LEFT JOIN kafka k ON k.key = p.key
WHERE (k.key IS NULL OR k.status != p.status) AND coalesce(k.final, 0) = 0
ORDER BY p.key
"""


class Ledger:
    """Both sides of one reconciliation, in a SQLite file deleted on ``close``."""

    def __init__(self, window: Window, *, keep_events: bool = False, directory: Path | None = None):
        self.window = window
        self.keep_events = keep_events
        """Store the provider's events whole (``--repair`` publishes them)."""
        handle, name = tempfile.mkstemp(prefix="reconcile-", suffix=".sqlite3", dir=directory)
        os.close(handle)
        self.path = Path(name)
        self.db = sqlite3.connect(self.path)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE", f"cache_size = -{CACHE_KIB}"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(_SCHEMA)
        self.outside_window = 0
        """Rows read on either side that were created outside the window (not compared)."""

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- filling ---------------------------------------------------------------------------------

    def add_provider(self, account: str, events: Iterable[TransferEvent]) -> int:
        rows = []
        for event in events:
            created = to_epoch_ms(event.created_at or event.occurred_at)
            if created not in self.window:
                self.outside_window += 1
                continue
            blob = event.model_dump_json().encode() if self.keep_events else None
            rows.append((
                event.key, event.provider.value, account, event.status.value, int(event.is_final),
                event.provider_status, created, to_epoch_ms(event.occurred_at), blob,
            ))  # fmt: skip
        with self.db:
            self.db.executemany(_PROVIDER_UPSERT, rows)
        return len(rows)

    def add_kafka(self, states: Iterable[KafkaState], providers: frozenset[str]) -> int:
        """Latest states of the compared ``providers`` (others' transfers are not ours to judge)."""
        rows = []
        for s in states:
            if s.provider not in providers:
                continue
            if s.created_ms not in self.window:
                self.outside_window += 1
                continue
            rows.append((s.key, s.provider, s.status, int(s.is_final), s.provider_status, s.created_ms, s.topic, s.partition, s.offset))
        with self.db:
            self.db.executemany(_KAFKA_UPSERT, rows)
        return len(rows)

    # -- comparing -------------------------------------------------------------------------------

    def sizes(self) -> dict[str, dict[str, int]]:
        """Per provider: transfers listed by the provider, in Kafka, and the same on both sides."""
        out: dict[str, dict[str, int]] = {}
        queries = {
            "at_provider": "SELECT provider, count(*) FROM provider GROUP BY provider",
            "in_kafka": "SELECT provider, count(*) FROM kafka GROUP BY provider",
            "matching": "SELECT p.provider, count(*) FROM provider p JOIN kafka k ON k.key = p.key WHERE k.status = p.status GROUP BY p.provider",
        }
        for name, query in queries.items():
            for provider, count in self.db.execute(query):
                out.setdefault(provider, {"at_provider": 0, "in_kafka": 0, "matching": 0})[name] = count
        return out

    def drift(self) -> Iterator[Drift]:
        """Every transfer that differs, the provider's side first, each in key order."""
        for key, provider, account, created, status, final, detail, k_status, k_final, k_detail, topic, partition, offset in self.db.execute(
            _PROVIDER_SIDE
        ):
            position = None if k_status is None else f"{topic}/{partition}@{offset}"
            if k_status is None:
                kind = DriftKind.MISSING_IN_KAFKA
            elif final and not k_final:
                kind = DriftKind.FINAL_AT_PROVIDER_ONLY
            elif k_final and not final:
                kind = DriftKind.FINAL_IN_KAFKA_ONLY
            else:
                kind = DriftKind.STATUS_DIFFERS
            yield Drift(kind, key, provider, account, created, status, detail, k_status, k_detail, position, bool(k_final))
        for key, provider, created, k_status, k_final, k_detail, topic, partition, offset in self.db.execute(_KAFKA_ONLY):
            kind = DriftKind.FINAL_IN_KAFKA_ONLY if k_final else DriftKind.MISSING_AT_PROVIDER
            yield Drift(kind, key, provider, None, created, None, None, k_status, k_detail, f"{topic}/{partition}@{offset}", bool(k_final))

    def repairs(self) -> Iterator[TransferEvent]:
        """The provider's current state of every ``repairable`` transfer (``keep_events`` only)."""
        if not self.keep_events:
            raise RuntimeError("the ledger was filled without the provider's events")
        for (blob,) in self.db.execute(_REPAIRABLE):
            yield TransferEvent.model_validate_json(blob)
