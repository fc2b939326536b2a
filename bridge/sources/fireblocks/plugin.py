"""Registers the fireblocks provider (entry point ``transfer_bridge.providers``: ``fireblocks``)."""

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.shared import ProviderContext
from bridge.ingest.source import Source
from bridge.sources.fireblocks.config import FireblocksConfig


def receivers(config: FireblocksConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> Sequence[Source]:
    """The one receiver of an enabled section (aiohttp and the key loading happen only then).
    ``shared`` is unused: the receiver is the provider's only source, rebuilt whole on any change."""
    from bridge.sources.fireblocks.webhook import FireblocksWebhook

    return [FireblocksWebhook(config, pipeline)]


PLUGIN = ProviderPlugin(
    name="fireblocks",
    provider=Provider.FIREBLOCKS,
    kind="webhook",
    config=FireblocksConfig,
    build="bridge.sources.fireblocks.plugin:receivers",
    summary="signed transaction webhooks v1/v2, JWT-signed REST backfill, acknowledged after Kafka's ack",
)
