"""Replay throughput: ``python -m tests.benchmarks.dlq_replay --bootstrap HOST:PORT [--letters 10000]``.

Fills a fresh dead-letter topic with N OKX deposit items refused by a broken parser (sent by a
pipeline, as the service sends them), then times, on the same broker in the same run:

* ``scan``: reading the N records ``read_committed`` and judging nothing (the reading floor);
* ``dry run``: reading and parsing every payload again;
* ``replay``: reading, parsing, publishing through the pipeline (dedup, acks), committing;
* ``replay again`` under a new group: everything is a duplicate, nothing is published.

``--bootstrap`` defaults to ``$KAFKA_BOOTSTRAP_SERVERS``. Prints one table; records/s are wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.service.cli import main as cli_main
from bridge.service.dlq.records import Filter, consumer_for, scan
from tests.service.support import service_document, write_yaml
from tests.service.test_dlq_replay import broken_letters


async def fill(kafka: KafkaSettings, topics: TopicSettings, tmp: Path, count: int) -> float:
    from bridge.delivery.dedup import DedupGate, MemoryStore
    from bridge.delivery.pipeline import Pipeline
    from bridge.delivery.publish import Publisher

    pipeline = Pipeline(Publisher(kafka, topics), DedupGate(MemoryStore()))
    await pipeline.start()
    letters = []
    for start in range(0, count, 100):
        letters += broken_letters([str(10_000_000 + n) for n in range(start, min(start + 100, count))])
    began = time.perf_counter()
    await pipeline.submit_all(letters)
    seconds = time.perf_counter() - began
    await pipeline.close()
    return seconds


async def scan_only(kafka: KafkaSettings, topic: str) -> tuple[int, float]:
    consumer = consumer_for(kafka)
    await consumer.start()
    began, read = time.perf_counter(), 0
    try:
        async for batch in scan(consumer, topic, Filter()):
            read += len(batch)
    finally:
        await consumer.stop()
    return read, time.perf_counter() - began


def replay(config: Path, *args: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["-c", str(config), "dlq", "replay", "--format", "json", *args]) == 0
    report: dict[str, Any] = json.loads(out.getvalue().splitlines()[-1])
    return report


def run(bootstrap: str, count: int) -> list[tuple[str, int, float, str]]:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"b.{suffix}.deposit", withdrawal=f"b.{suffix}.withdrawal", dead_letter=f"b.{suffix}.dlq", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    rows: list[tuple[str, int, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_yaml(Path(tmp) / "bridge.yaml", service_document(Path(tmp), kafka, topics, log={"level": "WARNING"}))
        rows.append(("fill (pipeline sends dead letters)", count, asyncio.run(fill(kafka, topics, Path(tmp), count)), ""))
        read, seconds = asyncio.run(scan_only(kafka, topics.dead_letter))
        rows.append(("scan only (read_committed)", read, seconds, ""))
        for name, args in (("dry run (parse again)", ["--dry-run"]), ("replay (publish, commit)", []), ("replay again, new group (all duplicates)", ["--group", f"g-{suffix}"])):
            report = replay(config, *args)
            rows.append((name, report["read"], report["seconds"], json.dumps(report["events"])))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=10_000)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), required="KAFKA_BOOTSTRAP_SERVERS" not in os.environ)
    args = parser.parse_args()
    rows = run(args.bootstrap, args.letters)
    print(f"{'stage':<42} {'records':>8} {'seconds':>8} {'records/s':>10}  events")
    for name, count, seconds, events in rows:
        print(f"{name:<42} {count:>8} {seconds:>8.2f} {count / seconds:>10,.0f}  {events}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
