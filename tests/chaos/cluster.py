"""Cluster chaos: replica processes sharing the slots, under load, while the owner is hurt.

``python -m tests.chaos.cluster [--replicas 3] [--faults kill,kill,stop,roll,broker] …`` (``make chaos
CLUSTER=1``): N replica processes of the real service (``tests.chaos.bridge_process``) in one
group, OKX and Ripio simulators (WebSocket + REST history, owned by a slot) and OpenXSwitch webhooks posted
through a balancer to every replica (the way a Kubernetes Service spreads them; a refused connection
is tried on the next replica, like an ingress proxy), with faults one after another:

``kill``   SIGKILL the replica holding the slots, then start it again;
``stop``   SIGSTOP it past its session timeout (its slots move), then SIGCONT: its late writes are
           fenced by the new owner's producer;
``roll``   SIGTERM and restart every replica one by one (a rolling update);
``broker`` SIGKILL the broker, restart it.

Read back ``read_committed``: WebSocket states lost (``lost_final`` for the final ones), webhook
deliveries answered 2xx but missing, duplicates by ``event_id`` (must be 0), the handover after each
kill or stop — from the fault to the first event committed by the new owner (record timestamps) —
and the 5xx the webhook senders saw during each fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from bridge.sources.openxswitch.signature import HEADER
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, SimTransfer
from bridge_testkit.ripio.simulator import RipioSimulator
from tests.chaos.webhooks import WebhookDriver

__all__ = ["ClusterReport", "run_cluster", "main"]

REPO = Path(__file__).resolve().parents[2]
FAULTS = ("kill", "stop", "roll", "broker")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _reveal(value: Any) -> Any:
    """Config for a child process: secrets in clear (the file lives in a private temp dir)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


class Replica:
    """One replica process: the real service shell, its own webhook and admin ports."""

    def __init__(self, name: str, config: dict[str, Any], work: Path):
        self.name = name
        self.port = _free_port()
        self.admin_port = _free_port()
        config = {**config, "server": {"host": "127.0.0.1", "port": self.port, "admin_port": self.admin_port}}
        self.config_path = work / f"{name}.json"
        self.config_path.write_text(json.dumps(config, default=str))
        os.chmod(self.config_path, 0o600)
        self.log_path = work / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}/webhooks/openxswitch"

    async def start(self, timeout: float = 120.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.bridge_process", str(self.config_path)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)
        if line.strip() != b"READY":
            raise RuntimeError(f"replica {self.name} did not start: {line!r}; see {self.log_path}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill9(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    async def terminate(self) -> int:
        if not self.alive:
            return self.process.returncode if self.process else 0
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        return await asyncio.to_thread(self.process.wait, 60)

    async def cluster(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        """The ``cluster`` detail of ``/readyz`` (None if the replica does not answer)."""
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=timeout) as answer:
                detail: dict[str, Any] = (await answer.json()).get("cluster") or {}
                return detail
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None

    async def metric(self, session: aiohttp.ClientSession, name: str) -> float:
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=timeout) as answer:
                text = await answer.text()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return 0.0
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


class Balancer:
    """Spreads webhook posts over the replicas (round robin); a refused connection goes to the next
    one, as an ingress proxy does; when none answers, 502. Every answer is logged with its time."""

    def __init__(self, replicas: list[Replica]):
        self.replicas = replicas
        self.answers: list[tuple[float, int]] = []
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/webhooks/openxswitch"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": "application/json", HEADER: request.headers.get(HEADER, "")}
        assert self._session is not None
        status, payload = 502, b'{"result":"bad_gateway"}'
        first, self._next = self._next, self._next + 1
        for n in range(len(self.replicas)):
            replica = self.replicas[(first + n) % len(self.replicas)]
            try:
                timeout = aiohttp.ClientTimeout(total=30, sock_connect=1.0)
                async with self._session.post(replica.url, data=body, headers=headers, timeout=timeout) as answer:
                    status, payload = answer.status, await answer.read()
                break
            except aiohttp.ClientConnectorError:
                continue  # nothing listens (killed, restarting): the next replica
            except (TimeoutError, aiohttp.ClientError, OSError):
                status = 504  # accepted the connection, never answered (SIGSTOPped)
                break
        self.answers.append((time.monotonic(), status))
        return web.Response(body=payload, status=status, content_type="application/json")

    def errors_between(self, start: float, end: float) -> Counter[int]:
        return Counter(status for at, status in self.answers if start <= at <= end and status >= 500)


class Tail:
    """Reads the event topics as they fill (``read_committed``): when each record was created."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.bootstrap = bootstrap
        self.topics = topics
        self.created: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.bootstrap,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=f"tail-{uuid.uuid4().hex[:8]}",
            )
            try:
                await consumer.start()
                while True:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        self.created.extend(r.timestamp / 1000 for r in records)
            except Exception:  # noqa: BLE001 - the broker is being killed: read again from the start
                self.created.clear()
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    def first_after(self, wall: float) -> float | None:
        later = [t for t in self.created if t > wall]
        return min(later) - wall if later else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class FaultFigures:
    injected: int = 0
    webhook_5xx: list[dict[int, int]] = field(default_factory=list)
    handover_seconds: list[float] = field(default_factory=list)
    fenced_producers: float = 0.0


@dataclass
class StreamFigures:
    states: int = 0
    lost: int = 0
    lost_final: int = 0


@dataclass
class ClusterReport:
    replicas: int = 0
    seconds: float = 0.0
    streams: dict[str, StreamFigures] = field(default_factory=dict)
    webhook_acked: int = 0
    webhook_acked_missing: int = 0
    duplicates: int = 0
    records: int = 0
    faults: dict[str, FaultFigures] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def stream_states(self) -> int:
        return sum(f.states for f in self.streams.values())

    @property
    def lost_final(self) -> int:
        return sum(f.lost_final for f in self.streams.values())

    @property
    def handovers(self) -> list[float]:
        return [h for f in self.faults.values() for h in f.handover_seconds]

    def table(self) -> str:
        handovers = self.handovers
        lines = [
            f"cluster chaos: {self.replicas} replicas, {self.seconds:.0f}s, {self.records} records read (read_committed)",
            *(f"  {name}: {f.states} states, lost {f.lost}, lost_final {f.lost_final}" for name, f in self.streams.items()),
            f"  openxswitch: {self.webhook_acked} deliveries answered 2xx, missing in Kafka {self.webhook_acked_missing}",
            f"  duplicates by event_id: {self.duplicates}",
        ]
        if handovers:
            lines.append(
                f"  handover (fault → first event of the new owner): p50 {statistics.median(handovers):.2f}s, "
                f"max {max(handovers):.2f}s over {len(handovers)}"
            )
        for name, figures in self.faults.items():
            lines.append(
                f"  {name}: injected {figures.injected}, webhook 5xx per fault {figures.webhook_5xx}, "
                f"handover {[round(h, 2) for h in figures.handover_seconds]}, fenced producers {figures.fenced_producers:g}"
            )
        lines.append("result: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


async def _owner(replicas: list[Replica], session: aiohttp.ClientSession, slot: int = 0, timeout: float = 60.0) -> Replica:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for replica in replicas:
            if replica.alive:
                detail = await replica.cluster(session)
                if detail and slot in detail.get("slots", []):
                    return replica
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no replica holds slot {slot} after {timeout}s")


async def _new_owner(
    replicas: list[Replica], old: Replica, session: aiohttp.ClientSession, timeout: float = 60.0
) -> Replica:
    others = [r for r in replicas if r is not old]
    return await _owner(others, session, timeout=timeout)


async def run_cluster(
    *,
    replicas: int = 3,
    faults: list[str] | None = None,
    okx_transfers: int = 120,
    webhook_transfers: int = 60,
    duration: float = 30.0,
    seed: int = 5,
    broker: LocalKafka | None = None,
    bootstrap: str | None = None,
    timeout: float = 300.0,
) -> ClusterReport:
    """One run; ``broker`` is a broker of the caller's that may be killed (else one of its own);
    ``bootstrap``: a shared broker, for runs without the ``broker`` fault."""
    faults = list(faults if faults is not None else ["kill", "stop", "roll", "broker"])
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
    if bootstrap is not None and "broker" in faults:
        raise ValueError("the broker fault needs a broker of its own, not a shared bootstrap")
    kafka = broker if broker is not None or bootstrap is not None else LocalKafka()
    owned = broker is None and kafka is not None
    began = time.monotonic()
    report = ClusterReport(replicas=replicas, faults={name: FaultFigures() for name in dict.fromkeys(faults)})
    with tempfile.TemporaryDirectory(prefix="cluster-chaos-") as scratch:
        work = Path(scratch)
        if owned and kafka is not None:
            await asyncio.to_thread(kafka.start)
        boot = bootstrap or (kafka.bootstrap if kafka is not None else "")
        members: list[Replica] = []
        try:
            suffix = uuid.uuid4().hex[:8]
            deposit, withdrawal = f"cl.{suffix}.dep", f"cl.{suffix}.wd"
            topics = {"deposit": deposit, "withdrawal": withdrawal, "dead_letter": f"cl.{suffix}.dlq", "partitions": 3}
            secret = uuid.uuid4().hex
            async with OkxSimulator(seed=seed) as okx, RipioSimulator(seed=seed) as ripio:
                config = {
                    "kafka": {"bootstrap_servers": boot, "linger_ms": 5, "request_timeout_ms": 10_000},
                    "topics": topics,
                    "dedup": {"store": "kafka", "state_topic": f"cl.{suffix}.state"},
                    "cluster": {
                        "enabled": True,
                        "group_id": f"cl-{suffix}",
                        "coordination_topic": f"cl.{suffix}.coord",
                        "ingress_topic": f"cl.{suffix}.ingress",
                    },
                    "log": {"level": "INFO", "format": "text", "levels": {"aiokafka": "ERROR"}},
                    "supervisor": {"restart_initial_seconds": 0.2, "restart_max_seconds": 2.0, "min_uptime_seconds": 5.0},
                    "shutdown": {"deadline_seconds": 15.0},
                    "okx": _reveal(scenario_config(okx, backfill_interval=3.0, backfill_initial_lookback=3600.0).model_dump()),
                    "ripio": _reveal(ripio.config(backfill_interval=3.0, backfill_initial_lookback=3600.0).model_dump()),
                    "openxswitch": {"enabled": True, "secrets": [secret], "ack_timeout_seconds": 5.0},
                }
                members = [Replica(f"replica-{n}", config, work) for n in range(replicas)]
                await asyncio.gather(*(member.start() for member in members))
                balancer = Balancer(members)
                await balancer.start()
                tail = Tail(boot, [deposit, withdrawal])
                await tail.start()
                async with aiohttp.ClientSession() as session:
                    try:
                        await _owner(members, session)
                        await okx.wait_subscribed(timeout=60)
                        await ripio.wait_subscribed(timeout=60)
                        await _drive(report, members, kafka, boot, okx, ripio, balancer, tail, session, secret, faults, okx_transfers,
                                     webhook_transfers, duration, seed, timeout)  # fmt: skip
                    finally:
                        await tail.stop()
                        await balancer.stop()
                        for member in members:
                            member.kill9()
        except Exception:
            for member in members:
                if member.log_path.exists():
                    sys.stderr.write(f"{member.name} log tail:\n{member.log_path.read_text(errors='replace')[-3000:]}\n")
            raise
        finally:
            if owned and kafka is not None:
                await asyncio.to_thread(kafka.cleanup)
    report.seconds = time.monotonic() - began
    report.failures = _failures(report)
    return report


async def _drive(
    report: ClusterReport,
    members: list[Replica],
    kafka: LocalKafka | None,
    bootstrap: str,
    okx: OkxSimulator,
    ripio: RipioSimulator,
    balancer: Balancer,
    tail: Tail,
    session: aiohttp.ClientSession,
    secret: str,
    faults: list[str],
    okx_transfers: int,
    webhook_transfers: int,
    duration: float,
    seed: int,
    timeout: float,
) -> None:
    oxs = OpenXSwitchSimulator(balancer.url, secret, request_timeout=40.0, seed=seed)
    oxs.lifecycles(withdrawals=webhook_transfers // 2, deposits=webhook_transfers - webhook_transfers // 2)
    driver = WebhookDriver(oxs, oxs.transfers, seed=seed, workers=4)
    created = okx.create_many(okx_transfers)
    ripio_created = ripio.create_many(max(1, okx_transfers // 2))
    deadline = time.monotonic() + timeout
    spread = max(1.0, duration)
    began = time.monotonic()

    async def pace(fraction: float) -> None:  # webhook transfers spread over the run's duration
        while time.monotonic() - began < fraction * spread:
            await asyncio.sleep(0.05)

    ticking = asyncio.Event()

    async def ticker() -> None:
        """A fresh webhook transfer every quarter second until the last fault is over: there is always
        something for a new owner to publish, so the handover can be timed."""
        async with aiohttp.ClientSession() as own:
            posts: set[asyncio.Task[None]] = set()
            while not ticking.is_set():
                transfer = oxs.withdrawal()
                task = asyncio.create_task(_post_all(oxs, own, transfer, deadline))
                posts.add(task)
                task.add_done_callback(posts.discard)
                await asyncio.sleep(0.25)
            if posts:
                await asyncio.gather(*posts)

    ticks = asyncio.create_task(ticker())
    okx_run = asyncio.create_task(okx.run_lifecycles(created, repeat_every=7, min_step_interval=spread / 8, timeout=timeout))
    ripio_run = asyncio.create_task(
        ripio.run_lifecycles(ripio_created, repeat_every=7, skip_every=60, min_step_interval=spread / 6, timeout=timeout)
    )
    webhook_run = asyncio.create_task(driver.run(pace, deadline))
    gap = spread / (len(faults) + 1)
    try:
        for fault in faults:
            await asyncio.sleep(gap)
            figures = report.faults[fault]
            figures.injected += 1
            start = time.monotonic()
            if fault in ("kill", "stop"):
                owner = await _owner(members, session)
                wall = time.time()
                if fault == "kill":
                    owner.kill9()
                else:
                    owner.signal(signal.SIGSTOP)
                await _new_owner(members, owner, session)
                handover = await _first_event_after(tail, wall, 60.0)
                if handover is not None:
                    figures.handover_seconds.append(handover)
                if fault == "kill":
                    await owner.start()
                else:
                    await asyncio.sleep(2.0)
                    owner.signal(signal.SIGCONT)
                    await asyncio.sleep(6.0)  # it learns of the rebalance; its late writes meet the new owner's fence
                    figures.fenced_producers += await owner.metric(session, "bridge_cluster_fenced_producers_total")
            elif fault == "roll":
                for member in members:
                    await member.terminate()
                    await member.start()
            else:
                assert kafka is not None
                await asyncio.to_thread(kafka.kill9)
                await asyncio.sleep(2.0)
                await asyncio.to_thread(kafka.restart)
                await _owner(members, session, timeout=120)
            figures.webhook_5xx.append(dict(balancer.errors_between(start, time.monotonic())))
        ticking.set()
        await asyncio.wait_for(asyncio.gather(okx_run, ripio_run, webhook_run, ticks), max(1.0, deadline - time.monotonic()))
    finally:
        for task in (okx_run, ripio_run, webhook_run, ticks):
            task.cancel()
        await asyncio.gather(okx_run, ripio_run, webhook_run, ticks, return_exceptions=True)
    await _tally(report, bootstrap, okx, ripio, oxs, tail)


async def _post_all(oxs: OpenXSwitchSimulator, session: aiohttp.ClientSession, transfer: SimTransfer, deadline: float) -> None:
    """Every state of one transfer in order, each retried until 2xx, like the provider."""
    for index in range(len(transfer.states)):
        delivery = oxs.delivery(transfer, index)
        oxs.sent.append(delivery)
        while not 200 <= await oxs.post(session, delivery) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)


async def _first_event_after(tail: Tail, wall: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = tail.first_after(wall)
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    return None


async def _tally(
    report: ClusterReport, bootstrap: str, okx: OkxSimulator, ripio: RipioSimulator, oxs: OpenXSwitchSimulator, tail: Tail
) -> None:
    topics = tail.topics
    values = [json.loads(r.value) for topic in topics for r in await read_topic(bootstrap, topic, idle=3.0, timeout=60)]
    report.records = len(values)
    report.duplicates = sum(n - 1 for n in Counter(v["event_id"] for v in values).values() if n > 1)
    seen = {(v["key"], v["provider_status"], v["confirmations"], v["tx_hash"]) for v in values}
    truths = {
        "okx": {k: [(s.state, s.confirmations, s.tx_hash) for s in h] for k, h in okx.truth().items()},
        "ripio": {k: [(s.status, None, s.tx_hash) for s in h] for k, h in ripio.truth().items()},
    }
    for name, truth in truths.items():
        figures = report.streams.setdefault(name, StreamFigures())
        for key, history in truth.items():
            figures.states += len(history)
            for index, state in enumerate(history):
                if (key, *state) not in seen:
                    figures.lost += 1
                    figures.lost_final += index == len(history) - 1
    published = {v["event_id"] for v in values if v["provider"] == "openxswitch"}
    acked = [d for d in oxs.sent if d.acked and d.state is not None]
    report.webhook_acked = len(acked)
    report.webhook_acked_missing = sum(1 for d in acked if d.state is not None and d.state.event.event_id not in published)


def _failures(report: ClusterReport) -> list[str]:
    failures = []
    if report.duplicates:
        failures.append(f"{report.duplicates} duplicates")
    if report.lost_final:
        failures.append(f"{report.lost_final} final WebSocket states lost")
    if report.webhook_acked_missing:
        failures.append(f"{report.webhook_acked_missing} acknowledged webhook deliveries missing")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--faults", default="kill,kill,stop,roll,broker,kill", help=f"comma-separated, of {FAULTS}")
    parser.add_argument("--okx-transfers", type=int, default=400, help="Ripio gets half as many")
    parser.add_argument("--webhook-transfers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    report = asyncio.run(
        run_cluster(
            replicas=args.replicas,
            faults=[f for f in args.faults.split(",") if f],
            okx_transfers=args.okx_transfers,
            webhook_transfers=args.webhook_transfers,
            duration=args.duration,
            seed=args.seed,
            timeout=max(600.0, args.duration * 5),
        )
    )
    print(report.table())
    return 0 if not report.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
