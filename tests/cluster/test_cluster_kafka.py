"""Cluster mode on a real broker, two replicas in one process: slots, sources, webhooks, handover."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from bridge.contract.events import Account, Direction, Provider, Status, build_event
from bridge.contract.events import Source as EventSource
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish_tx import FencedError
from bridge.delivery.slots import slot_of
from bridge.ingest.source import Source, SourceBase
from bridge.service.app import BridgeApp, ExitCode, ServiceSettings
from bridge.service.cluster.runtime import ClusterRuntime
from bridge.service.cluster.slot import SlotRunner
from bridge_testkit.kafka_io import read_topic
from bridge_testkit.openxswitch.simulator import OpenXSwitchSimulator

pytestmark = pytest.mark.kafka

SOURCE_NAMES = [f"okx:acct{n}" for n in range(6)]


class IdleSource(SourceBase):
    """Stands for an account's connection: counts where it runs."""

    provider: ClassVar[Provider] = Provider.OKX
    running: ClassVar[dict[str, int]] = {}

    def __init__(self, name: str, replica: str):
        super().__init__(name)
        self.replica = replica

    async def run(self) -> None:
        self.health.mark_connected()
        key = f"{self.replica}/{self.name}"
        IdleSource.running[key] = IdleSource.running.get(key, 0) + 1
        try:
            await asyncio.Event().wait()
        finally:
            IdleSource.running[key] -= 1


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _factory(replica: str) -> Callable[[Pipeline], list[Source]]:
    return lambda pipeline: [IdleSource(name, replica) for name in SOURCE_NAMES]


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)


@pytest.fixture
async def cluster(kafka_bootstrap: str) -> AsyncIterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    secret = secrets.token_hex(16)
    ports = [_port(), _port()]

    def config(port: int) -> dict[str, Any]:
        return {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "linger_ms": 2},
            "topics": {"deposit": f"c.{suffix}.dep", "withdrawal": f"c.{suffix}.wd", "dead_letter": f"c.{suffix}.dlq", "partitions": 2},
            "dedup": {"store": "kafka", "state_topic": f"c.{suffix}.state"},
            "server": {"host": "127.0.0.1", "port": port, "admin_port": None},
            "cluster": {
                "enabled": True,
                "group_id": f"c-{suffix}",
                "slots": 2,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "coordination_topic": f"c.{suffix}.coord",
                "ingress_topic": f"c.{suffix}.ingress",
            },
            "openxswitch": {"enabled": True, "secrets": [secret]},
        }

    apps = [
        BridgeApp(ServiceSettings(**config(port)), extra_sources=[_factory(f"r{n}")], install_signal_handlers=False)
        for n, port in enumerate(ports)
    ]
    runs = [asyncio.create_task(app.run()) for app in apps]
    for app in apps:
        await asyncio.wait_for(app.started.wait(), 60)
    await _until(lambda: sorted(s for app in apps if app.cluster for s in app.cluster.held) == [0, 1])
    yield {"apps": apps, "runs": runs, "ports": ports, "secret": secret, "suffix": suffix, "bootstrap": kafka_bootstrap}
    for app in apps:
        app.request_stop()
    await asyncio.gather(*runs, return_exceptions=True)


def _holder(apps: list[BridgeApp], slot: int) -> int:
    return next(n for n, app in enumerate(apps) if app.cluster is not None and slot in app.cluster.held)


async def test_each_source_runs_once_in_the_group_on_the_replica_holding_its_slot(cluster: dict[str, Any]) -> None:
    apps = cluster["apps"]
    await _until(lambda: sum(v for k, v in IdleSource.running.items() if k.split("/")[1] in SOURCE_NAMES) >= len(SOURCE_NAMES))
    running = {k: v for k, v in IdleSource.running.items() if v}
    for name in SOURCE_NAMES:
        holders = [k.split("/")[0] for k in running if k.endswith(f"/{name}")]
        assert holders == [f"r{_holder(apps, slot_of(name, 2))}"], (name, holders)
    ready, detail = apps[0].readiness()
    assert ready and detail["cluster"]["member"] and detail["cluster"]["slots"] == sorted(apps[0].cluster.held)
    held_here = [name for name in SOURCE_NAMES if slot_of(name, 2) in apps[0].cluster.held]
    for name in held_here:
        assert set(detail["cluster"]["held"][str(slot_of(name, 2))]["sources"][name]) >= {"ready", "supervisor"}
    apps[0].refresh_metrics()
    assert all(REGISTRY.get_sample_value("bridge_source_ready", {"source": name}) == 1 for name in held_here)
    assert REGISTRY.get_sample_value("bridge_cluster_slots_held") is not None


async def test_webhooks_posted_to_any_replica_are_published_once_and_survive_a_clean_handover(cluster: dict[str, Any]) -> None:
    apps, ports, secret = cluster["apps"], cluster["ports"], cluster["secret"]
    sims = [OpenXSwitchSimulator(f"http://127.0.0.1:{p}/webhooks/openxswitch", secret, seed=n, retry_interval=0.3) for n, p in enumerate(ports)]
    for sim in sims:
        sim.lifecycles(withdrawals=6, deposits=6)
    first = await asyncio.gather(*(sim.send(sim.plan(redeliver=0.5, concurrent=0.3)) for sim in sims))
    assert all(report.acked == report.deliveries for report in first)

    # Replica 0 leaves (SIGTERM path): its slots drain and move to replica 1, which restores their state.
    apps[0].request_stop()
    assert await cluster["runs"][0] == ExitCode.OK
    await _until(lambda: sorted(apps[1].cluster.held) == [0, 1])
    again = await sims[1].send(sims[1].plan(redeliver=1.0))  # every state once more, to the new owner
    assert again.acked == again.deliveries

    suffix, bootstrap = cluster["suffix"], cluster["bootstrap"]
    records = [r for t in (f"c.{suffix}.dep", f"c.{suffix}.wd") for r in await read_topic(bootstrap, t, idle=2.0)]
    ids = [json.loads(r.value)["event_id"] for r in records]
    assert len(ids) == len(set(ids)), "a state was published twice across the handover"
    for sim in sims:
        must, _ = sim.expected()
        assert must <= set(ids)


async def test_a_coordination_topic_that_does_not_match_the_slots_is_refused_with_exit_2(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"c.{suffix}.coord", 3, 1)])
    finally:
        await admin.close()
    settings = ServiceSettings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics={"deposit": f"c.{suffix}.dep", "withdrawal": f"c.{suffix}.wd", "dead_letter": f"c.{suffix}.dlq"},
        dedup={"store": "kafka", "state_topic": f"c.{suffix}.state"},
        server={"host": "127.0.0.1", "port": 0, "admin_port": None},
        cluster={"enabled": True, "group_id": f"c-{suffix}", "slots": 2, "coordination_topic": f"c.{suffix}.coord", "ingress_topic": f"c.{suffix}.ingress"},
    )
    assert await asyncio.wait_for(BridgeApp(settings, install_signal_handlers=False).run(), 60) == ExitCode.CONFIG


async def test_the_new_owner_of_a_slot_fences_a_paused_previous_owner_whose_late_write_is_refused(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = ServiceSettings(
        kafka={"bootstrap_servers": kafka_bootstrap, "linger_ms": 2},
        topics={"deposit": f"f.{suffix}.dep", "withdrawal": f"f.{suffix}.wd", "dead_letter": f"f.{suffix}.dlq", "partitions": 1},
        dedup={"store": "kafka", "state_topic": f"f.{suffix}.state"},
        cluster={"enabled": True, "group_id": f"f-{suffix}", "coordination_topic": f"f.{suffix}.coord", "ingress_topic": f"f.{suffix}.ingress"},
    )
    await ClusterRuntime(settings, []).prepare()

    def event(status: Status, provider_status: str) -> Any:
        return build_event(
            provider=Provider.OKX, direction=Direction.DEPOSIT, transfer_id="42", status=status, provider_status=provider_status,
            amount="1.5", asset="BTC", occurred_at="2026-11-29T05:00:00.000Z", received_at="2026-11-29T05:00:01.000Z",
            source=EventSource(channel="deposit-info"), account=Account(id="u1"),
        )  # fmt: skip

    paused, successor = SlotRunner(0, settings, []), SlotRunner(0, settings, [])
    try:
        await paused.start()
        assert paused.pipeline is not None
        assert await paused.pipeline.submit(event(Status.PENDING, "0")) == "published"
        await successor.start()  # the paused owner has not noticed anything yet
        assert successor.pipeline is not None
        with pytest.raises(FencedError):
            await paused.pipeline.submit(event(Status.CREDITED, "1"))
        assert paused.fenced
        # The successor restored the first state from the slot's partition and publishes the second once.
        assert await successor.pipeline.submit(event(Status.PENDING, "0")) == "duplicate"
        assert await successor.pipeline.submit(event(Status.CREDITED, "1")) == "published"
    finally:
        await paused.stop(timeout=5.0)
        await successor.stop(timeout=5.0)
    records = await read_topic(kafka_bootstrap, f"f.{suffix}.dep", idle=2.0)
    assert [json.loads(r.value)["provider_status"] for r in records] == ["0", "1"]
