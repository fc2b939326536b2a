"""Registers the openxswitch provider (entry point ``transfer_bridge.providers``: ``openxswitch``)."""

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.shared import ProviderContext
from bridge.ingest.source import Source
from bridge.sources.openxswitch.config import OpenXSwitchConfig


def receivers(config: OpenXSwitchConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> Sequence[Source]:
    """The one webhook receiver of an enabled section (aiohttp routes load only then).
    ``shared`` is unused: the receiver is the provider's only source, rebuilt whole on any change."""
    from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook

    return [OpenXSwitchWebhook(config, pipeline)]


PLUGIN = ProviderPlugin(
    name="openxswitch",
    provider=Provider.OPENXSWITCH,
    kind="webhook",
    config=OpenXSwitchConfig,
    build="bridge.sources.openxswitch.plugin:receivers",
    summary="signed webhooks withdraw.* / deposit.*, acknowledged after Kafka's ack",
    reparse="bridge.sources.openxswitch.replay:reparse",
)
