"""The dedup gate: publish each state of a transfer once, drop exact repeats and stale states.

What the gate remembers per transfer is tiny on purpose (millions of transfers in memory): the
key as a 64-bit hash mapped to one ``bytes`` value — a flags byte, then the first 8 bytes of each
published ``event_id`` (the UUIDv5 of key + fingerprint). The store persists the same shape.

Order of operations (see ``bridge.delivery.pipeline``): ``check`` before sending, ``mark`` only after
Kafka acknowledged, so a crash can cause a re-publish of an acked state (same ``event_id``) but
never the loss of one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

from bridge.contract.events import TransferEvent, short_hash

log = logging.getLogger(__name__)

__all__ = ["Decision", "DedupStore", "DedupStoreError", "DedupGate", "MemoryStore", "Row"]

FINAL_FLAG = 0x01
Row = tuple[int, bytes, int | None]
"""(key hash, state bytes, final_at epoch ms or None)."""


class DedupStoreError(OSError):
    """The store cannot be used (opened, read or written); the message says why, in one line."""


class Decision(StrEnum):
    PUBLISH = "publish"
    DUPLICATE = "duplicate"
    STALE = "stale_after_final"


class DedupStore(Protocol):
    """Durable memory of published states. Blocking calls; the gate runs them off the loop."""

    def load(self) -> Iterable[tuple[int, bytes]]: ...

    def save(self, rows: list[Row]) -> None: ...

    def expire(self, final_before_ms: int) -> list[int]: ...

    def close(self) -> None: ...


class MemoryStore:
    """Non-durable store for tests and benchmarks that measure everything but the disk."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[bytes, int | None]] = {}

    def load(self) -> Iterable[tuple[int, bytes]]:
        return [(k, v[0]) for k, v in self.rows.items()]

    def save(self, rows: list[Row]) -> None:
        for key, state, final_at in rows:
            self.rows[key] = (state, final_at)

    def expire(self, final_before_ms: int) -> list[int]:
        gone = [k for k, (_, f) in self.rows.items() if f is not None and f < final_before_ms]
        for k in gone:
            del self.rows[k]
        return gone

    def close(self) -> None:
        pass


def state_id(event: TransferEvent) -> bytes:
    """The first 8 bytes of the event's UUID. ``event_id`` is validated as a canonical lowercase
    UUID, so its first 16 hex digits (dashes skipped) are those bytes: no ``UUID`` object needed."""
    event_id = event.event_id
    return bytes.fromhex(event_id[:8] + event_id[9:13] + event_id[14:18])


class DedupGate:
    """In-memory index in front of a durable store; writes are batched off the event loop."""

    def __init__(self, store: DedupStore, *, retention_seconds: float = 7 * 86400, flush_interval: float = 0.05):
        self._store = store
        self._index: dict[int, bytes] = {}
        self._dirty: dict[int, Row] = {}
        self._retention_ms = int(retention_seconds * 1000)
        self._flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        return len(self._index)

    async def open(self) -> None:
        """Load the whole index before any source runs, so the first event is already gated."""
        # Built in the thread straight from the store's rows: no list of a million row tuples.
        self._index = await asyncio.to_thread(lambda: dict(self._store.load()))
        self._flusher = asyncio.create_task(self._flush_loop(), name="dedup-flush")

    def check(self, event: TransferEvent) -> Decision:
        state = self._index.get(short_hash(event.key))
        if state is None:
            return Decision.PUBLISH
        if _contains(state, state_id(event)):
            return Decision.DUPLICATE
        if state[0] & FINAL_FLAG and not event.is_final:
            return Decision.STALE
        return Decision.PUBLISH

    def state_after(self, event: TransferEvent, *, now_ms: int | None = None) -> tuple[bytes, int | None]:
        """The state bytes (and final time) the transfer will have once ``event`` is published."""
        return self._state_after(short_hash(event.key), event, now_ms)

    def _state_after(self, key: int, event: TransferEvent, now_ms: int | None) -> tuple[bytes, int | None]:
        state = self._index.get(key, b"\x00")
        flags = state[0] | (FINAL_FLAG if event.is_final else 0)
        final_at = None
        if flags & FINAL_FLAG:
            final_at = now_ms if now_ms is not None else int(time.time() * 1000)
        return bytes((flags,)) + state[1:] + state_id(event), final_at

    def mark(self, event: TransferEvent, *, now_ms: int | None = None) -> None:
        """Record a state Kafka has acknowledged."""
        key = short_hash(event.key)
        new_state, final_at = self._state_after(key, event, now_ms)
        self._index[key] = new_state
        self._dirty[key] = (key, new_state, final_at)
        if len(self._dirty) >= 5000:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            if not self._dirty:
                return
            pending = self._dirty
            self._dirty = {}
            try:
                await asyncio.to_thread(self._store.save, list(pending.values()))
            except Exception:
                # Keep the rows for the next attempt; newer marks for a key win.
                pending.update(self._dirty)
                self._dirty = pending
                raise

    async def expire(self, *, now_ms: int | None = None) -> int:
        """Forget final transfers older than the retention; returns how many."""
        await self.flush()
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        gone = await asyncio.to_thread(self._store.expire, now_ms - self._retention_ms)
        for key in gone:
            self._index.pop(key, None)
        return len(gone)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        await self.flush()
        await asyncio.to_thread(self._store.close)

    async def _flush_loop(self) -> None:
        last_expiry = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() - last_expiry > 300:
                    last_expiry = time.monotonic()
                    await self.expire()
            except Exception:
                log.exception("dedup store write failed; will retry")
                await asyncio.sleep(1.0)


def _contains(state: bytes, sid: bytes) -> bool:
    return any(state[offset : offset + 8] == sid for offset in range(1, len(state), 8))
