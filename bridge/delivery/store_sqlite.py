"""Durable embedded dedup store: one SQLite file in WAL mode, and a small reserve file beside it.

WAL with ``synchronous=NORMAL`` keeps every committed batch across a ``kill -9`` of the process
(the WAL is in the OS page cache); only a power loss can take the last batch, which at worst
re-publishes states with their identical ``event_id``.

**The reserve** (``<path>.reserve``, ``RESERVE_BYTES`` allocated when the store opens) is where
acknowledged states go while SQLite cannot take them — a full disk, a volume gone read-only. It
is written in place, into blocks allocated at start, so a disk with no free block left still
takes it. The next start reads it back (the states win over the file's when they are newer) and
writes it into SQLite as soon as SQLite can take them; until then the reserve keeps them. So a
restart during a full disk does not forget what was published: no older state is let through
after a final one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from bridge.delivery.dedup import DedupStoreError, Row, newer

__all__ = ["SQLiteStore", "describe_sqlite_error", "RESERVE_BYTES"]

log = logging.getLogger(__name__)

RESERVE_BYTES = 4 * 2**20
"""Room for roughly 40,000–100,000 transfers' states (a row is 19 bytes + 8 per published state,
+ 8 for an open transfer's tracking block)."""

_RESERVE_MAGIC = b"TBDEDUP1"
_RESERVE_HEADER = struct.Struct(">8sII")  # magic, row count, CRC-32 of the rows
_RESERVE_ROW = struct.Struct(">qqH")  # key hash, final_at (0 = not final), state length

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
    random bytes, a read-only volume) raises ``DedupStoreError`` with the reason in one line, and
    so does every later failure (``save`` on a full disk: "cannot be written: the disk is full")."""

    def __init__(self, path: str | Path, *, reserve_bytes: int = RESERVE_BYTES):
        self.path = Path(path)
        self.reserve_path = Path(f"{self.path}.reserve")
        self.reserve_bytes = reserve_bytes
        self.reserved = 0
        """Rows the reserve file holds now (0: empty)."""
        self._carry: dict[int, Row] = {}
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
            self._open_reserve()
        except sqlite3.Error as exc:
            self._db.close()
            raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None
        except DedupStoreError:
            self._db.close()
            raise

    @property
    def carried(self) -> int:
        """States read back from the reserve that SQLite has not taken yet (the next ``save`` writes them)."""
        return len(self._carry)

    def load(self) -> Iterator[tuple[int, bytes]]:
        """Every row, streamed (the caller builds its index as they come; the lock is held until
        the last row was read); states from the reserve replace the file's."""
        with self._mutex:
            carry = self._carry
            try:
                for key, state in self._db.execute("SELECT key_hash, state FROM transfer_state"):
                    if key not in carry:
                        yield key, state
            except sqlite3.Error as exc:
                raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None
            for key, state, _ in carry.values():
                yield key, state

    def save(self, rows: list[Row]) -> None:
        with self._mutex:
            if self._carry:  # the gate's rows are newer than the reserve's (it loaded them)
                merged = dict(self._carry)
                merged.update((row[0], row) for row in rows)
                rows = list(merged.values())
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO transfer_state(key_hash, state, final_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(key_hash) DO UPDATE SET state=excluded.state, "
                    "final_at=COALESCE(transfer_state.final_at, excluded.final_at)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                # A full disk rolls the transaction back by itself: a second ROLLBACK would raise and
                # hide why ("cannot rollback - no transaction is active").
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if self.reserved or self._carry:
                self._carry = {}
                self._write_reserve(b"", 0)

    def spill(self, rows: list[Row]) -> int:
        """Keep ``rows`` (and what the reserve already carries) in the reserve file, final states
        first; returns how many did not fit (0: all kept)."""
        with self._mutex:
            merged = dict(self._carry)
            merged.update((row[0], row) for row in rows)
            ordered = sorted(merged.values(), key=lambda row: row[2] is None)
            capacity = self.reserve_bytes - _RESERVE_HEADER.size
            chunks: list[bytes] = []
            used = 0
            for key, state, final_at in ordered:
                size = _RESERVE_ROW.size + len(state)
                if used + size > capacity:
                    break
                chunks.append(_RESERVE_ROW.pack(key, final_at or 0, len(state)) + state)
                used += size
            self._write_reserve(b"".join(chunks), len(chunks))
            return len(ordered) - len(chunks)

    def expire(self, final_before_ms: int) -> list[int]:
        with self._mutex:
            try:
                gone = [
                    k
                    for (k,) in self._db.execute(
                        "DELETE FROM transfer_state WHERE final_at IS NOT NULL AND final_at < ? RETURNING key_hash",
                        (final_before_ms,),
                    )
                ]
            except sqlite3.Error as exc:
                raise DedupStoreError(f"{self.path}: {describe_sqlite_error(exc)}") from None
            return [k for k in gone if k not in self._carry]

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
            except sqlite3.Error as exc:  # committed data is in the WAL either way
                log.warning("dedup store checkpoint at close failed: %s", describe_sqlite_error(exc))
            finally:
                self._db.close()

    # -- the reserve ---------------------------------------------------------------------------

    def _open_reserve(self) -> None:
        """Read what a previous run kept, then make sure the file's blocks are allocated."""
        try:
            fd = os.open(self.reserve_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DedupStoreError(f"{self.reserve_path}: cannot be written ({exc.strerror or exc})") from None
        try:
            self._carry = self._read_reserve(fd)
            self.reserved = len(self._carry)
            if os.fstat(fd).st_size < self.reserve_bytes:
                try:
                    os.posix_fallocate(fd, 0, self.reserve_bytes)
                except OSError as exc:
                    raise DedupStoreError(
                        f"{self.reserve_path}: cannot reserve {self.reserve_bytes // 1024} KiB for the dedup "
                        f"reserve ({exc.strerror or exc}): free space on the volume"
                    ) from None
        finally:
            os.close(fd)
        if self._carry:
            self._reconcile_carry()
            log.warning("dedup store: %d states read back from %s", len(self._carry), self.reserve_path)

    def _read_reserve(self, fd: int) -> dict[int, Row]:
        header = os.pread(fd, _RESERVE_HEADER.size, 0)
        if len(header) < _RESERVE_HEADER.size:
            return {}
        magic, count, crc = _RESERVE_HEADER.unpack(header)
        if magic != _RESERVE_MAGIC or count == 0:
            return {}
        body = os.pread(fd, self.reserve_bytes - _RESERVE_HEADER.size, _RESERVE_HEADER.size)
        rows: dict[int, Row] = {}
        offset = 0
        try:
            for _ in range(count):
                key, final_at, length = _RESERVE_ROW.unpack_from(body, offset)
                offset += _RESERVE_ROW.size
                state = body[offset : offset + length]
                if len(state) != length or not length:
                    raise ValueError("truncated")
                offset += length
                rows[key] = (key, state, final_at or None)
        except (struct.error, ValueError):
            rows = {}
        if not rows or zlib.crc32(body[:offset]) != crc:
            log.warning("dedup reserve %s is unreadable (a write torn by a crash?); ignored", self.reserve_path)
            return {}
        return rows

    def _reconcile_carry(self) -> None:
        """A crash between a commit and the reserve's reset leaves the file newer: keep the later state."""
        for key, (_, state, final_at) in list(self._carry.items()):
            found = self._db.execute("SELECT state, final_at FROM transfer_state WHERE key_hash = ?", (key,)).fetchone()
            if found is not None:
                self._carry[key] = (key, newer(found[0], state), found[1] or final_at)

    def _write_reserve(self, body: bytes, count: int) -> None:
        """In place (no new blocks needed), then fsync: the rows first, the header last."""
        fd = os.open(self.reserve_path, os.O_RDWR)
        try:
            if body:
                os.pwrite(fd, body, _RESERVE_HEADER.size)
            os.pwrite(fd, _RESERVE_HEADER.pack(_RESERVE_MAGIC, count, zlib.crc32(body)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.reserved = count
