"""The journal's storage: versioned, checksummed records in SQLite (WAL mode).

This module is only the store (issue 9, first step): what a record holds and how
the daemon replays it are the engine's business. Its guarantees:

- ``append`` writes a batch of records in one transaction with
  ``synchronous=FULL``, so one fsync makes the whole batch durable: the caller
  answers the RPCs of a batch only after ``append`` returns (group commit).
- Every record carries a CRC-32 of its sequence number, kind and body. SQLite
  checksums its WAL frames but not its database pages, so a page damaged after
  a checkpoint would otherwise be read back as valid data.
- ``open`` reads the WAL file itself before SQLite recovers it. SQLite keeps
  the committed prefix of a torn WAL and drops the rest without a word; here
  the dropped bytes are reported as :class:`Damage`. A WAL cut exactly at a
  commit boundary cannot be told from one that was never longer.
- ``load`` returns the valid prefix and reports what follows it; ``quarantine``
  moves that rest into a table of its own (kept, never replayed), so the journal
  continues from the prefix without losing the evidence.
- A database written by a newer schema is refused with :class:`NewerSchemaError`.
- ``snapshot`` stores a snapshot at a sequence number and deletes the records
  it covers (compaction), so a replay reads one snapshot and a bounded tail.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1

# The WAL format: https://www.sqlite.org/fileformat2.html#walformat
_WAL_MAGIC_LE = 0x377F0682  # checksums over little-endian 32-bit words
_WAL_MAGIC_BE = 0x377F0683  # ... over big-endian words
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do."""


class NewerSchemaError(JournalError):
    pass


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    body: bytes


@dataclass(frozen=True)
class Damage:
    """Data found and not kept: where, how much, and why."""

    where: str  # "wal" or "records"
    offset: int  # byte offset in the WAL, or the first sequence number dropped
    lost: int  # bytes (wal) or records (records)
    reason: str


@dataclass(frozen=True)
class Loaded:
    snapshot_seq: int  # 0: no snapshot
    snapshot: bytes | None
    records: list[Record]  # the valid tail after the snapshot, in order
    damage: list[Damage] = field(default_factory=list)


def record_crc(seq: int, kind: str, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(kind.encode(), zlib.crc32(seq.to_bytes(8, "big"))))


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def inspect_wal(wal: bytes) -> Damage | None:
    """The bytes of ``wal`` that SQLite's recovery will not keep, if any of them
    belong to the current WAL generation (a torn or corrupt write). Frames left
    over from an earlier generation (other salts) are normal and not damage."""
    if not wal:
        return None
    if len(wal) < _WAL_HEADER:
        return Damage("wal", 0, len(wal), "WAL header is incomplete")
    magic, _version, page_size, _ckpt, salt1, salt2, c0, c1 = struct.unpack(">8I", wal[:32])
    if magic not in (_WAL_MAGIC_LE, _WAL_MAGIC_BE):
        return Damage("wal", 0, len(wal), f"bad WAL magic {magic:#x}")
    big = magic == _WAL_MAGIC_BE
    s0, s1 = _wal_checksum(wal[:24], 0, 0, big)
    if (s0, s1) != (c0, c1):
        return Damage("wal", 0, len(wal), "WAL header checksum mismatch")
    frame = _WAL_FRAME_HEADER + page_size
    offset = kept = _WAL_HEADER
    while offset + _WAL_FRAME_HEADER <= len(wal):
        _page, commit_size, f_salt1, f_salt2, f0, f1 = struct.unpack(
            ">6I", wal[offset : offset + _WAL_FRAME_HEADER]
        )
        if (f_salt1, f_salt2) != (salt1, salt2):
            return None if kept == offset else _torn(wal, kept, _UNCOMMITTED)
        if offset + frame > len(wal):
            return _torn(wal, kept, "a frame is cut short (torn write)")
        s0, s1 = _wal_checksum(wal[offset : offset + 8], s0, s1, big)
        s0, s1 = _wal_checksum(wal[offset + _WAL_FRAME_HEADER : offset + frame], s0, s1, big)
        if (s0, s1) != (f0, f1):
            return _torn(wal, kept, f"frame checksum mismatch at byte {offset}")
        offset += frame
        if commit_size:
            kept = offset
    if offset < len(wal):
        return _torn(wal, kept, "a frame header is cut short (torn write)")
    return None if kept == offset else _torn(wal, kept, _UNCOMMITTED)


# Written by a transaction that had not committed: nothing in it was acknowledged.
_UNCOMMITTED = "frames of a transaction that never committed"


def _torn(wal: bytes, kept: int, reason: str) -> Damage:
    return Damage("wal", kept, len(wal) - kept, reason)


class Journal:
    """One journal database. Use it from one thread at a time: the daemon opens and
    replays it on the event loop, then writes from its journal thread only."""

    def __init__(self, db: sqlite3.Connection, damage: list[Damage]) -> None:
        self._db = db
        self._opened_damage = damage
        row = db.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()
        snap = db.execute("SELECT coalesce(max(seq), 0) FROM snapshots").fetchone()
        self.last_seq: int = max(row[0], snap[0])

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Open (or create) the journal at ``path``. Raises :class:`JournalError`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        damage: list[Damage] = []
        wal_path = path.with_name(path.name + "-wal")
        if wal_path.exists():
            wal = wal_path.read_bytes()
            found = inspect_wal(wal)
            if found is not None:
                # SQLite is about to drop these bytes: keep a copy as evidence.
                kept = wal_path.with_name(f"{wal_path.name}.damaged-{found.offset}-{len(wal)}")
                kept.write_bytes(wal)
                damage.append(
                    dataclasses.replace(found, reason=f"{found.reason}; copy kept in {kept.name}")
                )
        try:
            # The daemon writes from one journal thread and reads at start on the
            # event loop, never both at once.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            cls._migrate(db, path)
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{path}: not a usable journal database: {e}") from e
        return cls(db, damage)

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: Path) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
                f"{path}: journal schema version {version} is newer than this mediatord's "
                f"({SCHEMA_VERSION}); run the mediatord that wrote it, or move the state "
                f"directory aside to start empty"
            )
        if version == SCHEMA_VERSION:
            return
        db.executescript(
            """
            BEGIN;
            CREATE TABLE records (
                seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL,
                crc INTEGER NOT NULL);
            CREATE TABLE snapshots (
                seq INTEGER PRIMARY KEY, body BLOB NOT NULL, crc INTEGER NOT NULL);
            CREATE TABLE quarantine (
                seq INTEGER NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL,
                crc INTEGER NOT NULL, reason TEXT NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            PRAGMA user_version = 1;
            COMMIT;
            """
        )

    def append(self, batch: Iterable[tuple[str, bytes]], meta: dict[str, str] | None = None) -> int:
        """Write ``batch`` (kind, body), and ``meta`` with it, durably in one
        transaction; return the sequence number of its last record."""
        rows = []
        seq = self.last_seq
        for kind, body in batch:
            seq += 1
            rows.append((seq, kind, body, record_crc(seq, kind, body)))
        if not rows:
            return seq
        with self._transaction():
            self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
            if meta:
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        self.last_seq = seq
        return seq

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str]) -> None:
        """Store ``values`` (what the journal is of: the board, the boot time) durably."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    def quarantined(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def snapshot(self, seq: int, body: bytes) -> None:
        """Store the state as of record ``seq`` and drop every record it covers."""
        if not 0 < seq <= self.last_seq:
            raise ValueError(f"snapshot at {seq}: the journal holds records up to {self.last_seq}")
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                (seq, body, record_crc(seq, "snapshot", body)),
            )
            self._db.execute("DELETE FROM snapshots WHERE seq < ?", (seq,))
            self._db.execute("DELETE FROM records WHERE seq <= ?", (seq,))

    def load(self) -> Loaded:
        """The newest valid snapshot and the valid records after it. A record that
        fails its CRC, or a gap in the sequence, ends the valid prefix; everything
        from there on is reported as damage, not returned and not deleted."""
        damage = list(self._opened_damage)
        snapshot_seq, snapshot = 0, None
        row = self._db.execute("SELECT seq, body, crc FROM snapshots ORDER BY seq DESC").fetchone()
        if row is not None:
            seq, body, crc = row
            if crc != record_crc(seq, "snapshot", body):
                raise JournalError(
                    f"snapshot at record {seq} fails its checksum: the records it replaced "
                    f"are gone, so the state cannot be rebuilt; restore the state directory "
                    f"from a backup"
                )
            snapshot_seq, snapshot = seq, bytes(body)
        records: list[Record] = []
        expected = snapshot_seq + 1
        rows = self._db.execute(
            "SELECT seq, kind, body, crc FROM records WHERE seq > ? ORDER BY seq", (snapshot_seq,)
        ).fetchall()
        for i, (seq, kind, body, crc) in enumerate(rows):
            reason = None
            if seq != expected:
                reason = f"records {expected}..{seq - 1} are missing"
            elif crc != record_crc(seq, kind, body):
                reason = f"record {seq} fails its checksum"
            if reason is not None:
                damage.append(Damage("records", expected, len(rows) - i, reason))
                break
            records.append(Record(seq, kind, bytes(body)))
            expected += 1
        return Loaded(snapshot_seq, snapshot, records, damage)

    def quarantine(self, loaded: Loaded) -> int:
        """Move the records after ``loaded``'s valid prefix into the ``quarantine``
        table (kept for inspection, never replayed) so that new records continue
        the valid sequence; return how many were moved."""
        end = loaded.records[-1].seq if loaded.records else loaded.snapshot_seq
        reasons = [d.reason for d in loaded.damage if d.where == "records"]
        reason = reasons[0] if reasons else "after the valid prefix"
        with self._transaction():
            moved = self._db.execute(
                "INSERT INTO quarantine SELECT seq, kind, body, crc, ? FROM records WHERE seq > ?",
                (reason, end),
            ).rowcount
            self._db.execute("DELETE FROM records WHERE seq > ?", (end,))
        self.last_seq = end
        return moved

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
