"""OKX source: private WebSocket ``deposit-info`` / ``withdrawal-info`` with REST gap backfill.

What the service shell needs::

    from bridge.sources.okx import OkxConfig, build_okx_sources
    sources = build_okx_sources(settings.okx, pipeline)   # one Source per enabled account

The transport modules load on first use, so importing ``bridge.sources.okx.parse`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.sources.okx.config import OkxAccount, OkxConfig

if TYPE_CHECKING:
    from bridge.sources.okx.service import OkxAccountSource, build_okx_sources

__all__ = ["OkxAccount", "OkxConfig", "OkxAccountSource", "build_okx_sources"]


def __getattr__(name: str) -> Any:
    if name in ("OkxAccountSource", "build_okx_sources"):
        from bridge.sources.okx import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
