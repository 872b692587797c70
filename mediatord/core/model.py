"""The authoritative state: the host, its devices, domains and their vCPUs.

Plain mutable dataclasses. Only :class:`mediatord.core.mediator.Mediator` and the
PSCI handlers change them, always after every check has passed, so a refused
call leaves them exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from mediatord.core.config import BoardConfig

# GIC INTID of the EL1 virtual timer (a PPI), the same on every domain.
VTIMER_PPI: Final = 27
# MPIDR_EL1 affinity fields Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0]
# (Linux / KVM MPIDR_HWID_BITMASK).
MPIDR_HWID_BITMASK: Final = 0xFF_00FF_FFFF
VCPUS_PER_CLUSTER: Final = 16
HARDWARE_DOMAIN_ID: Final = 0


class VcpuPower(Enum):
    OFF = "off"
    ON = "on"
    STANDBY = "standby"  # CPU_SUSPEND standby: the call returns when an interrupt comes
    POWERDOWN = "powerdown"  # CPU_SUSPEND power-down: resumes at its entry point
    SUSPENDED = "suspended"  # the vCPU that called SYSTEM_SUSPEND


class DomainState(Enum):
    RUNNING = "running"
    SUSPENDED = "suspended"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"


class HostState(Enum):
    """Xen's system_state, as far as suspend is concerned."""

    ACTIVE = "active"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"
    OFF = "off"


class SuspendPolicy(Enum):
    """How a coordinated system suspend treats domUs that do not suspend (issue 11)."""

    WAIT_ALL = "wait-all"
    PAUSE_STRAGGLERS = "pause-stragglers"
    FORCE = "force"


@dataclass(slots=True)
class SuspendCoordination:
    """An open Control.RequestSystemSuspend: the domUs asked to suspend and what
    became of them."""

    request: int  # numbers the requests of this system, 1, 2, ...
    policy: SuspendPolicy
    by_hardware_domain: bool  # the hardware domain asked
    requested_ns: int
    deadline_ns: int
    asked: list[int]  # domU ids sent SUSPEND_REQUEST (running when asked)
    suspended: list[int] = field(default_factory=list)  # of those, suspended since
    vetoes: list[tuple[int, str]] = field(default_factory=list)


def vcpu_mpidr(index: int) -> int:
    """MPIDR affinity of vCPU ``index``: Aff0 = index % 16, Aff1 = index // 16 (KVM, Xen)."""
    return ((index // VCPUS_PER_CLUSTER) << 8) | (index % VCPUS_PER_CLUSTER)


def mpidr_vcpu(mpidr: int) -> int | None:
    """The vCPU index an MPIDR names, or None when no index maps to it."""
    if mpidr & ~0xFFFF or (mpidr & 0xFF) >= VCPUS_PER_CLUSTER:
        return None
    return (mpidr >> 8) * VCPUS_PER_CLUSTER + (mpidr & 0xFF)


@dataclass(slots=True)
class Vcpu:
    index: int
    mpidr: int
    power: VcpuPower = VcpuPower.OFF
    # Where the vCPU last started, or will resume from a power-down state.
    entry_point: int = 0
    context_id: int = 0


@dataclass(slots=True)
class Device:
    name: str
    node_id: int
    irq: int
    mmio_base: int
    mmio_size: int
    wake_capable: bool
    # Whether the interrupt may wake the owner from a suspend. Every wake-capable
    # device starts as a wake source (design section 9).
    wake_source: bool
    owner: int | None = None


@dataclass(slots=True)
class Domain:
    id: int
    name: str
    ram_base: int
    ram_size: int
    aarch32: bool
    vcpus: list[Vcpu]
    devices: list[str] = field(default_factory=list)
    state: DomainState = DomainState.RUNNING
    # Sequence number of the last VcpuEvent emitted for this domain.
    event_seq: int = 0
    # Device interrupts that arrived while the domain could not take them,
    # in arrival order, each at most once (a GIC pending bit).
    pending_irqs: list[int] = field(default_factory=list)

    @property
    def hardware_domain(self) -> bool:
        return self.id == HARDWARE_DOMAIN_ID

    def entry_point_valid(self, address: int) -> bool:
        """PSCI's entry-point rule: inside the domain's RAM, and for AArch64 bit 0 clear."""
        if not self.ram_base <= address < self.ram_base + self.ram_size:
            return False
        return self.aarch32 or not address & 1


@dataclass(slots=True)
class HostSuspend:
    """What a host suspend did, so that resume (or rollback) can undo exactly that."""

    caller_pcpu: int
    started_ns: int
    paused: list[int] = field(default_factory=list)  # domain ids paused by the suspend
    pcpus_off: list[int] = field(default_factory=list)
    watchdog_was_on: bool = False
    timer_context: object = None
    gic_context: object = None
    el2_context: object = None
    suspended_ns: int | None = None


@dataclass(slots=True)
class System:
    board: BoardConfig
    domains: dict[int, Domain]
    names: dict[str, int]
    devices: dict[str, Device]
    irq_devices: dict[int, str]
    host_state: HostState = HostState.ACTIVE
    next_domain_id: int = 1
    # The pCPU the hypervisor's own code runs on (moves to the boot pCPU to suspend).
    hyp_pcpu: int = 0
    # Timestamps (clock ns) of the last completed host suspend and resume.
    last_suspend_ns: tuple[int, int] | None = None
    last_resume_ns: tuple[int, int] | None = None
    # Set from the start of a host suspend until its resume (or rollback) ends.
    host_suspend: HostSuspend | None = None
    # An open coordinated suspend request (issue 11), until it ends; and how many
    # there have been (their numbers).
    coordination: SuspendCoordination | None = None
    suspend_requests: int = 0

    def domain(self, name: str) -> Domain | None:
        domain_id = self.names.get(name)
        return None if domain_id is None else self.domains[domain_id]
