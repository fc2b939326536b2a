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

from bridge.delivery.dedup import DedupStoreError, Row

__all__ = ["SQLiteStore", "describe_sqlite_error"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer_state (
    key_hash INTEGER PRIMARY KEY,
    state    BLOB    NOT NULL,
    final_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transfer_state_final_at ON transfer_state(final_at) WHERE final_at IS NOT NULL;
"""


def describe_sqlite_error(error: sqlite3.Error) -> str:
    """What an SQLite error means for the operator, in one line (no traceback needed)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    detail = str(error) or error.__class__.__name__
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT"):
        return f"is not a SQLite database, or is corrupt ({detail}): move it away to start with an empty dedup state"
    if name == "SQLITE_FULL":
        return f"cannot be written: the disk is full ({detail})"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return (
            f"cannot be written ({detail}): check that the volume is mounted read-write and that the file "
            "and its directory are writable by this user"
        )
    if name.startswith("SQLITE_IOERR"):
        return f"cannot be written: I/O error ({detail})"
    return f"cannot be used ({name or error.__class__.__name__}: {detail})"


class SQLiteStore:
    """Opening checks that the file can be read and written; a file that cannot (a directory,
    random bytes, a read-only volume) raises ``DedupStoreError`` with the reason in one line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DedupStoreError(f"{self.path}: is a directory, not a SQLite file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DedupStoreError(f"{self.path}: cannot create its directory ({exc.strerror or exc})") from None
        self._mutex = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # Read and write once now, so a corrupt or read-only file fails the start, not the first save.
            self._db.execute("SELECT count(*) FROM (SELECT 1 FROM transfer_state LIMIT 1)").fetchone()
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._db.close()
            raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None

    def load(self) -> Iterator[tuple[int, bytes]]:
        """Every row, streamed (the caller builds its index as they come; the lock is held until
        the last row was read)."""
        with self._mutex:
            try:
                yield from self._db.execute("SELECT key_hash, state FROM transfer_state")
            except sqlite3.Error as exc:
                raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None

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
