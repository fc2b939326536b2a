"""Registers the ripio provider (entry point ``transfer_bridge.providers``: ``ripio``)."""

from bridge.contract.events import Provider
from bridge.ingest.plugins import ProviderPlugin
from bridge.sources.ripio.config import RipioConfig

PLUGIN = ProviderPlugin(
    name="ripio",
    provider=Provider.RIPIO,
    kind="stream",
    config=RipioConfig,
    build="bridge.sources.ripio.service:build_ripio_sources",
    summary="WebSocket deposit / withdrawal topics (ticket auth), REST listing backfill",
    reparse="bridge.sources.ripio.replay:reparse",
)
