"""Chaos suite: kill -9 the bridge and the broker under load from all three providers, then prove
that nothing a provider handed over was lost.

``python -m tests.chaos.run [--transfers N] [--bridge-kills K] [--broker-kills B] [--mode embedded|exactly-once|both]``

The simulators run in this process and keep the ground truth: OKX and Ripio over WebSocket + REST
(connections dropped every ~100 steps, OKX upgrade notices 64008, Ripio lost message ids, identical
repeats), OpenXSwitch webhooks (every state posted 3 times — some at once, some after a 503 — and
retried until 2xx, see ``tests.chaos.webhooks``). The bridge is the real service shell
(``tests.chaos.bridge_process``) in a child process, SIGKILLed at random moments and restarted;
the local Kafka broker is SIGKILLed and restarted during load. At the end every topic is read with
``read_committed`` and compared with the truth, per provider:

* ``lost_final`` — transfers whose current (last) state is missing: must be 0;
* webhooks: every state, and in particular every delivery answered 2xx, must be in Kafka;
* ``lost`` — any state missing. A WebSocket provider pushes a state once and its REST history
  shows only the current state, so an *intermediate* state pushed to a bridge that was SIGKILLed
  before Kafka had it cannot be recovered by any bridge: such losses are counted as
  ``lost_at_bridge_kill`` (Kafka up for at most ``KILL_SLACK`` seconds between the push and a
  kill). Any other loss is ``lost_unexplained`` and fails the run;
* duplicates by ``event_id``: 0 in exactly-once mode; counted in the embedded mode, where a repeat
  must carry the identical ``event_id`` (``same_state_different_event_ids`` must be 0 in both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from bridge_testkit.okx.scenario import scenario_config
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.okx.simulator import SimTransfer as OkxTransfer
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator
from bridge_testkit.ripio.simulator import RipioSimulator
from bridge_testkit.ripio.simulator import SimTransfer as RipioTransfer
from tests.chaos.webhooks import DELIVERIES_PER_STATE, FlakyFront, WebhookDriver

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = ("okx", "ripio", "openxswitch")
SHARE = {"okx": 0.4, "ripio": 0.3, "openxswitch": 0.3}
"""Share of the scripted transfers per provider (≈3.3 states per transfer on average)."""
KILL_SLACK = 5.0
"""A lost intermediate state counts as lost at a kill when Kafka was up for at most this long
between its push and a SIGKILL of the bridge: events reach Kafka within milliseconds otherwise."""

Fingerprint = tuple[str, int | None, str | None]


@dataclass
class FaultFigures:
    injected: int = 0
    recover_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        times = sorted(self.recover_seconds)
        return {
            "injected": self.injected,
            "recover_p50_s": round(times[len(times) // 2], 2) if times else None,
            "recover_max_s": round(times[-1], 2) if times else None,
        }


@dataclass
class ProviderFigures:
    transfers: int = 0
    states: int = 0
    records: int = 0
    lost: int = 0
    lost_final: int = 0
    """transfers whose last (current) state is missing: must be 0"""
    lost_at_bridge_kill: int = 0
    """intermediate WebSocket states current at a SIGKILL of the bridge, gone from the REST history"""
    lost_unexplained: int = 0
    """any other missing state: must be 0"""
    unknown_records: int = 0
    """records that match no state of the truth: must be 0"""
    duplicates_by_event_id: int = 0
    distinct_event_ids_duplicated: int = 0
    same_state_different_event_ids: int = 0
    """a state published twice under two ids (consumers could not dedupe): must be 0"""
    out_of_order: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChaosReport:
    mode: str
    providers: dict[str, ProviderFigures]
    total: ProviderFigures
    faults: dict[str, dict[str, Any]]
    dead_lettered: int
    seconds: float
    failures: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The figures per provider and in total, one line each."""
        columns = (
            "transfers", "states", "records", "lost", "lost_final", "lost_at_bridge_kill", "lost_unexplained",
            "unknown_records", "duplicates_by_event_id", "same_state_different_event_ids", "out_of_order",
        )  # fmt: skip
        short = ("transfers", "states", "records", "lost", "lost_final", "lost@kill", "unexplained", "unknown", "dup_ids", "diff_ids", "reorder")
        lines = [f"chaos run, mode {self.mode}: {self.seconds:.0f} s, dead letters {self.dead_lettered}"]
        lines.append(f"{'':<12}" + "".join(f"{name:>12}" for name in short))
        rows = [*self.providers.items(), ("total", self.total)]
        for name, figures in rows:
            lines.append(f"{name:<12}" + "".join(f"{getattr(figures, c):>12}" for c in columns))
        for name, fault in self.faults.items():
            recover = f", recover p50 {fault['recover_p50_s']} s max {fault['recover_max_s']} s" if fault["recover_p50_s"] is not None else ""
            lines.append(f"fault {name}: injected {fault['injected']}{recover}")
        for name, figures in self.providers.items():
            if figures.detail:
                lines.append(f"{name}: " + json.dumps(figures.detail, sort_keys=True))
        lines.append("result: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


def _reveal(value: Any) -> Any:
    """Config for the child process: secrets in clear (the file lives in a private temp dir)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


def _free_port() -> int:
    """A port for the webhook route that stays the same across restarts of the bridge."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BridgeProcess:
    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 120.0) -> float:
        """Start and wait for READY; returns seconds to ready."""
        started = time.monotonic()
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
            raise RuntimeError(f"bridge did not start: {line!r}; see {self.log_path}")
        return time.monotonic() - started

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    async def terminate(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        return await asyncio.to_thread(self.process.wait, 60)


class Throttle:
    """Spaces state changes evenly: the simulators would otherwise push as fast as the bridge
    reads, thousands of states a second, which no provider does and which would turn every
    SIGKILL into the loss of a whole socket buffer of intermediate states."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class ChaosOkx(OkxSimulator):
    """Paced; remembers when each state became current, to tell losses at a kill from real ones."""

    advanced_at: dict[str, list[float]]
    throttle: Throttle

    async def advance(self, transfer: OkxTransfer) -> bool:
        if not transfer.finished:
            await self.throttle.wait()
            self.advanced_at.setdefault(transfer.key, []).append(time.monotonic())
        return await super().advance(transfer)


class ChaosRipio(RipioSimulator):
    """Paced; remembers when each state became current, to tell losses at a kill from real ones."""

    advanced_at: dict[str, list[float]]
    throttle: Throttle

    async def advance(self, transfer: RipioTransfer) -> bool:
        if not transfer.finished:
            await self.throttle.wait()
            self.advanced_at.setdefault(transfer.key, []).append(time.monotonic())
        return await super().advance(transfer)


def _value_fingerprint(value: dict[str, Any]) -> Fingerprint:
    return (value["provider_status"], value["confirmations"], value["tx_hash"])


def _healthy_seconds(start: float, end: float, outages: list[tuple[float, float]]) -> float:
    """Seconds of ``[start, end]`` during which Kafka was up (outside every broker outage)."""
    down = sum(max(0.0, min(end, b) - max(start, a)) for a, b in outages)
    return (end - start) - down


def _websocket_figures(
    truth: dict[str, list[Fingerprint]],
    values: list[dict[str, Any]],
    advanced_at: dict[str, list[float]],
    kills: list[float],
    outages: list[tuple[float, float]],
) -> ProviderFigures:
    """Kafka against a WebSocket simulator's truth; losses split by whether a kill explains them:
    the state was pushed, and a SIGKILL of the bridge followed before Kafka had been reachable
    for ``KILL_SLACK`` seconds (an event waits in memory while the broker is down)."""
    seen: dict[str, list[Fingerprint]] = defaultdict(list)
    for value in values:
        seen[value["key"]].append(_value_fingerprint(value))
    figures = ProviderFigures(transfers=len(truth), states=sum(len(h) for h in truth.values()), records=len(values))
    for key, history in truth.items():
        got = seen.get(key, [])
        got_set = set(got)
        times = advanced_at.get(key, [])
        for index, state in enumerate(history):
            if state in got_set:
                continue
            figures.lost += 1
            if index == len(history) - 1:
                figures.lost_final += 1
                continue
            became_current = times[index] if index < len(times) else 0.0
            ages = [
                _healthy_seconds(became_current, kill, outages)
                for kill in kills
                if kill >= became_current and _healthy_seconds(became_current, kill, outages) <= KILL_SLACK
            ]
            if ages:
                figures.lost_at_bridge_kill += 1
                oldest = max(figures.detail.get("lost_at_kill_max_kafka_up_s", 0.0), min(ages))
                figures.detail["lost_at_kill_max_kafka_up_s"] = round(oldest, 3)
            else:
                figures.lost_unexplained += 1
                figures.detail.setdefault("unexplained_examples", []).append(f"{key}#{index}")
        in_order = [s for s in dict.fromkeys(got) if s in history]
        if set(history) <= got_set and in_order != history:
            figures.out_of_order += 1
    figures.unknown_records = sum(1 for v in values if _value_fingerprint(v) not in set(truth.get(v["key"], ())))
    if "unexplained_examples" in figures.detail:
        figures.detail["unexplained_examples"] = figures.detail["unexplained_examples"][:10]
    return figures


def _duplicates(figures: ProviderFigures, values: list[dict[str, Any]]) -> None:
    ids = Counter(value["event_id"] for value in values)
    duplicated = {i: n for i, n in ids.items() if n > 1}
    figures.duplicates_by_event_id = sum(n - 1 for n in duplicated.values())
    figures.distinct_event_ids_duplicated = len(duplicated)
    by_state: dict[tuple[str, Fingerprint], set[str]] = defaultdict(set)
    for value in values:
        by_state[(value["key"], _value_fingerprint(value))].add(value["event_id"])
    figures.same_state_different_event_ids = sum(1 for ids_ in by_state.values() if len(ids_) > 1)


def _webhook_figures(sim: OpenXSwitchSimulator, driver: WebhookDriver, front: FlakyFront, values: list[dict[str, Any]]) -> ProviderFigures:
    """Kafka against the webhook sender's truth: every state, and every delivery answered 2xx."""
    published = Counter(value["event_id"] for value in values)
    truth = sim.truth()
    figures = ProviderFigures(transfers=len(truth), states=sum(len(h) for h in truth.values()), records=len(values))
    known: set[str] = set()
    for states in truth.values():
        ids = [state.event.event_id for state in states]
        known.update(ids)
        missing = [i for i in ids if i not in published]
        figures.lost += len(missing)
        figures.lost_unexplained += len(missing)
        figures.lost_final += 1 if ids[-1] not in published else 0
    figures.unknown_records = sum(1 for value in values if value["event_id"] not in known)
    transfer_deliveries = [d for d in sim.sent if d.state is not None]
    acked_missing = sum(1 for d in transfer_deliveries if d.acked and d.state is not None and d.state.event.event_id not in published)
    statuses: Counter[int] = Counter(status for d in sim.sent for status in d.attempts)
    figures.detail = {
        "deliveries": len(sim.sent),
        "deliveries_per_state": DELIVERIES_PER_STATE,
        "attempts": sum(len(d.attempts) for d in sim.sent),
        "acked": sum(1 for d in sim.sent if d.acked),
        "acked_but_missing_in_kafka": acked_missing,
        "given_up": sum(1 for d in sim.sent if d.given_up),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "patterns": dict(driver.patterns),
        "front": dict(front.stats),
        "bridge_503": statuses[503] - front.stats["503_before_forward"] - front.stats["503_after_forward"],
    }
    return figures


async def _read_all(bootstrap: str, topics: dict[str, Any]) -> tuple[list[ConsumedRecord], list[ConsumedRecord]]:
    records: list[ConsumedRecord] = []
    for name in ("deposit", "withdrawal"):
        records += await read_topic(bootstrap, topics[name], idle=1.5, timeout=120)
    dead = await read_topic(bootstrap, topics["dead_letter"], idle=0.5, timeout=10)
    return records, dead


def _split(records: Iterable[ConsumedRecord]) -> dict[str, list[dict[str, Any]]]:
    by_provider: dict[str, list[dict[str, Any]]] = {name: [] for name in PROVIDERS}
    for record in records:
        value = json.loads(record.value)
        by_provider.setdefault(value["key"].split(":", 1)[0], []).append(value)
    return by_provider


async def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _split_count(transfers: int) -> dict[str, int]:
    counts = {name: int(transfers * share) for name, share in SHARE.items()}
    counts["okx"] += transfers - sum(counts.values())
    return counts


async def run_chaos(
    *,
    transfers: int = 5000,
    bridge_kills: int = 20,
    broker_kills: int = 2,
    mode: str = "embedded",
    seed: int = 1,
    timeout: float = 1800.0,
    broker: LocalKafka | None = None,
    settle_timeout: float = 180.0,
    duration: float = 240.0,
) -> ChaosReport:
    """One chaos run; the WebSocket providers spread their states over ``duration`` seconds and
    the webhooks follow their progress. ``broker`` reuses a running ``LocalKafka`` (it is killed
    and restarted)."""
    rng = random.Random(seed)
    started = time.monotonic()
    fault_names = ("bridge_kill9", "broker_kill9", "provider_drop", "upgrade_notice", "lost_message_id", "webhook_503", "webhook_refused")
    faults = {name: FaultFigures() for name in fault_names}
    kills: list[float] = []
    outages: list[tuple[float, float]] = []
    suffix = uuid.uuid4().hex[:8]
    topics: dict[str, Any] = {
        "deposit": f"chaos.{suffix}.deposit.v1",
        "withdrawal": f"chaos.{suffix}.withdrawal.v1",
        "dead_letter": f"chaos.{suffix}.dlq.v1",
        "partitions": 3,
    }
    counts = _split_count(transfers)
    owned = broker is None
    kafka = broker or LocalKafka()
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        if owned:
            await asyncio.to_thread(kafka.start)
        try:
            work = Path(scratch)
            dedup: dict[str, Any] = {"store": "sqlite", "path": str(work / "dedup.sqlite3")}
            if mode == "exactly-once":
                dedup = {"store": "kafka", "state_topic": f"chaos.{suffix}.state", "transactional_id": f"chaos-{suffix}"}
            okx = ChaosOkx(seed=seed)
            okx.advanced_at = {}
            okx.throttle = Throttle(None)
            ripio = ChaosRipio(seed=seed)
            ripio.advanced_at = {}
            ripio.throttle = Throttle(None)
            webhook_secret = secrets.token_hex(24)
            webhook_port = _free_port()
            front = FlakyFront(f"http://127.0.0.1:{webhook_port}/webhooks/openxswitch", rate=0.1, seed=seed)
            async with okx, ripio:
                await front.start()
                # A restarted bridge must look back over the whole run: history filters on creation time.
                okx_config = scenario_config(okx, backfill_interval=3.0, backfill_initial_lookback=3600.0)
                ripio_config = ripio.config(backfill_interval=3.0, backfill_initial_lookback=3600.0)
                config = {
                    "kafka": {"bootstrap_servers": kafka.bootstrap, "linger_ms": 5, "request_timeout_ms": 10_000},
                    "topics": topics,
                    "dedup": dedup,
                    "server": {"host": "127.0.0.1", "port": webhook_port, "admin_port": None},
                    "log": {"level": "WARNING", "format": "text"},
                    "supervisor": {"restart_initial_seconds": 0.2, "restart_max_seconds": 2.0, "min_uptime_seconds": 5.0},
                    "okx": _reveal(okx_config.model_dump()),
                    "ripio": _reveal(ripio_config.model_dump()),
                    "openxswitch": {"enabled": True, "secrets": [webhook_secret], "ack_timeout_seconds": 5.0},
                }
                config_path = work / "bridge.json"
                config_path.write_text(json.dumps(config, default=str))
                os.chmod(config_path, 0o600)
                bridge = BridgeProcess(config_path, work / "bridge.log")
                try:
                    report = await _drive(
                        rng, seed, counts, bridge, kafka, okx, ripio, front, webhook_secret, faults, kills, outages,
                        bridge_kills, broker_kills, timeout, settle_timeout, duration, topics,
                    )  # fmt: skip
                finally:
                    bridge.kill9()
                    await front.stop()
        except Exception:
            log_path = Path(scratch) / "bridge.log"
            if log_path.exists():
                sys.stderr.write("bridge log tail:\n" + log_path.read_text(errors="replace")[-4000:] + "\n")
            raise
        finally:
            if owned:
                await asyncio.to_thread(kafka.cleanup)
    report.mode = mode
    report.seconds = round(time.monotonic() - started, 1)
    report.faults = {name: f.summary() for name, f in faults.items()}
    report.failures = _failures(report)
    return report


async def _drive(
    rng: random.Random,
    seed: int,
    counts: dict[str, int],
    bridge: BridgeProcess,
    kafka: LocalKafka,
    okx: ChaosOkx,
    ripio: ChaosRipio,
    front: FlakyFront,
    webhook_secret: str,
    faults: dict[str, FaultFigures],
    kills: list[float],
    outages: list[tuple[float, float]],
    bridge_kills: int,
    broker_kills: int,
    timeout: float,
    settle_timeout: float,
    duration: float,
    topics: dict[str, Any],
) -> ChaosReport:
    await bridge.start()
    await okx.wait_subscribed(timeout=60)
    await ripio.wait_subscribed(timeout=60)

    oxs = OpenXSwitchSimulator(front.url, webhook_secret, request_timeout=45.0, seed=seed)
    withdrawals = counts["openxswitch"] // 2
    oxs.lifecycles(withdrawals=withdrawals, deposits=counts["openxswitch"] - withdrawals)
    okx_created = okx.create_many(counts["okx"])
    ripio_created = ripio.create_many(counts["ripio"])
    driver = WebhookDriver(oxs, oxs.transfers, seed=seed)
    okx_expected = sum(len(t.script) for t in okx_created)
    ripio_expected = sum(len(t.script) for t in ripio_created)
    okx.throttle = Throttle(okx_expected / duration if duration else None)
    ripio.throttle = Throttle(ripio_expected / duration if duration else None)
    expected = okx_expected + ripio_expected + driver.expected_states
    steps = {"okx": 0, "ripio": 0}

    def socket_progress() -> float:
        return (steps["okx"] + steps["ripio"]) / max(1, okx_expected + ripio_expected)

    def progress() -> int:
        return steps["okx"] + steps["ripio"] + driver.states_done

    deadline = time.monotonic() + timeout
    okx_run = asyncio.create_task(
        okx.run_lifecycles(
            okx_created, repeat_every=7, drop_every=100, notice_every=max(50, min(500, okx_expected // 4)), timeout=timeout,
            on_step=lambda n: steps.__setitem__("okx", n),
        )
    )  # fmt: skip
    ripio_run = asyncio.create_task(
        ripio.run_lifecycles(
            ripio_created, repeat_every=7, skip_every=60, drop_every=100, timeout=timeout,
            on_step=lambda n: steps.__setitem__("ripio", n),
        )
    )  # fmt: skip
    sockets_done = asyncio.gather(okx_run, ripio_run)

    async def pace(fraction: float) -> None:
        while socket_progress() < fraction and not sockets_done.done():
            await asyncio.sleep(0.05)

    webhook_run = asyncio.create_task(driver.run(pace, deadline))
    everything = asyncio.gather(sockets_done, webhook_run)

    # Faults land at random points spread over the whole load (by states generated), one at a time.
    plan = ["bridge"] * bridge_kills + ["broker"] * broker_kills
    rng.shuffle(plan)
    marks = sorted(rng.uniform(0.03, 0.9) * expected for _ in plan)
    try:
        for fault, mark in zip(plan, marks, strict=True):
            while progress() < mark and not everything.done():
                await asyncio.sleep(0.02)
            if everything.done():
                break
            if fault == "bridge":
                bridge.kill9()
                kills.append(time.monotonic())
                faults["bridge_kill9"].injected += 1
                t0 = time.monotonic()
                await bridge.start()
                await okx.wait_subscribed(timeout=60)
                await ripio.wait_subscribed(timeout=60)
                faults["bridge_kill9"].recover_seconds.append(time.monotonic() - t0)
            else:
                await asyncio.to_thread(kafka.kill9)
                faults["broker_kill9"].injected += 1
                t0 = time.monotonic()
                acked_before = sum(1 for d in oxs.sent if d.acked)
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                await asyncio.to_thread(kafka.restart)
                # Recovered once Kafka takes events again: a webhook delivery answered 2xx.
                recovered = await _until(
                    lambda before=acked_before: webhook_run.done() or sum(1 for d in oxs.sent if d.acked) > before + 3, 120
                )
                outages.append((t0, time.monotonic()))
                if recovered:
                    faults["broker_kill9"].recover_seconds.append(time.monotonic() - t0)
        await everything
    finally:
        for task in (okx_run, ripio_run, webhook_run):
            if not task.done():
                task.cancel()
    faults["provider_drop"].injected = okx.stats["drops"] + ripio.stats["drops"]
    faults["upgrade_notice"].injected = okx.stats["notices"]
    faults["lost_message_id"].injected = ripio.stats["skipped"]
    statuses = Counter(status for d in oxs.sent for status in d.attempts)
    faults["webhook_503"].injected = statuses[503]
    faults["webhook_refused"].injected = statuses[0] + statuses[502]

    okx_truth = {k: [(s.state, s.confirmations, s.tx_hash) for s in h] for k, h in okx.truth().items()}
    ripio_truth = {k: [(s.status, None, s.tx_hash) for s in h] for k, h in ripio.truth().items()}
    webhook_ids = {s.event.event_id for states in oxs.truth().values() for s in states}
    finals = {k: h[-1] for k, h in {**okx_truth, **ripio_truth}.items()}
    acked_ids = {d.state.event.event_id for d in oxs.sent if d.acked and d.state is not None}

    # Let the last backfill passes and acks land: stop once every final state and every
    # acknowledged webhook is in, and the record count stopped moving (or all states are in).
    settle_deadline = time.monotonic() + settle_timeout
    previous = -1
    while True:
        await asyncio.sleep(3.0)
        records, dead = await _read_all(kafka.bootstrap, topics)
        values = [json.loads(r.value) for r in records]
        have_states = {(v["key"], _value_fingerprint(v)) for v in values}
        have_ids = {v["event_id"] for v in values}
        finals_in = all((k, f) in have_states for k, f in finals.items()) and acked_ids <= have_ids
        everything_in = finals_in and webhook_ids <= have_ids and all(
            (k, s) in have_states for truth in (okx_truth, ripio_truth) for k, h in truth.items() for s in h
        )
        if everything_in or (finals_in and len(records) == previous) or time.monotonic() > settle_deadline:
            break
        previous = len(records)
    await bridge.terminate()
    records, dead = await _read_all(kafka.bootstrap, topics)
    by_provider = _split(records)
    providers = {
        "okx": _websocket_figures(okx_truth, by_provider["okx"], okx.advanced_at, kills, outages),
        "ripio": _websocket_figures(ripio_truth, by_provider["ripio"], ripio.advanced_at, kills, outages),
        "openxswitch": _webhook_figures(oxs, driver, front, by_provider["openxswitch"]),
    }
    for name, figures in providers.items():
        _duplicates(figures, by_provider[name])
    providers["okx"].detail.update(
        {k: okx.stats[k] for k in ("pushes", "repeats", "drops", "notices", "rest_requests", "rest_rate_limited")}
    )
    providers["ripio"].detail.update(
        {k: ripio.stats[k] for k in ("pushes", "repeats", "skipped", "drops", "rest_requests", "rest_rate_limited")}
    )
    total = ProviderFigures()
    for figures in providers.values():
        for name in (
            "transfers", "states", "records", "lost", "lost_final", "lost_at_bridge_kill", "lost_unexplained",
            "unknown_records", "duplicates_by_event_id", "distinct_event_ids_duplicated", "same_state_different_event_ids", "out_of_order",
        ):  # fmt: skip
            setattr(total, name, getattr(total, name) + getattr(figures, name))
    unrouted = sum(len(v) for k, v in by_provider.items() if k not in PROVIDERS)
    total.unknown_records += unrouted
    return ChaosReport(mode="", providers=providers, total=total, faults={}, dead_lettered=len(dead), seconds=0.0)


def _failures(report: ChaosReport) -> list[str]:
    """What the run promises, as checks: an empty list is a pass."""
    total, webhook = report.total, report.providers["openxswitch"]
    failed = []
    if total.lost_final:
        failed.append(f"lost_final {total.lost_final}")
    if webhook.lost:
        failed.append(f"webhook states lost {webhook.lost}")
    if webhook.detail.get("acked_but_missing_in_kafka"):
        failed.append(f"webhook deliveries answered 2xx but missing in Kafka {webhook.detail['acked_but_missing_in_kafka']}")
    if webhook.detail.get("given_up"):
        failed.append(f"webhook deliveries never acknowledged {webhook.detail['given_up']}")
    if total.lost_unexplained:
        failed.append(f"lost_unexplained {total.lost_unexplained}")
    if total.unknown_records:
        failed.append(f"unknown_records {total.unknown_records}")
    if total.same_state_different_event_ids:
        failed.append(f"same_state_different_event_ids {total.same_state_different_event_ids}")
    if report.mode == "exactly-once" and total.duplicates_by_event_id:
        failed.append(f"exactly-once duplicates {total.duplicates_by_event_id}")
    if report.faults["bridge_kill9"]["injected"] == 0:
        failed.append("no bridge kill injected")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=5000)
    parser.add_argument("--bridge-kills", type=int, default=20)
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--mode", choices=["embedded", "exactly-once", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=240.0, help="seconds over which the WebSocket states are spread")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    args = parser.parse_args(argv)
    modes = ["embedded", "exactly-once"] if args.mode == "both" else [args.mode]
    reports = []
    for mode in modes:
        report = asyncio.run(
            run_chaos(
                transfers=args.transfers,
                bridge_kills=args.bridge_kills,
                broker_kills=args.broker_kills,
                mode=mode,
                seed=args.seed,
                duration=args.duration,
            )
        )
        print(report.table(), flush=True)
        reports.append(asdict(report))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    return 1 if any(r["failures"] for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
