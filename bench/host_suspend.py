"""Host suspend + resume cost against the number of domains: core + emulated backend.

N domUs are created with Mediator.create_domain on a ManualClock (1 vCPU, RAM
0x40000000 + 16 MiB), in addition to the board's dom0, domu1 and domu2. Then, per
cycle, the measured part: dom0 SYSTEM_SUSPEND (0xC400000E) until the SoC is
suspended, and raise_interrupt(53) (UART_0, dom0's wake source) until dom0 runs
again. The figure is process CPU time (time.process_time) of those two calls.

Two set-ups:
- ``suspended``: every domU suspended itself first (SYSTEM_SUSPEND from vCPU 0),
  as guests with power management do; the host leaves them suspended.
- ``running``: the domUs keep running, so the host pauses every one of them on
  the way down and unpauses it on the way up (a Pause and an Unpause event each).

    python bench/host_suspend.py [--domains 10 100 1000] [--cycles 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.mediator import Created, Mediator, Raised, Returned
from mediatord.core.model import DomainState, HostState

SYSTEM_SUSPEND_64 = 0xC400_000E
UART_0_IRQ = 53
RAM_BASE = 0x4000_0000
RAM_SIZE = 16 << 20
DOMU_RESUME = (RAM_BASE + 0x1000, 0x11)
DOM0_RESUME = (RAM_BASE + 0x10_0000, 0x22)


def build(domains: int, setup: str) -> Mediator:
    board = default_board()
    mediator, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    for n in range(1, domains + 1):
        config = DomainConfig(name=f"dom{n}", id=0, vcpus=1, ram_base=RAM_BASE, ram_size=RAM_SIZE)
        if not isinstance(mediator.create_domain(config), Created):
            raise RuntimeError(f"cannot create dom{n}")
    if setup == "suspended":
        for domain in mediator.domus():
            # The board's domUs have 2 vCPUs; only vCPU 0 runs after boot.
            outcome = mediator.call(domain.name, 0, SYSTEM_SUSPEND_64, DOMU_RESUME)
            if not isinstance(outcome, Returned) or outcome.regs[0] != 0:
                raise RuntimeError(f"{domain.name} did not suspend: {outcome}")
    return mediator


def cycle(mediator: Mediator) -> float:
    """One host suspend + resume; its process CPU time in seconds."""
    gc.collect()
    began = time.process_time()
    suspended = mediator.call("dom0", 0, SYSTEM_SUSPEND_64, DOM0_RESUME)
    woken = mediator.raise_interrupt(UART_0_IRQ)
    spent = time.process_time() - began
    system = mediator.system
    if not isinstance(suspended, Returned) or suspended.regs[0] != 0:
        raise RuntimeError(f"host suspend failed: {suspended}")
    if not isinstance(woken, Raised) or not woken.woke_host:
        raise RuntimeError(f"the interrupt did not wake the host: {woken}")
    if system.host_state is not HostState.ACTIVE or system.domains[0].state is not (
        DomainState.RUNNING
    ):
        raise RuntimeError("the host did not resume")
    return spent


def measure(domains: int, cycles: int, setup: str = "suspended") -> dict[str, Any]:
    mediator = build(domains, setup)
    cycle(mediator)  # warm-up
    samples = [cycle(mediator) for _ in range(cycles)]
    median = statistics.median(samples)
    return {
        "domains": domains,
        "setup": setup,
        "cycles": cycles,
        "cpu_ms": {
            "median": median * 1e3,
            "min": min(samples) * 1e3,
            "max": max(samples) * 1e3,
        },
        "per_domain_us": median / (domains + 3) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--setup", choices=("suspended", "running"), default="suspended")
    args = parser.parse_args()
    print(json.dumps([measure(n, args.cycles, args.setup) for n in args.domains], indent=2))


if __name__ == "__main__":
    main()
