"""Ripio source: ticket-authenticated stream of ``deposit`` / ``withdrawal`` messages with listing backfill.

What the service shell needs::

    from bridge.sources.ripio import RipioConfig, build_ripio_sources
    sources = build_ripio_sources(settings.ripio, pipeline)   # one Source per enabled account

The transport modules load on first use, so importing ``bridge.sources.ripio.parse`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.sources.ripio.config import RipioAccount, RipioConfig

if TYPE_CHECKING:
    from bridge.sources.ripio.service import RipioAccountSource, build_ripio_sources

__all__ = ["RipioAccount", "RipioConfig", "RipioAccountSource", "build_ripio_sources"]


def __getattr__(name: str) -> Any:
    if name in ("RipioAccountSource", "build_ripio_sources"):
        from bridge.sources.ripio import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
