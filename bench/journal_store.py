"""The journal store's costs (issue 9, first step: the store, not yet the daemon).

- append: wall time per ``Journal.append`` of a batch of B records (one
  transaction, ``synchronous=FULL``: one fsync per batch), for B = 1, 8, 32, 128;
  records/s shows what group commit buys.
- load: ``Journal.open`` + ``load()`` of a journal of N records (the read side of
  replay: checksums and sequence checks, not yet rebuilding the mediator's state).

Each record is a 64-byte body, about the size of an encoded vCPU state change.
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

from mediatord.journal import Journal

BODY = bytes(range(64))


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
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
