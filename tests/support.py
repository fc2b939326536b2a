"""Helpers tests share that are not fixtures."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = "2026-11-22T10:00:00.000Z"


def fixture_bytes(relative: str) -> bytes:
    """A provider payload from ``tests/fixtures/<provider>/``, byte for byte."""
    return (FIXTURES / relative).read_bytes()
