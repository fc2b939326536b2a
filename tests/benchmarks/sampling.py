"""Where the bridge worker's CPU goes: py-spy samples (no instrumentation overhead) summarized by
stage of the hot path, plus the heaviest functions.

Each sample is charged to one stage: the innermost frame that belongs to a known layer (aiokafka,
websockets, pydantic, prometheus_client, or a bridge module), event-loop frames only when nothing
else is on the stack. py-spy samples only threads that run Python (idle waits are left out).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Sampler", "py_spy", "summarize"]

STAGES: tuple[tuple[str, str], ...] = (
    ("aiokafka/", "Kafka client (aiokafka: send, batches, protocol)"),
    ("websockets/", "WebSocket frames (websockets)"),
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("bridge/observability/", "metrics (prometheus_client)"),
    ("pydantic", "contract model: validation and dump (pydantic)"),
    ("bridge/sources/okx/client.py", "OKX client: frame read, JSON decode"),
    ("bridge/sources/okx/service.py", "OKX source: dispatch, offer"),
    ("bridge/sources/okx/parse.py", "parse + normalize (provider fields)"),
    ("bridge/contract/parsing.py", "parse + normalize (provider fields)"),
    ("bridge/contract/timeutil.py", "parse + normalize (provider fields)"),
    ("bridge/contract/networks.py", "parse + normalize (provider fields)"),
    ("bridge/contract/status_tables.py", "parse + normalize (provider fields)"),
    ("bridge/contract/jsonutil.py", "JSON decode and encode (orjson + exact decimals)"),
    ("bridge/contract/events.py", "event ids, key, encode"),
    ("bridge/delivery/dedup.py", "dedup gate and store"),
    ("bridge/delivery/store_sqlite.py", "dedup gate and store"),
    ("bridge/delivery/state_bytes.py", "dedup gate and store"),
    ("bridge/delivery/open_transfers.py", "dedup gate and store"),
    ("bridge/delivery/publish.py", "Kafka record building"),
    ("bridge/kafka/headers.py", "Kafka record building"),
    ("bridge/delivery/pipeline.py", "pipeline: window, per-key order, acks"),
    ("bridge/delivery/batch.py", "pipeline: window, per-key order, acks"),
    ("bridge/ingest/", "source engine: read loop, intake, outcomes"),
    ("threading.py", "worker threads outside bridge code (thread pool, idle waits)"),
)
LOOP = "event loop and futures (asyncio)"


def py_spy() -> str | None:
    found = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else None)
    return found


def _function(frame: str) -> str:
    """``name (file:line)`` → ``name (file)``: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else frame


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for marker, stage in STAGES:
            if marker in frame:
                return stage
    return LOOP if any("asyncio/" in f for f in frames) else "other"


def summarize(collapsed: Path, *, top: int = 30) -> str:
    """Stage shares, then the functions with the most samples inclusive and self."""
    stages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        stages[_stage(frames)] += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "", "share  stage"]
    lines += [f"{n / total:6.1%}  {stage}" for stage, n in stages.most_common()]
    lines += ["", f"top {top} functions by samples including callees (bridge code only)"]
    bridge = [(name, n) for name, n in inclusive.most_common() if "bridge/" in name]
    lines += [f"{n / total:6.1%}  {name}" for name, n in bridge[:top]]
    lines += ["", f"top {top} functions by own samples (any code)"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


class Sampler:
    """``py-spy record`` attached to a running worker until ``stop()``."""

    def __init__(self, binary: str, pid: int, output: Path, rate: int = 250):
        self.binary, self.pid, self.output, self.rate = binary, pid, output, rate
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            self.binary, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw", "--output", str(self.output),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(0.3)  # attached before the load starts
        if self._process.returncode is not None:
            raise RuntimeError(f"py-spy could not attach: {(await self._process.stderr.read()).decode()[-400:]}")  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self._process.wait(), 30)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
