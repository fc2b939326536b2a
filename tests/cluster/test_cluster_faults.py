"""Cluster mode under an unlucky operator: faults found in review, each reproduced on a real broker."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from bridge.contract.events import Account, Direction, Provider, Status, build_event
from bridge.contract.events import Source as EventSource
from bridge.delivery.ingress import build_ingress_pipeline
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.source import Source, SourceBase
from bridge.service.app import ServiceSettings
from bridge.service.cluster.runtime import ClusterRuntime
from bridge_testkit.kafka_io import read_topic

pytestmark = pytest.mark.kafka

_ids = itertools.count()


class TickerSource(SourceBase):
    """An account that produces a new transfer every 0.2 s, so a fenced producer finds out at once."""

    provider: ClassVar[Provider] = Provider.OKX

    def __init__(self, name: str, pipeline: Pipeline):
        super().__init__(name)
        self.pipeline = pipeline

    async def run(self) -> None:
        self.health.mark_connected()
        while True:
            event = build_event(
                provider=Provider.OKX, direction=Direction.DEPOSIT, transfer_id=f"t{next(_ids)}", status=Status.PENDING,
                provider_status="0", amount="1.5", asset="BTC", occurred_at="2026-11-29T05:00:00.000Z",
                received_at="2026-11-29T05:00:01.000Z", source=EventSource(channel="deposit-info"), account=Account(id="u1"),
            )  # fmt: skip
            await self.pipeline.offer(event)
            await asyncio.sleep(0.2)


def _ticker(pipeline: Pipeline) -> list[Source]:
    return [TickerSource("okx:ticker", pipeline)]


def _settings(bootstrap: str, suffix: str, **cluster: Any) -> ServiceSettings:
    return ServiceSettings(
        kafka={"bootstrap_servers": bootstrap, "linger_ms": 2},
        topics={"deposit": f"x.{suffix}.dep", "withdrawal": f"x.{suffix}.wd", "dead_letter": f"x.{suffix}.dlq", "partitions": 1},
        dedup={"store": "kafka", "state_topic": f"x.{suffix}.state"},
        cluster={
            "enabled": True,
            "group_id": f"x-{suffix}",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "coordination_topic": f"x.{suffix}.coord",
            "ingress_topic": f"x.{suffix}.ingress",
            **cluster,
        },
    )


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)


async def test_a_replica_fenced_outside_a_rebalance_does_not_take_the_slot_back_and_fight(kafka_bootstrap: str) -> None:
    """Two deployments that share a group id but not a coordination topic both get slot 0 and the
    same transactional id. The one fenced must stay fenced until the group assigns again, not
    re-take the slot on a guess (which fences the other, and so on, aborting in-flight work)."""
    suffix = uuid.uuid4().hex[:8]
    first = ClusterRuntime(_settings(kafka_bootstrap, suffix), [_ticker])
    second = ClusterRuntime(_settings(kafka_bootstrap, suffix, coordination_topic=f"x.{suffix}.coord2"), [_ticker])
    runtimes = [first, second]
    try:
        for runtime in runtimes:
            await runtime.prepare()
        await first.start()
        await _until(lambda: 0 in first.held)
        await second.start()  # fences the first at its next write
        await _until(lambda: first.fenced + second.fenced >= 1)
        await asyncio.sleep(12.0)  # several rounds of the old 2 s "take it back" guess
        assert first.fenced + second.fenced == 1, "the two replicas fenced each other in turn"
        assert sorted(s for r in runtimes for s in r.held) == [0], "the fenced one came back, or both are down"
        loser = first if first.fenced else second
        assert loser.health(30.0)["fenced_slots"] == [0]
    finally:
        for runtime in runtimes:
            await runtime.stop(timeout=5.0)


class SlowDrainSource(SourceBase):
    """An account whose connection takes a while to hand over what it holds (a slow drain)."""

    provider: ClassVar[Provider] = Provider.RIPIO  # slotted by account name
    running: ClassVar[set[int]] = set()

    async def run(self) -> None:
        self.health.mark_connected()
        SlowDrainSource.running.add(id(self))
        try:
            await asyncio.Event().wait()
        finally:
            SlowDrainSource.running.discard(id(self))

    async def drain(self, timeout: float) -> bool:
        await asyncio.sleep(min(timeout, 2.0))
        return True


async def test_replicas_stay_ready_for_webhooks_while_the_group_rebalances(kafka_bootstrap: str) -> None:
    """Readiness says whether a replica can take webhooks, which a rebalance does not change. An
    eager rebalance revokes every slot of every replica at once: were readiness tied to holding an
    assignment, every replica would leave the Service together at each join, leave or kill."""
    suffix = uuid.uuid4().hex[:8]
    names = [f"ripio:slow{n}" for n in range(4)]
    factory: Callable[[Pipeline], list[Source]] = lambda pipeline: [SlowDrainSource(name) for name in names]  # noqa: E731
    first = ClusterRuntime(_settings(kafka_bootstrap, suffix, slots=2), [factory])
    second = ClusterRuntime(_settings(kafka_bootstrap, suffix, slots=2), [factory])
    try:
        await first.prepare()
        await first.start()
        await _until(lambda: sorted(first.held) == [0, 1])
        assert first.ready
        unready: list[float] = []
        await second.start()
        began = time.monotonic()
        while not (second.held and len(first.held) + len(second.held) == 2):
            if not first.ready:
                unready.append(time.monotonic() - began)
            assert time.monotonic() - began < 60, "the slots were not shared out"
            await asyncio.sleep(0.02)
        assert first.membership.rebalances >= 1
        assert unready == [], f"first replica not ready for {len(unready) * 0.02:.1f} s of the rebalance"
        assert first.ready and second.ready
    finally:
        for runtime in (first, second):
            await runtime.stop(timeout=5.0)


async def test_a_deployment_does_not_publish_webhooks_another_group_appended_to_a_shared_ingress_topic(
    kafka_bootstrap: str,
) -> None:
    """The ingress topic's name does not derive from the group (its default is one fixed name): two
    deployments on one Kafka cluster, or a group renamed as the README asks when ``slots`` changes,
    read the same partitions. Each owner must publish only what its own group's replicas appended."""
    ours, theirs = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    shared = f"x.{ours}.shared-ingress"
    other = _settings(kafka_bootstrap, theirs, ingress_topic=shared)
    runtime = ClusterRuntime(_settings(kafka_bootstrap, ours, ingress_topic=shared), [])
    await runtime.prepare()
    receivers = build_ingress_pipeline(
        other.kafka, other.topics, other.pipeline, ingress_topic=shared, slots=1, group_id=other.cluster.group_id
    )
    await receivers.start()
    try:
        event = build_event(
            provider=Provider.OPENXSWITCH, direction=Direction.DEPOSIT, transfer_id="theirs-1", status=Status.PENDING,
            provider_status="pending", amount="2", asset="USDT", occurred_at="2026-11-29T05:00:00.000Z",
            received_at="2026-11-29T05:00:01.000Z", source=EventSource(channel="webhook"), account=Account(id="u9"),
        )  # fmt: skip
        assert await receivers.submit(event) == "published"  # appended to the shared ingress topic
        await runtime.start()
        await _until(lambda: 0 in runtime.held)
        runner = runtime.held[0]
        await _until(lambda: runner.ingress is not None and runner.ingress.consumed + runner.ingress.skipped >= 1)
        published = await read_topic(kafka_bootstrap, f"x.{ours}.dep", idle=2.0)
        assert published == [], "the other deployment's webhook was published on this deployment's topic"
    finally:
        await receivers.close(timeout=5.0)
        await runtime.stop(timeout=5.0)


class PushSource(SourceBase):
    """An OKX key's connection: a master key receives its sub-account's pushes, and the sub-account's
    own key (configured to backfill it) receives the same push."""

    provider: ClassVar[Provider] = Provider.OKX

    def __init__(self, name: str, pipeline: Pipeline):
        super().__init__(name)
        self.pipeline = pipeline

    async def run(self) -> None:
        self.health.mark_connected()
        event = build_event(
            provider=Provider.OKX, direction=Direction.DEPOSIT, transfer_id="sub-dep-1", status=Status.CREDITED,
            provider_status="2", amount="3", asset="ETH", occurred_at="2026-11-29T05:00:00.000Z",
            received_at="2026-11-29T05:00:01.000Z", source=EventSource(channel="deposit-info"),
            account=Account(id="sub-uid", sub_account="sub"),
        )  # fmt: skip
        await self.pipeline.submit(event)
        await asyncio.Event().wait()


async def test_an_okx_push_seen_by_the_master_and_the_sub_account_key_is_published_once(kafka_bootstrap: str) -> None:
    """In one process the shared dedup gate drops the second copy (as the OKX account docs say);
    with accounts spread over slots each slot has its own gate, so the OKX accounts keep one slot."""
    suffix = uuid.uuid4().hex[:8]
    names = ["okx:master", "okx:sub"]  # blake2b puts them in slots 0 and 1 of 2
    factory: Callable[[Pipeline], list[Source]] = lambda pipeline: [PushSource(n, pipeline) for n in names]  # noqa: E731
    runtime = ClusterRuntime(_settings(kafka_bootstrap, suffix, slots=2), [factory])
    try:
        await runtime.prepare()
        await runtime.start()
        await _until(lambda: sorted(runtime.held) == [0, 1])
        await _until(lambda: sum(len(r.sources) for r in runtime.held.values()) == 2)
        published = await read_topic(kafka_bootstrap, f"x.{suffix}.dep", idle=3.0)
        assert len(published) == 1, f"the same OKX state was published {len(published)} times"
    finally:
        await runtime.stop(timeout=5.0)



async def test_a_replica_that_is_stopping_does_not_take_slots_a_rebalance_hands_it_meanwhile(kafka_bootstrap: str) -> None:
    """SIGTERM drains the held slots, then leaves the group; a replica joining during that drain
    (a rolling update starts the next pod) rebalances the group, which hands the stopping replica a
    slot again. Started then, that slot outlives the stop: sources, producer and consumer leaked."""
    suffix = uuid.uuid4().hex[:8]
    names = [f"ripio:slow{n}" for n in range(4)]
    factory: Callable[[Pipeline], list[Source]] = lambda pipeline: [SlowDrainSource(name) for name in names]  # noqa: E731
    first = ClusterRuntime(_settings(kafka_bootstrap, suffix, slots=2), [factory])
    second = ClusterRuntime(_settings(kafka_bootstrap, suffix, slots=2), [])
    try:
        await first.prepare()
        await first.start()
        await _until(lambda: sorted(first.held) == [0, 1] and len(SlowDrainSource.running) == len(names))
        stopping = asyncio.create_task(first.stop(timeout=20.0))  # each source drains for 2 s
        await asyncio.sleep(0.5)
        await second.start()
        await stopping
        await asyncio.sleep(3.0)  # a start begun during the stop would be done by now
        assert first.held == {} and first.health(30.0)["starting"] == [], "a slot was started on a stopped replica"
        assert SlowDrainSource.running == set(), "sources still run on the stopped replica"
    finally:
        for runtime in (first, second):
            await runtime.stop(timeout=5.0)


async def test_the_fireblocks_backfill_runs_on_one_replica_of_the_group(kafka_bootstrap: str) -> None:
    """Every replica serves the Fireblocks route; its REST gap backfill reads the same workspace
    history wherever it runs, so N replicas made N times the API calls (and N copies in the ingress
    topic). One replica — the holder of the receiver's slot — runs it."""
    from bridge.service.app import BridgeApp
    from bridge_testkit.fireblocks.harness import FireblocksHarness

    suffix = uuid.uuid4().hex[:8]
    harness = FireblocksHarness()
    await harness.start()
    apps: list[BridgeApp] = []
    try:
        for _ in range(2):
            settings = _settings(kafka_bootstrap, suffix).model_copy(
                update={
                    "server": ServiceSettings(server={"host": "127.0.0.1", "port": 0, "admin_port": None}).server,
                    "fireblocks": ServiceSettings(fireblocks=harness.section(backfill_interval=1.0)).fireblocks,
                }
            )
            apps.append(BridgeApp(settings, install_signal_handlers=False))
        runs = [asyncio.create_task(app.run()) for app in apps]
        for app in apps:
            await asyncio.wait_for(app.started.wait(), 60)
        def settled() -> bool:  # both members, no rebalance under way, the slot held once
            clusters = [app.cluster for app in apps if app.cluster]
            return all(c.membership.member and not c.membership.rebalancing for c in clusters) and sum(
                len(c.held) for c in clusters
            ) == 1

        def last_passes() -> list[object]:
            return [
                next(s for s in app.sources if s.name == "fireblocks:webhook").health.detail.get("backfill_last_success")
                for app in apps
            ]

        # The slot may first land on the replica that joined first and then move once the second
        # joins (its new holder runs a pass at once): count only what runs after the group settled.
        await _until(settled)
        await asyncio.sleep(1.5)
        await _until(settled)
        before = last_passes()
        await asyncio.sleep(4.0)  # a few backfill intervals
        assert settled(), "the group rebalanced during the measurement"
        ran = [after != first for first, after in zip(before, last_passes(), strict=True)]
        assert sum(ran) == 1, f"backfill passes ran on {sum(ran)} replicas"
        holder = next(i for i, app in enumerate(apps) if app.cluster and app.cluster.held)
        assert ran[holder], "the pass ran on a replica that does not hold the receiver's slot"
    finally:
        for app in apps:
            app.request_stop()
        await asyncio.gather(*runs, return_exceptions=True)
        await harness.stop()
