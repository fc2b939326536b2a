"""Registers the okx provider (entry point ``transfer_bridge.providers``: ``okx``)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.source import Source
from bridge.sources.okx.config import OkxConfig


def _build(config: OkxConfig, pipeline: Pipeline) -> Sequence[Source]:
    from bridge.sources.okx.service import build_okx_sources  # the transport loads only when enabled

    return build_okx_sources(config, pipeline)


PLUGIN = ProviderPlugin(
    name="okx",
    provider=Provider.OKX,
    kind="stream",
    config=OkxConfig,
    build=_build,
    summary="private WebSocket deposit-info / withdrawal-info, REST history backfill",
)
