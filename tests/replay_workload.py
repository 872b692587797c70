"""A fixed pseudo-random workload for the core, and a digest of everything it did.

The journal (issue 9) will rebuild the state after a restart by feeding the core the
inputs it accepted; that is exact only if the core's behaviour depends on nothing but
its inputs and the clock, in particular not on the process's string-hash seed (set
iteration order). ``python -m replay_workload SEED OPS`` prints one digest per
operation, of the operation's outcome (effects included) and the whole state after it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import random
import sys
from typing import Any

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import Mediator
from mediatord.core.model import VTIMER_PPI, VcpuPower

BOARD = default_board()
DOMAINS = {d.name: d.vcpus for d in BOARD.domains}
PSCI = [
    0x8400_0000,  # PSCI_VERSION
    0x8400_0002,  # CPU_OFF
    0xC400_0001,  # CPU_SUSPEND_64
    0xC400_0003,  # CPU_ON_64
    0xC400_0004,  # AFFINITY_INFO_64
    0x8400_000A,  # PSCI_FEATURES
    0xC400_000E,  # SYSTEM_SUSPEND_64
]
EEMI = [0xC200_0001, 0xC200_000A, 0xC200_000D, 0xC200_000E, 0xC200_0021]
IRQS = [VTIMER_PPI, *(d.irq for d in BOARD.devices)]
DEVICES = [d.name for d in BOARD.devices]
ENTRY = [0x4000_1000, 0x4010_0000, 0x0, 0x3FFF_F000, 0x4000_1002]
POWER_STATE = [0x0, 0x1_0000, 0x0100_0000, 0x2]


def canonical(x: Any) -> Any:
    """A hash-seed independent form of ``x``: sets and dict items sorted; lists and
    tuples keep their order, which is behaviour."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (
            type(x).__name__,
            *((f.name, canonical(getattr(x, f.name))) for f in dataclasses.fields(x)),
        )
    if isinstance(x, enum.Enum):
        return repr(x)
    if isinstance(x, dict):
        return ("dict", *sorted(((canonical(k), canonical(v)) for k, v in x.items()), key=repr))
    if isinstance(x, set | frozenset):
        return ("set", *sorted((canonical(v) for v in x), key=repr))
    if isinstance(x, list | tuple):
        return tuple(canonical(v) for v in x)
    if isinstance(x, int | str | bytes | float | bool) or x is None:
        return x
    return (type(x).__name__, canonical(vars(x)))


def op(m: Mediator, clock: ManualClock, rng: random.Random) -> Any:
    domain = rng.choice(list(DOMAINS))
    vcpu = rng.randrange(DOMAINS[domain])
    target = m.system.domain(domain)
    assert target is not None
    on = [v.index for v in target.vcpus if v.power is VcpuPower.ON]
    if on and rng.random() < 0.85:  # mostly calls a guest could make
        vcpu = rng.choice(on)
    kind = rng.random()
    if kind < 0.55:
        fid = rng.choice(PSCI)
        args = [rng.choice([rng.randrange(4), *ENTRY, *POWER_STATE]) for _ in range(3)]
        if domain == "dom0" and fid == 0xC400_000E and rng.random() < 0.7:
            return "skipped"  # keep the host awake most of the time
        return m.call(domain, vcpu, fid, args)
    if kind < 0.7:
        return m.call(domain, vcpu, rng.choice(EEMI), [rng.randrange(90) for _ in range(3)])
    if kind < 0.85:
        return m.raise_interrupt(rng.choice(IRQS), domain, vcpu)
    if kind < 0.92:
        device = rng.choice(DEVICES)
        if rng.random() < 0.5:
            return m.release_device(domain, device)
        return m.assign_device(domain, device)
    ns = rng.randrange(20_000_000_000)
    clock.advance(ns)
    return ns


def digests(seed: int, ops: int) -> list[str]:
    clock = ManualClock()
    m, fx = Mediator.boot(BOARD, create_platform(BOARD, clock))
    rng = random.Random(seed)
    out = [hashlib.sha256(repr(canonical((fx, m.snapshot()))).encode()).hexdigest()]
    for _ in range(ops):
        outcome = op(m, clock, rng)
        state = (outcome, m.snapshot(), clock.now_ns())
        out.append(hashlib.sha256(repr(canonical(state)).encode()).hexdigest())
    return out


if __name__ == "__main__":
    print("\n".join(digests(int(sys.argv[1]), int(sys.argv[2]))))
