"""What every source offers the service shell: a run loop, a health view, and its lifecycle hooks.

A source owns its transport (a connection, a webhook route, a poll loop) and hands parsed items to
the pipeline. The shell supervises ``run`` (restarts it with backoff if it raises), reads
``health`` for ``/readyz``, mounts ``add_routes`` on its webhook server, and at shutdown calls
``stop_accepting`` then ``drain``. ``SourceBase`` gives every hook a harmless default, so the shell
treats every kind of source alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from aiohttp import web

from bridge.contract.events import Provider

__all__ = ["Source", "SourceBase", "SourceHealth", "ConfigurationError"]


class ConfigurationError(Exception):
    """The provider refused our credentials or request: retrying fast will not help.

    The message names the account and the provider's reason, never a secret.
    """


@dataclass
class SourceHealth:
    """Mutable health of one source; the source updates it, the shell reads it."""

    name: str
    connected: bool = False
    connected_since: float | None = None
    last_event_at: float | None = None
    last_error: str | None = None
    config_error: bool = False
    started_at: float = field(default_factory=time.monotonic)
    detail: dict[str, Any] = field(default_factory=dict)

    def mark_connected(self) -> None:
        self.connected = True
        self.connected_since = time.monotonic()
        self.last_error = None
        self.config_error = False

    def mark_disconnected(self, error: str | None = None, *, config_error: bool = False) -> None:
        self.connected = False
        self.connected_since = None
        if error is not None:
            self.last_error = error
        self.config_error = config_error

    def mark_event(self) -> None:
        self.last_event_at = time.time()

    def snapshot(self, grace_seconds: float) -> dict[str, Any]:
        within_grace = time.monotonic() - self.started_at < grace_seconds
        return {
            "connected": self.connected,
            "ready": self.connected or (within_grace and not self.config_error),
            "last_event_age_seconds": None if self.last_event_at is None else round(time.time() - self.last_event_at, 3),
            "last_error": self.last_error,
            "config_error": self.config_error,
            **self.detail,
        }


class Source(Protocol):
    name: str
    health: SourceHealth

    @property
    def provider(self) -> Provider:
        """The provider this source reads (a class attribute of every concrete source)."""
        ...

    async def run(self) -> None:
        """Run until cancelled: connect, read, reconnect. Raise only on a fatal error."""
        ...

    def add_routes(self, app: web.Application) -> None:
        """Mount HTTP routes (webhooks) on the shell's server before it starts."""
        ...

    def stop_accepting(self) -> None:
        """Shutdown began: take no new input (webhooks answer 503)."""
        ...

    async def drain(self, timeout: float) -> bool:
        """Wait, bounded, until everything accepted has its outcome; False if time ran out."""
        ...


class SourceBase:
    """Defaults for every hook of ``Source`` but ``run``."""

    provider: ClassVar[Provider]

    def __init__(self, name: str, *, detail: dict[str, Any] | None = None):
        self.name = name
        self.health = SourceHealth(name, detail=dict(detail or {}))

    def add_routes(self, app: web.Application) -> None:
        return None

    def stop_accepting(self) -> None:
        return None

    async def drain(self, timeout: float) -> bool:
        return True
