"""The state directory: its lock, and the state rebuilt from its journal at start.

Recovery boots a fresh mediator of the board at the journal's boot time, loads
the newest snapshot and replays the records after it (``mediatord.core.records``),
each at the clock time it first ran at. Because the core is deterministic this
is the exact state the daemon had acknowledged, emulated hardware included, and
the VcpuEvents its agents had not yet received are queued again.

An operation in flight at the crash (a host suspend midway through its steps,
say) either has its record in the journal, and is replayed whole, or has none,
and never happened: its caller was never answered. Nothing is half-applied.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mediatord import logs
from mediatord.backends import create_platform
from mediatord.core import records, statecodec
from mediatord.core.clock import Clock, ManualClock
from mediatord.core.config import BoardConfig
from mediatord.core.mediator import Mediator
from mediatord.journal import Damage, Journal, JournalError, Loaded
from mediatord.server import export
from mediatord.server.engine import MAILBOX_LIMIT
from mediatord.server.journaling import Mailboxes, decode_snapshot, fold_mailboxes, new_history

JOURNAL_FILE: Final = "journal.db"
LOCK_FILE: Final = "lock"

log = logs.get("mediatord.recovery")


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/mediatord, else ~/.local/state/mediatord (systemd: /var/lib)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mediatord"


def board_digest(board: BoardConfig) -> str:
    encoded = json.dumps(statecodec.encode(board), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory for this process: two daemons on one journal
    would each replay and append, and corrupt each other's state."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise JournalError(f"cannot use state directory {state_dir}: {exc.strerror}") from None
    try:
        _flock(fd, fcntl.LOCK_EX, f"state directory {state_dir} is in use by another mediatord")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def clock_meta(clock: Clock) -> dict[str, str]:
    """Where the clock stands, and the wall time then: written with every batch
    and at a clean stop."""
    return {"clock_ns": str(clock.now_ns()), "wall_ns": str(time.time_ns())}


def continue_clock(journal: Journal, clock: Clock) -> None:
    """A restarted daemon's clock: where the last one left it, plus the wall time
    the daemon was down (the board's counter kept counting meanwhile), so time
    a client saw never goes backwards. Replay itself never reads this."""
    stored, wall = journal.meta("clock_ns"), journal.meta("wall_ns")
    if stored is None or wall is None:
        return
    down = max(0, time.time_ns() - int(wall))
    clock.set(max(clock.now_ns(), int(stored)) + down)


def _flock(fd: int, mode: int, in_use: str, hint: str = "") -> None:
    """Take the lock at once or say who holds it (the pid it wrote)."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise JournalError(f"{in_use} (pid {holder}){hint}") from None


@contextlib.contextmanager
def _not_in_use(state_dir: Path) -> Iterator[None]:
    """Hold off a daemon while ``state_dir`` is read, changing nothing in it (a
    shared lock, taken read-only, so a read-only copy can be checked too)."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        yield  # no daemon ever locked it
        return
    try:
        _flock(
            fd,
            fcntl.LOCK_SH,
            f"state directory {state_dir} is in use by mediatord",
            "; use `mediatorctl state export` to see its state",
        )
        yield
    finally:
        os.close(fd)


@dataclass
class Recovered:
    state_dir: Path
    mediator: Mediator
    mailboxes: Mailboxes
    journal: Journal
    snapshot_seq: int
    replayed: int  # records replayed after the snapshot
    damage: list[Damage] = field(default_factory=list)
    quarantined: int = 0
    seconds: float = 0.0
    fresh: bool = False
    history: str = ""
    handed: dict[int, int] = field(default_factory=dict)  # domain id -> seq a stream wrote

    def about(self) -> dict[str, object]:
        """What start found, for ExportState and check-state."""
        return {
            "state_dir": str(self.state_dir),
            "recovered": {
                "fresh": self.fresh,
                "snapshot_seq": self.snapshot_seq,
                "replayed": self.replayed,
                "seconds": round(self.seconds, 6),
                "damage": export.damage(self.damage),
                "quarantined": self.quarantined,
            },
        }


def recover(state_dir: Path, board: BoardConfig, clock: Clock, *, repair: bool = True) -> Recovered:
    """Open the journal in ``state_dir`` and rebuild the state it holds (a fresh
    boot for a new journal). Damage is reported and, with ``repair``, the records
    after the valid prefix are moved to the journal's quarantine table. Raises
    JournalError when the journal cannot be used, with what to do about it."""
    started = time.perf_counter()
    journal = Journal.open(state_dir / JOURNAL_FILE)
    try:
        loaded = journal.load()
        recovered = _rebuild(state_dir, journal, loaded, board, clock)
        if repair and any(d.where == "records" for d in loaded.damage):
            recovered.quarantined = journal.quarantine(loaded)
            # The records after the damage are gone, and with them events agents
            # may have received: the numbering that follows is another history.
            recovered.history = _new_history(journal)
        elif repair and not recovered.history:
            recovered.history = _new_history(journal)  # new, or older than histories
    except BaseException:
        journal.close()
        raise
    recovered.seconds = time.perf_counter() - started
    return recovered


def check(state_dir: Path, board: BoardConfig) -> tuple[dict[str, Any], bool]:
    """Rebuild the state in ``state_dir`` without changing it (from a copy of the
    journal); the export document and whether any damage was found."""
    if not (state_dir / JOURNAL_FILE).is_file():
        raise JournalError(f"{state_dir} holds no journal ({JOURNAL_FILE})")
    with _not_in_use(state_dir), tempfile.TemporaryDirectory(prefix="mediatord-check-") as tmp:
        for name in (JOURNAL_FILE, f"{JOURNAL_FILE}-wal"):
            if (state_dir / name).is_file():
                shutil.copyfile(state_dir / name, Path(tmp) / name)
        recovered = recover(Path(tmp), board, ManualClock(), repair=False)
        try:
            about = recovered.about() | {
                "state_dir": str(state_dir),
                "seq": recovered.journal.last_seq,
                "quarantined_before": recovered.journal.quarantined(),
            }
            doc = export.document(recovered.mediator, recovered.mailboxes, about)
        finally:
            recovered.journal.close()
    return doc, bool(recovered.damage)


def _rebuild(
    state_dir: Path, journal: Journal, loaded: Loaded, board: BoardConfig, clock: Clock
) -> Recovered:
    digest = board_digest(board)
    stored = journal.meta("board")
    fresh = stored is None
    if fresh:
        if loaded.snapshot is not None or loaded.records:
            raise JournalError("the journal holds records but not the board they are for")
        # (Its numbering of VcpuEvents gets a name in recover(), as an older
        # journal without one does.)
        journal.set_meta({"board": digest, "board_name": board.name, "boot_ns": str(clock.tick())})
    elif stored != digest:
        raise JournalError(
            f"the journal was written for board {journal.meta('board_name')!r} "
            f"(sha256 {stored}), not this one ({board.name!r}, sha256 {digest}); start "
            "with that board file, give this board its own --state-dir, or move the state "
            "directory aside to start empty"
        )
    else:
        clock.set(int(journal.meta("boot_ns") or 0))
    mediator, boot_effects = Mediator.boot(board, create_platform(board, clock))
    mailboxes: Mailboxes = {}
    handed: dict[int, int] = {}
    fold_mailboxes(mailboxes, boot_effects, MAILBOX_LIMIT)
    if loaded.snapshot is not None:
        try:
            mailboxes, handed = decode_snapshot(mediator, loaded.snapshot, MAILBOX_LIMIT)
        except statecodec.CodecError as exc:
            raise JournalError(
                f"the snapshot at record {loaded.snapshot_seq} cannot be read: {exc}; run "
                "the mediatord version that wrote it, or move the state directory aside"
            ) from None
    for record in loaded.records:
        if record.kind == records.DELIVERED:
            _trim(mailboxes, handed, record.body)
            continue
        try:
            effects = records.replay(mediator, clock, record.kind, record.body)
        except records.ReplayError as exc:
            raise JournalError(f"record {record.seq}: {exc}") from None
        fold_mailboxes(mailboxes, effects, MAILBOX_LIMIT)
    return Recovered(
        state_dir,
        mediator,
        mailboxes,
        journal,
        loaded.snapshot_seq,
        len(loaded.records),
        damage=list(loaded.damage),
        fresh=fresh,
        history=journal.meta("history") or "",
        handed=handed,
    )


def _new_history(journal: Journal) -> str:
    history = new_history()
    journal.set_meta({"history": history})
    return history


def _trim(mailboxes: Mailboxes, handed: dict[int, int], body: bytes) -> None:
    for domain_id, acked, written in records.delivered_marks(body):
        box = mailboxes.get(domain_id)
        if box is not None:
            handed[domain_id] = written
            events = box[1]
            while events and events[0].seq <= acked:
                events.popleft()
