"""Live reload of the configuration: SIGHUP, or a changed config file or secrets directory.

A reload reads the whole configuration again, exactly as the start did, and compares it with the
running one section by section and, for providers with accounts, account by account (sources are
keyed by name: ``okx:<account>``):

* an added account starts; a removed one stops taking input, drains what it accepted and stops;
  a changed one is stopped, then started with its new settings; an untouched one is not touched
  (its connection stays open). Added and changed accounts join the provider-level objects of the
  running ones (``bridge.ingest.shared``: Binance's IP weight budget, OKX's backfill coordinator).
  A change to a provider's shared settings (anything but ``accounts``) restarts every source of
  that provider, with fresh provider-level objects.
* a webhook receiver whose settings changed (a rotated secret) is swapped without a gap: its
  route answers with the new receiver from the moment it is built; the old one drains.
* ``stuck``, ``supervisor``, ``shutdown``, ``startup`` and ``reload`` apply as they are.
* every other section (Kafka, topics, dedup store, schema registry, pipeline, server ports, logs,
  secrets_dir) cannot change under a running pipeline: such a reload is refused whole, with the
  names of the sections, and nothing of it is applied.

An invalid new configuration (it does not validate, or a source cannot be built from it) is
refused with one log line and the running one keeps running. Every applied reload increments the
generation shown in ``/readyz`` (``config.generation``) and ``bridge_config_generation``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin, registered
from bridge.ingest.settings import AccountsSection
from bridge.ingest.shared import ProviderContexts, shared_settings
from bridge.ingest.source import Source
from bridge.observability import metrics
from bridge.observability.logs import register_secrets
from bridge.service.gc_tuning import refreeze
from bridge.service.http import HttpServer
from bridge.service.settings import BridgeSettings, ConfigError, secret_values
from bridge.service.supervisor import Supervisor

__all__ = ["Reloader", "ReloadHost", "Plan", "LIVE_SECTIONS", "plan_reload"]

log = logging.getLogger(__name__)

LIVE_SECTIONS = frozenset({"stuck", "supervisor", "shutdown", "startup", "reload"})
"""Core sections a reload applies as they are (read where they are used); the others are fixed."""


class ReloadHost(Protocol):
    """What the reloader changes in the running service (``BridgeApp``)."""

    settings: BridgeSettings
    sources: list[Source]
    pipeline: Pipeline | None
    supervisor: Supervisor | None
    http: HttpServer
    shared: ProviderContexts


@dataclass
class Plan:
    """What a reload changes: sources to stop (by name) and sections to build sources from."""

    stop: list[str] = field(default_factory=list)
    build: list[tuple[ProviderPlugin, BaseModel]] = field(default_factory=list)
    live: list[str] = field(default_factory=list)


def fixed_changes(old: BridgeSettings, new: BridgeSettings) -> list[str]:
    """Core sections that differ and cannot change while running."""
    providers = {plugin.name for plugin in registered()}
    return [
        name
        for name in type(old).model_fields
        if name not in LIVE_SECTIONS and name not in providers and getattr(old, name) != getattr(new, name)
    ]


def plan_reload(old: BridgeSettings, new: BridgeSettings, running: Sequence[str]) -> Plan:
    """Diff two configurations into a plan; ``running`` are the names of the configured sources."""
    plan = Plan(live=[name for name in sorted(LIVE_SECTIONS) if getattr(old, name, None) != getattr(new, name, None)])
    for plugin in registered():
        before, after = getattr(old, plugin.name), getattr(new, plugin.name)
        mine = [name for name in running if name.startswith(f"{plugin.name}:")]
        if before == after:
            continue
        accounts_only = (
            isinstance(before, AccountsSection)
            and isinstance(after, AccountsSection)
            and before.enabled
            and after.enabled
            and shared_settings(before) == shared_settings(after)
        )
        if not accounts_only:  # shared settings (or enabled) changed: the provider's sources all restart
            plan.stop += mine
            if after.enabled:
                plan.build.append((plugin, after))
            continue
        assert isinstance(before, AccountsSection) and isinstance(after, AccountsSection)
        old_accounts = {a.name: a for a in before.enabled_accounts()}
        new_accounts = {a.name: a for a in after.enabled_accounts()}
        rebuild = [account for name, account in new_accounts.items() if old_accounts.get(name) != account]
        plan.stop += [f"{plugin.name}:{name}" for name, account in old_accounts.items() if new_accounts.get(name) != account]
        unmatched = [name for name in mine if name.split(":", 1)[1] not in old_accounts]
        if unmatched and (rebuild or plan.stop):  # a source not named after its account: restart them all
            plan.stop += [name for name in mine if name not in plan.stop]
            rebuild = list(new_accounts.values())
        if rebuild:
            plan.build.append((plugin, after.model_copy(update={"accounts": rebuild})))
    plan.stop = [name for name in dict.fromkeys(plan.stop) if name in running]
    return plan


def _forget_metrics(name: str) -> None:
    """A removed source's gauges go away rather than keep its last value (an alert on a ghost)."""
    for gauge in (metrics.SOURCE_READY, metrics.SOURCE_LAST_EVENT_AGE):
        try:
            gauge.remove(name)
        except KeyError:
            pass


def fingerprint(paths: Sequence[Path]) -> str:
    """Digest of the watched files' contents (a secrets directory: each file in it, dot-entries
    skipped like the loader does); a missing path counts as its own state."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file).encode() + b"\0")
            try:
                digest.update(file.read_bytes())
            except OSError:
                digest.update(b"\0missing")
    return digest.hexdigest()


class Reloader:
    """Applies reloads one at a time; ``request`` is safe from a signal handler."""

    def __init__(self, host: ReloadHost, load: Callable[[], BridgeSettings], watch: Sequence[Path] = ()):
        self.host = host
        self._load = load
        self._watch = [Path(p) for p in watch]
        self.generation = 1
        self.last: dict[str, Any] = {"result": "started", "at": time.time()}
        self._lock = asyncio.Lock()
        self._requests: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._configured: list[str] = []
        metrics.CONFIG_GENERATION.set(self.generation)

    def adopt(self, sources: Sequence[Source]) -> None:
        """The configured sources the service started with (the ones a reload may change)."""
        self._configured = [source.name for source in sources]

    def view(self) -> dict[str, Any]:
        return {"generation": self.generation, "last_reload": self.last}

    def request(self, reason: str = "SIGHUP") -> None:
        self._requests.put_nowait(reason)

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="config-reload")

    async def stop(self, *, finish_current: bool = True) -> None:
        """Stop watching; a reload in progress completes first (``finish_current``) so none is half-applied."""
        if self._task is None:
            return
        if finish_current:
            async with self._lock:
                self._task.cancel()
        else:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _serve(self) -> None:
        watched = self._watched()
        known = await asyncio.to_thread(fingerprint, watched) if watched else ""
        changing: str | None = None  # a changed fingerprint seen once: reloaded when the next look agrees
        while True:
            interval = self.host.settings.reload.watch_seconds
            try:
                reason = await asyncio.wait_for(self._requests.get(), timeout=interval if interval > 0 and watched else None)
                # Signals that came before this reload starts are all served by it: a SIGHUP storm
                # is one reload (and one log line), not one per signal.
                while not self._requests.empty():
                    self._requests.get_nowait()
                current = await asyncio.to_thread(fingerprint, watched) if watched else ""
            except TimeoutError:
                current = await asyncio.to_thread(fingerprint, watched)
                if current == known:
                    changing = None
                    continue
                if current != changing:  # still being written (or just written): look again next tick
                    changing = current
                    continue
                reason = "configuration files changed"
            # What this reload reads is at least as new as ``current``: a write landing while it runs
            # differs from it and is reloaded on the next tick (taking the fingerprint after the
            # reload would mark that write as seen and never apply it).
            known, changing = current, None
            try:
                await self.reload(reason)
            except Exception:  # a bug in a reload must not end reloading, nor the service
                log.exception("configuration reload failed (%s); the running configuration stays", reason)
            if self._watched() != watched:
                watched = self._watched()
                known = await asyncio.to_thread(fingerprint, watched) if watched else ""

    def _watched(self) -> list[Path]:
        secrets_dir = self.host.settings.secrets_dir
        return self._watch + ([secrets_dir] if secrets_dir is not None else [])

    # -- one reload ----------------------------------------------------------------------------

    async def reload(self, reason: str = "requested") -> str:
        """Load, check, apply; returns ``applied``, ``unchanged`` or ``refused``."""
        async with self._lock:
            host = self.host
            if host.settings.cluster.enabled:
                # Slots own the stream and poll sources and move between replicas: a rolling restart
                # applies a new configuration with no loss (each slot hands over), a partial live
                # change per replica would let replicas disagree about the accounts.
                return self._refused(reason, "cluster mode applies configuration changes by rolling the replicas, not live")
            try:
                new = await asyncio.to_thread(self._load)
            except (ConfigError, ValueError, OSError) as exc:
                return self._refused(reason, str(exc))
            fixed = fixed_changes(host.settings, new)
            if fixed:
                return self._refused(
                    reason, f"{', '.join(fixed)} cannot change while running (restart the process to apply)"
                )
            plan = plan_reload(host.settings, new, self._configured)
            if new == host.settings:
                self.last = {"result": "unchanged", "at": time.time(), "reason": reason}
                metrics.CONFIG_RELOADS.labels("unchanged").inc()
                log.info("configuration reload (%s): nothing changed; generation %d keeps running", reason, self.generation)
                return "unchanged"
            register_secrets(secret_values(new))  # before anything built from it can log
            try:
                built = self._build(plan)
            except (ValueError, TypeError) as exc:
                self._retain(host.settings)
                return self._refused(reason, f"building sources: {exc}")
            await self._apply(plan, built)
            host.settings = new
            self._retain(new)
            self.generation += 1
            metrics.CONFIG_GENERATION.set(self.generation)
            metrics.CONFIG_RELOADS.labels("applied").inc()
            names = [source.name for source in built]
            summary = {
                "added": [n for n in names if n not in plan.stop],
                "removed": [n for n in plan.stop if n not in names],
                "restarted": [n for n in names if n in plan.stop],
                "sections": plan.live,
            }
            self.last = {"result": "applied", "at": time.time(), "reason": reason, **summary}
            log.info(
                "configuration generation %d applied (%s): started %s, stopped %s, restarted %s, sections %s",
                self.generation,
                reason,
                summary["added"] or "none",
                summary["removed"] or "none",
                summary["restarted"] or "none",
                plan.live or "none",
                extra={"generation": self.generation, **summary},
            )
            return "applied"

    def _refused(self, reason: str, why: str) -> str:
        metrics.CONFIG_RELOADS.labels("refused").inc()
        self.last = {"result": "refused", "at": time.time(), "reason": reason, "error": why}
        log.error(
            "configuration reload refused (%s): %s; generation %d keeps running",
            reason,
            why,
            self.generation,
            extra={"generation": self.generation, "redact_names": False},
        )
        return "refused"

    def _build(self, plan: Plan) -> list[Source]:
        """Every new source, built before anything stops, so a failure changes nothing."""
        pipeline = self.host.pipeline
        assert pipeline is not None
        built: list[Source] = []
        for plugin, section in plan.build:
            built.extend(self.host.shared.sources(plugin, section, pipeline))  # joins the running accounts' objects
        staying = set(self.host.supervisor.kept if self.host.supervisor else ()) - set(plan.stop)
        clash = sorted({source.name for source in built} & staying)
        names = [source.name for source in built]
        if clash or len(set(names)) != len(names):
            raise ValueError(f"source names already running or repeated: {', '.join(clash or names)}")
        return built

    def _retain(self, settings: BridgeSettings) -> None:
        """Forget the provider contexts no source of ``settings`` uses any more."""
        self.host.shared.retain({plugin.name: getattr(settings, plugin.name) for plugin in registered()})

    async def _apply(self, plan: Plan, built: list[Source]) -> None:
        host, supervisor = self.host, self.host.supervisor
        assert supervisor is not None
        # Webhook receivers first: their routes answer with the new receiver from now on.
        served: set[tuple[str, str]] = set()
        for source in built:
            scratch = web.Application()
            source.add_routes(scratch)
            if scratch.router.routes():
                served |= await host.http.forward(scratch)
        old = [s for s in host.sources if s.name in plan.stop]
        moved = {s.name for s in built}
        for source in old:
            source.stop_accepting()
        await asyncio.gather(*(supervisor.remove(source.name) for source in old))
        cancel_timeout = host.settings.supervisor.cancel_timeout_seconds
        await asyncio.gather(*(source.drain(timeout=cancel_timeout * 2) for source in old))
        for source in old:
            # A receiver back under the same name keeps the paths it serves again; a path it left
            # (a new ``path`` setting) answers 404 instead of the drained receiver's 503.
            host.http.unroute(source, keep=served)
            if source.name not in moved:
                _forget_metrics(source.name)
        host.sources[:] = [s for s in host.sources if s.name not in plan.stop] + built
        self._configured = [n for n in self._configured if n not in plan.stop] + [s.name for s in built]
        for source in built:
            supervisor.add(source)
        if old:
            refreeze()  # the replaced sources were frozen with everything else at start
