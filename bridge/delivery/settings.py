"""Settings of the delivery layer: topics, the dedup store and the pipeline's bounds.

The service composes them into its configuration tree (``topics:``, ``dedup:``, ``pipeline:``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TopicSettings", "DedupSettings", "PipelineSettings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicSettings(_Section):
    deposit: str = "transfers.deposit.v1"
    withdrawal: str = "transfers.withdrawal.v1"
    dead_letter: str = "transfers.dlq.v1"
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=7)
    create: bool = True


class DedupSettings(_Section):
    store: Literal["sqlite", "memory", "kafka"] = Field(
        default="sqlite",
        description="sqlite: embedded file (default); kafka: exactly-once mode, state in a compacted "
        "topic written in the same transaction as each event; memory: tests only",
    )
    path: Path = Path("./.state/dedup.sqlite3")
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description="how long a transfer is remembered after its final state; a redelivery replayed later "
        "(a console resend, a deeper backfill) is published again with its identical event_id, and an old "
        "non-final state is no longer dropped as stale: keep it above the longest replay you expect",
    )
    max_unpersisted: int = Field(
        default=5_000,
        ge=1,
        description="states acknowledged by Kafka whose dedup mark is not yet written to the store (a full "
        "disk); past it, new states wait (webhooks get 503) instead of being acknowledged",
    )
    state_topic: str = "transfers.dedup-state.v1"
    transactional_id: str | None = Field(
        default=None,
        description="kafka store: stable per instance (e.g. the StatefulSet pod name) so a restarted "
        "instance fences its predecessor; defaults to '<client_id>-0'",
    )


class PipelineSettings(_Section):
    max_in_flight: int = Field(default=20_000, ge=1, description="events accepted but not yet acked by Kafka")
    include_raw: bool = True
    not_ready_after_seconds: float = Field(default=5.0, gt=0, description="unacked age that flips /readyz")
