"""Figures the resource tests measure (peak RSS, fds, tasks), printed at the end of the session."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FIGURES", "record", "rss_bytes", "open_fds", "mib"]

FIGURES: list[str] = []


def record(line: str) -> None:
    FIGURES.append(line)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"
