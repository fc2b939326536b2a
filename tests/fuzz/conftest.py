"""Fuzz suite settings: bounded example counts in CI, a count of inputs tried per target at the end.

``FUZZ_EXAMPLES=5000 pytest tests/fuzz`` raises every test's ``max_examples`` for a long run;
``FUZZ_REPORT=fuzz.json`` also writes the counts as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz.report import TRIED, summary_lines, write_report


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TRIED:
        return
    terminalreporter.section("fuzz: inputs tried per target")
    for line in summary_lines():
        terminalreporter.write_line(line)
    report = os.environ.get("FUZZ_REPORT")
    if report:
        write_report(Path(report))
