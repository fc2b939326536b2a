"""The provider registry: every installed provider package declares one ``ProviderPlugin``.

A provider registers itself under the entry point group ``transfer_bridge.providers`` (the name is
its configuration section, the value its ``plugin:PLUGIN``). The service builds its configuration
tree, its sources and its CLI help from what is registered here, so adding a provider touches no
core module; the core never imports a provider by name.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from bridge.contract.events import DeadLetter, Provider
from bridge.contract.parsing import ParseResult
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.history import AccountHistory
from bridge.ingest.settings import ProviderSection
from bridge.ingest.source import Source

__all__ = ["ProviderPlugin", "Reparse", "ENTRY_POINT_GROUP", "registered", "plugin_for"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "transfer_bridge.providers"

SourceKind = Literal["stream", "webhook", "poll"]

Reparse = Callable[[Any, DeadLetter], Sequence[ParseResult]]
"""``(section, letter)`` → what the dead letter's raw bytes are with today's parser, under the parser
contract of ``bridge.contract.parsing``: events, dead letters with a reason for items that still
fail, or one ``refusal`` when the bytes as a whole still are not a transfer (not JSON, not the
channel's kind of payload; ``dlq replay`` then sends the record back as it is). Never raises."""


@dataclass(frozen=True)
class ProviderPlugin:
    """What the service needs to know of a provider."""

    name: str
    """Configuration section (``okx`` → ``BRIDGE_OKX__…``) and source name prefix."""
    provider: Provider
    kind: SourceKind
    config: type[ProviderSection]
    """The section's model; its defaults must leave the provider disabled."""
    build: str
    """``module:function`` returning the sources of an enabled section (one per account, or the
    webhook receiver); imported only when the provider is enabled, so a disabled provider's
    transport never loads."""
    summary: str = ""
    history: str | None = None
    """``module:function`` returning one ``bridge.ingest.history.AccountHistory`` per enabled
    account of an enabled section: the provider can list an account's transfers in a window
    (``transfer-bridge reconcile``). None: the provider has no history API (webhooks only)."""
    reparse: str = ""
    """``module:function`` (a ``Reparse``) that reads a dead letter of this provider again, any of its
    channels, so ``transfer-bridge dlq replay`` needs no provider import in the core; empty: its dead
    letters cannot be replayed."""

    slot_by: Literal["account", "provider"] = "account"
    """Cluster mode: what a source's slot is hashed from. ``provider``: all the provider's accounts
    share one slot, for accounts whose connections see each other's transfers (an OKX master key
    receives its sub-accounts' pushes): only one dedup gate and one backfill coordinator then see
    both copies."""

    def sources(self, section: Any, pipeline: Pipeline) -> Sequence[Source]:
        builder: Callable[[Any, Pipeline], Sequence[Source]] = _load(self.build)
        return builder(section, pipeline)

    def histories(self, section: Any) -> Sequence[AccountHistory]:
        """The history readers of an enabled section; empty when the provider has none."""
        if self.history is None:
            return ()
        builder: Callable[[Any], Sequence[AccountHistory]] = _load(self.history)
        return builder(section)

    def reparser(self) -> Reparse | None:
        """The provider's dead-letter parser (``reparse``), imported on first use; None if it has none."""
        if not self.reparse:
            return None
        parser: Reparse = _load(self.reparse)
        return parser


def _load(path: str) -> Any:
    """``module:function`` → the function, importing its module now."""
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


@functools.cache
def registered() -> tuple[ProviderPlugin, ...]:
    """Every installed provider, in the contract's order of providers."""
    found: dict[str, ProviderPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        if not isinstance(plugin, ProviderPlugin):
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) is not a ProviderPlugin")
        if plugin.name != entry.name:
            raise ValueError(f"entry point {entry.name!r} declares the section {plugin.name!r}")
        if plugin.name in found:
            continue  # the same distribution seen twice on sys.path
        found[plugin.name] = plugin
    order = list(Provider)
    return tuple(sorted(found.values(), key=lambda plugin: order.index(plugin.provider)))


def plugin_for(name: str) -> ProviderPlugin:
    for plugin in registered():
        if plugin.name == name:
            return plugin
    raise KeyError(f"no provider {name!r} is installed (known: {', '.join(p.name for p in registered()) or 'none'})")
