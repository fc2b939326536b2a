"""OpenXSwitch webhook benchmark: requests/s one receiver process sustains, and latency at a rate.

Not a test (pytest does not collect ``tests/benchmarks``). The receiver — aiohttp route, HMAC
check of every body, exact JSON parsing, dedup gate on SQLite, Kafka ack (``acks=all``,
idempotent producer, default ``linger_ms``) before each 200 — runs in a child process of its own;
this process is the provider: it posts pre-signed deliveries of distinct transfers, so every
request is a publish.

    .venv/bin/python tests/benchmarks/webhooks_bench.py [--bootstrap 127.0.0.1:9092]

Phase 1 (throughput): ``--requests`` deliveries with ``--concurrency`` in flight (closed loop).
Phase 2 (latency): an open loop at ``--rate`` requests/s for ``--duration`` seconds; latency is
measured from each request's *scheduled* send time, so a stalled receiver cannot hide its queue.
The topics it creates (``bench.<random>.*``) are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bridge.sources.openxswitch import messages as m  # noqa: E402
from bridge.sources.openxswitch.signature import HEADER, sign  # noqa: E402

SECRET = "bench-webhook-secret"


# -- receiver (child process) --------------------------------------------------------------------


async def serve(bootstrap: str, prefix: str) -> None:
    from bridge.delivery.dedup import DedupGate
    from bridge.delivery.pipeline import Pipeline
    from bridge.delivery.publish import Publisher
    from bridge.delivery.settings import TopicSettings
    from bridge.delivery.store_sqlite import SQLiteStore
    from bridge.kafka.settings import KafkaSettings
    from bridge.sources.openxswitch.config import OpenXSwitchConfig
    from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook

    topics = TopicSettings(deposit=f"{prefix}.deposit", withdrawal=f"{prefix}.withdrawal", dead_letter=f"{prefix}.dlq")
    with tempfile.TemporaryDirectory(prefix="webhooks-bench-") as state:
        pipeline = Pipeline(Publisher(KafkaSettings(bootstrap_servers=bootstrap), topics), DedupGate(SQLiteStore(Path(state) / "dedup.sqlite3")))
        await pipeline.start()
        webhook = OpenXSwitchWebhook(OpenXSwitchConfig(enabled=True, secrets=[SECRET]), pipeline)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with webhook.serve() as url:
            print(f"READY {url}", flush=True)
            await stop.wait()
        await webhook.close()
        await pipeline.close()
    print(f"STATS {dict(webhook.stats)}", flush=True)


# -- provider (this process) ---------------------------------------------------------------------


def deliveries(count: int, tag: str) -> list[tuple[bytes, dict[str, str]]]:
    """Pre-signed bodies of distinct withdrawals (signing is the sender's cost, not measured)."""
    out = []
    for n in range(count):
        params = m.withdrawal_params(
            transfer_id=f"{tag}-{n:08d}",
            status="pending",
            amount=Decimal(f"{n % 1000}.{n:018d}"),
            updated_at="2025-05-05T00:53:29.206Z",
            created_at="2025-05-05T00:53:29.206Z",
            wallet_id="6812b103908d2d0d49c7ff79",
        )
        body = m.delivery_body(uuid.uuid4().hex[:30], m.WITHDRAW_UNCONFIRMED, params)
        out.append((body, {"Content-Type": "application/json", HEADER: sign(SECRET.encode(), body)}))
    return out


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int:
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def throughput(url: str, count: int, concurrency: int) -> None:
    work = deliveries(count, "tp")
    statuses: list[int] = []
    latencies: list[float] = []
    queue = iter(work)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for body, headers in deliveries(50, "warm"):  # connections, producer metadata, SQLite pages
            await post(session, url, body, headers)

        async def worker() -> None:
            for body, headers in queue:
                began = time.perf_counter()
                statuses.append(await post(session, url, body, headers))
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ok = sum(200 <= s < 300 for s in statuses)
    print(f"throughput: {count} requests, concurrency {concurrency}: {count / elapsed:,.0f} requests/s "
          f"({elapsed:.2f} s), 2xx={ok}, other={count - ok}, "
          f"p50={percentile(latencies, 50) * 1000:.1f} ms p99={percentile(latencies, 99) * 1000:.1f} ms")


async def latency_at_rate(url: str, rate: float, duration: float) -> None:
    count = int(rate * duration)
    work = deliveries(count, "lat")
    latencies: list[float] = []
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for body, headers in deliveries(20, "warm2"):
            await post(session, url, body, headers)
        start = time.perf_counter() + 0.1

        async def one(index: int, body: bytes, headers: dict[str, str]) -> None:
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            statuses.append(await post(session, url, body, headers))
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i, body, headers) for i, (body, headers) in enumerate(work)))
    ok = sum(200 <= s < 300 for s in statuses)
    print(f"latency at {rate:g} requests/s for {duration:g} s ({count} requests, 2xx={ok}, other={count - ok}): "
          f"p50={percentile(latencies, 50) * 1000:.1f} ms p95={percentile(latencies, 95) * 1000:.1f} ms "
          f"p99={percentile(latencies, 99) * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms")


async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([f"{prefix}.deposit", f"{prefix}.withdrawal", f"{prefix}.dlq"])
    except Exception as exc:  # a leftover benchmark topic is harmless
        print(f"(could not delete the benchmark topics: {exc.__class__.__name__})")
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> None:
    prefix = f"bench.{uuid.uuid4().hex[:8]}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", "--bootstrap", args.bootstrap, "--prefix", prefix, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        line = (await asyncio.wait_for(child.stdout.readline(), timeout=90)).decode().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"receiver did not start: {line!r}")
        url = line.split(" ", 1)[1]
        print(f"receiver {url} (own process), Kafka {args.bootstrap}, {os.cpu_count()} CPUs shared by both processes")
        await throughput(url, args.requests, args.concurrency)
        await latency_at_rate(url, args.rate, args.duration)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        rest = (await child.stdout.read()).decode().strip()
        await child.wait()
        if rest:
            print(f"receiver {rest}")
        await delete_topics(args.bootstrap, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.bootstrap, args.prefix))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
