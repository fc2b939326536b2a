"""OpenXSwitch source: signed webhooks (``withdraw.*``, ``deposit.*``), acknowledged after Kafka's ack.

The service builds it through the provider registry (``plugin.PLUGIN``); by hand::

    from bridge.sources.openxswitch import OpenXSwitchConfig, OpenXSwitchWebhook
    webhook = OpenXSwitchWebhook(settings.openxswitch, pipeline)   # only when enabled
    webhook.add_routes(app)      # same aiohttp Application as /healthz and /metrics
    sources.append(webhook)      # a Source: run() keeps its health current
    ...
    await webhook.close()        # before pipeline.close()

The receiver module loads on first use, so importing ``bridge.sources.openxswitch.parse`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.sources.openxswitch.config import OpenXSwitchConfig

if TYPE_CHECKING:
    from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook

__all__ = ["OpenXSwitchConfig", "OpenXSwitchWebhook"]


def __getattr__(name: str) -> Any:
    if name == "OpenXSwitchWebhook":
        from bridge.sources.openxswitch import webhook

        return webhook.OpenXSwitchWebhook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
