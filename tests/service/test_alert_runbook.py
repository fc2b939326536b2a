"""The alert rules and the README's runbook agree: every alert has a runbook row that names it, and
the failures that hold or refuse deliveries (a dedup store that cannot write, a webhook body that
cannot be stored whole) raise an alert of their own instead of only a generic one minutes later.

Reads ``deploy/k8s/base/prometheusrule.yaml`` directly (no kubectl needed); whether each alert's
metrics are exported is ``tests/service/test_manifests.py``'s check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
README = ROOT / "README.md"


def alerts() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["spec"]["groups"] for rule in group["rules"]}


def runbook_rows() -> list[str]:
    text = README.read_text()
    start = text.index("\n### Runbook\n")
    end = text.index("\n### ", start + 1)
    return [line for line in text[start:end].splitlines() if line.startswith("| ") and not line.startswith("| at 3 a.m.")]


def named_in(row: str) -> set[str]:
    """Alert names in a row's first cell; ``…SourceSilent`` is short for ``TransferBridgeSourceSilent``."""
    situation = row.split(" | ", 1)[0]
    return {("TransferBridge" + name if prefix == "…" else prefix + name)
            for prefix, name in re.findall(r"`(TransferBridge|…)([A-Za-z0-9]+)`", situation)}


def test_every_alert_has_a_runbook_row_and_every_row_names_real_alerts() -> None:
    rows = runbook_rows()
    assert len(rows) >= 10, "the runbook table was not found"
    named = set().union(*(named_in(row) for row in rows))
    assert named - set(alerts()) == set(), "rows name alerts the rules do not define"
    assert set(alerts()) - named == set(), "alerts with no runbook row naming them"


@pytest.mark.parametrize(
    ("watched", "situation"),
    [
        ("bridge_dedup_store_failures_total", "dedup store cannot write"),
        ('bridge_webhook_requests_total{result="too_large"}', "refused with 413"),
    ],
)
def test_a_failure_that_holds_or_refuses_deliveries_raises_its_own_alert(watched: str, situation: str) -> None:
    raising = {name for name, rule in alerts().items() if watched in rule["expr"]}
    assert raising, f"no alert watches {watched}"
    [row] = [row for row in runbook_rows() if situation in row.split(" | ", 1)[0]]
    assert named_in(row) & raising, f"the runbook row {situation!r} does not name the alert ({sorted(raising)})"
