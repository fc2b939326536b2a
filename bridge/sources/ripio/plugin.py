"""Registers the ripio provider (entry point ``transfer_bridge.providers``: ``ripio``)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.source import Source
from bridge.sources.ripio.config import RipioConfig


def _build(config: RipioConfig, pipeline: Pipeline) -> Sequence[Source]:
    from bridge.sources.ripio.service import build_ripio_sources  # the transport loads only when enabled

    return build_ripio_sources(config, pipeline)


PLUGIN = ProviderPlugin(
    name="ripio",
    provider=Provider.RIPIO,
    kind="stream",
    config=RipioConfig,
    build=_build,
    summary="WebSocket deposit / withdrawal topics (ticket auth), REST listing backfill",
)
