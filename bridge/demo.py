"""The README's main job: real broker, real pipeline, provider payloads in, what a consumer reads out.

Starts a local Kafka broker unless ``KAFKA_BOOTSTRAP_SERVERS`` points at one, pushes the example
payloads of the three provider documents (each twice, to show deduplication) and one malformed
payload through parse → dedup → publish, then lets the OKX simulator drive the real OKX adapter
(login, keepalive, dropped connections, repeats, backfill), and finally reads the topics back as a
downstream consumer would and prints one line per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.dedup import DedupGate
from bridge.events import DeadLetter, Provider, TransferEvent
from bridge.jsonutil import loads_exact
from bridge.parsing import ParseResult
from bridge.pipeline import Outcome, Pipeline
from bridge.publish import Publisher
from bridge.settings import KafkaSettings, TopicSettings
from bridge.sources.okx.parse import parse_push
from bridge.sources.openxswitch.parse import parse_delivery
from bridge.sources.ripio.parse import parse_message
from bridge.store_sqlite import SQLiteStore
from bridge.timeutil import format_utc_ms

__all__ = ["main", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _now() -> str:
    from datetime import datetime, timezone

    return format_utc_ms(datetime.now(timezone.utc))


def example_items() -> list[ParseResult]:
    """Every example payload of the provider documents, normalized (or dead-lettered)."""
    items: list[ParseResult] = []
    for name in ("okx/deposit-info.push.json", "okx/withdrawal-info.push.json"):
        items += parse_push(orjson.loads((EXAMPLES / name).read_bytes()), received_at=_now())
    for name in ("ripio/deposit.crypto.json", "ripio/deposit.fiat.json"):
        items += parse_message(loads_exact((EXAMPLES / name).read_bytes()), received_at=_now())
    for name in ("openxswitch/withdraw.unconfirmed.json", "openxswitch/withdraw.confirmed.json"):
        items.append(parse_delivery(loads_exact((EXAMPLES / name).read_bytes()), received_at=_now()))
    return items


class _TailReader:
    """Assigned to the topics' ends *before* publishing, so it shows exactly this run's records."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
        )
        self._topics = topics

    async def start(self) -> None:
        await self._consumer.start()
        # aiokafka has no public "load metadata for these topics" call for manual assignment.
        await self._consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t, p) for t in self._topics for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:
            await self._consumer.position(partition)  # pin the end now, not at first fetch

    async def read(self, expect: int, timeout: float = 15.0) -> list[Any]:
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while len(records) < expect and asyncio.get_running_loop().time() < deadline:
                for batch in (await self._consumer.getmany(timeout_ms=300)).values():
                    records.extend(batch)
        finally:
            await self._consumer.stop()
        return records


async def _okx_simulator_run(pipeline: Pipeline, transfers: int = 6) -> list[Outcome]:
    """Live part: the OKX simulator pushes scripted lifecycles (with a dropped connection and
    repeated pushes) to the real OKX adapter, which logs in, keeps alive and backfills."""
    from bridge.sources.okx.scenario import scenario_config, settle
    from bridge.sources.okx.service import build_okx_sources
    from bridge.sources.okx.simulator import OkxSimulator

    async with OkxSimulator(seed=5) as sim:
        sources = build_okx_sources(scenario_config(sim), pipeline)
        tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
        try:
            await sim.wait_subscribed()
            await sim.run_lifecycles(sim.create_many(transfers), repeat_every=3, drop_every=8, timeout=60)
            await settle(sources, pipeline)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        print(f"OKX simulator: {sim.stats['pushes']} pushes, {sim.stats['drops']} dropped connection(s)")
    outcomes: list[Outcome] = []
    for source in sources:
        for name, count in source.stats.items():
            for outcome in Outcome:
                if name.endswith("." + outcome.value):
                    outcomes += [outcome] * count
    return outcomes


def _line(record: Any) -> str:
    if record.topic.endswith("dlq.v1"):
        headers = {k: v.decode() for k, v in record.headers}
        return (
            f"{record.key.decode():<52} {'DEAD-LETTER':<12} reason={headers.get('dlq_reason')!r} "
            f"raw={record.value[:40]!r}"
        )
    event = orjson.loads(record.value)
    return (
        f"{event['key']:<52} {event['status']:<12} {event['amount']:>10} {event['asset']:<5} "
        f"{event['provider']:<12} state={event['provider_status']:<3} conf={event['confirmations']} via={event['source']['via']}"
    )


async def run_demo(bootstrap: str, state_dir: Path) -> int:
    topics = TopicSettings(partitions=3)
    pipeline = Pipeline(
        Publisher(KafkaSettings(bootstrap_servers=bootstrap), topics),
        DedupGate(SQLiteStore(state_dir / "dedup.sqlite3")),
    )
    await pipeline.start()  # creates the topics if missing
    reader = _TailReader(bootstrap, [topics.deposit, topics.withdrawal, topics.dead_letter])
    await reader.start()
    items = example_items()
    broken = b'{"requestId":"demo","method":"withdraw.confirmed","params":{"amount":1e999999'
    items.append(DeadLetter(Provider.OPENXSWITCH, "webhook", "invalid JSON: truncated body", broken, _now()))
    repeats = [i for i in items if isinstance(i, TransferEvent)]
    outcomes = await pipeline.submit_all(items + repeats)  # every example pushed twice
    live = await _okx_simulator_run(pipeline)
    outcomes += live
    await pipeline.close()
    published = sum(1 for o in outcomes if o in (Outcome.PUBLISHED, Outcome.DEAD_LETTERED))
    print(f"pushed {len(outcomes)} payloads: " + ", ".join(f"{o.value}={outcomes.count(o)}" for o in Outcome))
    print(f"\nA consumer reads back from {bootstrap} (read_committed):\n")
    for record in await reader.read(published):
        print("  " + _line(record))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transfer-bridge demo", description=__doc__)
    parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory(prefix="transfer-bridge-demo-") as tmp:
        if bootstrap:
            return asyncio.run(run_demo(bootstrap, Path(tmp)))
        from bridge.testing.kafka_broker import LocalKafka

        print("starting a local Kafka broker (first run downloads it from Maven Central)...")
        with LocalKafka() as broker:
            return asyncio.run(run_demo(broker.bootstrap, Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
