"""The dedup gate: publish each state of a transfer once, drop exact repeats and stale states.

What the gate remembers per transfer is tiny on purpose (millions of transfers in memory): the
key as a 64-bit hash mapped to one ``bytes`` value — a flags byte, then the first 8 bytes of each
published ``event_id`` (the UUIDv5 of key + fingerprint). The store persists the same shape. An
open (non-final) transfer's value also carries an 8-byte tracking block right after the flags
(provider and direction, first seen, last change: ``bridge.delivery.open_transfers``), so the
open-transfer counts and ages survive a restart with the index; a final state drops it.

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
from typing import Any, Protocol

from bridge.contract.events import TransferEvent, short_hash
from bridge.delivery.open_transfers import TRACKED_FLAG, OpenTransfers, kind_code, read_tracking, tracking_block
from bridge.delivery.state_bytes import FINAL_FLAG, closed, merged, newer, published_count
from bridge.observability import metrics

log = logging.getLogger(__name__)

__all__ = [
    "Decision", "DedupStore", "DedupStoreError", "DedupGate", "MemoryStore", "Peer", "Row", "published_count", "closed",
    "newer", "merged", "FINAL_FLAG",
]

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


class Peer(Protocol):
    """What another process sharing the store has published: consulted by a gate running beside the
    service (``dlq replay``, ``reconcile --repair``) right before each decision."""

    async def start(self) -> None: ...

    def lookup(self, key: int) -> bytes | None: ...

    async def close(self) -> None: ...


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
    """In-memory index in front of a durable store; writes are batched off the event loop.

    A store that cannot persist (a full disk, a volume gone read-only) is not retried silently:
    ``health()`` says so (``persisting: false``, how many acknowledged states are only in memory,
    the error), ``bridge_dedup_store_failures_total`` counts the failed writes and
    ``bridge_dedup_unpersisted`` the states waiting, the log gets one line when it starts, a summary
    a minute while it lasts and one when it ends. The waiting marks are bounded: past
    ``max_unpersisted`` the pipeline holds new states back (``has_room`` / ``wait_for_room``)
    instead of acknowledging more that could be forgotten. A store with a ``spill(rows)`` (the
    SQLite store's reserve file) keeps them there meanwhile, so a restart still knows them.
    """

    def __init__(
        self,
        store: DedupStore,
        *,
        retention_seconds: float = 7 * 86400,
        flush_interval: float = 0.05,
        max_unpersisted: int = 5_000,
        retry_max: float = 2.0,
        summary_every: float = 60.0,
        peer: Peer | None = None,
    ):
        self._store = store
        self.peer = peer
        """Beside a running service: its published states, merged into the index before each decision."""
        self._index: dict[int, bytes] = {}
        self.open_transfers = OpenTransfers()
        """Open transfers per provider and direction (counts, first-seen minutes), kept with marks."""
        self._dirty: dict[int, Row] = {}
        self._saving = 0
        self._claimed = 0
        self._retention_ms = int(retention_seconds * 1000)
        self._flush_interval = flush_interval
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.max_unpersisted = max(1, max_unpersisted)
        self._wake_at = max(1, min(5000, self.max_unpersisted // 2))
        self._room = asyncio.Event()
        self._room.set()
        self._retry_max = retry_max
        self._summary_every = summary_every
        # failure bookkeeping (event loop only)
        self._error: str | None = None
        self._failing_since: float | None = None
        self._failures_since_summary = 0
        self._last_summary = 0.0
        self._spill_lost: int | None = None
        """States the reserve could not take at the last spill (None: no current spill)."""
        self._spilled_marks = -1
        self._marks = 0

    @property
    def size(self) -> int:
        return len(self._index)

    @property
    def unpersisted(self) -> int:
        """Acknowledged states not yet written to the store (those of a write in progress included)."""
        return len(self._dirty) + self._saving

    @property
    def persisting(self) -> bool:
        """False from a failed store write until the next one succeeds."""
        return self._error is None

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def has_room(self) -> bool:
        """Fewer than ``max_unpersisted`` states sent or acknowledged without their mark written:
        one more may be sent (``claim``)."""
        return len(self._dirty) + self._saving + self._claimed < self.max_unpersisted

    async def wait_for_room(self) -> None:
        """Wait until the store caught up enough for another state to be sent."""
        while not self.has_room:
            self._room.clear()
            self._wake.set()
            await self._room.wait()

    def claim(self) -> None:
        """A state is about to be sent: it counts against ``max_unpersisted`` until ``mark`` (its
        ack) or ``release`` (it went another way: dead-lettered, fenced, cancelled before sending)."""
        self._claimed += 1

    def release(self) -> None:
        self._claimed = max(0, self._claimed - 1)
        if self.has_room:
            self._room.set()

    def health(self) -> dict[str, Any]:
        return {
            "persisting": self.persisting,
            "unpersisted": self.unpersisted,
            "max_unpersisted": self.max_unpersisted,
            "reserved": self._reserved,
            "error": self._error,
            "failing_seconds": None if self._failing_since is None else round(time.monotonic() - self._failing_since, 3),
        }

    async def open(self) -> None:
        """Load the whole index before any source runs, so the first event is already gated."""
        # Built in the thread straight from the store's rows: no list of a million row tuples.
        self._index = await asyncio.to_thread(lambda: dict(self._store.load()))
        horizon = int(time.time()) - self._retention_ms // 1000
        await asyncio.to_thread(self.open_transfers.rebuild, self._index.values(), drop_before_s=horizon)
        carried = int(getattr(self._store, "carried", 0))
        if carried:  # states a previous run kept in the store's reserve: into the store now, if it can
            try:
                await self.flush()
                log.info("dedup store: %d states kept in the reserve by the last run written", carried)
            except Exception:
                pass  # reported by _failed; the flusher retries
        self._publish_gauges()
        if self.peer is not None:
            await self.peer.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="dedup-flush")

    def check(self, event: TransferEvent) -> Decision:
        key = short_hash(event.key)
        state = self._index.get(key)
        if self.peer is not None:
            state = self._absorb(key, state)
        if state is None:
            return Decision.PUBLISH
        if _contains(state, state_id(event)):
            return Decision.DUPLICATE
        if state[0] & FINAL_FLAG and not event.is_final:
            return Decision.STALE
        return Decision.PUBLISH

    def _absorb(self, key: int, state: bytes | None) -> bytes | None:
        """Merge what the peer last saw published for ``key`` into the index (not a mark: the peer
        wrote it, so nothing to persist here)."""
        theirs = self.peer.lookup(key) if self.peer is not None else None
        return state if theirs is None else self._merge_in(key, state, theirs)

    def _merge_in(self, key: int, state: bytes | None, theirs: bytes) -> bytes:
        if theirs == state:
            return theirs
        mine = theirs if state is None else merged(state, theirs)
        if mine != state:
            self.open_transfers.replace(state, mine)
            self._index[key] = mine
        return mine

    async def take_news(self) -> int:
        """Merge into the index what a command beside this process (``dlq replay``,
        ``reconcile --repair``) wrote to the store since the last call, if the store tells
        (``news()``: the SQLite store); the flusher calls it every tick. Returns how many."""
        news = getattr(self._store, "news", None)
        if news is None:
            return 0
        rows: list[tuple[int, bytes]] = await asyncio.to_thread(news)
        for key, theirs in rows:
            self._merge_in(key, self._index.get(key), theirs)
        return len(rows)

    def state_after(self, event: TransferEvent, *, now_ms: int | None = None) -> tuple[bytes, int | None]:
        """The state bytes (and final time) the transfer will have once ``event`` is published."""
        return self._state_after(short_hash(event.key), event, now_ms)

    def _state_after(self, key: int, event: TransferEvent, now_ms: int | None) -> tuple[bytes, int | None]:
        state = self._index.get(key, b"\x00")
        flags = state[0]
        ids = state[9:] if flags & TRACKED_FLAG else state[1:]
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if flags & FINAL_FLAG or event.is_final:
            return bytes(((flags & ~TRACKED_FLAG) | FINAL_FLAG,)) + ids + state_id(event), now_ms
        now_s = now_ms // 1000
        tracked = read_tracking(state)
        first = tracked[1] if tracked is not None else now_s
        block = tracking_block(kind_code(event.provider, event.direction), first, now_s)
        return bytes((flags | TRACKED_FLAG,)) + block + ids + state_id(event), None

    def mark(self, event: TransferEvent, *, now_ms: int | None = None, claimed: bool = False) -> None:
        """Record a state Kafka has acknowledged (``claimed``: it was sent under a ``claim``)."""
        if claimed:
            self._claimed = max(0, self._claimed - 1)
        key = short_hash(event.key)
        new_state, final_at = self._state_after(key, event, now_ms)
        self.open_transfers.replace(self._index.get(key), new_state)
        self._index[key] = new_state
        self._dirty[key] = (key, new_state, final_at)
        self._marks += 1
        if len(self._dirty) >= self._wake_at:
            self._wake.set()
        if not self.has_room:
            self._room.clear()

    async def flush(self) -> None:
        """Write every waiting mark; on failure they stay waiting (and go to the store's reserve)."""
        async with self._lock:
            carried = int(getattr(self._store, "carried", 0))
            if not self._dirty and not carried:
                return
            pending = self._dirty
            self._dirty = {}
            self._saving = len(pending)
            try:
                await asyncio.to_thread(self._store.save, list(pending.values()))
            except BaseException as exc:
                # Keep the rows for the next attempt; newer marks for a key win. Cancelled (close()
                # stopping the flusher) they are kept too: the write may not have happened.
                pending.update(self._dirty)
                self._dirty = pending
                self._saving = 0
                if isinstance(exc, Exception):
                    await self._failed(exc)
                raise
            self._saving = 0
            self._recovered(len(pending) + carried)

    async def expire(self, *, now_ms: int | None = None) -> int:
        """Forget final transfers older than the retention; returns how many."""
        await self.flush()
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        gone = await asyncio.to_thread(self._store.expire, now_ms - self._retention_ms)
        for key in gone:
            self._index.pop(key, None)  # final: never tracked as open
        dropped = self.open_transfers.drop_before((now_ms - self._retention_ms) // 1000)
        if dropped:
            log.warning("%d transfers open longer than the dedup retention are no longer tracked as open", dropped)
        return len(gone)

    async def close(self) -> None:
        """Stop the flusher, write what waits, close the store.

        ``DedupStoreError`` if marks could not be written: the message says how many, why, and how
        many the store's reserve kept for the next start. The store is closed either way."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        failure: DedupStoreError | None = None
        try:
            await self.flush()
        except Exception as exc:
            failure = DedupStoreError(self._close_summary(exc))
        finally:
            if self.peer is not None:
                await self.peer.close()
            try:
                await asyncio.to_thread(self._store.close)
            except Exception as exc:
                log.warning("dedup store close: %s", _describe(exc))
        self._publish_gauges()
        if failure is not None:
            raise failure

    # -- failures ------------------------------------------------------------------------------

    async def _failed(self, exc: BaseException) -> None:
        """Count it, spill the waiting marks to the store's reserve, log at most a line a minute."""
        metrics.DEDUP_STORE_FAILURES.inc()
        text = _describe(exc)
        if self._error is None:
            self._fail_started(text)
        self._error = text
        self._failures_since_summary += 1
        spill = getattr(self._store, "spill", None)
        if spill is not None and self._dirty and self._spilled_marks != self._marks:
            # The mark count the rows were taken at: marks acknowledged while the spill runs in its
            # thread are not in it, so the next failure (or close) must spill again.
            marks = self._marks
            try:
                self._spill_lost = int(await asyncio.to_thread(spill, list(self._dirty.values())))
                self._spilled_marks = marks
            except Exception as spill_error:  # the reserve is best effort; the store error is the news
                self._spill_lost = None
                log.debug("dedup reserve write failed: %s", _describe(spill_error))
        now = time.monotonic()
        if now - self._last_summary >= self._summary_every:
            self._last_summary = now
            assert self._failing_since is not None
            log.warning(
                "dedup store still cannot persist: %d failed writes in the last %.0fs, %d acknowledged states "
                "only in memory (%d kept in the reserve); %s",
                self._failures_since_summary,
                self._summary_every,
                self.unpersisted,
                self._reserved,
                text,
                extra={"unpersisted": self.unpersisted, "reserved": self._reserved},
            )
            self._failures_since_summary = 0
        self._publish_gauges()

    def _fail_started(self, text: str) -> None:
        self._error = text
        self._failing_since = time.monotonic()
        self._last_summary = self._failing_since
        self._failures_since_summary = 0
        log.error(
            "dedup store cannot persist: %s; %d acknowledged states only in memory; past %d new states wait "
            "(webhooks get 503, sources slow down) until it can: free space or fix the volume",
            text,
            self.unpersisted,
            self.max_unpersisted,
            extra={"unpersisted": self.unpersisted, "max_unpersisted": self.max_unpersisted},
        )

    def _recovered(self, written: int) -> None:
        if self._error is not None:
            assert self._failing_since is not None
            log.warning(
                "dedup store persisting again after %.1fs: %d states written",
                time.monotonic() - self._failing_since,
                written,
            )
            self._error = None
            self._failing_since = None
            self._spill_lost = None
            self._spilled_marks = -1
        if self.has_room:
            self._room.set()
        self._publish_gauges()

    @property
    def _reserved(self) -> int:
        """States in the store's reserve file (written by ``spill``), known again at the next start."""
        return int(getattr(self._store, "reserved", 0))

    def _close_summary(self, exc: BaseException) -> str:
        current = self._spilled_marks == self._marks and self._spill_lost is not None
        lost = self._spill_lost if current and self._spill_lost is not None else self.unpersisted
        carried = int(getattr(self._store, "carried", 0))
        earlier = f" (and {carried} the last run kept in the reserve)" if carried else ""
        return (
            f"could not persist {self.unpersisted} acknowledged states{earlier} ({_describe(exc)}); "
            f"{self._reserved} kept in its reserve for the next start, {lost} lost"
        )

    def _publish_gauges(self) -> None:
        metrics.DEDUP_UNPERSISTED.set(self.unpersisted)

    async def _flush_loop(self) -> None:
        last_expiry = time.monotonic()
        retry = 0.5
        while True:
            try:  # asyncio.timeout, not wait_for: no extra task per wait (3.11 wraps the coroutine in one)
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                await self.take_news()
                retry = 0.5
                if time.monotonic() - last_expiry > 300:
                    last_expiry = time.monotonic()
                    await self.expire()
            except Exception as exc:
                if self._error is None:  # not a store write (expiry): say it, then carry on
                    log.warning("dedup store maintenance failed: %s; will retry", _describe(exc))
                await asyncio.sleep(retry)
                retry = min(retry * 2, self._retry_max)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, DedupStoreError) and text else f"{exc.__class__.__name__}: {text}"


def _contains(state: bytes, sid: bytes) -> bool:
    return any(state[offset : offset + 8] == sid for offset in range(9 if state[0] & TRACKED_FLAG else 1, len(state), 8))
