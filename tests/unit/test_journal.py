"""The journal store: durable batches, checksums, schema versions, compaction, and
a torn WAL detected rather than silently shortened.

A crash is simulated by copying the database and its WAL while the writer still
has them open, as SIGKILL would leave them (no checkpoint, no clean close).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediatord.journal import Journal, JournalError, NewerSchemaError, Record, inspect_wal

BATCHES = [[("vcpu", f"domu1/{i}/{j}".encode()) for j in range(1 + i % 3)] for i in range(12)]


def _written(batches: list[list[tuple[str, bytes]]]) -> list[Record]:
    out, seq = [], 0
    for batch in batches:
        for kind, body in batch:
            seq += 1
            out.append(Record(seq, kind, body))
    return out


def _crash_copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_name(src.name + "-wal"), dst.with_name(dst.name + "-wal"))
    return dst


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[Path, bytes]:
    """A journal holding BATCHES, as a crash leaves it; and its WAL's bytes."""
    live = tmp_path / "live" / "journal.db"
    j = Journal.open(live)
    for batch in BATCHES:
        j.append(batch)
    db = _crash_copy(live, tmp_path)
    j.close()
    return db, db.with_name("journal.db-wal").read_bytes()


def test_batches_get_consecutive_sequence_numbers_and_survive_reopen(tmp_path: Path) -> None:
    j = Journal.open(tmp_path / "j.db")
    assert j.append([("domain", b"a"), ("device", b"b")]) == 2
    assert j.append([]) == 2
    assert j.append([("vcpu", b"c")]) == 3
    j.close()
    j = Journal.open(tmp_path / "j.db")
    loaded = j.load()
    assert loaded.records == [
        Record(1, "domain", b"a"),
        Record(2, "device", b"b"),
        Record(3, "vcpu", b"c"),
    ]
    assert (loaded.snapshot_seq, loaded.snapshot, loaded.damage) == (0, None, [])
    assert j.append([("vcpu", b"d")]) == 4


def test_crash_keeps_every_committed_batch(crashed: tuple[Path, bytes]) -> None:
    db, _ = crashed
    loaded = Journal.open(db).load()
    assert loaded.records == _written(BATCHES)
    assert loaded.damage == []


def test_wal_cut_by_one_byte_loses_the_last_batch_and_says_so(
    crashed: tuple[Path, bytes], tmp_path: Path
) -> None:
    db, wal = crashed
    db.with_name("journal.db-wal").write_bytes(wal[:-1])
    loaded = Journal.open(db).load()
    assert loaded.records == _written(BATCHES[:-1])
    [damage] = loaded.damage
    assert damage.where == "wal"
    assert damage.offset + damage.lost == len(wal) - 1
    assert "torn" in damage.reason


# The fixture is only read (each example cuts its own copy), so sharing it is safe.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0, max_value=10**9))
def test_wal_cut_anywhere_keeps_a_batch_prefix_and_reports_the_rest(
    crashed: tuple[Path, bytes], tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    db, wal = crashed
    cut %= len(wal) + 1
    copy = _crash_copy(db, tmp_path_factory.mktemp("cut"))
    copy.with_name("journal.db-wal").write_bytes(wal[:cut])
    loaded = Journal.open(copy).load()
    prefixes = [_written(BATCHES[:n]) for n in range(len(BATCHES) + 1)]
    assert loaded.records in prefixes  # whole batches only: one batch, one commit
    if cut == len(wal):
        assert loaded.records == prefixes[-1]
        assert loaded.damage == []
    for damage in loaded.damage:
        assert damage.where == "wal"
        assert damage.offset + damage.lost == cut
        assert damage.lost > 0


def test_record_failing_its_checksum_ends_the_valid_prefix(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    j.append([("vcpu", b"1"), ("vcpu", b"2"), ("vcpu", b"3"), ("vcpu", b"4")])
    j.close()
    with sqlite3.connect(path) as raw:  # bit rot in a database page
        raw.execute("UPDATE records SET body = ? WHERE seq = 3", (b"X",))
    loaded = Journal.open(path).load()
    assert [r.seq for r in loaded.records] == [1, 2]
    [damage] = loaded.damage
    assert (damage.where, damage.offset, damage.lost) == ("records", 3, 2)
    assert damage.reason == "record 3 fails its checksum"


def test_quarantine_keeps_the_damaged_records_aside_and_continues_the_prefix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    j.append([("vcpu", b"1"), ("vcpu", b"2"), ("vcpu", b"3"), ("vcpu", b"4")])
    j.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE records SET body = ? WHERE seq = 3", (b"X",))
    j = Journal.open(path)
    assert j.quarantine(j.load()) == 2
    assert j.append([("vcpu", b"new")]) == 3
    loaded = j.load()
    assert loaded.records == [
        Record(1, "vcpu", b"1"),
        Record(2, "vcpu", b"2"),
        Record(3, "vcpu", b"new"),
    ]
    assert loaded.damage == []
    j.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT seq, body, reason FROM quarantine ORDER BY seq").fetchall() == [
            (3, b"X", "record 3 fails its checksum"),
            (4, b"4", "record 3 fails its checksum"),
        ]


def test_gap_in_sequence_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    j.append([("vcpu", b"1"), ("vcpu", b"2"), ("vcpu", b"3")])
    j.close()
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM records WHERE seq = 2")
    loaded = Journal.open(path).load()
    assert [r.seq for r in loaded.records] == [1]
    assert loaded.damage[0].reason == "records 2..2 are missing"


def test_snapshot_compacts_the_records_it_covers(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    j.append([("vcpu", b"%d" % i) for i in range(1, 6)])
    j.snapshot(3, b"state@3")
    j.append([("vcpu", b"6")])
    j.snapshot(4, b"state@4")
    j.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT seq FROM records ORDER BY seq").fetchall() == [(5,), (6,)]
        assert raw.execute("SELECT seq FROM snapshots").fetchall() == [(4,)]
    j = Journal.open(path)
    loaded = j.load()
    assert (loaded.snapshot_seq, loaded.snapshot) == (4, b"state@4")
    assert loaded.records == [Record(5, "vcpu", b"5"), Record(6, "vcpu", b"6")]
    assert j.append([("vcpu", b"7")]) == 7
    with pytest.raises(ValueError, match="records up to 7"):
        j.snapshot(8, b"")


def test_corrupt_snapshot_refuses_to_load(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path)
    j.append([("vcpu", b"1")])
    j.snapshot(1, b"state")
    j.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE snapshots SET body = ?", (b"stale",))
    with pytest.raises(JournalError, match="snapshot at record 1 fails its checksum"):
        Journal.open(path).load()


def test_newer_schema_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 2")
    with pytest.raises(NewerSchemaError, match="schema version 2 is newer than this mediatord's"):
        Journal.open(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"not sqlite" * 100)
    with pytest.raises(JournalError, match="not a usable journal database"):
        Journal.open(path)


def test_garbage_wal_is_reported_whole() -> None:
    damage = inspect_wal(b"\x00" * 40)
    assert damage is not None
    assert (damage.offset, damage.lost) == (0, 40)
    assert damage.reason == "bad WAL magic 0x0"
