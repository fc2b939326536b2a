"""One process for every source: the pipeline, supervised sources, the HTTP server, and a clean exit.

Start-up, in order: health endpoint → dedup state + Kafka (exit 3 if unreachable in time) →
sources built and webhook routes mounted → webhook listener → every source in its own task.

Isolation: each source runs under a keeper task. A source whose ``run`` raises, returns, or stays
disconnected past ``supervisor.stall_restart_seconds`` is cancelled and started again after a
jittered backoff (``ConfigurationError``: at the slower ``config_error_retry_seconds`` pace).
Nothing a source does reaches the pipeline, another source or the HTTP server.

Shutdown (SIGTERM/SIGINT), within ``shutdown.deadline_seconds``: webhooks answer 503 and
``/readyz`` fails → sources are cancelled (sockets stop reading) → webhook deliveries still awaiting
Kafka settle → the pipeline drains every accepted item, the producer flushes, the dedup store is
persisted → listeners close → exit 0. Anything still unacknowledged at the deadline means exit 4:
it was never acknowledged to a provider (webhooks got 503; WebSocket gaps are backfilled), so the
next start recovers it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Collection, Sequence
from enum import IntEnum
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, create_model, model_validator

from bridge.delivery.assemble import build_pipeline
from bridge.delivery.dedup import DedupStoreError
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import SourceKind, registered
from bridge.ingest.settings import AccountsSection
from bridge.ingest.shared import ProviderContexts
from bridge.ingest.source import Source
from bridge.observability import metrics
from bridge.observability.logs import REDACTOR, register_secrets
from bridge.service.gc_tuning import tune_for_service
from bridge.service.http import HttpServer
from bridge.service.reload import Reloader
from bridge.service.settings import BridgeSettings, secret_values
from bridge.service.stuck import publish_open_transfers
from bridge.service.supervisor import Supervisor

if TYPE_CHECKING:
    from bridge.service.cluster.runtime import ClusterRuntime

__all__ = ["ServiceSettings", "ExitCode", "BridgeApp", "build_sources", "SourceFactory"]

log = logging.getLogger(__name__)


class _WithProviders(BridgeSettings):
    @model_validator(mode="after")
    def _enabled_sources_have_accounts(self) -> _WithProviders:
        """An enabled provider without an enabled account would run nothing, silently."""
        for plugin in registered():
            section = getattr(self, plugin.name)
            if isinstance(section, AccountsSection) and section.enabled and not any(a.enabled for a in section.accounts):
                raise ValueError(f"{plugin.name}.accounts: {plugin.name} is enabled but has no enabled account")
        return self


def _service_settings() -> type[BridgeSettings]:
    fields: dict[str, Any] = {plugin.name: (plugin.config, Field(default_factory=plugin.config)) for plugin in registered()}
    model: type[BridgeSettings] = create_model(
        "ServiceSettings",
        __base__=_WithProviders,
        __doc__="The core sections plus one section per installed provider (``BRIDGE_OKX__…``, …).",
        __module__=__name__,
        **fields,
    )
    return model


ServiceSettings = _service_settings()
"""The whole configuration: the core's sections and one section per registered provider."""


class ExitCode(IntEnum):
    OK = 0
    """Stopped on request, everything accepted was acknowledged by Kafka."""
    FAILURE = 1
    """Unexpected error (a bug): the traceback is in the log."""
    CONFIG = 2
    """Usage or configuration error, or a port/dedup file that cannot be used: fix and restart."""
    KAFKA_UNREACHABLE = 3
    """Kafka (or the schema registry) did not answer within ``startup.kafka_timeout_seconds``."""
    SHUTDOWN_INCOMPLETE = 4
    """The shutdown deadline passed with items not yet acknowledged (none were acked upstream)."""
    FENCED = 5
    """Exactly-once mode: another instance took over this transactional id."""


SourceFactory = Callable[[Pipeline], Sequence[Source]]


def build_sources(
    settings: BridgeSettings,
    pipeline: Pipeline,
    shared: ProviderContexts | None = None,
    *,
    kinds: Collection[SourceKind] = ("stream", "webhook", "poll"),
) -> list[Source]:
    """Every enabled source of the configuration (of these kinds), provider by provider as
    registered, each provider's built with its context from ``shared`` (which a reload builds with again)."""
    contexts = shared if shared is not None else ProviderContexts()
    sources: list[Source] = []
    for plugin in registered():
        section = getattr(settings, plugin.name)
        if section.enabled and plugin.kind in kinds:
            sources.extend(contexts.sources(plugin, section, pipeline))
    return sources


def _package_version() -> str:
    try:
        return version("transfer-bridge")
    except PackageNotFoundError:
        return "unknown"


# -- the service --------------------------------------------------------------------------------


class BridgeApp:
    """The whole service in one object; ``await run()`` returns the process exit code."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        extra_sources: Sequence[SourceFactory] = (),
        configured_sources: bool = True,
        install_signal_handlers: bool = True,
        reload_settings: Callable[[], BridgeSettings] | None = None,
        watch_paths: Sequence[Path] = (),
    ):
        """``extra_sources`` add sources of your own (embedding, tests) next to the configured ones;
        ``reload_settings`` reads the configuration again (SIGHUP, changed ``watch_paths``)."""
        self.settings = settings
        self.shared = ProviderContexts()
        """Each provider's shared objects (rate budgets, coordinators), kept across reloads."""
        self._factories: list[SourceFactory] = list(extra_sources)
        if configured_sources:
            self._factories.insert(0, self._configured_sources)
        self.reloader = Reloader(self, reload_settings, watch_paths) if reload_settings is not None else None
        self.cluster: ClusterRuntime | None = None
        if settings.cluster.enabled:  # webhooks here on the ingress pipeline; the rest per held slot
            from bridge.ingest.webhook import WebhookSource
            from bridge.service.cluster.layout import source_slot
            from bridge.service.cluster.runtime import ClusterRuntime

            def slotted(pipeline: Pipeline) -> Sequence[Source]:
                return build_sources(settings, pipeline, self.shared, kinds=("stream", "poll"))

            def receivers(pipeline: Pipeline) -> Sequence[Source]:
                webhook: tuple[SourceKind, ...] = ("webhook",)
                built = build_sources(settings, pipeline, self.shared, kinds=webhook)
                for source in built:  # the route on every replica, a REST backfill on its slot's holder only
                    if isinstance(source, WebhookSource):
                        source.leads_backfill = partial(self._holds, source_slot(source.provider.value, source.name, settings.cluster.slots))
                return built

            configured: list[SourceFactory] = [slotted] if configured_sources else []
            self.cluster = ClusterRuntime(settings, configured + list(extra_sources))
            self._factories = [receivers] if configured_sources else []
        self._install_signals = install_signal_handlers
        self._stop = asyncio.Event()
        self._stop_reason = "requested"
        self.pipeline: Pipeline | None = None
        self._pipeline_closed = False
        self.supervisor: Supervisor | None = None
        self.sources: list[Source] = []
        self.http = HttpServer(
            settings.server, self.readiness, before_scrape=self.refresh_metrics, shutdown_timeout=2.0
        )
        self.started = asyncio.Event()
        """Set once every source runs (tests and embedding code wait for it)."""

    def _configured_sources(self, pipeline: Pipeline) -> list[Source]:
        sources = build_sources(self.settings, pipeline, self.shared)
        if self.reloader is not None:
            self.reloader.adopt(sources)
        return sources

    # -- control -------------------------------------------------------------------------------

    def request_stop(self, reason: str = "requested") -> None:
        if self._stop.is_set():
            log.warning("already shutting down (%s)", reason)
            return
        self._stop_reason = reason
        self._stop.set()

    def _handle_signals(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        if self.reloader is not None:
            try:
                loop.add_signal_handler(signal.SIGHUP, self.reloader.request, "SIGHUP")
                installed.append(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

        def remove() -> None:
            for signum in installed:
                loop.remove_signal_handler(signum)

        return remove

    def _holds(self, slot: int) -> bool:
        """Cluster mode: this replica runs ``slot`` now."""
        return self.cluster is not None and self.cluster.holds(slot)

    # -- health --------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        grace = self.settings.supervisor.readiness_grace_seconds
        if self.pipeline is None or not self.started.is_set():
            return False, {"kafka": {"ready": False, "state": "starting"}, "sources": {}}
        kafka = self.pipeline.health()
        sources = self.supervisor.snapshot(grace) if self.supervisor else {}
        ready = bool(kafka["ready"])
        if self.settings.supervisor.sources_gate_readiness:
            ready = ready and all(s["ready"] for s in sources.values())
        config = self.reloader.view() if self.reloader is not None else {"generation": 1}
        detail = {"kafka": kafka, "sources": REDACTOR.redact_value(sources), "config": REDACTOR.redact_value(config)}
        if self.cluster is not None:  # ready = can accept webhooks: a member, Kafka reachable
            ready = ready and self.cluster.ready
            detail["cluster"] = REDACTOR.redact_value(self.cluster.health(grace))
        return ready, detail

    def refresh_metrics(self) -> None:
        """Gauges that are read rather than counted; called on every scrape."""
        ready, detail = self.readiness()
        metrics.READY.set(1 if ready and not self.http.draining else 0)
        if self.pipeline is not None:
            metrics.KAFKA_REACHABLE.set(1 if self.pipeline.health()["broker_reachable"] else 0)
            metrics.QUEUED.set(self.pipeline.queued)
        if self.settings.dedup.store == "sqlite":
            path = self.settings.dedup.path
            metrics.DEDUP_STORE_BYTES.set(
                sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
            )
        now = time.time()
        for name, snapshot in detail.get("sources", {}).items():
            metrics.SOURCE_READY.labels(name).set(1 if snapshot["ready"] else 0)
        for source in self.sources:
            if source.health.last_event_at is not None:
                metrics.SOURCE_LAST_EVENT_AGE.labels(source.name).set(max(0.0, now - source.health.last_event_at))
        if self.cluster is not None:  # the held slots' gates (the shell's own pipeline only appends to ingress)
            self.cluster.refresh_metrics(self.settings.supervisor.readiness_grace_seconds)
            held = [runner.pipeline.gate.open_transfers for runner in self.cluster.held.values() if runner.pipeline is not None]
            publish_open_transfers(held, self.settings.stuck, now)
        elif self.pipeline is not None:
            publish_open_transfers(self.pipeline.gate.open_transfers, self.settings.stuck, now)

    # -- run -----------------------------------------------------------------------------------

    async def run(self) -> ExitCode:
        settings = self.settings
        register_secrets(secret_values(settings))
        metrics.BUILD_INFO.labels(_package_version()).set(1)
        remove_signals = self._handle_signals() if self._install_signals else (lambda: None)
        try:
            return await self._run()
        finally:
            remove_signals()

    async def _run(self) -> ExitCode:
        settings = self.settings
        try:
            await self.http.start_admin()
        except OSError as exc:
            return self._config_failure(f"server.admin_port {settings.server.admin_port}: cannot listen ({exc.strerror})")
        try:
            code = await self._start()
            if code is not None:
                return code
            if self._install_signals:  # the service's own process (the CLI), never an embedding test
                tune_for_service()
            stopper = asyncio.create_task(self._stop.wait())
            fenced = asyncio.create_task(self._watch_fencing())
            if self.reloader is not None:
                self.reloader.start()
            await asyncio.wait({stopper, fenced}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            fenced.cancel()
            if self.reloader is not None:  # a reload in progress finishes first: no half-applied change
                await self.reloader.stop()
            return await self._shutdown()
        except BaseException:
            await self._abort()
            raise
        finally:
            await self.http.stop()

    async def _start(self) -> ExitCode | None:
        settings = self.settings
        log.info(
            "starting transfer-bridge %s (kafka %s, dedup %s)",
            _package_version(),
            settings.kafka.bootstrap_servers,
            settings.dedup.store,
        )
        try:
            self.pipeline = self._build_pipeline()
        except DedupStoreError as exc:  # a directory, a corrupt or read-only file: one line, exit 2
            return self._config_failure(f"dedup.path {exc}")
        except (OSError, ValueError) as exc:
            return self._config_failure(f"dedup: cannot open the store ({exc.__class__.__name__}: {exc})")
        starting = asyncio.create_task(self.pipeline.start(timeout=settings.startup.kafka_timeout_seconds))
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not starting.done():  # asked to stop while still connecting: nothing accepted yet
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            log.info("stopped before Kafka was reached (%s)", self._stop_reason)
            await self._close_pipeline(2.0)
            return ExitCode.OK
        error = starting.exception()
        if error is not None:
            return await self._start_failure(error)
        try:
            for factory in self._factories:
                self.sources.extend(factory(self.pipeline))
        except (ValueError, TypeError) as exc:
            await self._close_pipeline(5.0)
            return self._config_failure(f"building sources: {exc}")
        for source in self.sources:
            source.add_routes(self.http.public)
        try:
            await self.http.start_webhooks()
        except OSError as exc:
            await self._close_pipeline(5.0)
            return self._config_failure(f"server.port {settings.server.port}: cannot listen ({exc.strerror})")
        self.supervisor = Supervisor(self.sources, settings.supervisor)
        self.supervisor.start()
        if self.cluster is not None:
            code = await self._start_cluster(self.cluster)
            if code is not None:
                return code
        self.started.set()
        names = ", ".join(source.name for source in self.sources) or "none"
        log.info("running; sources: %s", names, extra={"sources": [s.name for s in self.sources]})
        if not self.sources and (self.cluster is None or not self.cluster.factories):  # slot sources run in the cluster
            names = ", ".join(plugin.name for plugin in registered())
            log.warning("no source is enabled: nothing will be published (enable one of %s in the config)", names)
        return None

    def _build_pipeline(self) -> Pipeline:
        settings = self.settings
        if self.cluster is not None:
            from bridge.delivery.ingress import build_ingress_pipeline

            cluster = settings.cluster
            return build_ingress_pipeline(
                settings.kafka, settings.topics, settings.pipeline, ingress_topic=cluster.ingress_topic,
                slots=cluster.slots, group_id=cluster.group_id
            )
        return build_pipeline(settings.kafka, settings.topics, settings.dedup, settings.pipeline, settings.schema_registry)

    async def _start_cluster(self, cluster: ClusterRuntime) -> ExitCode | None:
        """Topics checked (exit 2 if they cannot hold the slots), then a seat in the group."""
        from bridge.service.cluster.runtime import ClusterConfigError

        try:
            await cluster.prepare()
            await cluster.start()
        except ClusterConfigError as exc:
            await self._abort()
            return self._config_failure(str(exc))
        except Exception as exc:  # noqa: BLE001 - Kafka went away between the pipeline's start and here
            await self._abort()
            log.error("cannot start: cluster membership: %s", exc.__class__.__name__, extra={"exit_code": 3})
            return ExitCode.KAFKA_UNREACHABLE
        return None

    async def _start_failure(self, error: BaseException) -> ExitCode:
        from bridge.kafka.registry import RegistryError

        await self._close_pipeline(2.0)
        if isinstance(error, (ConnectionError, RegistryError)):
            log.error("cannot start: %s", error, extra={"exit_code": int(ExitCode.KAFKA_UNREACHABLE)})
            return ExitCode.KAFKA_UNREACHABLE
        if isinstance(error, DedupStoreError):  # found while loading the state
            return self._config_failure(f"dedup.path {error}")
        if isinstance(error, OSError):
            return self._config_failure(f"dedup.path {self.settings.dedup.path}: {error}")
        log.error("cannot start", exc_info=error)
        return ExitCode.FAILURE

    def _config_failure(self, message: str) -> ExitCode:
        log.error("invalid configuration: %s", message, extra={"exit_code": int(ExitCode.CONFIG), "redact_names": False})
        return ExitCode.CONFIG

    async def _watch_fencing(self) -> None:
        while self.pipeline is not None and not self.pipeline.fenced:
            await asyncio.sleep(0.5)
        self._stop_reason = "fenced"

    async def _shutdown(self) -> ExitCode:
        """Stop intake, let everything accepted reach Kafka, persist, all within the deadline."""
        deadline = time.monotonic() + self.settings.shutdown.deadline_seconds
        fenced = self._stop_reason == "fenced"
        log.info(
            "shutting down (%s); deadline %.1fs",
            self._stop_reason,
            self.settings.shutdown.deadline_seconds,
            extra={"in_flight": self.pipeline.in_flight if self.pipeline else 0},
        )
        self.http.begin_drain()
        for source in self.sources:
            source.stop_accepting()

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self.cluster is not None:  # held slots drain, then the group hands them over at once
            await self.cluster.stop(timeout=max(1.0, left() - 3.0))
        if self.supervisor is not None:
            await self.supervisor.stop(timeout=min(self.settings.supervisor.cancel_timeout_seconds + 1, left()))
        for source in self.sources:  # deliveries still awaiting Kafka settle before the pipeline closes
            try:
                await asyncio.wait_for(source.drain(timeout=max(0.0, left() - 1.0)), timeout=left())
            except TimeoutError:
                pass
        drained = await self._close_pipeline(left())
        in_flight = self.pipeline.in_flight if self.pipeline else 0
        store_failure = self.pipeline.store_failure if self.pipeline else None
        if fenced:
            log.error("fenced: another instance owns this transactional id; exiting", extra={"exit_code": int(ExitCode.FENCED)})
            return ExitCode.FENCED
        if store_failure is not None:  # what failed is the disk under the dedup store, not Kafka
            also = (
                f"; also {in_flight} items not acknowledged by Kafka (none acknowledged upstream)" if not drained else ""
            )
            log.error(
                "shutdown: dedup store %s%s; free space on its volume (or fix it) before restarting",
                store_failure,
                also,
                extra={"exit_code": int(ExitCode.CONFIG), "in_flight": in_flight, "redact_names": False},
            )
            return ExitCode.CONFIG
        if not drained:
            log.error(
                "shutdown deadline passed with %d items not acknowledged by Kafka; none was acknowledged "
                "upstream, so webhooks are retried by the provider and socket gaps backfilled on the next start",
                in_flight,
                extra={"exit_code": int(ExitCode.SHUTDOWN_INCOMPLETE), "in_flight": in_flight},
            )
            return ExitCode.SHUTDOWN_INCOMPLETE
        log.info("stopped cleanly: every accepted item acknowledged by Kafka, dedup state persisted")
        return ExitCode.OK

    async def _close_pipeline(self, budget: float) -> bool:
        """Drain, flush and persist within ``budget`` seconds; False if anything was left."""
        if self.pipeline is None or self._pipeline_closed:
            return True
        self._pipeline_closed = True
        pipeline, started = self.pipeline, time.monotonic()
        drain_budget = max(0.0, budget - 1.5)  # keep time for the producer stop and the store close
        try:
            drained = await asyncio.wait_for(pipeline.close(timeout=drain_budget), timeout=max(budget, 0.5))
        except TimeoutError:
            log.error("pipeline did not close within %.1fs", time.monotonic() - started)
            return False
        except Exception:
            log.exception("pipeline close failed")
            return False
        return drained

    async def _abort(self) -> None:
        """On an unexpected error or cancellation: stop sources and close what we can, fast."""
        if self.reloader is not None:
            await self.reloader.stop(finish_current=False)
        if self.cluster is not None:
            await self.cluster.stop(timeout=5.0)
        if self.supervisor is not None:
            await self.supervisor.stop(timeout=2.0)
        await self._close_pipeline(5.0)
