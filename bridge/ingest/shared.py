"""What the sources of one provider share, kept across configuration reloads.

Some objects belong to a provider, not to an account: Binance meters request weight per IP (two
budgets in one process could spend twice the limit and earn a ban), an OKX master key receives its
sub-accounts' pushes (one backfill coordinator must see every account's pass). A provider's
``build(section, pipeline, shared)`` takes such objects from the ``ProviderContext`` it is given
(``shared.get("limits", make)``), and the service keeps that context for as long as the provider's
shared settings (its section without ``accounts``) stay the same: an account added or changed by a
reload joins the running accounts' objects; a change to the shared settings (which restarts all of
the provider's sources) starts from a fresh context.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.source import Source

__all__ = ["ProviderContext", "ProviderContexts", "shared_settings"]

T = TypeVar("T")


def shared_settings(section: BaseModel) -> dict[str, Any]:
    """A section without its accounts; secrets compare by value (``SecretStr`` equality)."""
    return {name: getattr(section, name) for name in type(section).model_fields if name != "accounts"}


class ProviderContext:
    """The provider-level objects of one provider's sources, each made on first request."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._objects: dict[str, Any] = {}

    def get(self, key: str, make: Callable[[], T]) -> T:
        """The object shared under ``key``; ``make`` builds it the first time it is asked for."""
        if key not in self._objects:
            self._objects[key] = make()
        return cast(T, self._objects[key])

    def __repr__(self) -> str:  # names only: a shared object may hold credentials
        return f"ProviderContext({self.provider!r}, {sorted(self._objects)})"


class ProviderContexts:
    """The service's contexts, one per provider and shared settings; builds sources with them."""

    def __init__(self) -> None:
        self._kept: dict[str, list[tuple[dict[str, Any], ProviderContext]]] = {}

    def context(self, provider: str, section: BaseModel) -> ProviderContext:
        """The context of the running sources when ``section``'s shared settings are theirs, else a new one."""
        shared = shared_settings(section)
        kept = self._kept.setdefault(provider, [])
        for settings, context in kept:
            if settings == shared:
                return context
        context = ProviderContext(provider)
        kept.append((shared, context))
        return context

    def sources(self, plugin: ProviderPlugin, section: BaseModel, pipeline: Pipeline) -> Sequence[Source]:
        """``plugin.build(section, pipeline, shared)`` with the provider's context (``ProviderPlugin.sources``
        calls it without one: the builder then makes objects of its own, as a test that builds alone wants)."""
        module, _, function = plugin.build.partition(":")
        build: Callable[[Any, Pipeline, ProviderContext], Sequence[Source]] = getattr(importlib.import_module(module), function)
        return build(section, pipeline, self.context(plugin.name, section))

    def retain(self, sections: Mapping[str, BaseModel]) -> None:
        """Keep only the contexts of ``sections`` as they now run (by provider name): a disabled
        provider's, or one made for shared settings that no longer apply, is forgotten."""
        for provider in list(self._kept):
            section = sections.get(provider)
            if section is None or not getattr(section, "enabled", False):
                del self._kept[provider]
                continue
            shared = shared_settings(section)
            self._kept[provider] = [(settings, context) for settings, context in self._kept[provider] if settings == shared]
