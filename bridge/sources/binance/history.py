"""Binance's history for ``transfer-bridge reconcile``: one key's capital history in a window.

The poll source's own sweeps (the engine's paged reads: windows under 90 days, offset paging, the
same signing, weights and parser) over exactly the window asked for: deposits, each
``sub_account_emails`` deposits (``subHisrec``) and withdrawals, as the key is configured to read
them. Nothing here advances a cursor or the open-transfer tracker's file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp

from bridge.contract.events import Provider
from bridge.contract.parsing import ParseResult
from bridge.ingest.history import AccountHistory, reading_only_pipeline
from bridge.ingest.tls import client_context
from bridge.sources.binance import messages as m
from bridge.sources.binance.config import BinanceConfig
from bridge.sources.binance.service import BinanceAccountSource, build_binance_sources

__all__ = ["BinanceHistory", "histories"]


class BinanceHistory:
    """One key's deposits and withdrawals created in a window (``AccountHistory``)."""

    provider = Provider.BINANCE

    def __init__(self, source: BinanceAccountSource):
        self.source = source

    @property
    def name(self) -> str:
        return self.source.name

    async def transfers(self, since_ms: int, until_ms: int) -> AsyncIterator[ParseResult]:
        source, cfg = self.source, self.source.config
        timeout = aiohttp.ClientTimeout(total=cfg.rest_timeout)
        connector = aiohttp.TCPConnector(ssl=client_context(cfg.ca_bundle))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            rest = source.rest_client(session)
            await rest.sync_time()  # the window on Binance's clock, as the poll source reads it
            await source._ask_uid(rest)
            sweeps: list[tuple[str, str | None]] = []
            if source.account.deposits:
                sweeps.append((m.DEPOSIT_PATH, None))
            sweeps.extend((m.SUB_DEPOSIT_PATH, email) for email in source.account.sub_account_emails)
            if source.account.withdrawals:
                sweeps.append((source.withdrawal_path, None))
            for path, email in sweeps:
                async for page in source._sweep(rest, path, since_ms, until_ms, email=email):
                    for item in page.items:
                        yield item


def histories(config: BinanceConfig) -> Sequence[AccountHistory]:
    """One reader per enabled key."""
    return [BinanceHistory(source) for source in build_binance_sources(config, reading_only_pipeline())]
