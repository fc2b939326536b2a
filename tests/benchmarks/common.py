"""What every scenario shares: worker processes with a line protocol, process figures, percentiles,
deterministic simulator accounts and throw-away topics.

Each measured side (the bridge, a baseline) runs in a fresh worker process of its own
(``python -m tests.benchmarks.child ROLE PARAMS``) so its CPU time and peak RSS are its own and one
scenario's garbage cannot inflate the next one's memory. The orchestrating process plays the
provider. Workers read ``COMMAND {json}`` lines on stdin and answer ``@@TAG {json}`` lines on stdout;
their logs go to a file shown when they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge_testkit.okx.simulator import SimAccount

__all__ = [
    "REPO",
    "RESULTS_DIR",
    "Context",
    "Child",
    "ChildError",
    "Channel",
    "percentile",
    "latency_summary",
    "rss_bytes",
    "peak_rss_bytes",
    "process_cpu_seconds",
    "machine_cpu_seconds",
    "listener_pid",
    "bench_accounts",
    "bench_topics",
    "records_in_topics",
    "create_topics",
    "kafka_settings",
    "KAFKA_OPTIONS_ENV",
    "delete_topics",
]

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "bench-results"
_TAG = "@@"


@dataclass
class Context:
    """One benchmark run: where Kafka is, how big the run is, where workers put their files."""

    bootstrap: str
    quick: bool
    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    broker_pid: int | None = None
    shared_broker: bool = False
    """The broker was given (``--bootstrap``): other clients' load may be in its CPU figures."""
    profile: bool = False
    topics_created: list[str] = field(default_factory=list)

    def topics(self, tag: str) -> TopicSettings:
        """Fresh topics (service defaults: 6 partitions) for one side of one scenario."""
        settings = bench_topics(f"{self.run_id}.{tag}")
        self.topics_created += [settings.deposit, settings.withdrawal, settings.dead_letter]
        return settings

    def say(self, text: str) -> None:
        print(f"  · {text}", flush=True)


# -- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p99/p99.9/max in milliseconds."""
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000, 3),
        "p999_ms": round(percentile(ordered, 99.9) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3) if ordered else float("nan"),
    }


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system, all threads) another process used so far; None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (``/proc/stat``): whatever
    else runs on a shared machine shows up as busy time none of the measured processes spent."""
    with open("/proc/stat") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already inside user
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` here (e.g. a given broker's, for its CPU); None when
    it cannot be seen (another user's process without the rights to read its sockets)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- simulator accounts and topics ---------------------------------------------------------------


def bench_accounts(count: int, seed: int = 11) -> list[SimAccount]:
    """``count`` master accounts with random but reproducible credentials: the provider process and
    the bridge worker derive the same keys from the seed instead of passing secrets around."""
    rng = random.Random(seed)

    def text(n: int, alphabet: str = "0123456789abcdef") -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return [
        SimAccount(
            name=f"bench{i:04d}",
            uid=str(44711300000000 + i),
            api_key=f"{text(8)}-{text(4)}-{text(4)}",
            secret_key=text(32).upper(),
            passphrase=f"Bench-{text(6)}!",
        )
        for i in range(count)
    ]


def bench_topics(tag: str) -> TopicSettings:
    return TopicSettings(deposit=f"bench.{tag}.deposit.v1", withdrawal=f"bench.{tag}.withdrawal.v1", dead_letter=f"bench.{tag}.dlq.v1")


async def records_in_topics(bootstrap: str, topics: Sequence[str]) -> int:
    """How many records the topics hold (sum of end offsets: no transactions, so no markers)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = []
        for topic in topics:
            for number in consumer.partitions_for_topic(topic) or ():
                partitions.append(TopicPartition(topic, number))
            if not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()  # no public API for a brand-new topic
                partitions += [TopicPartition(topic, n) for n in consumer.partitions_for_topic(topic) or ()]
        offsets = await consumer.end_offsets(partitions) if partitions else {}
        return sum(offsets.values())
    finally:
        await consumer.stop()


KAFKA_OPTIONS_ENV = "BENCH_KAFKA_OPTIONS"


def kafka_settings(bootstrap: str) -> KafkaSettings:
    """The bridge's Kafka settings (service defaults) plus any ``--kafka-option`` of this run, which
    the orchestrator hands to every worker through the environment: bridge and baselines alike."""
    from bridge.kafka.settings import KafkaSettings

    return KafkaSettings(bootstrap_servers=bootstrap, **json.loads(os.environ.get(KAFKA_OPTIONS_ENV) or "{}"))


async def create_topics(bootstrap: str, topics: TopicSettings) -> None:
    """Create a side's topics the way the bridge does (same partitions), for clients that do not."""
    from bridge.delivery.publish import Publisher

    await Publisher(kafka_settings(bootstrap), topics).ensure_topics()


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in dict.fromkeys(topics) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    except Exception as exc:  # a leftover benchmark topic is harmless
        print(f"  (could not delete benchmark topics: {exc.__class__.__name__})")
    finally:
        await admin.close()


# -- worker processes (orchestrator side) --------------------------------------------------------


class ChildError(RuntimeError):
    """A worker died or answered something unexpected; carries its log tail."""


class Child:
    """A worker process: ``await Child.start(role, params)``, ``request(...)``, ``close()``."""

    def __init__(self, role: str, process: asyncio.subprocess.Process, log_path: Path, started: float):
        self.role = role
        self.process = process
        self.log_path = log_path
        self.started = started
        """``time.monotonic()`` just before the process was spawned."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, role: str, params: dict[str, Any], *, workdir: Path, python: Sequence[str] | None = None) -> Child:
        log_path = workdir / f"{role}-{uuid.uuid4().hex[:6]}.log"
        command = [*(python or [sys.executable]), "-m", "tests.benchmarks.child", role, json.dumps(params)]
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=REPO,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=2**26,
            )
        return cls(role, process, log_path, started)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def send(self, command: str, payload: dict[str, Any] | None = None) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command} {json.dumps(payload or {})}\n".encode())
        await self.process.stdin.drain()

    async def expect(self, tag: str, timeout: float) -> dict[str, Any]:
        """The payload of the next ``@@TAG`` line; ``@@ERROR`` or an exit raise ``ChildError``."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildError(f"{self.role}: no {tag} within {timeout:.0f}s\n{self.log_tail()}")
            try:
                line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                await self.process.wait()
                raise ChildError(f"{self.role} exited with {self.process.returncode} before {tag}\n{self.log_tail()}")
            text = line.decode(errors="replace").rstrip("\n")
            if not text.startswith(_TAG):
                continue
            got, _, body = text[len(_TAG):].partition(" ")
            payload = json.loads(body) if body else {}
            if got == "ERROR":
                raise ChildError(f"{self.role} failed: {payload.get('error')}\n{self.log_tail()}")
            if got == tag:
                return payload

    async def request(self, command: str, payload: dict[str, Any] | None = None, *, tag: str = "RESULT", timeout: float = 300) -> dict[str, Any]:
        await self.send(command, payload)
        return await self.expect(tag, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """Ask it to stop; kill it if it does not within ``timeout``."""
        if self.process.returncode is None:
            try:
                await self.send("STOP")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


# -- worker processes (worker side) --------------------------------------------------------------


class Channel:
    """The worker's end of the line protocol."""

    def __init__(self, reader: asyncio.StreamReader):
        self._reader = reader

    @classmethod
    async def open(cls) -> Channel:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**26)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader)

    @staticmethod
    def tell(tag: str, payload: dict[str, Any] | None = None) -> None:
        sys.stdout.write(f"{_TAG}{tag} {json.dumps(payload or {})}\n")
        sys.stdout.flush()

    async def command(self) -> tuple[str, dict[str, Any]]:
        """The next command; ``STOP`` when the orchestrator went away."""
        line = await self._reader.readline()
        if not line:
            return "STOP", {}
        name, _, body = line.decode().strip().partition(" ")
        return name, json.loads(body) if body else {}
