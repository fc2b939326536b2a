"""A broker outage under load: a handful of log lines and an idle CPU, not a flood and a spinning core.

The adversarial run: 33 s of outage wrote 417,856 log lines (~6,500/s of aiokafka connection
errors) with the bridge at 101 % of a core. Here the service's own logging configuration
(``configure_logging``: JSON lines, ``aiokafka: WARNING``) writes to a buffer while a pipeline
holds a full window of events and the broker is stopped for a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bridge.delivery.dedup import DedupGate
from bridge.delivery.pipeline import Outcome, Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.delivery.store_sqlite import SQLiteStore
from bridge.kafka.settings import KafkaSettings
from bridge.observability.logs import configure_logging
from bridge_testkit.kafka_broker import LocalKafka
from bridge_testkit.kafka_io import read_topic
from tests.resources.flood import Flood, deposit

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE = 6.0
MAX_LINES = 50
MAX_CPU_SHARE = 0.30


@pytest.fixture
def service_logging() -> Iterator[io.StringIO]:
    """The service's log configuration on a buffer; the test session's handlers back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in ("aiokafka", "aiohttp.access")})
    buffer = io.StringIO()
    handler = configure_logging("INFO", "json", {"aiokafka": "WARNING", "aiohttp.access": "INFO"}, stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        for existing in saved[0]:
            root.addHandler(existing)
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def client_errors() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "bridge_kafka_client_errors"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def refresh_metadata(pipeline: Pipeline) -> None:
    while True:
        producer = pipeline.publisher._producer
        if producer is not None:
            producer.client.force_metadata_update()
        await asyncio.sleep(0.05)


async def test_a_broker_outage_under_load_writes_few_log_lines_and_leaves_the_cpu_idle(
    own_broker: LocalKafka, tmp_path: Path, service_logging: io.StringIO
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(deposit=f"q.{suffix}.deposit", withdrawal=f"q.{suffix}.withdrawal", dead_letter=f"q.{suffix}.dlq", partitions=3)
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap, linger_ms=2)
    pipeline = Pipeline(Publisher(kafka, topics), DedupGate(SQLiteStore(tmp_path / "dedup.sqlite3")), max_in_flight=2000)
    await pipeline.start()
    flood = Flood(pipeline, lambda n: deposit(n, tag="quiet", raw_bytes=300))
    try:
        assert await pipeline.submit(deposit(-1, tag="warm-up")) is Outcome.PUBLISHED
        flood.start()  # offers as fast as the pipeline takes them, through the broker's shutdown
        await flood.run_for(0.5)
        errors_before = client_errors()
        lines_before = len(service_logging.getvalue().splitlines())
        cpu_before, wall_before = time.process_time(), time.monotonic()
        # A controlled shutdown: while it runs, the broker still answers metadata requests, with no
        # leader for its partitions. Under load the producer asks then (a NotLeaderForPartition
        # answer makes it refresh); here it is asked every 50 ms so the timing is not luck.
        refreshing = asyncio.create_task(refresh_metadata(pipeline))
        try:
            await asyncio.to_thread(own_broker.stop)
        finally:
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)
        await flood.run_for(OUTAGE)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        lines = service_logging.getvalue().splitlines()[lines_before:]
        held = pipeline.in_flight
        counted = client_errors() - errors_before
        await asyncio.to_thread(own_broker.start)
        await flood.stop()
        outcomes = await flood.outcomes(timeout=90)
    finally:
        if not own_broker.running:
            own_broker.start()
        await pipeline.close(timeout=15)

    by_message = Counter(json.loads(line)["message"][:90] for line in lines)
    print(
        f"\nbroker stopped and down {wall:.1f} s with {held} events held: {len(lines)} log lines, CPU {cpu:.2f} s "
        f"({100 * cpu / wall:.0f} % of the wall time), client errors counted {counted:.0f}; top: {by_message.most_common(3)}"
    )
    assert held >= 300, "the outage found no load to hold"
    assert len(lines) < MAX_LINES, f"{len(lines)} log lines in {wall:.1f} s: {by_message.most_common(5)}"
    assert cpu < MAX_CPU_SHARE * wall, f"CPU {cpu:.2f} s over {wall:.1f} s of outage"
    assert counted > len(lines), "client errors left out of the log are still counted (bridge_kafka_client_errors_total)"
    deadline = time.monotonic() + 15
    while not any("suppressed" in line for line in service_logging.getvalue().splitlines()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    summaries = [json.loads(line)["message"] for line in service_logging.getvalue().splitlines() if "suppressed" in line]
    assert summaries, "a summary says how many were left out"
    print(f"summaries: {summaries[:3]}")
    assert outcomes == [Outcome.PUBLISHED] * len(outcomes)
    records = await read_topic(own_broker.bootstrap, topics.deposit, expect=len(outcomes) + 1, timeout=30)
    assert len(records) == len(outcomes) + 1
