"""Rows of the results table (bridge figure, baseline figure, ratio, target) and their rendering."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Row", "ScenarioResult", "render_table", "fmt"]


@dataclass
class Row:
    scenario: str
    metric: str
    bridge: float | None
    unit: str = ""
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """bridge / baseline (same unit)."""
        if self.bridge is None or not self.baseline_value:
            return None
        return self.bridge / self.baseline_value

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def row(self, metric: str, bridge: float | None, unit: str = "", **extra: Any) -> Row:
        row = Row(self.name, metric, bridge, unit, **extra)
        self.rows.append(row)
        return row


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit in ("ms", "µs", "%", "s", "B", "KiB", "MiB", "cores"):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{text} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f}" + (f" {unit}" if unit else "")
    return f"{value:,.2f}" + (f" {unit}" if unit else "")


def _ratio(row: Row) -> str:
    ratio = row.ratio
    if ratio is None:
        return ""
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"


def render_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    header = ["scenario", "metric", "bridge", "baseline", "baseline value", "bridge/baseline", "target", "met"]
    body = [
        [
            r.scenario,
            r.metric + (f" ({r.note})" if r.note else ""),
            fmt(r.bridge, r.unit),
            r.baseline or "",
            fmt(r.baseline_value, r.unit) if r.baseline else "",
            _ratio(r),
            r.target or "",
            "" if r.met is None else ("yes" if r.met else "NO"),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
    return "\n".join(out)
