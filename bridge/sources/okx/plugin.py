"""Registers the okx provider (entry point ``transfer_bridge.providers``: ``okx``)."""

from bridge.contract.events import Provider
from bridge.ingest.plugins import ProviderPlugin
from bridge.sources.okx.config import OkxConfig

PLUGIN = ProviderPlugin(
    name="okx",
    provider=Provider.OKX,
    kind="stream",
    config=OkxConfig,
    build="bridge.sources.okx.service:build_okx_sources",
    summary="private WebSocket deposit-info / withdrawal-info, REST history backfill",
    reparse="bridge.sources.okx.replay:reparse",
)
