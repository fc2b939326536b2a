"""One held slot: its exactly-once pipeline, its sources under supervision, its ingress consumer.

Start, in this order (a handover must neither lose nor repeat):

1. the slot's transactional producer (``transactional_id`` = ``<group_id>-slot-<n>``): its start
   fences the previous owner, even one that is only paused, and aborts that owner's open
   transaction;
2. the slot's dedup state, read from its own partition of the state topic up to the committed end
   (which step 1 made final);
3. the sources whose name hashes to the slot, under their own supervisor, and the ingress consumer
   of the slot's webhook deliveries (from the ingress group's committed offset).

Stop (revoke or shutdown): sources stop taking input and are cancelled, webhook deliveries handed
over settle, the ingress offset past them is committed, the pipeline drains and closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from bridge.delivery.assemble import build_slot_pipeline
from bridge.delivery.ingress import IngressConsumer
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish_tx import FencedError
from bridge.delivery.slots import slot_of
from bridge.ingest.source import Source
from bridge.service.settings import BridgeSettings
from bridge.service.supervisor import Supervisor

__all__ = ["SlotRunner", "SlotFactory"]

log = logging.getLogger(__name__)

SlotFactory = Callable[[Pipeline], Sequence[Source]]


class SlotRunner:
    """Everything one slot runs on this replica, started and stopped as a unit."""

    def __init__(self, slot: int, settings: BridgeSettings, factories: Sequence[SlotFactory]):
        self.slot = slot
        self.settings = settings
        self.factories = factories
        self.pipeline: Pipeline | None = None
        self.supervisor: Supervisor | None = None
        self.sources: list[Source] = []
        self.ingress: IngressConsumer | None = None
        self._ingress_task: asyncio.Task[None] | None = None
        self.started_at: float | None = None
        self.counted_fenced = False

    @property
    def fenced(self) -> bool:
        ingress_fenced = (
            self._ingress_task is not None
            and self._ingress_task.done()
            and not self._ingress_task.cancelled()
            and isinstance(self._ingress_task.exception(), FencedError)
        )
        return ingress_fenced or (self.pipeline is not None and self.pipeline.fenced)

    async def start(self) -> None:
        """Fence, restore, run; on any failure (or cancellation) what was started is closed again."""
        settings, cluster = self.settings, self.settings.cluster
        self.pipeline = build_slot_pipeline(
            settings.kafka,
            settings.topics,
            settings.dedup,
            settings.pipeline,
            settings.schema_registry,
            slot=self.slot,
            slots=cluster.slots,
            transactional_id=cluster.transactional_id(self.slot),
        )
        try:
            await self.pipeline.start(timeout=settings.startup.kafka_timeout_seconds, publisher_first=True)
            for factory in self.factories:
                self.sources.extend(s for s in factory(self.pipeline) if slot_of(s.name, cluster.slots) == self.slot)
            self.supervisor = Supervisor(self.sources, settings.supervisor)
            self.supervisor.start()
            self.ingress = IngressConsumer(
                settings.kafka, cluster.ingress_topic, self.slot, cluster.ingress_group, self.pipeline
            )
            self._ingress_task = asyncio.create_task(self._run_ingress(self.ingress), name=f"ingress:{self.slot}")
        except BaseException:
            await self.stop(timeout=5.0)
            raise
        self.started_at = time.monotonic()
        names = ", ".join(s.name for s in self.sources) or "no source"
        log.info("cluster: slot %d running (%s; webhook deliveries of the slot)", self.slot, names)

    async def _run_ingress(self, ingress: IngressConsumer) -> None:
        """Restarted after a Kafka error; ends on fencing (the slot has a new owner)."""
        while True:
            try:
                await ingress.run()
                return
            except FencedError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker outage; the pipeline holds what was handed over
                log.warning("cluster: ingress of slot %d stopped (%s); restarting", self.slot, exc.__class__.__name__)
                await asyncio.sleep(1.0)

    async def stop(self, timeout: float) -> bool:
        """Drain within ``timeout``; True if everything accepted was committed."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        for source in self.sources:
            source.stop_accepting()
        if self.supervisor is not None:
            await self.supervisor.stop(timeout=min(self.settings.supervisor.cancel_timeout_seconds + 1, left()))
        for source in self.sources:
            try:
                await asyncio.wait_for(source.drain(timeout=left()), timeout=left())
            except TimeoutError:
                pass
        if self.ingress is not None and self._ingress_task is not None and not self._ingress_task.done():
            await self.ingress.drain(timeout=left() / 2)
        if self._ingress_task is not None:
            self._ingress_task.cancel()
            await asyncio.gather(self._ingress_task, return_exceptions=True)
        drained = True
        if self.pipeline is not None:
            try:
                drained = await asyncio.wait_for(self.pipeline.close(timeout=max(0.1, left() - 1.0)), timeout=left())
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - the next owner fences and re-reads
                log.warning("cluster: slot %d pipeline did not close cleanly (%s)", self.slot, exc.__class__.__name__)
                drained = False
        return drained

    def health(self, grace_seconds: float) -> dict[str, Any]:
        return {
            "fenced": self.fenced,
            "kafka": self.pipeline.health() if self.pipeline is not None else None,
            "ingress_consumed": self.ingress.consumed if self.ingress is not None else 0,
            "sources": self.supervisor.snapshot(grace_seconds) if self.supervisor is not None else {},
        }
