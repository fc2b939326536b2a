"""Registers the fireblocks provider (entry point ``transfer_bridge.providers``: ``fireblocks``)."""

from collections.abc import Sequence

from bridge.contract.events import Provider
from bridge.delivery.pipeline import Pipeline
from bridge.ingest.history import AccountHistory
from bridge.ingest.plugins import ProviderPlugin
from bridge.ingest.shared import ProviderContext
from bridge.ingest.source import Source
from bridge.sources.fireblocks.config import FireblocksConfig


def receivers(config: FireblocksConfig, pipeline: Pipeline, shared: ProviderContext | None = None) -> Sequence[Source]:
    """The one receiver of an enabled section (aiohttp and the key loading happen only then).
    ``shared`` is unused: the receiver is the provider's only source, rebuilt whole on any change."""
    from bridge.sources.fireblocks.webhook import FireblocksWebhook

    return [FireblocksWebhook(config, pipeline)]


def histories(config: FireblocksConfig) -> Sequence[AccountHistory]:
    """The workspace's ``GET /v1/transactions`` (the backfill's signed client and parser), for
    ``reconcile``; none without REST credentials (``api_key`` + ``api_private_key_file``)."""
    if config.api_key is None or config.api_private_key_file is None:
        return []
    from bridge.ingest.history import PagedHistory, reading_only_pipeline
    from bridge.sources.fireblocks.webhook import FireblocksWebhook

    return [PagedHistory(FireblocksWebhook(config, reading_only_pipeline()), rest_timeout=config.rest_timeout)]


PLUGIN = ProviderPlugin(
    name="fireblocks",
    provider=Provider.FIREBLOCKS,
    kind="webhook",
    config=FireblocksConfig,
    build="bridge.sources.fireblocks.plugin:receivers",
    summary="signed transaction webhooks v1/v2, JWT-signed REST backfill, acknowledged after Kafka's ack",
    history="bridge.sources.fireblocks.plugin:histories",
    reparse="bridge.sources.fireblocks.replay:reparse",
)
