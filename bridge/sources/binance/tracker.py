"""Non-final transfers that may leave the hot window before they end, re-queried until they do.

Binance filters history on creation time, and a row changes in place without an update time: a
withdrawal awaiting approval for eight days is out of a seven-day hot window while it still
changes. Every non-final row a poll sees is remembered here; once it is older than the hot window
it is asked for directly — withdrawals by ``idList`` (45 per request), deposits by ``txId`` (a
narrow window around its creation when it has none) — until a final state is seen or it is older
than the tracking limit (90 days: Binance's window; counted, logged).

Forgetting is staged: a final state seen during a cycle removes its transfer only when the cycle
``commit``s, i.e. after the engine had every item of the cycle acknowledged by Kafka; a failed
cycle ``rollback``s, so a final state that was never published is asked for again. The set is
kept in ``<cursor_dir>/<source>.open.json`` (replaced atomically), so a restart loses nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.contract.events import TransferEvent
from bridge.contract.timeutil import to_epoch_ms
from bridge.sources.binance import messages as m

__all__ = ["ID_LIST_MAX", "OpenTransfer", "OpenTransfers", "Requery", "requeries"]

ID_LIST_MAX = 45
"""Ids per ``idList`` (the newest docs; older pages said 50)."""


@dataclass(frozen=True, slots=True)
class OpenTransfer:
    """What re-querying one transfer needs: where it was read, its id, creation time and hash."""

    key: str
    channel: str
    transfer_id: str
    created_ms: int
    tx_id: str | None = None
    email: str | None = None


class OpenTransfers:
    """The open transfers of one source, by event key."""

    def __init__(self, directory: Path, source: str, *, cap: int = 50_000):
        self.path = directory / (source.replace(":", "-") + ".open.json")
        self.cap = cap
        self._open: dict[str, OpenTransfer] = {}
        self._closing: set[str] = set()
        self._dirty = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._open)

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            entries = [OpenTransfer(**entry) for entry in data.get("open", [])]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"open-transfer file {self.path} is unreadable ({exc.__class__.__name__}); remove it to track from the next polls") from None
        self._open = {entry.key: entry for entry in entries}

    def observe(self, event: TransferEvent, channel: str, email: str | None = None) -> None:
        """A row as a poll saw it: remember it while non-final, stage its removal once final."""
        if event.is_final:
            if event.key in self._open:
                self._closing.add(event.key)
            return
        self._closing.discard(event.key)
        if event.key in self._open or event.created_at is None:
            return
        tx_id = event.raw.get("txId") if event.raw else None
        self._open[event.key] = OpenTransfer(
            event.key, channel, event.transfer_id, to_epoch_ms(event.created_at), tx_id if isinstance(tx_id, str) and tx_id else None, email
        )
        self._dirty = True
        while len(self._open) > self.cap:
            oldest = min(self._open.values(), key=lambda entry: entry.created_ms)
            del self._open[oldest.key]
            self.dropped += 1

    def stale(self, covered_from_ms: int) -> list[OpenTransfer]:
        """Open transfers created before ``covered_from_ms`` (what the hot window no longer reads)."""
        return sorted((e for e in self._open.values() if e.created_ms < covered_from_ms), key=lambda e: (e.created_ms, e.key))

    def expire(self, older_than_ms: int) -> list[OpenTransfer]:
        """Stop tracking transfers created before ``older_than_ms``; returns them."""
        gone = [entry for entry in self._open.values() if entry.created_ms < older_than_ms]
        for entry in gone:
            del self._open[entry.key]
            self._closing.discard(entry.key)
        self._dirty |= bool(gone)
        return gone

    def commit(self) -> None:
        """The cycle's items are all acknowledged: forget what ended, and persist."""
        for key in self._closing:
            self._dirty |= self._open.pop(key, None) is not None
        self._closing.clear()
        if self._dirty:
            self._save()
            self._dirty = False

    def rollback(self) -> None:
        """The cycle failed: keep asking for what it saw end (the end may not be published)."""
        self._closing.clear()

    def entries(self) -> Iterable[OpenTransfer]:
        return self._open.values()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.tmp")
        with open(partial, "w") as handle:
            json.dump({"open": [asdict(entry) for entry in self._open.values()]}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


@dataclass(frozen=True, slots=True)
class Requery:
    """One read that asks for open transfers again: ``params`` paged, or a sweep of ``window``."""

    path: str
    params: dict[str, str]
    email: str | None = None
    window: tuple[int, int] | None = None


def requeries(stale: Iterable[OpenTransfer], now_ms: int, *, withdrawals: bool, txid_max: int) -> Iterator[Requery]:
    """The reads that ask for ``stale`` transfers: withdrawals by ``idList``, the travel-rule
    history's by one window (neither when ``withdrawals`` is false: deferred for their budget);
    deposits of one endpoint by ``txId`` — or, when more than ``txid_max``, by one window over
    their creation times, which costs less."""
    stale = list(stale)
    if withdrawals:
        ids = [e.transfer_id for e in stale if e.channel == m.WITHDRAWAL_CHANNEL]
        for chunk in range(0, len(ids), ID_LIST_MAX):
            yield Requery(m.WITHDRAWAL_PATH, {"idList": ",".join(ids[chunk : chunk + ID_LIST_MAX])})
        local = [e.created_ms for e in stale if e.channel == m.LOCALENTITY_WITHDRAWAL_CHANNEL]
        if local:  # no idList there (its filters are trId/txId): one window over their creation times,
            # widened by a second each way: applyTime, which they were remembered by, is to the second
            yield Requery(m.LOCALENTITY_WITHDRAWAL_PATH, {}, None, (min(local) - 1_000, min(now_ms, max(local) + 1_000)))
    deposits: dict[tuple[str, str | None], list[OpenTransfer]] = {}
    for entry in stale:
        if entry.channel not in m.WITHDRAWAL_CHANNELS:
            deposits.setdefault((entry.channel, entry.email), []).append(entry)
    for (channel, email), entries in deposits.items():
        path = m.SUB_DEPOSIT_PATH if channel == m.SUB_DEPOSIT_CHANNEL else m.DEPOSIT_PATH
        if len(entries) > txid_max:
            yield Requery(path, {}, email, (min(e.created_ms for e in entries), max(e.created_ms for e in entries)))
            continue
        for (tx_id, _), group in _by_transaction(entries).items():
            first, last = min(e.created_ms for e in group), max(e.created_ms for e in group)
            pad = 86_400_000 if tx_id else 1_000  # no hash: a narrow window around its creation
            params = {"startTime": str(first - pad), "endTime": str(min(now_ms, last + pad))}
            if tx_id:
                params["txId"] = tx_id
            yield Requery(path, params, email)


def _by_transaction(entries: Iterable[OpenTransfer]) -> dict[tuple[str | None, int | None], list[OpenTransfer]]:
    """Open deposits of one endpoint grouped by what one request asks for: one txId can fund
    several deposits; a deposit without a hash is asked for by its creation time alone."""
    groups: dict[tuple[str | None, int | None], list[OpenTransfer]] = {}
    for entry in entries:
        groups.setdefault((entry.tx_id, None if entry.tx_id else entry.created_ms), []).append(entry)
    return groups
