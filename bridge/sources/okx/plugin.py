"""Registers the okx provider (entry point ``transfer_bridge.providers``: ``okx``)."""

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.ingest.history import AccountHistory
from bridge.ingest.plugins import ProviderPlugin
from bridge.sources.okx.config import OkxConfig


def histories(config: OkxConfig) -> Sequence[AccountHistory]:
    """Each enabled account's REST history (the backfill's client and parser), for ``reconcile``."""
    from bridge.ingest.history import paged_histories, reading_only_pipeline
    from bridge.sources.okx.service import build_okx_sources

    sources = build_okx_sources(config, reading_only_pipeline())
    return paged_histories(sources, rest_timeout=config.rest_timeout, ca_bundle=config.ca_bundle)


PLUGIN = ProviderPlugin(
    name="okx",
    provider=Provider.OKX,
    kind="stream",
    config=OkxConfig,
    build="bridge.sources.okx.service:build_okx_sources",
    summary="private WebSocket deposit-info / withdrawal-info, REST history backfill",
    history="bridge.sources.okx.plugin:histories",
    reparse="bridge.sources.okx.replay:reparse",
)
