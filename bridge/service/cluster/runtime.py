"""Cluster mode in the service shell: topics checked, a seat in the group, the held slots run.

The shell (``bridge.service.app``) keeps serving webhooks on every replica through the ingress
pipeline and asks this runtime for membership and the slots. A slot is started when the group
assigns it (in the background: a state restore must not hold the group up) and drained before a
revoke completes. A slot whose producer was fenced (this replica was paused past its session and
the slot has a new owner) is stopped at once; if the group still assigns it here after that, it is
started again, which fences the other in turn — the group, not the replicas, decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError

from bridge.delivery.ingress import ensure_topic
from bridge.observability import metrics
from bridge.service.cluster.membership import Membership
from bridge.service.cluster.slot import SlotFactory, SlotRunner
from bridge.service.settings import BridgeSettings

__all__ = ["ClusterRuntime", "ClusterConfigError"]

log = logging.getLogger(__name__)


class ClusterConfigError(ValueError):
    """The cluster's topics do not fit ``cluster.slots`` (exit 2, one line)."""


class ClusterRuntime:
    def __init__(self, settings: BridgeSettings, factories: Sequence[SlotFactory]):
        self.settings = settings
        self.cluster = settings.cluster
        self.factories = list(factories)
        self.held: dict[int, SlotRunner] = {}
        self._starting: dict[int, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self.membership = Membership(
            settings.kafka, settings.cluster, on_assigned=self._assigned, on_revoked=self._revoked
        )
        self.handovers: list[float] = []
        self.fenced = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the coordination and ingress topics when missing; refuse topics with too few
        partitions (a slot without its partition could never run)."""
        cluster, topics = self.cluster, self.settings.topics
        rf = topics.replication_factor
        wanted = {
            cluster.coordination_topic: (cluster.slots, {}),
            cluster.ingress_topic: (cluster.slots, {"retention.ms": str(cluster.ingress_retention_ms)}),
            self.settings.dedup.state_topic: (
                max(topics.partitions, cluster.slots),
                {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
            ),
        }
        for topic, (partitions, configs) in wanted.items():
            found = await ensure_topic(self.settings.kafka, topic, partitions, rf, configs)
            exact = topic == cluster.coordination_topic
            if (exact and found != cluster.slots) or found < cluster.slots:
                need = "exactly" if exact else "at least"
                raise ClusterConfigError(
                    f"cluster: topic {topic} has {found} partitions, cluster.slots {cluster.slots} needs {need} "
                    f"{cluster.slots}"
                )

    async def start(self) -> None:
        await self.membership.start()
        self._watcher = asyncio.create_task(self._watch_fencing(), name="cluster-fencing")
        log.info(
            "cluster: joined group %s (%d slots, session %d ms)",
            self.cluster.group_id,
            self.cluster.slots,
            self.cluster.session_timeout_ms,
        )

    async def stop(self, timeout: float) -> None:
        """Drain every held slot, then leave the group so the others take them over at once."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self._revoked(set(self.held) | set(self._starting), timeout=max(1.0, timeout - 2.0))
        await self.membership.stop()
        metrics.CLUSTER_MEMBER.set(0)

    # -- the group's decisions -------------------------------------------------------------------

    async def _assigned(self, slots: set[int]) -> None:
        metrics.CLUSTER_MEMBER.set(1)
        for slot in sorted(slots):
            if slot not in self.held and slot not in self._starting:
                self._starting[slot] = asyncio.create_task(self._acquire(slot), name=f"slot-start:{slot}")

    async def _acquire(self, slot: int) -> None:
        began = time.monotonic()
        delay = 0.5
        try:
            while True:
                runner = SlotRunner(slot, self.settings, self.factories)
                try:
                    await runner.start()
                    break
                except (KafkaError, ConnectionError, OSError) as exc:
                    log.warning("cluster: slot %d could not start (%s); retrying", slot, exc.__class__.__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self.held[slot] = runner
            took = time.monotonic() - began
            self.handovers.append(took)
            metrics.CLUSTER_HANDOVER.observe(took)
            metrics.CLUSTER_SLOTS_HELD.set(len(self.held))
            log.info("cluster: slot %d taken over in %.2fs", slot, took, extra={"slot": slot, "handover_seconds": took})
        except Exception:
            log.exception("cluster: slot %d failed to start", slot)
        finally:
            self._starting.pop(slot, None)

    async def _revoked(self, slots: set[int], timeout: float | None = None) -> None:
        budget = timeout if timeout is not None else self.cluster.rebalance_timeout_ms / 1000 * 0.8
        starting = [self._starting.pop(s) for s in slots if s in self._starting]
        for task in starting:
            task.cancel()
        if starting:
            await asyncio.gather(*starting, return_exceptions=True)
        runners = [self.held.pop(s) for s in sorted(slots) if s in self.held]
        if runners:
            results = await asyncio.gather(*(r.stop(timeout=budget) for r in runners), return_exceptions=True)
            for runner, result in zip(runners, results, strict=True):
                self._count_fenced(runner)
                if result is not True:
                    log.warning("cluster: slot %d handed over with items not committed (its next owner re-reads them)", runner.slot)
        metrics.CLUSTER_SLOTS_HELD.set(len(self.held))

    async def _watch_fencing(self) -> None:
        """A fenced slot is stopped here; the group decides whether it comes back."""
        while True:
            await asyncio.sleep(0.5)
            for slot, runner in list(self.held.items()):
                if not runner.fenced:
                    continue
                self._count_fenced(runner)
                log.error("cluster: slot %d was fenced by a newer owner; stopping it here", slot)
                self.held.pop(slot, None)
                await runner.stop(timeout=5.0)
                metrics.CLUSTER_SLOTS_HELD.set(len(self.held))
                await asyncio.sleep(2.0)  # a paused replica learns of the rebalance on its next heartbeat
                if slot in self.membership.assigned and self.membership.member:
                    await self._assigned({slot})

    def _count_fenced(self, runner: SlotRunner) -> None:
        """Once per slot run whose late writes met a newer owner's fence (found running or at its stop)."""
        if runner.fenced and not runner.counted_fenced:
            runner.counted_fenced = True
            self.fenced += 1
            metrics.CLUSTER_FENCED.inc()
            log.warning("cluster: slot %d: this replica's producer was fenced by the slot's new owner", runner.slot)

    # -- health ----------------------------------------------------------------------------------

    def refresh_metrics(self, grace_seconds: float) -> None:
        """The held slots' sources in the per-source gauges (the shell refreshes its receivers')."""
        now = time.time()
        for runner in self.held.values():
            if runner.supervisor is not None:
                for name, snapshot in runner.supervisor.snapshot(grace_seconds).items():
                    metrics.SOURCE_READY.labels(name).set(1 if snapshot["ready"] else 0)
            for source in runner.sources:
                if source.health.last_event_at is not None:
                    metrics.SOURCE_LAST_EVENT_AGE.labels(source.name).set(max(0.0, now - source.health.last_event_at))

    @property
    def ready(self) -> bool:
        return self.membership.member

    def health(self, grace_seconds: float) -> dict[str, Any]:
        return {
            "member": self.membership.member,
            "group": self.cluster.group_id,
            "slots": sorted(self.held),
            "starting": sorted(self._starting),
            "assigned": sorted(self.membership.assigned),
            "rebalances": self.membership.rebalances,
            "fenced": self.fenced,
            "held": {str(slot): runner.health(grace_seconds) for slot, runner in sorted(self.held.items())},
        }
