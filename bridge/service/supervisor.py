"""Keeps every source running on its own: a failing source never touches the others.

Each source runs under a keeper task. A source whose ``run`` raises, returns, or stays
disconnected past ``supervisor.stall_restart_seconds`` is cancelled and started again after a
jittered backoff (``ConfigurationError``: at the slower ``config_error_retry_seconds`` pace).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.ingest.backoff import Backoff
from bridge.ingest.source import ConfigurationError, Source
from bridge.observability import metrics
from bridge.observability.logs import REDACTOR, log_context
from bridge.service.settings import SupervisorSettings

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)


@dataclass
class _Kept:
    """One source under supervision and what the supervisor knows about it."""

    source: Source
    state: str = "starting"
    restarts: int = 0
    last_exit: str | None = None
    down_since: float | None = None
    runner: asyncio.Task[None] | None = None
    keeper: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_exit": self.last_exit}


class Supervisor:
    """Keeps every source running on its own; a failing source never touches the others."""

    def __init__(self, sources: Sequence[Source], settings: SupervisorSettings, *, check_interval: float = 0.5):
        self.settings = settings
        self.check_interval = check_interval
        self.kept = {source.name: _Kept(source) for source in sources}
        if len(self.kept) != len(sources):
            raise ValueError("source names must be unique")

    def start(self) -> None:
        for kept in self.kept.values():
            kept.keeper = asyncio.create_task(self._keep(kept), name=f"keeper:{kept.source.name}")

    def add(self, source: Source) -> None:
        """Keep one more source (a configuration reload added or restarted it)."""
        if source.name in self.kept:
            raise ValueError(f"source {source.name} is already supervised")
        kept = self.kept[source.name] = _Kept(source)
        kept.keeper = asyncio.create_task(self._keep(kept), name=f"keeper:{source.name}")

    async def remove(self, name: str) -> None:
        """Stop keeping ``name``: cancel its run and wait for it (a reload removed or changed it)."""
        kept = self.kept.pop(name, None)
        if kept is None or kept.keeper is None:
            return
        kept.keeper.cancel()
        await asyncio.gather(kept.keeper, return_exceptions=True)
        kept.state = "stopped"

    async def stop(self, timeout: float) -> None:
        """Cancel every source (each keeper waits up to ``cancel_timeout_seconds`` for its run to end)."""
        keepers = [k.keeper for k in self.kept.values() if k.keeper is not None and not k.keeper.done()]
        for keeper in keepers:
            keeper.cancel()
        if keepers:
            done, pending = await asyncio.wait(keepers, timeout=timeout)
            for keeper in pending:
                log.error("source %s did not stop in time; leaving it behind", keeper.get_name().removeprefix("keeper:"))
        for kept in self.kept.values():
            kept.state = "stopped"

    def snapshot(self, grace_seconds: float) -> dict[str, dict[str, Any]]:
        return {
            name: {**kept.source.health.snapshot(grace_seconds), "supervisor": kept.view()}
            for name, kept in self.kept.items()
        }

    async def _keep(self, kept: _Kept) -> None:
        source, cfg = kept.source, self.settings
        account = source.health.detail.get("account")
        backoff = Backoff(initial=cfg.restart_initial_seconds, maximum=cfg.restart_max_seconds, min_uptime=cfg.min_uptime_seconds)
        with log_context(source=source.name, provider=source.provider.value, account=account):
            try:
                while True:
                    backoff.connected()  # uptime counts from each start: a long run resets the delay
                    kept.state, kept.down_since = "running", time.monotonic()
                    kept.runner = asyncio.create_task(self._run(source), name=f"source:{source.name}")
                    reason = await self._watch(kept)
                    kept.restarts += 1
                    kept.last_exit = reason
                    metrics.SOURCE_RESTARTS.labels(source.name, reason).inc()
                    delay = cfg.config_error_retry_seconds if reason == "config_error" else backoff.next_delay()
                    kept.state = "backing_off"
                    log.warning("source %s stopped (%s); restarting in %.2fs", source.name, reason, delay, extra={"reason": reason})
                    await asyncio.sleep(delay)
            finally:
                await self._end(kept)

    @staticmethod
    async def _run(source: Source) -> None:
        await source.run()

    async def _watch(self, kept: _Kept) -> str:
        """Wait for the run to end or stall; returns why it has to be restarted."""
        runner, health, cfg = kept.runner, kept.source.health, self.settings
        assert runner is not None
        while True:
            done, _ = await asyncio.wait({runner}, timeout=self.check_interval)
            if done:
                return self._exit_reason(kept, runner)
            now = time.monotonic()
            if health.connected:
                kept.down_since = None
            elif kept.down_since is None:
                kept.down_since = now
            stalled = (
                cfg.stall_restart_seconds > 0
                and not health.config_error
                and kept.down_since is not None
                and now - kept.down_since > cfg.stall_restart_seconds
            )
            if stalled:
                log.error(
                    "source %s disconnected for %.0fs without recovering; restarting it",
                    kept.source.name,
                    now - kept.down_since,  # type: ignore[operator]
                )
                health.mark_disconnected(f"not connected for {cfg.stall_restart_seconds:g}s; restarted")
                await self._end(kept)
                return "stalled"

    @staticmethod
    def _exit_reason(kept: _Kept, runner: asyncio.Task[None]) -> str:
        health = kept.source.health
        if runner.cancelled():
            health.mark_disconnected("run was cancelled")
            return "exited"
        error = runner.exception()
        if error is None:
            log.error("source %s returned from run(); a source should run until cancelled", kept.source.name)
            health.mark_disconnected("run() returned")
            return "exited"
        if isinstance(error, ConfigurationError):
            log.error("source %s: configuration refused: %s", kept.source.name, error)
            health.mark_disconnected(REDACTOR.redact(str(error)), config_error=True)
            return "config_error"
        log.error("source %s crashed", kept.source.name, exc_info=error)
        health.mark_disconnected(REDACTOR.redact(f"{error.__class__.__name__}: {error}"))
        return "crashed"

    async def _end(self, kept: _Kept) -> None:
        """Cancel the run and wait for it; one that ignores cancellation is cancelled again."""
        runner = kept.runner
        if runner is None:
            return
        kept.state = "stopping"
        while not runner.done():
            runner.cancel()
            done, _ = await asyncio.wait({runner}, timeout=self.settings.cancel_timeout_seconds)
            if not done:
                log.error("source %s ignores cancellation; cancelling again", kept.source.name)
        if not runner.cancelled():
            runner.exception()  # retrieved: an exception on the way out is expected, not news
        kept.runner = None
