"""A long Fireblocks run against a real broker: many transactions delivered the way Fireblocks v2
may deliver them — re-delivered, neighbours out of order, answers lost, some never delivered (only
the REST backfill brings those) — while the bridge is stopped and started again mid-flight.

What must hold: every transaction's final state is published (on each own side), no state
(``event_id``) is published twice, and per key ``occurred_at`` never goes backwards — within one
process's life, and across a restart (``backwards_across_restarts``: the receiver refills its
ordering memory from the start-up backfill before taking deliveries). ``python -m
bridge_testkit.fireblocks.scenario`` prints the figures; ``tests/fireblocks/test_scenario_kafka.py``
runs a reduced one.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.contract.events import TransferEvent
from bridge.contract.timeutil import to_epoch_ms
from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.sources.fireblocks.config import FireblocksConfig
from bridge.sources.fireblocks.parse import Rules, parse_row
from bridge.sources.fireblocks.webhook import FireblocksWebhook
from bridge_testkit.fireblocks.simulator import WORKSPACE, FireblocksSimulator, SimDelivery, pem_private, pem_public
from bridge_testkit.kafka_io import read_topic

__all__ = ["ScenarioResult", "run_scenario"]

_KINDS = ("deposit", "withdrawal", "deposit", "rejected", "internal", "frozen", "withdrawal")


@dataclass
class ScenarioResult:
    transactions: int = 0
    deliveries: int = 0
    dropped: int = 0
    lost_answers: int = 0
    restarts: int = 0
    published: int = 0
    via: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    finals_expected: int = 0
    finals_missing: list[str] = field(default_factory=list)
    backwards: int = 0
    """A key's ``occurred_at`` going back within one life of the bridge (the ordering rule's promise)."""
    backwards_across_restarts: int = 0
    """The same across a restart (the memory is refilled by the start-up backfill, ``ordering``)."""
    older_dropped: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items() if k != "finals_missing"} | {
            "finals_missing": len(self.finals_missing)
        }


class _Bridge:
    """One life of the bridge: a pipeline on the shared SQLite dedup store and the receiver."""

    def __init__(self, config: FireblocksConfig, kafka: KafkaSettings, topics: TopicSettings, store: Path, port: int):
        self.config, self.kafka, self.topics, self.store, self.port = config, kafka, topics, store, port
        self.webhook: FireblocksWebhook | None = None
        self._serving: Any = None
        self._run: asyncio.Task[None] | None = None
        self.pipeline: Pipeline | None = None
        self.lives: list[float] = []
        """Wall time each life started: a record's ``received_at`` tells which life took it."""

    async def start(self) -> str:
        self.pipeline = Pipeline(Publisher(self.kafka, self.topics), DedupGate(SQLiteStore(self.store)))
        await self.pipeline.start()
        self.lives.append(time.time())
        self.webhook = FireblocksWebhook(self.config, self.pipeline)
        self._serving = self.webhook.serve(port=self.port)
        url: str = await self._serving.__aenter__()
        self.port = int(url.split(":")[2].split("/")[0])
        self._run = asyncio.create_task(self.webhook.run())
        return url

    async def backfill(self) -> None:
        assert self.webhook is not None
        passes = self.webhook.backfill_stats["passes"]
        self.webhook.request_backfill("scenario")
        while self.webhook.backfill_stats["passes"] <= passes:
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        assert self.webhook is not None and self.pipeline is not None and self._run is not None
        await self.webhook.close(timeout=10)
        self._run.cancel()
        await asyncio.gather(self._run, return_exceptions=True)
        await self._serving.__aexit__(None, None, None)
        await self.pipeline.close(timeout=10)
        return self.webhook.newest.dropped


async def run_scenario(
    kafka: KafkaSettings,
    topics: TopicSettings,
    *,
    transactions: int = 1000,
    restarts: int = 3,
    drop_rate: float = 0.03,
    lost_rate: float = 0.05,
    swap_rate: float = 0.25,
    repeat_rate: float = 0.15,
    seed: int = 42,
) -> ScenarioResult:
    started = time.monotonic()
    result = ScenarioResult(transactions=transactions, restarts=restarts)
    sim = FireblocksSimulator(retry_interval=0.1, retry_window=120.0, concurrency=32, seed=seed)
    await sim.start()
    with tempfile.TemporaryDirectory(prefix="fireblocks-scenario-") as folder:
        root = Path(folder)
        (root / "legacy.pem").write_bytes(pem_public(sim.legacy_key))
        (root / "api.key").write_bytes(pem_private(sim.api_user_key))
        config = FireblocksConfig(
            enabled=True, workspace_id=WORKSPACE, legacy_public_keys=[root / "legacy.pem"], jwks_url=sim.jwks_url,
            api_key=sim.api_key, api_private_key_file=root / "api.key", base_url=sim.base_url, backfill_interval=2.0,
            backfill_retry=0.2, backfill_overlap=5.0, rest_rate_per_second=50.0, jwks_min_refetch_s=0.0,
        )
        lanes: list[list[SimDelivery]] = []
        for n in range(transactions):
            transaction = sim.create(_KINDS[n % len(_KINDS)], version=1 + n % 2)
            lane = sim.shuffled_lane(transaction, swap_rate=swap_rate, repeat_rate=repeat_rate)
            for delivery in lane:
                roll = sim.rng.random()
                if roll < drop_rate:
                    delivery.faults.append("drop")
                    result.dropped += 1
                elif roll < drop_rate + lost_rate:
                    delivery.faults.append("lost_answer")
                    result.lost_answers += 1
            lanes.append(lane)
        result.deliveries = sum(len(lane) for lane in lanes)
        bridge = _Bridge(config, kafka, topics, root / "dedup.sqlite3", 0)
        sim.url = await bridge.start()
        async with aiohttp.ClientSession() as session:
            sending = asyncio.create_task(sim.send(lanes, session))
            for _ in range(restarts):  # the bridge stops mid-flight (503, then refused) and comes back
                await asyncio.sleep(1.0)
                if sending.done():
                    break
                result.older_dropped += await bridge.stop()
                await asyncio.sleep(0.3)
                await bridge.start()
            report = await sending
        await bridge.backfill()  # closes the deliveries that were dropped
        result.older_dropped += await bridge.stop()
        assert report.given_up == result.dropped, (report.given_up, result.dropped, report.statuses)
    await sim.stop()

    records = []
    for topic in (topics.deposit, topics.withdrawal):
        records += await read_topic(kafka.bootstrap_servers, topic, timeout=30, idle=2.0)
    seen: Counter[str] = Counter()
    last: dict[str, tuple[str, int]] = {}
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        value = json.loads(record.value)
        seen[value["event_id"]] += 1
        result.via[value["source"]["via"]] += 1
        life = bisect.bisect_right(bridge.lives, to_epoch_ms(value["received_at"]) / 1000) - 1
        newest, newest_life = last.get(value["key"], ("", life))
        if value["occurred_at"] < newest:
            if newest_life == life:
                result.backwards += 1
            else:
                result.backwards_across_restarts += 1
        if value["occurred_at"] >= newest:
            last[value["key"]] = (value["occurred_at"], life)
    result.published = len(records)
    result.duplicates = sum(count - 1 for count in seen.values() if count > 1)
    rules = Rules.of(config)
    for transaction in sim.transactions:
        for event in parse_row(transaction.states[-1], received_at="2026-01-01T00:00:00.000Z", rules=rules, workspace_id=WORKSPACE):
            if not isinstance(event, TransferEvent):
                raise AssertionError(f"the simulator scripted a state the parser refuses: {event.reason}")
            result.finals_expected += 1
            if event.event_id not in seen:
                result.finals_missing.append(event.key)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:10]
    topics = TopicSettings(
        deposit=f"fb.{suffix}.deposit.v1", withdrawal=f"fb.{suffix}.withdrawal.v1", dead_letter=f"fb.{suffix}.dlq.v1", partitions=3
    )
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap, linger_ms=2)
    result = asyncio.run(run_scenario(kafka, topics, transactions=args.transactions, restarts=args.restarts))
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
