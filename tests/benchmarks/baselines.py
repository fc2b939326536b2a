"""The three baselines measured in the same run as the bridge, on the same records.

* ``kcat`` (librdkafka) producing the bridge's pre-serialized records: the broker and machine limit.
* a bare ``AIOKafkaProducer`` with the bridge's own producer options (``Publisher.producer_options``)
  sending the same pre-serialized records: the client library limit.
* the naive bridge a user would write: stdlib ``json``, the contract model validated per message,
  one ``send_and_wait`` per record (aiokafka defaults, ``acks=all`` + idempotence like the bridge).
  It reads its frames from memory, not a socket: that flatters it, so the ratio is conservative.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Channel, kafka_settings, latency_summary, peak_rss_bytes

__all__ = ["build_records", "write_records", "now_iso", "kcat_binary", "run_kcat", "aiokafka_worker", "naive_okx_worker"]


# -- records (orchestrator side) -----------------------------------------------------------------


def build_records(frames: Iterable[str], limit: int) -> list[dict[str, Any]]:
    """The records the bridge publishes for these frames: each distinct state once, exact bytes."""
    import orjson

    from bridge.delivery.publish import Publisher
    from bridge.delivery.settings import TopicSettings
    from bridge.kafka.settings import KafkaSettings
    from bridge.sources.okx.parse import parse_push

    publisher = Publisher(KafkaSettings(), TopicSettings())  # only its record builder is used
    received_at = now_iso()
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    for text in frames:
        if text in seen:
            continue
        seen.add(text)
        for event in parse_push(orjson.loads(text), received_at=received_at):
            record = publisher.event_record(event)  # type: ignore[arg-type]
            records.append({
                "direction": event.direction.value,  # type: ignore[union-attr]
                "key": record.key.decode(),
                "value": record.value.decode(),
                "headers": [[name, value.decode()] for name, value in record.headers],
            })
        if len(records) >= limit:
            break
    return records


def write_records(records: Sequence[dict[str, Any]], path: Path) -> None:
    path.write_text("\n".join(json.dumps(r) for r in records))


def _read_records(path: str, topics: dict[str, str]) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    out = []
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        out.append((topics[r["direction"]], r["key"].encode(), r["value"].encode(), [(n, v.encode()) for n, v in r["headers"]]))
    return out


def now_iso() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


# -- kcat ----------------------------------------------------------------------------------------


def kcat_binary(say: Any = print) -> str | None:
    """kcat on PATH, else try the Debian package once (root only); None means: skip the baseline."""
    found = shutil.which("kcat") or shutil.which("kafkacat")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say("kcat not installed and cannot install it (needs root and apt-get): kcat baseline skipped")
        return None
    say("kcat not installed: trying `apt-get install -y kcat`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (["apt-get", "install", "-y", "kcat"], ["apt-get", "update"], ["apt-get", "install", "-y", "kcat"]):
        try:
            subprocess.run(attempt, capture_output=True, timeout=240, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired):
            break
        found = shutil.which("kcat")
        if found:
            return found
    say("kcat could not be installed: kcat baseline skipped")
    return None


def kcat_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return " ".join(out.split()[:6])


async def run_kcat(binary: str, bootstrap: str, records: Sequence[dict[str, Any]], topics: dict[str, str], workdir: Path, producer: dict[str, Any]) -> dict[str, Any]:
    """Both topics produced concurrently (one kcat each), same producer settings as the bridge. Each
    kcat's fixed cost (start, metadata, connect) is measured with one record and subtracted."""
    settings = [
        "-X", "acks=all",
        "-X", "enable.idempotence=true",
        "-X", f"linger.ms={producer['linger_ms']}",
        "-X", f"batch.size={producer['max_batch_size']}",
        "-X", f"message.max.bytes={producer['max_request_size']}",
        "-X", "partitioner=murmur2_random",  # the Java/aiokafka key → partition mapping
        "-z", producer["compression_type"] or "none",
    ]
    commands = []
    count = 0
    for direction, topic in topics.items():
        rows = [r for r in records if r["direction"] == direction]
        if not rows:
            continue
        count += len(rows)
        path = workdir / f"kcat-{direction}.txt"
        path.write_text("".join(f"{r['key']}\t{r['value']}\n" for r in rows))
        one = workdir / f"kcat-{direction}-one.txt"
        one.write_text(f"{rows[0]['key']}\t{rows[0]['value']}\n")
        headers = [arg for name, value in rows[0]["headers"] for arg in ("-H", f"{name}={value}")]
        base = [binary, "-P", "-b", bootstrap, "-t", topic, "-K", "\t", *settings, *headers]
        commands.append((base + ["-l", str(path)], base + ["-l", str(one)]))

    async def timed(command: list[str]) -> float:
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kcat failed ({process.returncode}): {err.decode(errors='replace')[-500:]}")
        return time.monotonic() - began

    fixed = max(await asyncio.gather(*(timed(one) for _, one in commands)))
    wall = max(await asyncio.gather(*(timed(full) for full, _ in commands)))
    seconds = max(wall - fixed, 1e-6)
    return {"records": count, "seconds": seconds, "wall_seconds": wall, "fixed_seconds": fixed, "per_second": count / seconds}


# -- bare aiokafka (worker) ----------------------------------------------------------------------


async def aiokafka_worker(params: dict[str, Any]) -> None:
    """Throughput (``rate`` absent): everything as fast as ``send`` takes it, then wait for every
    ack. Latency (``rate``): one record every 1/rate s, send → ack per record."""
    from aiokafka import AIOKafkaProducer

    from bridge.delivery.publish import Publisher
    from bridge.delivery.settings import TopicSettings

    channel = await Channel.open()
    topics = params["topics"]
    options = Publisher(kafka_settings(params["bootstrap"]), TopicSettings(**topics)).producer_options()
    records = _read_records(params["records_file"], {"deposit": topics["deposit"], "withdrawal": topics["withdrawal"]})
    producer = AIOKafkaProducer(**options)
    await producer.start()
    try:
        for topic in {r[0] for r in records}:  # metadata and connections before the clock starts
            await (await producer.send(topic, value=b"{}", key=b"warm-up"))
        gc.collect()
        channel.tell("READY")
        await channel.command()  # GO
        if params.get("rate"):
            result = await _paced(producer, records, params["rate"], params["duration"])
        else:
            began, cpu0 = time.monotonic(), time.process_time()
            futures = [await producer.send(topic, value=value, key=key, headers=headers) for topic, key, value, headers in records]
            await asyncio.gather(*futures)
            seconds, cpu = time.monotonic() - began, time.process_time() - cpu0
            result = {"records": len(records), "seconds": seconds, "per_second": len(records) / seconds, "cpu_seconds": cpu}
        result["peak_rss"] = peak_rss_bytes()
        channel.tell("RESULT", result)
    finally:
        await producer.stop()


async def _paced(producer: Any, records: Sequence[Any], rate: float, duration: float) -> dict[str, Any]:
    count = int(rate * duration)  # records are reused round robin when there are fewer
    latencies: list[float] = []
    pending = []
    start = time.monotonic() + 0.05
    cpu0 = time.process_time()
    for index in range(count):
        topic, key, value, headers = records[index % len(records)]
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.monotonic()
        future = await producer.send(topic, value=value, key=key, headers=headers)
        future.add_done_callback(lambda _, sent=sent: latencies.append(time.monotonic() - sent))
        pending.append(future)
    await asyncio.gather(*pending)
    return {"records": count, "cpu_seconds": time.process_time() - cpu0, "latency": latency_summary(latencies)}


# -- naive bridge (worker) -----------------------------------------------------------------------


async def naive_okx_worker(params: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    from bridge.sources.okx.parse import parse_push

    channel = await Channel.open()
    topics = {"deposit": params["topics"]["deposit"], "withdrawal": params["topics"]["withdrawal"]}
    frames: list[str] = json.loads(Path(params["frames_file"]).read_text())[: params["count"]]
    producer = AIOKafkaProducer(bootstrap_servers=params["bootstrap"], acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic in topics.values():
            await producer.send_and_wait(topic, value=b"{}", key=b"warm-up")
        channel.tell("READY")
        await channel.command()  # GO
        seen: dict[str, set[str]] = {}
        published = 0
        began, cpu0 = time.monotonic(), time.process_time()
        for text in frames:
            message = json.loads(text)
            for event in parse_push(message, received_at=now_iso()):  # builds and validates the model
                known = seen.setdefault(event.key, set())  # type: ignore[union-attr]
                if event.event_id in known:  # type: ignore[union-attr]
                    continue
                body = json.dumps(event.model_dump(mode="json")).encode()  # type: ignore[union-attr]
                await producer.send_and_wait(
                    topics[event.direction.value],  # type: ignore[union-attr]
                    value=body,
                    key=event.key.encode(),  # type: ignore[union-attr]
                    headers=[("ce_id", event.event_id.encode())],  # type: ignore[union-attr]
                )
                known.add(event.event_id)  # type: ignore[union-attr]
                published += 1
        seconds, cpu = time.monotonic() - began, time.process_time() - cpu0
        channel.tell("RESULT", {"events": len(frames), "published": published, "seconds": seconds, "per_second": len(frames) / seconds, "cpu_seconds": cpu, "peak_rss": peak_rss_bytes()})
    finally:
        await producer.stop()
