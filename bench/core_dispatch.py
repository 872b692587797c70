"""Core-only dispatch cost: PSCI calls per second through Mediator.call, no gRPC.

Prints one JSON object. Each figure is the median of --runs runs, with min and max.
Target (issue 10): at least 200,000 PSCI calls/s on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import Mediator
from mediatord.core.psci import PsciFn
from mediatord.server.engine import Engine
from mediatord.server.metrics import Metrics

TARGET_CALLS_PER_SECOND = 200_000


# A realistic mix: discovery, affinity queries, CPU_ON/CPU_OFF round trips, junk.
MIX = (
    ("domu1", 0, PsciFn.PSCI_VERSION, ()),
    ("domu1", 0, PsciFn.AFFINITY_INFO_64, (0x1, 0)),
    ("domu1", 0, PsciFn.CPU_ON_64, (0x1, 0x4008_0000, 7)),
    ("domu1", 1, PsciFn.CPU_OFF, ()),
    ("domu2", 0, PsciFn.PSCI_FEATURES, (PsciFn.SYSTEM_SUSPEND_64,)),
    ("dom0", 0, 0xDEAD_BEEF, (1, 2, 3)),
)
# The two calls of the gRPC benchmarks (bench/clients.py): the same work as one
# Guest.Call of bench/run.py, without gRPC, for its cost breakdown.
GUEST_PAIR = (
    ("domu1", 0, PsciFn.PSCI_VERSION, ()),
    ("domu1", 0, PsciFn.AFFINITY_INFO_64, (0, 0)),
)
Workload = tuple[tuple[str, int, int, tuple[int, ...]], ...]


def core_run(calls: int, workload: Workload) -> float:
    """Mediator.call alone on ``workload``, repeated: calls per second."""
    board = default_board()
    mediator, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    call = mediator.call
    rounds = calls // len(workload)
    start = time.perf_counter()
    for _ in range(rounds):
        for domain, vcpu, fid, args in workload:
            call(domain, vcpu, fid, args)
    return rounds * len(workload) / (time.perf_counter() - start)


def one_run(calls: int) -> float:
    return core_run(calls, MIX)


def pair_run(calls: int) -> float:
    """Mediator.call alone on bench/run.py's Guest.Call pair: calls per second."""
    return core_run(calls, GUEST_PAIR)


def engine_run(calls: int) -> float:
    """The server's Engine.call (core, in-flight accounting, metrics) on the same
    pair, awaited on an event loop as the Guest servicer does: calls per second."""

    async def loop() -> float:
        board = default_board()
        mediator, boot_effects = Mediator.boot(board, create_platform(board, ManualClock()))
        engine = Engine(mediator, boot_effects, Metrics())
        call = engine.call
        rounds = calls // len(GUEST_PAIR)
        start = time.perf_counter()
        for _ in range(rounds):
            for domain, vcpu, fid, args in GUEST_PAIR:
                await call(domain, vcpu, fid, args, None)
        return rounds * len(GUEST_PAIR) / (time.perf_counter() - start)

    return asyncio.run(loop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = [one_run(args.calls) for _ in range(args.runs)]
    median = statistics.median(rates)
    print(
        json.dumps(
            {
                "benchmark": "core_dispatch",
                "python": platform.python_version(),
                "calls_per_run": args.calls,
                "runs": args.runs,
                "calls_per_second": {
                    "median": round(median),
                    "min": round(min(rates)),
                    "max": round(max(rates)),
                },
                "target_calls_per_second": TARGET_CALLS_PER_SECOND,
                "met": median >= TARGET_CALLS_PER_SECOND,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
