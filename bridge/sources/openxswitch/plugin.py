"""Registers the openxswitch provider (entry point ``transfer_bridge.providers``: ``openxswitch``)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.source import Source
from bridge.sources.openxswitch.config import OpenXSwitchConfig


def _build(config: OpenXSwitchConfig, pipeline: Pipeline) -> Sequence[Source]:
    from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook  # aiohttp routes load only when enabled

    return [OpenXSwitchWebhook(config, pipeline)]


PLUGIN = ProviderPlugin(
    name="openxswitch",
    provider=Provider.OPENXSWITCH,
    kind="webhook",
    config=OpenXSwitchConfig,
    build=_build,
    summary="signed webhooks withdraw.* / deposit.*, acknowledged after Kafka's ack",
)
