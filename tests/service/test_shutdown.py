"""SIGTERM on a running ``python -m bridge run``: webhooks stop being accepted, sockets stop reading,
everything acknowledged is in Kafka, exit 0 within the deadline — and no secret in any log line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.sources.openxswitch.signature import HEADER
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.okx.simulator import OkxSimulator
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator, SimDelivery
from tests.service.support import eventually, service_document, write_yaml

pytestmark = pytest.mark.kafka

WEBHOOK_SECRET = "whsec_drain_test_7c41e0aa"
DEADLINE = 10.0


class BridgeProcess:
    """``python -m bridge run`` with its stderr (JSON log lines) collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode().rstrip("\n"))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def port(self, role: str) -> int:
        [port] = [e["port"] for e in self.events() if e.get("role") == role]
        return port

    async def wait(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code


@pytest.fixture
async def okx() -> AsyncIterator[OkxSimulator]:
    async with OkxSimulator(idle_timeout=10.0) as simulator:
        yield simulator


def write_secrets(directory: Path, okx: OkxSimulator) -> None:
    directory.mkdir()
    main = okx.accounts["main"]
    files = {
        "okx__accounts__main__api_key": main.api_key,
        "okx__accounts__main__secret_key": main.secret_key,
        "okx__accounts__main__passphrase": main.passphrase,
        "okx__accounts__sub1__api_key": okx.accounts["sub1"].api_key,
        "okx__accounts__sub1__secret_key": okx.accounts["sub1"].secret_key,
        "okx__accounts__sub1__passphrase": "Wrong-passphrase-9",  # refused by OKX: errors get logged
        "openxswitch__secrets": WEBHOOK_SECRET,
    }
    for name, value in files.items():
        (directory / name).write_text(value + "\n")


async def post_all(sim: OpenXSwitchSimulator, deliveries: list[SimDelivery], workers: int) -> None:
    queue: asyncio.Queue[SimDelivery] = asyncio.Queue()
    for delivery in deliveries:
        queue.put_nowait(delivery)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await sim.post(session, queue.get_nowait())

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))


async def test_sigterm_drains_acknowledged_deliveries_into_kafka_and_exits_0(
    tmp_path: Path, kafka_settings: KafkaSettings, topics: TopicSettings, kafka_bootstrap: str, okx: OkxSimulator
) -> None:
    write_secrets(tmp_path / "secrets", okx)
    slow_acks = kafka_settings.model_copy(update={"linger_ms": 250})  # SIGTERM lands while deliveries wait for Kafka
    document = service_document(
        tmp_path,
        slow_acks,
        topics,
        log={"level": "DEBUG", "format": "json", "levels": {}},  # everything, third-party wire logs included
        shutdown={"deadline_seconds": DEADLINE},
        okx={
            "enabled": True,
            "ws_url": okx.ws_url,
            "rest_url": okx.rest_url,
            "accounts": [{"name": "main"}, {"name": "sub1"}],
            "reconnect_initial": 0.05,
            "config_error_retry": 0.5,
        },
        openxswitch={"enabled": True},
    )
    config = write_yaml(tmp_path / "bridge.yaml", document)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(config), "--secrets-dir", str(tmp_path / "secrets"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, limit=16 * 1024 * 1024,
    )
    bridge = BridgeProcess(process)
    try:
        await eventually(lambda: bridge.logged("running; sources:"), timeout=60, what="bridge running")
        await okx.wait_subscribed("main")
        await eventually(lambda: bridge.logged("sub1"), what="the refused account logged")
        url = f"http://127.0.0.1:{bridge.port('webhooks')}/webhooks/openxswitch"
        sim = OpenXSwitchSimulator(url, WEBHOOK_SECRET, request_timeout=DEADLINE + 5)
        transfers = [sim.withdrawal() for _ in range(40)]
        deliveries = [sim.delivery(t, i) for t in transfers for i in range(len(t.states))]
        posting = asyncio.create_task(post_all(sim, deliveries, workers=8))
        await eventually(lambda: sum(d.acked for d in deliveries) >= 10, what="first deliveries acknowledged")
        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await bridge.wait(timeout=DEADLINE + 5)
        stopped_in = time.monotonic() - sigterm_at
        await posting
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert code == 0, "\n".join(bridge.lines[-30:])
    assert stopped_in < DEADLINE
    acked = [d for d in deliveries if d.acked]
    in_flight_at_sigterm = [d for d in acked if d.first_post_at is not None and d.first_post_at < sigterm_at < d.acked_at]  # type: ignore[operator]
    assert in_flight_at_sigterm, "no delivery was waiting for Kafka when SIGTERM arrived: the test proves nothing"
    refused = [d for d in deliveries if not d.acked]
    assert all(status in (0, 503) for d in refused for status in d.attempts)  # never a 2xx that was not stored
    published = {json.loads(r.value)["event_id"] for r in await read_topic(kafka_bootstrap, topics.withdrawal, expect=len(acked), timeout=15)}
    assert {d.state.event.event_id for d in acked} <= published  # type: ignore[union-attr]

    events = bridge.events()  # every line is one JSON event (json.loads would raise otherwise)
    messages = [e["message"] for e in events]
    assert "shutting down (SIGTERM); deadline 10.0s" in messages
    assert "stopped cleanly: every accepted item acknowledged by Kafka, dedup state persisted" in messages
    assert not okx.subscribed("main")  # the socket was closed, not left reading

    log_text = "\n".join(bridge.lines)
    secrets = [WEBHOOK_SECRET, "Wrong-passphrase-9"] + [
        value for account in okx.accounts.values() for value in (account.api_key, account.secret_key, account.passphrase)
    ]
    signatures = [sim.headers(d.body)[HEADER] for d in deliveries] + sorted(okx.signatures_seen)
    assert [s for s in secrets if s in log_text] == []
    assert [s for s in signatures if s in log_text] == []
    assert any(e.get("source") == "okx:sub1" and e["level"] == "ERROR" for e in events)  # the error was logged, masked
