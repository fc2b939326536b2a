"""OpenXSwitch source: signed webhooks (``withdraw.*``, ``deposit.*``), acknowledged after Kafka's ack.

What the service shell needs::

    from bridge.sources.openxswitch import OpenXSwitchConfig, build_openxswitch_webhook
    webhook = build_openxswitch_webhook(settings.openxswitch, pipeline)   # None when disabled
    if webhook is not None:
        webhook.add_routes(app)      # same aiohttp Application as /healthz and /metrics
        sources.append(webhook)      # a Source: run() keeps its health current
    ...
    await webhook.close()            # before pipeline.close()

The receiver module loads on first use, so importing ``bridge.sources.openxswitch.parse`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.sources.openxswitch.config import OpenXSwitchConfig

if TYPE_CHECKING:
    from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook, build_openxswitch_webhook

__all__ = ["OpenXSwitchConfig", "OpenXSwitchWebhook", "build_openxswitch_webhook"]


def __getattr__(name: str) -> Any:
    if name in ("OpenXSwitchWebhook", "build_openxswitch_webhook"):
        from bridge.sources.openxswitch import webhook

        return getattr(webhook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
