"""The chaos run's figures and verdict: per-provider counts, fault counts, and the checks that make a
run pass or fail (``failures``), kept apart from how the figures are measured (``checker``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["FaultFigures", "ProviderFigures", "ChaosReport", "failures", "add_up"]

WEBHOOK_PROVIDERS = ("openxswitch", "fireblocks")
"""Providers that keep a delivery until it is answered 2xx: every acknowledged one must be in Kafka."""


@dataclass
class FaultFigures:
    injected: int = 0
    recover_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.recover_seconds)
        return {
            "injected": self.injected,
            "recover_p50_s": round(times[len(times) // 2], 2) if times else None,
            "recover_max_s": round(times[-1], 2) if times else None,
        }


@dataclass
class ProviderFigures:
    transfers: int = 0
    states: int = 0
    records: int = 0
    lost: int = 0
    lost_final: int = 0
    """transfers whose last (current) state is missing: must be 0"""
    lost_at_bridge_kill: int = 0
    """intermediate states current at a SIGKILL of the bridge, gone from the provider's history"""
    lost_superseded: int = 0
    """intermediate states missing because a later state of the transfer was published first
    (Fireblocks' ordering rule drops the older one; a dropped delivery's backfill shows only the
    current state)"""
    lost_unexplained: int = 0
    """any other missing state: must be 0"""
    unknown_records: int = 0
    """records that match no state of the truth: must be 0"""
    duplicates_by_event_id: int = 0
    distinct_event_ids_duplicated: int = 0
    same_state_different_event_ids: int = 0
    """a state published twice under two ids (consumers could not dedupe): must be 0"""
    out_of_order: int = 0
    """transfers whose states were all published, but not in their order"""
    older_after_newer: int = 0
    """records of a state published after a record of a later state of the same transfer"""
    detail: dict[str, Any] = field(default_factory=dict)


_COUNTS = tuple(f.name for f in fields(ProviderFigures) if f.name != "detail")
_COLUMNS = (
    ("transfers", "transfers"), ("states", "states"), ("records", "records"), ("lost", "lost"), ("lost_final", "lost_final"),
    ("lost_at_bridge_kill", "lost@kill"), ("lost_superseded", "superseded"), ("lost_unexplained", "unexplained"),
    ("unknown_records", "unknown"), ("duplicates_by_event_id", "dup_ids"), ("same_state_different_event_ids", "diff_ids"),
    ("out_of_order", "reorder"), ("older_after_newer", "backwards"),
)  # fmt: skip


def add_up(providers: dict[str, ProviderFigures]) -> ProviderFigures:
    """The providers' counts summed (details stay per provider)."""
    total = ProviderFigures()
    for figures in providers.values():
        for name in _COUNTS:
            setattr(total, name, getattr(total, name) + getattr(figures, name))
    return total


@dataclass
class ChaosReport:
    mode: str
    providers: dict[str, ProviderFigures]
    total: ProviderFigures
    faults: dict[str, dict[str, Any]]
    dead_lettered: int
    seconds: float
    failures: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The figures per provider and in total, one line each."""
        lines = [f"chaos run, mode {self.mode}: {self.seconds:.0f} s, dead letters {self.dead_lettered}"]
        lines.append(f"{'':<12}" + "".join(f"{short:>12}" for _, short in _COLUMNS))
        for name, figures in [*self.providers.items(), ("total", self.total)]:
            lines.append(f"{name:<12}" + "".join(f"{getattr(figures, column):>12}" for column, _ in _COLUMNS))
        for name, fault in self.faults.items():
            recover = f", recover p50 {fault['recover_p50_s']} s max {fault['recover_max_s']} s" if fault["recover_p50_s"] is not None else ""
            lines.append(f"fault {name}: injected {fault['injected']}{recover}")
        for name, figures in self.providers.items():
            if figures.detail:
                lines.append(f"{name}: " + json.dumps(figures.detail, sort_keys=True))
        lines.append("result: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


def failures(report: ChaosReport) -> list[str]:
    """What the run promises, as checks: an empty list is a pass."""
    total = report.total
    failed = []
    if total.lost_final:
        failed.append(f"lost_final {total.lost_final}")
    for name in WEBHOOK_PROVIDERS:
        webhook = report.providers.get(name)
        if webhook is None:
            continue
        if webhook.lost_unexplained:
            failed.append(f"{name} states lost {webhook.lost_unexplained}")
        if webhook.detail.get("acked_but_missing_in_kafka"):
            failed.append(f"{name} deliveries answered 2xx but missing in Kafka {webhook.detail['acked_but_missing_in_kafka']}")
        if webhook.detail.get("given_up"):
            failed.append(f"{name} deliveries never acknowledged {webhook.detail['given_up']}")
    ordered = report.providers.get("fireblocks")
    if ordered is not None and ordered.older_after_newer:  # Fireblocks' ordering rule, across kill -9 too
        failed.append(f"fireblocks older state published after a newer one {ordered.older_after_newer}")
    if total.lost_unexplained:
        failed.append(f"lost_unexplained {total.lost_unexplained}")
    if total.unknown_records:
        failed.append(f"unknown_records {total.unknown_records}")
    if total.same_state_different_event_ids:
        failed.append(f"same_state_different_event_ids {total.same_state_different_event_ids}")
    if report.mode == "exactly-once" and total.duplicates_by_event_id:
        failed.append(f"exactly-once duplicates {total.duplicates_by_event_id}")
    if report.faults["bridge_kill9"]["injected"] == 0:
        failed.append("no bridge kill injected")
    return failed
