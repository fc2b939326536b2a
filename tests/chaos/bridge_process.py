"""The bridge under chaos: a separate process the suite can ``kill -9`` at any moment.

``python -m tests.chaos.bridge_process CONFIG.json`` assembles the pipeline the config asks for
(embedded SQLite or exactly-once Kafka dedup) and every configured source, prints ``READY`` once the
dedup state is loaded and Kafka is connected, and runs until killed or sent SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from bridge.assemble import build_pipeline
from bridge.settings import DedupSettings, KafkaSettings, TopicSettings
from bridge.sources.okx.config import OkxConfig
from bridge.sources.okx.service import build_okx_sources


async def run(config: dict[str, Any]) -> None:
    pipeline = build_pipeline(
        KafkaSettings(**config["kafka"]), TopicSettings(**config["topics"]), DedupSettings(**config["dedup"])
    )
    await pipeline.start()
    sources: list[Any] = []
    if "okx" in config:
        sources += build_okx_sources(OkxConfig(**config["okx"]), pipeline)
    tasks = [asyncio.create_task(source.run(), name=source.name) for source in sources]
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pipeline.close(timeout=30)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with open(sys.argv[1]) as handle:
        asyncio.run(run(json.load(handle)))
