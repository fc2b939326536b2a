"""How many inputs each fuzz target was given in this session, printed when the session ends.

Hypothesis runs a test body once per generated input (plus shrinking); each body calls ``tried``
so the count covers every input that really reached the code under test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

__all__ = ["tried", "outcome", "examples", "fuzz_settings", "summary_lines", "write_report", "TRIED", "OUTCOMES"]

# Inputs are large on purpose (oversized values, deep nesting): the size and speed health checks
# would reject exactly the inputs this suite is for. No deadline: slowness is asserted by the
# dedicated timing tests, not reported as a flaky hypothesis failure. Function-scoped fixtures
# (a receiver, a pipeline) are shared by all examples of one test on purpose.
# `make test` is derandomized so a pass or fail depends on the commit alone; `make fuzz`
# (FUZZ_RANDOM=1, many more examples) explores new inputs, and what it finds becomes a fixed example.
_BASE = settings(
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
)

TRIED: Counter[str] = Counter()
OUTCOMES: dict[str, Counter[str]] = {}


def tried(target: str, n: int = 1) -> None:
    """Count ``n`` inputs given to ``target`` (a parser, a route, a client)."""
    TRIED[target] += n


def outcome(target: str, kind: str, n: int = 1) -> None:
    """What became of the inputs (``event``, ``dead_letter``, ``refused``, ``401``, ...)."""
    OUTCOMES.setdefault(target, Counter())[kind] += n


def examples(default: int) -> int:
    """``max_examples`` for one fuzz test: ``default`` in CI, ``FUZZ_EXAMPLES`` for a long run."""
    raw = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw else default


def fuzz_settings(default: int, **overrides: Any) -> settings:
    """Settings of one fuzz test: ``default`` examples unless ``FUZZ_EXAMPLES`` says otherwise."""
    return settings(_BASE, max_examples=examples(default), **overrides)


def summary_lines() -> list[str]:
    width = max((len(t) for t in TRIED), default=10)
    lines = []
    for target, count in sorted(TRIED.items()):
        kinds = OUTCOMES.get(target, Counter())
        detail = ", ".join(f"{kind} {n:,}" for kind, n in sorted(kinds.items()))
        lines.append(f"{target:<{width}}  {count:>8,} inputs" + (f"  ({detail})" if detail else ""))
    lines.append(f"{'total':<{width}}  {sum(TRIED.values()):>8,} inputs")
    return lines


def write_report(path: Path) -> None:
    """JSON ``{target: {"inputs": n, "outcomes": {...}}}`` for CI artifacts (``FUZZ_REPORT=path``)."""
    report = {
        target: {"inputs": count, "outcomes": dict(OUTCOMES.get(target, {}))} for target, count in sorted(TRIED.items())
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
