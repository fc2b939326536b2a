"""Cluster chaos plumbing: replica processes, the balancer in front of their webhooks, a tail of the
event topics, and who holds a slot (``cluster`` runs the scenario with these)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from tests.chaos.bridge_process import BridgeProcess, free_port

__all__ = ["Balancer", "Replica", "Tail", "holder", "new_holder"]

REPO = Path(__file__).resolve().parents[2]
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class Replica(BridgeProcess):
    """One replica process: the real service shell, its own webhook and admin ports."""

    def __init__(self, name: str, config: dict[str, Any], work: Path):
        self.name = name
        self.port = free_port()
        self.admin_port = free_port()
        config = {**config, "server": {"host": "127.0.0.1", "port": self.port, "admin_port": self.admin_port}}
        super().__init__(work / f"{name}.json", work / f"{name}.log")
        self.config_path.write_text(json.dumps(config, default=str))
        os.chmod(self.config_path, 0o600)
        self.base = f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signum)

    async def terminate(self) -> int:
        if not self.alive:
            return self.process.returncode if self.process else 0
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        return await asyncio.to_thread(self.process.wait, 60)

    async def cluster(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        """The ``cluster`` detail of ``/readyz`` (None if the replica does not answer)."""
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=timeout) as answer:
                detail: dict[str, Any] = (await answer.json()).get("cluster") or {}
                return detail
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None

    async def metric(self, session: aiohttp.ClientSession, name: str) -> float:
        try:
            timeout = aiohttp.ClientTimeout(total=1.0)
            async with session.get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=timeout) as answer:
                text = await answer.text()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return 0.0
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


class Balancer:
    """Spreads webhook posts (any path, headers kept: OpenXSwitch and Fireblocks alike) over the
    replicas (round robin); a refused connection goes to the next one, as an ingress proxy does; when
    none answers, 502. Every answer is logged with its time."""

    def __init__(self, replicas: list[Replica]):
        self.replicas = replicas
        self.answers: list[tuple[float, int, str]] = []
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""
        self.base = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.url = f"{self.base}/webhooks/openxswitch"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self._session is not None
        status, payload = 502, b'{"result":"bad_gateway"}'
        first, self._next = self._next, self._next + 1
        for n in range(len(self.replicas)):
            replica = self.replicas[(first + n) % len(self.replicas)]
            try:
                timeout = aiohttp.ClientTimeout(total=30, sock_connect=1.0)
                async with self._session.post(replica.base + request.path_qs, data=body, headers=headers, timeout=timeout) as answer:
                    status, payload = answer.status, await answer.read()
                break
            except aiohttp.ClientConnectorError:
                continue  # nothing listens (killed, restarting): the next replica
            except (TimeoutError, aiohttp.ClientError, OSError):
                status = 504  # accepted the connection, never answered (SIGSTOPped)
                break
        self.answers.append((time.monotonic(), status, request.path.rsplit("/", 1)[-1]))
        return web.Response(body=payload, status=status, content_type="application/json")

    def errors_between(self, start: float, end: float) -> Counter[str]:
        """5xx answered in that window, by ``provider:status``."""
        return Counter(f"{path}:{status}" for at, status, path in self.answers if start <= at <= end and status >= 500)


class Tail:
    """Reads the event topics as they fill (``read_committed``): when each record was created."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self.bootstrap = bootstrap
        self.topics = topics
        self.created: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.bootstrap,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=f"tail-{uuid.uuid4().hex[:8]}",
            )
            try:
                await consumer.start()
                while True:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        self.created.extend(r.timestamp / 1000 for r in records)
            except Exception:  # noqa: BLE001 - the broker is being killed: read again from the start
                self.created.clear()
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    def first_after(self, wall: float) -> float | None:
        later = [t for t in self.created if t > wall]
        return min(later) - wall if later else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def holder(replicas: list[Replica], session: aiohttp.ClientSession, slot: int = 0, timeout: float = 60.0) -> Replica:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for replica in replicas:
            if replica.alive:
                detail = await replica.cluster(session)
                if detail and slot in detail.get("slots", []):
                    return replica
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no replica holds slot {slot} after {timeout}s")


async def new_holder(replicas: list[Replica], old: Replica, session: aiohttp.ClientSession, timeout: float = 60.0) -> Replica:
    others = [r for r in replicas if r is not old]
    return await holder(others, session, timeout=timeout)
