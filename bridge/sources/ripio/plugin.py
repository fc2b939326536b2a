"""Registers the ripio provider (entry point ``transfer_bridge.providers``: ``ripio``)."""

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.ingest.history import AccountHistory
from bridge.ingest.plugins import ProviderPlugin
from bridge.sources.ripio.config import RipioConfig


def histories(config: RipioConfig) -> Sequence[AccountHistory]:
    """Each enabled account's REST history (the backfill's client and parser), for ``reconcile``."""
    from bridge.ingest.history import paged_histories, reading_only_pipeline
    from bridge.sources.ripio.service import build_ripio_sources

    sources = build_ripio_sources(config, reading_only_pipeline())
    return paged_histories(sources, rest_timeout=config.rest_timeout, ca_bundle=config.ca_bundle)


PLUGIN = ProviderPlugin(
    name="ripio",
    provider=Provider.RIPIO,
    kind="stream",
    config=RipioConfig,
    build="bridge.sources.ripio.service:build_ripio_sources",
    summary="WebSocket deposit / withdrawal topics (ticket auth), REST listing backfill",
    history="bridge.sources.ripio.plugin:histories",
    reparse="bridge.sources.ripio.replay:reparse",
)
