"""Registers the binance provider (entry point ``transfer_bridge.providers``: ``binance``)."""

from bridge.contract.events import Provider
from bridge.ingest.plugins import ProviderPlugin
from bridge.sources.binance.config import BinanceConfig

PLUGIN = ProviderPlugin(
    name="binance",
    provider=Provider.BINANCE,
    kind="poll",
    config=BinanceConfig,
    build="bridge.sources.binance.service:build_binance_sources",
    summary="signed REST polling of capital deposit / withdrawal history (hot window + open-transfer re-query)",
    history="bridge.sources.binance.history:histories",
    reparse="bridge.sources.binance.replay:reparse",
)
