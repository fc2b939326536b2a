"""Helpers of the service-shell tests: configurations on disk, the app running in this loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from bridge.service.app import BridgeApp, ExitCode, ServiceSettings, SourceFactory
from bridge.service.settings import load_settings

FAST_SUPERVISOR = {
    "restart_initial_seconds": 0.05,
    "restart_max_seconds": 0.2,
    "min_uptime_seconds": 5.0,
    "config_error_retry_seconds": 0.5,
    "readiness_grace_seconds": 0.0,
    "stall_restart_seconds": 0.0,
    "cancel_timeout_seconds": 1.0,
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def service_document(
    tmp_path: Path, kafka: KafkaSettings | None = None, topics: TopicSettings | None = None, **sections: Any
) -> dict[str, Any]:
    """A complete config for tests: loopback, any free ports, fast supervision, JSON logs."""
    document: dict[str, Any] = {
        "kafka": {"bootstrap_servers": kafka.bootstrap_servers if kafka else "127.0.0.1:9092", "linger_ms": kafka.linger_ms if kafka else 2},
        "dedup": {"store": "sqlite", "path": str(tmp_path / "dedup.sqlite3")},
        "server": {"host": "127.0.0.1", "port": 0, "admin_port": 0},
        "supervisor": dict(FAST_SUPERVISOR),
        "startup": {"kafka_timeout_seconds": 20},
        "shutdown": {"deadline_seconds": 10},
    }
    if topics is not None:
        document["topics"] = topics.model_dump(mode="json")
    return merge(document, sections)


def service_settings(tmp_path: Path, kafka: KafkaSettings | None = None, topics: TopicSettings | None = None, **sections: Any) -> ServiceSettings:
    path = write_yaml(tmp_path / "bridge.yaml", service_document(tmp_path, kafka, topics, **sections))
    return load_settings(ServiceSettings, config_file=path, environ={})


class Running:
    """An app started in this event loop; ``stop()`` returns its exit code."""

    def __init__(self, app: BridgeApp, task: asyncio.Task[ExitCode]):
        self.app = app
        self.task = task

    def url(self, role: str, path: str) -> str:
        host, port = self.app.http.addresses[role]
        return f"http://{host}:{port}{path}"

    async def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(self.url("admin", path)) as response:
            return response.status, await response.json()

    async def stop(self) -> ExitCode:
        self.app.request_stop("test")
        return await asyncio.wait_for(self.task, 30)


@contextlib.asynccontextmanager
async def running(settings: ServiceSettings, *extra: SourceFactory, configured: bool = True) -> AsyncIterator[Running]:
    app = BridgeApp(settings, extra_sources=extra, configured_sources=configured, install_signal_handlers=False)
    task = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        raise AssertionError(f"app did not start: {task.result() if task.done() else 'timeout'}")
    run = Running(app, task)
    try:
        yield run
    finally:
        if not task.done():
            await run.stop()


async def eventually(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)
