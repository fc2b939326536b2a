"""The history capability: "list this account's transfers in a window as normalized events".

A provider whose REST API can list an account's transfers declares it through its plugin
(``ProviderPlugin.history``); ``transfer-bridge reconcile`` compares what it lists with what Kafka
holds. Every source that backfills already has the two hooks this needs — ``rest_client(session)``
and ``history(rest, since_ms)`` yielding parsed ``Page``s — so ``PagedHistory`` turns such a
source into an ``AccountHistory`` without a second history client. The source is built only to
read: ``reading_only_pipeline()`` gives it a pipeline that is never started, so nothing it reads
can reach Kafka by this path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

import aiohttp

from bridge.contract.events import Provider
from bridge.contract.parsing import ParseResult
from bridge.delivery.dedup import DedupGate, MemoryStore
from bridge.delivery.pipeline import Pipeline
from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.ingest.backfill import Page
from bridge.ingest.rest import RestClient
from bridge.ingest.tls import client_context
from bridge.kafka.settings import KafkaSettings

__all__ = ["AccountHistory", "HistoryHooks", "PagedHistory", "paged_histories", "reading_only_pipeline"]


class AccountHistory(Protocol):
    """One configured account whose provider can list its transfers."""

    @property
    def provider(self) -> Provider: ...

    @property
    def name(self) -> str:
        """The source's name (``okx:main``), as the service and its logs call the account."""
        ...

    def transfers(self, since_ms: int, until_ms: int) -> AsyncIterator[ParseResult]:
        """The current state of every transfer created in ``[since_ms, until_ms)`` (a reader may
        return more — the caller filters by creation time — and the same transfer more than once),
        plus dead letters for rows it could not normalize. Raises on an answer it cannot use
        (refused credentials, a provider down after its retries)."""
        ...


class HistoryHooks(Protocol):
    """What a backfilling source already offers (``StreamSource``, the Fireblocks receiver)."""

    name: str

    @property
    def provider(self) -> Provider: ...

    def rest_client(self, session: aiohttp.ClientSession) -> RestClient | None: ...

    def history(self, rest: RestClient, since_ms: int) -> AsyncIterator[Page]: ...


class PagedHistory:
    """An ``AccountHistory`` over a source's own history hooks, with its own HTTP session."""

    def __init__(
        self,
        hooks: HistoryHooks,
        *,
        rest_timeout: float,
        ca_bundle: Path | None = None,
        prepare: Callable[[RestClient], Awaitable[None]] | None = None,
    ):
        self.hooks = hooks
        self.rest_timeout = rest_timeout
        self.ca_bundle = ca_bundle
        self.prepare = prepare
        """Runs once before the first page (e.g. the source's ``before_backfill``: learn the uid)."""

    @property
    def provider(self) -> Provider:
        return self.hooks.provider

    @property
    def name(self) -> str:
        return self.hooks.name

    async def transfers(self, since_ms: int, until_ms: int) -> AsyncIterator[ParseResult]:
        timeout = aiohttp.ClientTimeout(total=self.rest_timeout)
        connector = aiohttp.TCPConnector(ssl=client_context(self.ca_bundle))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            rest = self.hooks.rest_client(session)
            if rest is None:
                raise LookupError(f"{self.name}: no history client is configured")
            if self.prepare is not None:
                await self.prepare(rest)
            async for page in self.hooks.history(rest, since_ms):
                for item in page.items:
                    yield item


def reading_only_pipeline() -> Pipeline:
    """A pipeline for sources built only to read their history: never started, so an item offered
    to it fails instead of reaching Kafka."""
    return Pipeline(Publisher(KafkaSettings(), TopicSettings()), DedupGate(MemoryStore()))


def paged_histories(sources: Iterable[HistoryHooks], *, rest_timeout: float, ca_bundle: Path | None = None) -> list[AccountHistory]:
    """``PagedHistory`` over each backfilling source, its ``before_backfill`` (if any) run first."""
    return [
        PagedHistory(source, rest_timeout=rest_timeout, ca_bundle=ca_bundle, prepare=getattr(source, "before_backfill", None))
        for source in sources
    ]
