"""``python -m bridge_testkit.okx.scenario``: scripted OKX transfers through the whole bridge.

Simulator (master + sub-account keys) → ``OkxAccountSource`` per key → pipeline → real Kafka, with
connections dropped mid-lifecycle, 64008 notices, identical repeated pushes and states only the
REST history shows. Afterwards the topics are read back like a consumer would and compared with
the simulator's ground truth: every generated state must be in Kafka exactly once, in order.

Kafka: ``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); topics are fresh
per run, the dedup store lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.sources.okx.config import OkxConfig
from bridge.sources.okx.service import build_okx_sources
from bridge_testkit.kafka_io import ConsumedRecord, read_topic
from bridge_testkit.okx.simulator import OkxSimulator, Snapshot
from bridge_testkit.streams import settle

__all__ = ["ScenarioReport", "run_scenario", "compare", "settle", "scenario_config", "main"]


@dataclass
class ScenarioReport:
    transfers: int
    states: int
    pushed: int
    acked: int
    """events Kafka acknowledged (pipeline outcomes): equals ``states`` when nothing was published twice"""
    published: int
    """events read back from the topics"""
    deduplicated: int
    backfilled: int
    lost: int
    out_of_order: int
    duplicated_in_kafka: int
    dead_lettered: int
    drops: int
    notices: int
    reconnects: int
    backfill_passes: int
    rest_requests: int
    rest_rate_limited: int
    seconds: float

    def lines(self) -> list[str]:
        return [f"{name:>20}: {value}" for name, value in asdict(self).items()]


def compare(truth: dict[str, list[Snapshot]], records: list[ConsumedRecord]) -> dict[str, int]:
    """Kafka against the ground truth: lost states, keys out of order, records published twice."""
    seen: dict[str, list[tuple[str, int | None, str | None]]] = {}
    event_ids: Counter[str] = Counter()
    for record in records:
        value = json.loads(record.value)
        event_ids[value["event_id"]] += 1
        seen.setdefault(value["key"], []).append((value["provider_status"], value["confirmations"], value["tx_hash"]))
    lost = out_of_order = 0
    for key, history in truth.items():
        expected = [(s.state, s.confirmations, s.tx_hash) for s in history]
        got = seen.get(key, [])
        lost += len([state for state in expected if state not in got])
        if got != expected:
            out_of_order += 1 if set(got) == set(expected) else 0
    return {
        "lost": lost,
        "out_of_order": out_of_order,
        "duplicated": sum(n - 1 for n in event_ids.values() if n > 1),
    }


def scenario_config(sim: OkxSimulator, **overrides: Any) -> OkxConfig:
    """Intervals shrunk so that a run takes seconds, not hours."""
    values: dict[str, Any] = dict(
        enabled=True,
        ws_url=sim.ws_url,
        rest_url=sim.rest_url,
        accounts=[account.okx_account() for account in sim.accounts.values()],
        ping_interval=5.0,
        reconnect_initial=0.05,
        reconnect_max=1.0,
        min_uptime=1.0,
        backfill_interval=2.0,
        backfill_overlap=2.0,
        backfill_initial_lookback=60.0,
        backfill_retry=0.5,
        rest_rate_per_second=6.0,
    )
    values.update(overrides)
    return OkxConfig(**values)


async def run_scenario(
    *,
    bootstrap: str,
    transfers: int = 1000,
    drop_every: int = 150,
    notice_every: int = 700,
    repeat_every: int = 9,
    timeout: float = 240.0,
    seed: int = 1,
    state_dir: Path | None = None,
) -> ScenarioReport:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicSettings(
        deposit=f"okx-scenario.{suffix}.deposit.v1",
        withdrawal=f"okx-scenario.{suffix}.withdrawal.v1",
        dead_letter=f"okx-scenario.{suffix}.dlq.v1",
        partitions=3,
    )
    kafka = KafkaSettings(bootstrap_servers=bootstrap, linger_ms=2)
    with tempfile.TemporaryDirectory() as scratch:
        store = (state_dir or Path(scratch)) / f"okx-scenario-{suffix}.sqlite3"
        pipeline = Pipeline(Publisher(kafka, topics), DedupGate(SQLiteStore(store)))
        await pipeline.start()
        started = time.monotonic()
        try:
            async with OkxSimulator(seed=seed) as sim:
                sources = build_okx_sources(scenario_config(sim), pipeline)
                tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
                try:
                    await sim.wait_subscribed()
                    created = sim.create_many(transfers)
                    await sim.run_lifecycles(
                        created,
                        repeat_every=repeat_every,
                        drop_every=drop_every,
                        notice_every=notice_every,
                        timeout=timeout,
                    )
                    await settle(sources, pipeline)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                truth = sim.truth()
                sim_stats = Counter(sim.stats)
        finally:
            await pipeline.close(timeout=30)
    elapsed = time.monotonic() - started
    states = sum(len(history) for history in truth.values())
    deposits = sum(len(history) for key, history in truth.items() if key.startswith("okx:deposit:"))
    # Stop at the expected count (fast); extra records would still show in ``acked`` below.
    records = await read_topic(bootstrap, topics.deposit, expect=deposits, timeout=30)
    records += await read_topic(bootstrap, topics.withdrawal, expect=states - deposits, timeout=30)
    dead = await read_topic(bootstrap, topics.dead_letter, idle=0.5, timeout=5)
    verdict = compare(truth, records)
    totals: Counter[str] = Counter()
    for source in sources:
        totals.update(source.stats)
    return ScenarioReport(
        transfers=len(truth),
        states=states,
        pushed=sim_stats["pushes"],
        acked=totals["push.published"] + totals["backfill.published"],
        published=len(records),
        deduplicated=sum(n for name, n in totals.items() if name.endswith((".duplicate", ".stale_after_final"))),
        backfilled=sum(1 for r in records if json.loads(r.value)["source"]["via"] == "backfill"),
        lost=verdict["lost"],
        out_of_order=verdict["out_of_order"],
        duplicated_in_kafka=verdict["duplicated"],
        dead_lettered=len(dead),
        drops=sim_stats["drops"],
        notices=sim_stats["notices"],
        reconnects=sum(n for name, n in totals.items() if name.startswith("reconnect.")),
        backfill_passes=totals["backfill_passes"],
        rest_requests=sim_stats["rest_requests"],
        rest_rate_limited=sim_stats["rest_rate_limited"],
        seconds=round(elapsed, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--transfers", type=int, default=1000)
    parser.add_argument("--drop-every", type=int, default=150, help="steps between forced disconnects")
    parser.add_argument("--notice-every", type=int, default=700, help="steps between 64008 notices")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    report = asyncio.run(
        run_scenario(
            bootstrap=args.bootstrap,
            transfers=args.transfers,
            drop_every=args.drop_every,
            notice_every=args.notice_every,
            seed=args.seed,
        )
    )
    print("\n".join(report.lines()))
    ok = report.lost == report.out_of_order == report.duplicated_in_kafka == 0 and report.acked == report.states
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
