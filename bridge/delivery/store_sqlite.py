"""Durable embedded dedup store: one SQLite file in WAL mode.

WAL with ``synchronous=NORMAL`` keeps every committed batch across a ``kill -9`` of the process
(the WAL is in the OS page cache); only a power loss can take the last batch, which at worst
re-publishes states with their identical ``event_id``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from bridge.delivery.dedup import Row

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer_state (
    key_hash INTEGER PRIMARY KEY,
    state    BLOB    NOT NULL,
    final_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transfer_state_final_at ON transfer_state(final_at) WHERE final_at IS NOT NULL;
"""


class SQLiteStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._mutex = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> Iterator[tuple[int, bytes]]:
        """Every row, streamed (the caller builds its index as they come; the lock is held until
        the last row was read)."""
        with self._mutex:
            yield from self._db.execute("SELECT key_hash, state FROM transfer_state")

    def save(self, rows: list[Row]) -> None:
        with self._mutex:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO transfer_state(key_hash, state, final_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(key_hash) DO UPDATE SET state=excluded.state, "
                    "final_at=COALESCE(transfer_state.final_at, excluded.final_at)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def expire(self, final_before_ms: int) -> list[int]:
        with self._mutex:
            gone = [
                k
                for (k,) in self._db.execute(
                    "DELETE FROM transfer_state WHERE final_at IS NOT NULL AND final_at < ? RETURNING key_hash",
                    (final_before_ms,),
                )
            ]
            return gone

    def bytes_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total

    def close(self) -> None:
        with self._mutex:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
