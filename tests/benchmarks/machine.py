"""What the figures were measured on: machine, load, versions, commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from typing import Any

from tests.benchmarks.common import REPO

__all__ = ["machine_info", "load_average"]

PACKAGES = ("aiokafka", "websockets", "aiohttp", "orjson", "pydantic", "pydantic-core", "prometheus-client", "pyinstrument")


def _first(path: str, key: str) -> str | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(kcat: str | None) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    pom = (REPO / "deploy/local/kafka/pom.xml").read_text() if (REPO / "deploy/local/kafka/pom.xml").exists() else ""
    kafka = re.search(r"<kafka.version>(.*?)</kafka.version>", pom)
    mem_kib = _first("/proc/meminfo", "MemTotal")
    java = _run("java", "-version").splitlines()
    commit = _run("git", "rev-parse", "HEAD")
    dirty = bool(_run("git", "status", "--porcelain", "--untracked-files=no", "bridge", "tests/benchmarks"))
    return {
        "platform": platform.platform(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": int(mem_kib.split()[0]) // 1024 if mem_kib else None,
        "load_average_at_start": load_average(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": versions,
        "kafka": kafka.group(1) if kafka else None,
        "java": java[0] if java else None,
        "kcat": _run(kcat, "-V").splitlines()[0] if kcat else None,
        "git_commit": commit,
        "git_dirty": dirty,
    }
