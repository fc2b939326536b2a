"""Chaos suite: kill -9 the bridge and the broker under load, then prove lost = 0.

``python -m tests.chaos.run [--transfers N] [--bridge-kills K] [--broker-kills B] [--mode embedded|exactly-once]``

The simulators run in this process and keep the ground truth; the bridge runs in a child process
(``tests.chaos.bridge_process``) that is killed with SIGKILL at random moments and restarted; the
local Kafka broker is SIGKILLed and restarted during load; providers drop connections every ~100
steps and send upgrade notices. At the end every topic is read with ``read_committed`` and compared
with the truth: lost must be 0; duplicates (by ``event_id``) must be 0 in exactly-once mode and are
counted, with identical ids, in the embedded mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridge.sources.okx.scenario import compare, scenario_config
from bridge.sources.okx.simulator import OkxSimulator
from bridge.testing.kafka_broker import LocalKafka
from bridge.testing.kafka_io import ConsumedRecord, read_topic

REPO = Path(__file__).resolve().parents[2]


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
class ChaosReport:
    mode: str
    transfers: int
    states: int
    records: int
    lost: int
    """states of the ground truth missing from Kafka"""
    lost_final: int
    """transfers whose last (current) state is missing: must be 0"""
    duplicates_by_event_id: int
    distinct_event_ids_duplicated: int
    out_of_order: int
    dead_lettered: int
    faults: dict[str, dict[str, Any]]
    seconds: float


def _reveal(value: Any) -> Any:
    """Config for the child process: secrets in clear (the file lives in a private temp dir)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


class BridgeProcess:
    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 120.0) -> float:
        """Start and wait for READY; returns seconds to ready."""
        started = time.monotonic()
        log = open(self.log_path, "ab")
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
        if self.process is None:
            return 0
        self.process.terminate()
        return await asyncio.to_thread(self.process.wait, 60)


def _finals_present(truth: dict[str, Any], records: list[ConsumedRecord]) -> bool:
    seen = {(v["key"], v["provider_status"], v["confirmations"], v["tx_hash"]) for v in (json.loads(r.value) for r in records)}
    return all((k, h[-1].state, h[-1].confirmations, h[-1].tx_hash) in seen for k, h in truth.items())


async def _read_all(bootstrap: str, topics: dict[str, str]) -> tuple[list[ConsumedRecord], list[ConsumedRecord]]:
    records: list[ConsumedRecord] = []
    for name in ("deposit", "withdrawal"):
        records += await read_topic(bootstrap, topics[name], idle=1.0, timeout=60)
    dead = await read_topic(bootstrap, topics["dead_letter"], idle=0.5, timeout=10)
    return records, dead


async def run_chaos(
    *,
    transfers: int = 5000,
    bridge_kills: int = 20,
    broker_kills: int = 2,
    mode: str = "embedded",
    seed: int = 1,
    timeout: float = 900.0,
) -> ChaosReport:
    rng = random.Random(seed)
    started = time.monotonic()
    faults = {"bridge_kill9": FaultFigures(), "broker_kill9": FaultFigures(), "provider_drop": FaultFigures(), "upgrade_notice": FaultFigures()}
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "deposit": f"chaos.{suffix}.deposit.v1",
        "withdrawal": f"chaos.{suffix}.withdrawal.v1",
        "dead_letter": f"chaos.{suffix}.dlq.v1",
        "partitions": 3,
    }
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch, LocalKafka() as broker:
        work = Path(scratch)
        dedup: dict[str, Any] = {"store": "sqlite", "path": str(work / "dedup.sqlite3")}
        if mode == "exactly-once":
            dedup = {"store": "kafka", "state_topic": f"chaos.{suffix}.state", "transactional_id": f"chaos-{suffix}"}
        async with OkxSimulator(seed=seed) as okx:
            # A restarted bridge must look back over the whole run: history filters on creation time.
            okx_config = scenario_config(okx, backfill_interval=3.0, backfill_initial_lookback=3600.0)
            config = {
                "kafka": {"bootstrap_servers": broker.bootstrap, "linger_ms": 5, "request_timeout_ms": 10_000},
                "topics": topics,
                "dedup": dedup,
                "okx": _reveal(okx_config.model_dump()),
            }
            config_path = work / "bridge.json"
            config_path.write_text(json.dumps(config))
            os.chmod(config_path, 0o600)
            bridge = BridgeProcess(config_path, work / "bridge.log")
            await bridge.start()
            await okx.wait_subscribed(timeout=30)

            steps_seen = 0

            def on_step(steps: int) -> None:
                nonlocal steps_seen
                steps_seen = steps

            created = okx.create_many(transfers)
            lifecycles = asyncio.create_task(
                okx.run_lifecycles(created, repeat_every=7, drop_every=100, notice_every=700, timeout=timeout, on_step=on_step)
            )
            # Faults land at random points spread over the whole load (by lifecycle steps taken).
            plan = ["bridge"] * bridge_kills + ["broker"] * broker_kills
            rng.shuffle(plan)
            expected_steps = sum(len(t.script) for t in created)
            marks = sorted(rng.uniform(0.03, 0.9) * expected_steps for _ in plan)
            try:
                for fault, mark in zip(plan, marks):
                    while steps_seen < mark and not lifecycles.done():
                        await asyncio.sleep(0.02)
                    if lifecycles.done():
                        break
                    if fault == "bridge":
                        bridge.kill9()
                        faults["bridge_kill9"].injected += 1
                        t0 = time.monotonic()
                        await bridge.start()
                        await okx.wait_subscribed(timeout=60)
                        faults["bridge_kill9"].recover_seconds.append(time.monotonic() - t0)
                    else:
                        await asyncio.to_thread(broker.kill9)
                        faults["broker_kill9"].injected += 1
                        t0 = time.monotonic()
                        await asyncio.sleep(rng.uniform(1.0, 3.0))
                        await asyncio.to_thread(broker.restart)
                        faults["broker_kill9"].recover_seconds.append(time.monotonic() - t0)
                await lifecycles
            finally:
                if not lifecycles.done():
                    lifecycles.cancel()
            stats = Counter(okx.stats)
            faults["provider_drop"].injected = stats["drops"]
            faults["upgrade_notice"].injected = stats["notices"]
            truth = okx.truth()
            # Let the last backfill passes and acks land, then stop the bridge cleanly.
            states = sum(len(h) for h in truth.values())
            deadline = time.monotonic() + 180
            while True:
                await asyncio.sleep(3.0)
                records, dead = await _read_all(broker.bootstrap, topics)
                verdict = compare(truth, records)
                if verdict["lost"] == 0 or time.monotonic() > deadline:
                    break
                if time.monotonic() > deadline - 150 and _finals_present(truth, records):
                    break
            await bridge.terminate()
            records, dead = await _read_all(broker.bootstrap, topics)
            verdict = compare(truth, records)
    ids = Counter(json.loads(r.value)["event_id"] for r in records)
    seen = {(v["key"], v["provider_status"], v["confirmations"], v["tx_hash"]) for v in map(lambda r: json.loads(r.value), records)}
    lost_final = sum(
        1 for key, history in truth.items() if (key, history[-1].state, history[-1].confirmations, history[-1].tx_hash) not in seen
    )
    duplicated = {i: n for i, n in ids.items() if n > 1}
    return ChaosReport(
        mode=mode,
        transfers=len(truth),
        states=states,
        records=len(records),
        lost=verdict["lost"],
        lost_final=lost_final,
        duplicates_by_event_id=sum(n - 1 for n in duplicated.values()),
        distinct_event_ids_duplicated=len(duplicated),
        out_of_order=verdict["out_of_order"],
        dead_lettered=len(dead),
        faults={name: f.summary() for name, f in faults.items()},
        seconds=round(time.monotonic() - started, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=5000)
    parser.add_argument("--bridge-kills", type=int, default=20)
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--mode", choices=["embedded", "exactly-once", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    modes = ["embedded", "exactly-once"] if args.mode == "both" else [args.mode]
    failed = False
    for mode in modes:
        report = asyncio.run(
            run_chaos(transfers=args.transfers, bridge_kills=args.bridge_kills, broker_kills=args.broker_kills, mode=mode, seed=args.seed)
        )
        print(json.dumps(asdict(report), indent=2))
        failed |= report.lost_final != 0 or (mode == "exactly-once" and report.duplicates_by_event_id != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
