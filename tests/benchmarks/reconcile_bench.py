"""Reconcile throughput and peak memory.

    python -m tests.benchmarks.reconcile_bench --transfers 1000000 --stage ledger   # the SQLite join alone
    python -m tests.benchmarks.reconcile_bench --transfers 1000000 --stage dict     # baseline: both sides in dicts
    KAFKA_BOOTSTRAP_SERVERS=… python -m tests.benchmarks.reconcile_bench --transfers 100000 --stage e2e

Each stage runs in its own process (``--all`` runs the three one after the other), so its peak
RSS is its own. The history is synthetic (an OKX backfill row parsed once, copied per transfer):
a simulator pages at OKX's rate limit (5 requests/s of 100 rows), which would measure the limit,
not the command. 1 % of the transfers drift (half missing in Kafka, half behind).

* ``ledger``: both sides spilled into the comparison file and joined (no Kafka): what bounds memory.
* ``dict``: the naive comparison, both sides in dictionaries keyed by transfer: the baseline.
* ``e2e``: the command's coroutine against a real broker: the Kafka side is published first (raw
  producer, the events' JSON), then reconcile reads the synthetic history, scans the topics and
  writes the JSON report to memory (checked: the drift found is the drift made).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

from bridge.consumer.latest import KafkaState
from bridge.consumer.reconcile import Ledger, Window
from bridge.contract.events import Provider, Status, TransferEvent, Via
from bridge.contract.parsing import ParseResult
from bridge.contract.timeutil import format_utc_ms, to_epoch_ms
from tests.benchmarks.common import peak_rss_bytes

NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = Window(to_epoch_ms(format_utc_ms(NOW - timedelta(hours=24))), to_epoch_ms(format_utc_ms(NOW)))


def template() -> TransferEvent:
    from bridge.sources.okx.parse import DEPOSIT_CHANNEL, parse_rows
    from bridge_testkit.okx.simulator import OkxSimulator

    sim = OkxSimulator(seed=3)
    transfer = sim.create("deposit")
    transfer.index = 0
    [event] = parse_rows(DEPOSIT_CHANNEL, [transfer.row()], received_at=format_utc_ms(NOW), via=Via.BACKFILL, uid="42")
    assert isinstance(event, TransferEvent)
    return event


def provider_events(count: int) -> Iterator[TransferEvent]:
    base = template()
    step = (WINDOW.until_ms - WINDOW.since_ms) // (count + 1)
    for i in range(count):
        created = format_utc_ms(datetime.fromtimestamp((WINDOW.since_ms + step * (i + 1)) / 1000, tz=UTC))
        completed = i % 2 == 0
        yield base.model_copy(update={
            "key": f"okx:deposit:{i}", "transfer_id": str(i), "created_at": created, "occurred_at": created,
            "status": Status.COMPLETED if completed else Status.PENDING, "is_final": completed,
            "provider_status": "2" if completed else "0", "event_id": str(uuid.uuid4()),
        })  # fmt: skip


def kafka_side(event: TransferEvent, i: int) -> TransferEvent | None:
    """What Kafka holds: 0.5 % missing, 0.5 % behind (pending where the provider says completed)."""
    if i % 200 == 1:
        return None
    if i % 200 == 2:
        return event.model_copy(update={"status": Status.PENDING, "is_final": False, "provider_status": "0"})
    return event


def state(event: TransferEvent, offset: int) -> KafkaState:
    return KafkaState(event.key, event.provider.value, event.status.value, event.is_final, event.provider_status,
                      to_epoch_ms(event.created_at or event.occurred_at), "transfers.deposit.v1", 0, offset)  # fmt: skip


def stage_ledger(count: int) -> dict[str, object]:
    started = time.perf_counter()
    drift = 0
    with Ledger(WINDOW) as ledger:
        batch: list[TransferEvent] = []
        states: list[KafkaState] = []
        for i, event in enumerate(provider_events(count)):
            batch.append(event)
            other = kafka_side(event, i)
            if other is not None:
                states.append(state(other, i))
            if len(batch) == 5000:
                ledger.add_provider("okx:bench", batch)
                ledger.add_kafka(states, frozenset({"okx"}))
                batch, states = [], []
        ledger.add_provider("okx:bench", batch)
        ledger.add_kafka(states, frozenset({"okx"}))
        filled = time.perf_counter()
        for _ in ledger.drift():
            drift += 1
        size = ledger.path.stat().st_size
    seconds = time.perf_counter() - started
    return {"stage": "ledger", "transfers": count, "drift": drift, "seconds": round(seconds, 2), "join_seconds": round(time.perf_counter() - filled, 2),
            "transfers_per_s": round(count / seconds), "spill_file_mib": round(size / 2**20, 1), "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1)}  # fmt: skip


def stage_dict(count: int) -> dict[str, object]:
    started = time.perf_counter()
    at_provider: dict[str, tuple[str, bool]] = {}
    in_kafka: dict[str, tuple[str, bool]] = {}
    for i, event in enumerate(provider_events(count)):
        at_provider[event.key] = (event.status.value, event.is_final)
        other = kafka_side(event, i)
        if other is not None:
            in_kafka[other.key] = (other.status.value, other.is_final)
    drift = sum(1 for key, value in at_provider.items() if in_kafka.get(key) != value)
    seconds = time.perf_counter() - started
    return {"stage": "dict", "transfers": count, "drift": drift, "seconds": round(seconds, 2), "transfers_per_s": round(count / seconds),
            "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1)}  # fmt: skip


class SyntheticHistory:
    provider = Provider.OKX
    name = "okx:bench"

    def __init__(self, count: int):
        self.count = count

    async def transfers(self, since_ms: int, until_ms: int) -> AsyncIterator[ParseResult]:
        for i, event in enumerate(provider_events(self.count)):
            yield event
            if i % 5000 == 0:
                await asyncio.sleep(0)


async def stage_e2e(count: int) -> dict[str, object]:
    from aiokafka import AIOKafkaProducer

    from bridge.delivery.publish import Publisher
    from bridge.delivery.settings import TopicSettings
    from bridge.kafka.settings import KafkaSettings
    from bridge.service.reconcile_cli import reconcile
    from bridge.service.settings import BridgeSettings

    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"bench.{suffix}.deposit.v1", withdrawal=f"bench.{suffix}.withdrawal.v1", dead_letter=f"bench.{suffix}.dlq.v1")
    creator = Publisher(KafkaSettings(bootstrap_servers=servers), topics)  # creates the topics
    await creator.start()
    await creator.stop()
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    try:
        pending = []
        for i, event in enumerate(provider_events(count)):
            other = kafka_side(event, i)
            if other is not None:
                pending.append(await producer.send(topics.deposit, other.model_dump_json().encode(), key=other.key.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    settings = BridgeSettings.model_validate({"kafka": {"bootstrap_servers": servers}, "topics": topics.model_dump()})
    args = argparse.Namespace(providers=None, repair=False, skew=3600.0, spill_dir=None, format="json")
    rss_before = peak_rss_bytes()
    started = time.perf_counter()
    sink = io.StringIO()  # 1 % drift: small
    code = await reconcile(settings, WINDOW, args, sink, histories=[SyntheticHistory(count)])
    seconds = time.perf_counter() - started
    report = json.loads(sink.getvalue())
    return {"stage": "e2e", "transfers": count, "exit_code": code, "counts": report["counts"], "kafka": report["kafka"], "seconds": round(seconds, 2), "transfers_per_s": round(count / seconds),
            "peak_rss_mib": round(peak_rss_bytes() / 2**20, 1), "peak_rss_before_mib": round(rss_before / 2**20, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--stage", choices=("ledger", "dict", "e2e"))
    args = parser.parse_args()
    if args.stage is None:
        for stage in ("dict", "ledger", "e2e"):
            subprocess.run([sys.executable, "-m", "tests.benchmarks.reconcile_bench", "--transfers", str(args.transfers), "--stage", stage], check=True)
        return
    if args.stage == "e2e":
        result = asyncio.run(stage_e2e(args.transfers))
    else:
        result = stage_ledger(args.transfers) if args.stage == "ledger" else stage_dict(args.transfers)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
