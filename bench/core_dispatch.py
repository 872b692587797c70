"""Core-only dispatch cost: PSCI calls per second through Mediator.call, no gRPC.

Prints one JSON object. Each figure is the median of --runs runs, with min and max.
Target (issue 10): at least 200,000 PSCI calls/s on one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from mediatord.board import default_board
from mediatord.core.mediator import Mediator
from mediatord.core.psci import PsciFn

TARGET_CALLS_PER_SECOND = 200_000


def one_run(calls: int) -> float:
    mediator, _ = Mediator.boot(default_board())
    call = mediator.call
    # A realistic mix: discovery, affinity queries, CPU_ON/CPU_OFF round trips, junk.
    mix = [
        ("domu1", 0, PsciFn.PSCI_VERSION, ()),
        ("domu1", 0, PsciFn.AFFINITY_INFO_64, (0x1, 0)),
        ("domu1", 0, PsciFn.CPU_ON_64, (0x1, 0x4008_0000, 7)),
        ("domu1", 1, PsciFn.CPU_OFF, ()),
        ("domu2", 0, PsciFn.PSCI_FEATURES, (PsciFn.SYSTEM_SUSPEND_64,)),
        ("dom0", 0, 0xDEAD_BEEF, (1, 2, 3)),
    ]
    rounds = calls // len(mix)
    start = time.perf_counter()
    for _ in range(rounds):
        for domain, vcpu, fid, args in mix:
            call(domain, vcpu, fid, args)
    return rounds * len(mix) / (time.perf_counter() - start)


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
