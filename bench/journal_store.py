"""The journal's costs (issue 9); bench/run.py reports them as part of (g).

- append: wall time per ``Journal.append`` of a batch of B records (one
  transaction, ``synchronous=FULL``: one fsync per batch), for B = 1, 8, 32, 128;
  records/s shows what group commit buys.
- load: ``Journal.open`` + ``load()`` of a journal of N 64-byte records (the
  store's read side only).
- replay: what a daemon start costs: ``recovery.recover`` of a journal of N real
  records (guest calls, interrupts, device moves and host suspends and resumes,
  as the engine writes them), without a snapshot and with the snapshot a daemon
  with ``--snapshot-every 10000`` would have written.

The journal lives in a temporary directory (``--dir`` to choose the file system:
fsync cost is the disk's, not the code's).

    python bench/journal_store.py [--records 100000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core import records
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import Blocked, Mediator, Raised, Returned
from mediatord.journal import Journal
from mediatord.server import recovery
from mediatord.server.engine import MAILBOX_LIMIT
from mediatord.server.journaling import Mailboxes, encode_snapshot, fold_mailboxes

BODY = bytes(range(64))
CPU_OFF, CPU_ON_64, SYSTEM_SUSPEND_64 = 0x8400_0002, 0xC400_0003, 0xC400_000E
PM_REQ_NODE, PM_RELEASE_NODE = 0xC200_000D, 0xC200_000E
# One round of a realistic mix, as (domain, vCPU, function, args): 12 calls.
ROUND = (
    ("domu1", 0, CPU_ON_64, (1, 0x4000_1000, 0)),
    ("domu1", 1, CPU_OFF, ()),
    ("domu2", 0, CPU_ON_64, (1, 0x4000_2000, 0)),
    ("domu2", 1, CPU_OFF, ()),
    ("domu2", 0, PM_REQ_NODE, (40 | 1 << 32, 100 | 1 << 32)),  # SD_1: node | caps, QoS | ack
    ("domu2", 0, PM_RELEASE_NODE, (40,)),
    ("dom0", 0, CPU_ON_64, (2, 0x4000_3000, 0)),
    ("dom0", 2, CPU_OFF, ()),
)


def append_cost(directory: Path, batch: int, batches: int) -> dict[str, float]:
    j = Journal.open(directory / f"append-{batch}.db")
    records = [("vcpu", BODY)] * batch
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        j.append(records)
        times.append(time.perf_counter() - start)
    j.close()
    per_batch = statistics.median(times)
    return {
        "batch": batch,
        "batches": batches,
        "per_batch_ms": round(per_batch * 1e3, 3),
        "per_batch_max_ms": round(max(times) * 1e3, 3),
        "records_per_s": round(batch / per_batch),
    }


def load_cost(directory: Path, records: int, runs: int) -> dict[str, float]:
    path = directory / "load.db"
    j = Journal.open(path)
    for _ in range(records // 1000):
        j.append([("vcpu", BODY)] * 1000)
    j.close()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        j = Journal.open(path)
        loaded = j.load()
        j.close()
        times.append(time.perf_counter() - start)
        if len(loaded.records) != records or loaded.damage:
            raise SystemExit(f"load returned {len(loaded.records)} records, {loaded.damage}")
    return {
        "records": records,
        "runs": runs,
        "open_and_load_s": round(statistics.median(times), 4),
        "open_and_load_max_s": round(max(times), 4),
        "file_bytes": path.stat().st_size,
    }


def write_real_journal(directory: Path, count: int, snapshot_at: int | None) -> int:
    """A journal of ``count`` records as the engine writes them: the ROUND mix, and
    every 500 records a host suspend (domUs first) and the wake interrupt that
    resumes it. With ``snapshot_at``, the snapshot a daemon would have taken there."""
    board = default_board()
    clock = ManualClock(1_000_000_000)
    mediator, boot = Mediator.boot(board, create_platform(board, clock))
    mailboxes: Mailboxes = {}
    fold_mailboxes(mailboxes, boot, MAILBOX_LIMIT)
    journal = Journal.open(directory / recovery.JOURNAL_FILE)
    journal.set_meta(
        {"board": recovery.board_digest(board), "board_name": board.name, "boot_ns": "1000000000"}
    )
    batch: list[records.Record] = []
    written = 0

    def call(domain: str, vcpu: int, fid: int, args: tuple[int, ...]) -> None:
        now = clock.tick()
        outcome = mediator.call(domain, vcpu, fid, args)
        if isinstance(outcome, Returned | Blocked):
            x0 = outcome.regs[0] if isinstance(outcome, Returned) else None
            batch.append(records.call(now, domain, vcpu, fid, args, x0=x0))
            fold_mailboxes(mailboxes, outcome.effects, MAILBOX_LIMIT)

    while written < count:
        if written % 500 < len(ROUND) * 2 and written >= 500:
            for name, entry in (("domu1", 0x4000_1000), ("domu2", 0x4000_2000)):
                call(name, 0, SYSTEM_SUSPEND_64, (entry, 1))
            call("dom0", 0, SYSTEM_SUSPEND_64, (0x4000_3000, 1))
            for irq in (53, 54, 97):  # UART_0 wakes the host, UART_1/USB_0 the domUs
                now = clock.tick()
                raised = mediator.raise_interrupt(irq)
                assert isinstance(raised, Raised), raised
                batch.append(records.raise_interrupt(now, irq, "", 0, raised.outcome.value))
                fold_mailboxes(mailboxes, raised.effects, MAILBOX_LIMIT)
        for step in ROUND:
            call(*step)
        clock.advance(1_000_000)
        take = batch[: count - written]
        batch.clear()
        first = written
        written = journal.append(take) if take else written
        if snapshot_at is not None and first < snapshot_at <= written:
            # (Taken at a batch's end: the state then is the state at that record.)
            journal.snapshot(written, encode_snapshot(mediator, mailboxes))
    journal.close()
    return written


def replay_cost(directory: Path, count: int, runs: int) -> dict[str, object]:
    """Start-up: recovery.recover of ``count`` records, without and with a snapshot."""
    out: dict[str, object] = {"records": count, "runs": runs}
    board = default_board()
    for name, snapshot_at in (("no_snapshot", None), ("snapshot_every_10000", count - 9_999)):
        where = directory / name
        where.mkdir()
        write_real_journal(where, count, snapshot_at)
        times, replayed = [], 0
        for _ in range(runs):
            start = time.perf_counter()
            recovered = recovery.recover(where, board, ManualClock(), repair=False)
            times.append(time.perf_counter() - start)
            replayed = recovered.replayed
            recovered.journal.close()
        out[name] = {
            "replayed": replayed,
            "seconds": round(statistics.median(times), 4),
            "seconds_max": round(max(times), 4),
            "journal_bytes": (where / recovery.JOURNAL_FILE).stat().st_size,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="journal size for load")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the journals")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        result = {
            "file_system": os.path.realpath(directory),
            "append": [append_cost(directory, b, 200) for b in (1, 8, 32, 128)],
            "load": load_cost(directory, args.records - args.records % 1000, 5),
            "replay": replay_cost(directory, args.records, 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
