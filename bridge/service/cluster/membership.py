"""Membership through Kafka's consumer-group protocol: the group hands out the slots.

Every replica subscribes to the coordination topic (one partition per slot, no records) under
``cluster.group_id``; the partitions the group assigns to a replica are the slots it runs. Kafka's
group coordinator does what a home-made coordinator would: it notices a replica gone silent past
``session_timeout_ms`` and hands its slots to the others; a replica leaving cleanly (SIGTERM) hands
them over at once.

The listener calls ``on_revoked`` before the revoke completes (the protocol waits for it, up to
``rebalance_timeout_ms``): the runtime drains the slots there. ``on_assigned`` only schedules the
slots' start, so the group is not held up by a state restore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from bridge.kafka.client import kafka_client_options
from bridge.kafka.settings import KafkaSettings
from bridge.observability import metrics
from bridge.service.cluster.settings import ClusterSettings

__all__ = ["Membership"]

log = logging.getLogger(__name__)

SlotsCallback = Callable[[set[int]], Awaitable[None]]


class Membership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """One replica's seat in the group; ``assigned`` is the set of slots the group gave it."""

    def __init__(self, kafka: KafkaSettings, cluster: ClusterSettings, *, on_assigned: SlotsCallback, on_revoked: SlotsCallback):
        self.kafka = kafka
        self.cluster = cluster
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self.assigned: set[int] = set()
        self.member = False
        """True from an assignment (even an empty one) until the next revoke or the stop."""
        self.rebalances = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cluster = self.cluster
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.kafka),
            group_id=cluster.group_id,
            enable_auto_commit=False,
            session_timeout_ms=cluster.session_timeout_ms,
            heartbeat_interval_ms=cluster.heartbeat_interval_ms,
            rebalance_timeout_ms=cluster.rebalance_timeout_ms,
            max_poll_interval_ms=max(cluster.rebalance_timeout_ms, 60_000),
            auto_offset_reset="latest",
        )
        await consumer.start()
        consumer.subscribe([cluster.coordination_topic], listener=self)
        self._consumer = consumer
        self._poller = asyncio.create_task(self._poll(consumer), name="cluster-membership")

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        """The group protocol runs in aiokafka's background tasks, but only for a consumer that
        keeps polling (``max_poll_interval_ms``); the topic carries no records."""
        while True:
            try:
                await consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("cluster membership: poll failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(1.0)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        slots = {tp.partition for tp in revoked}
        self.member = False
        self.rebalances += 1
        metrics.CLUSTER_REBALANCES.inc()
        log.info("cluster: rebalance; draining slots %s", sorted(slots) or "none")
        try:
            await self._on_revoked(slots)
        except Exception:  # the protocol must go on: a slot that failed to drain is fenced by its next owner
            log.exception("cluster: draining slots %s failed", sorted(slots))
        self.assigned -= slots

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        slots = {tp.partition for tp in assigned}
        self.assigned = slots
        self.member = True
        log.info("cluster: assigned slots %s", sorted(slots) or "none (standby)")
        await self._on_assigned(slots)

    async def stop(self) -> None:
        """Leave the group: the others get this replica's slots at once (no session timeout)."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        consumer, self._consumer = self._consumer, None
        self.member = False
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), 10.0)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("cluster: leaving the group failed (%s)", exc.__class__.__name__)
