"""Stateful property test of the functional core: virtual PSCI, interrupts, host
suspend and domains.

A ``RuleBasedStateMachine`` drives one :class:`Mediator` booted on the default board
(over the emulated ZynqMP) with random guest calls (CPU_ON, CPU_OFF, AFFINITY_INFO,
CPU_SUSPEND, SYSTEM_SUSPEND, SYSTEM_OFF / RESET / RESET2, PSCI_VERSION / FEATURES,
SMCCC calls, junk function IDs) from running, off and missing vCPUs, interrupts
(device SPIs, the virtual timer, unwired lines), domain creation / destruction and
host suspends with injected step failures. Beside it runs a small model written
from the rules of design.md sections 3, 5, 6 and 9 and reference/psci.md (not from
the code): the host state, each domain's state and each vCPU's power state. Every
outcome is checked against the model; the invariants compare model and mediator
after each step.

Where the references disagree the model accepts each reading (noted where it
happens), so the test pins down the contract rather than one implementation.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from boards import BOARDS, on_other_backends
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mediatord.backends import create_platform
from mediatord.core import suspend
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.effects import (
    CallAborted,
    CallCompleted,
    DomainCreated,
    DomainDestroyed,
    DomainEvent,
    DomainStateChanged,
    Effect,
    Pause,
    Resume,
    Shutdown,
    ShutdownReason,
    Start,
    Unpause,
    VcpuPowerChanged,
    Wake,
)
from mediatord.core.mediator import (
    Blocked,
    Created,
    Destroyed,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import DomainState, HostState, VcpuPower

# --------------------------------------------------------------------- constants

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF
SMC64 = 1 << 30
# MPIDR affinity fields Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0].
HWID = 0xFF_00FF_FFFF
AFF_SHIFTS = (0, 8, 16, 32)

# PSCI return codes (reference/psci.md section 2).
SUCCESS = 0
NOT_SUPPORTED = -1
INVALID_PARAMETERS = -2
DENIED = -3
ALREADY_ON = -4
INTERNAL_FAILURE = -6
INVALID_ADDRESS = -9

PSCI_VERSION = 0x8400_0000
CPU_SUSPEND, CPU_SUSPEND_64 = 0x8400_0001, 0xC400_0001
CPU_OFF = 0x8400_0002
CPU_ON, CPU_ON_64 = 0x8400_0003, 0xC400_0003
AFFINITY_INFO, AFFINITY_INFO_64 = 0x8400_0004, 0xC400_0004
MIGRATE_INFO_TYPE = 0x8400_0006
SYSTEM_OFF = 0x8400_0008
SYSTEM_RESET = 0x8400_0009
PSCI_FEATURES = 0x8400_000A
SYSTEM_SUSPEND, SYSTEM_SUSPEND_64 = 0x8400_000E, 0xC400_000E
SYSTEM_RESET2, SYSTEM_RESET2_64 = 0x8400_0012, 0xC400_0012
SMCCC_VERSION = 0x8000_0000
SMCCC_ARCH_FEATURES = 0x8000_0001
HOST_WIDE_FOR_DOM0 = {SYSTEM_OFF, SYSTEM_RESET, SYSTEM_RESET2, SYSTEM_RESET2_64}

# Design section 5: the functions a domain is offered. PSCI_FEATURES answers 0 for
# them and for SMCCC_VERSION (TF-A, KVM, Xen), NOT_SUPPORTED for everything else.
IMPLEMENTED = frozenset(
    {
        PSCI_VERSION,
        CPU_SUSPEND,
        CPU_SUSPEND_64,
        CPU_OFF,
        CPU_ON,
        CPU_ON_64,
        AFFINITY_INFO,
        AFFINITY_INFO_64,
        MIGRATE_INFO_TYPE,
        SYSTEM_OFF,
        SYSTEM_RESET,
        PSCI_FEATURES,
        SYSTEM_SUSPEND,
        SYSTEM_SUSPEND_64,
        SYSTEM_RESET2,
        SYSTEM_RESET2_64,
    }
)
FEATURE_SUPPORTED = IMPLEMENTED | {SMCCC_VERSION}

# CPU_SUSPEND power_state, original format (reference section 2).
PSTATE_RESERVED = 0xFCFE_0000
PSTATE_POWERDOWN = 1 << 16

# Design section 9: the default board's devices (name -> IRQ) and domains.
DEVICE_IRQ = {
    "UART_0": 53,
    "UART_1": 54,
    "SD_0": 80,
    "SD_1": 81,
    "ETH_0": 89,
    "ETH_3": 95,
    "USB_0": 97,
    "GPU": 164,
}
IRQ_DEVICE = {irq: name for name, irq in DEVICE_IRQ.items()}
VTIMER = 27
UNWIRED_IRQS = (0, 1, 15, 16, 25, 26, 28, 30, 31, 32, 52, 55, 96, 165, 191, 1019, 1020)
BOOT_DOMAINS = (
    # name, id, vCPUs, RAM base, RAM size, devices
    ("dom0", 0, 4, 0x4000_0000, 0x4000_0000, ("UART_0", "SD_0", "ETH_3", "GPU")),
    ("domu1", 1, 2, 0x4000_0000, 0x1000_0000, ("UART_1", "ETH_0")),
    ("domu2", 2, 2, 0x4000_0000, 0x1000_0000, ("USB_0", "SD_1")),
)
EXTRA_NAMES = ("extra1", "extra2", "extra3")

# Model states (independent of the implementation's enums).
OFF, ON, STANDBY, POWERDOWN, SUSPENDED = "off", "on", "standby", "powerdown", "suspended"
RUNNING, PAUSED, SHUTDOWN = "running", "paused", "shutdown"
ACTIVE = "active"  # host states: ACTIVE, SUSPENDED, OFF
POWER_NAME = {
    VcpuPower.OFF: OFF,
    VcpuPower.ON: ON,
    VcpuPower.STANDBY: STANDBY,
    VcpuPower.POWERDOWN: POWERDOWN,
    VcpuPower.SUSPENDED: SUSPENDED,
}
STATE_NAME = {
    DomainState.RUNNING: RUNNING,
    DomainState.SUSPENDED: SUSPENDED,
    DomainState.PAUSED: PAUSED,
    DomainState.SHUTDOWN: SHUTDOWN,
}


def host_name(state: HostState) -> str:
    # SUSPENDING and RESUMING are transient: never the state between two steps.
    return {HostState.ACTIVE: ACTIVE, HostState.SUSPENDED: SUSPENDED, HostState.OFF: OFF}.get(
        state, state.value
    )


def mpidr(n: int) -> int:
    """Design section 3: vCPU n has Aff0 = n % 16, Aff1 = n // 16."""
    return ((n // 16) << 8) | (n % 16)


def reg(value: int) -> int:
    return value & MASK64


def aff_fields(m: int) -> tuple[int, ...]:
    return tuple((m >> s) & 0xFF for s in AFF_SHIFTS)


# ------------------------------------------------------------------------ model


@dataclass
class MDomain:
    id: int
    name: str
    ram_base: int
    ram_size: int
    aarch32: bool
    devices: tuple[str, ...]
    power: list[str]
    # Where a powered-down / system-suspended vCPU resumes: (entry point, context ID).
    resume: list[tuple[int, int]]
    state: str = RUNNING

    @classmethod
    def booted(
        cls,
        id_: int,
        name: str,
        vcpus: int,
        ram_base: int,
        ram_size: int,
        *,
        aarch32: bool = False,
        devices: tuple[str, ...] = (),
    ) -> MDomain:
        """Design section 9: at boot vCPU 0 is on at the RAM base, every other vCPU off."""
        power = [ON] + [OFF] * (vcpus - 1)
        return cls(id_, name, ram_base, ram_size, aarch32, devices, power, [(0, 0)] * vcpus)

    def entry_ok(self, address: int) -> bool:
        """Design section 3: inside the domain's RAM and, for AArch64, bit 0 clear."""
        inside = self.ram_base <= address < self.ram_base + self.ram_size
        return inside and (self.aarch32 or not address & 1)

    def index_of(self, target: int) -> int | None:
        for n in range(len(self.power)):
            if mpidr(n) == target:
                return n
        return None

    def others_not_off(self, vcpu: int) -> bool:
        return any(p != OFF for i, p in enumerate(self.power) if i != vcpu)

    def indices(self, *powers: str) -> list[int]:
        return [i for i, p in enumerate(self.power) if p in powers]

    def standby(self) -> set[tuple[int, int]]:
        return {(self.id, i) for i in self.indices(STANDBY)}

    def reboot(self) -> None:
        """SYSTEM_RESET restarts the domain as it booted (design sections 4, 9)."""
        self.state = RUNNING
        self.power = [ON] + [OFF] * (len(self.power) - 1)

    def shut_down(self) -> None:
        self.state = SHUTDOWN
        self.power = [OFF] * len(self.power)


@dataclass
class Model:
    domains: dict[str, MDomain]
    owners: dict[int, str | None]  # device IRQ -> owning domain name
    host: str = ACTIVE

    def by_id(self, id_: int) -> MDomain | None:
        return next((d for d in self.domains.values() if d.id == id_), None)

    def standby(self) -> set[tuple[int, int]]:
        return set().union(*(d.standby() for d in self.domains.values()))


ANY_REG: Container[int] = range(0, 1 << 64)
Events = dict[int, list[tuple[int | None, Any]]]


@dataclass
class Alt:
    """One acceptable outcome of a step and the model after it."""

    model: Model
    refused: Refusal | None = None
    blocked: bool = False
    x0: Container[int] = ()
    irq: IrqOutcome | None = None
    irq_vcpu: int | None = None
    woke_host: bool = False
    changes: bool = False  # False: no effects and the whole system unchanged
    # What may happen to the other domains: "same" (nothing at all), "vcpus" (their
    # vCPUs stay as they are: a host suspend pauses them) or "any" (a host reset).
    others: str = "same"
    # domain id -> [(vCPU or None for any, event kind)], an ordered subsequence of its events
    events: Events = field(default_factory=dict)
    # [(domain id, event kind)], an ordered subsequence of all the step's events
    order: list[tuple[int, Any]] = field(default_factory=list)
    completed: set[tuple[int, int]] = field(default_factory=set)
    aborted: set[tuple[int, int]] = field(default_factory=set)

    def describe(self) -> str:
        if self.refused is not None:
            return f"Refused({self.refused})"
        if self.blocked:
            return "Blocked"
        if self.irq is not None:
            return f"Raised({self.irq}, vcpu={self.irq_vcpu}, woke_host={self.woke_host})"
        if isinstance(self.x0, set):
            return f"Returned(x0 in {sorted(hex(x) for x in self.x0)})"
        return f"Returned(x0 in {self.x0})"


def fork(model: Model, name: str) -> tuple[Model, MDomain]:
    m2 = copy.deepcopy(model)
    return m2, m2.domains[name]


def ret(model: Model, *values: int) -> list[Alt]:
    return [Alt(model, x0={reg(v) for v in values})]


def host_suspend(m2: Model) -> Events:
    """Design section 6: every running domU is paused; suspended ones stay suspended."""
    m2.host = SUSPENDED
    events: Events = {}
    for d in m2.domains.values():
        if d.id != 0 and d.state == RUNNING:
            d.state = PAUSED
            events[d.id] = [(None, Pause())]
    return events


def host_resume(m2: Model) -> Events:
    """Design section 6: the host resumes, domain 0 resumes at its entry point with
    its context ID, paused domUs are unpaused, suspended domUs stay suspended."""
    m2.host = ACTIVE
    events: Events = {}
    for d in m2.domains.values():
        if d.id == 0 and d.state == SUSPENDED:
            s = d.power.index(SUSPENDED)
            d.power[s] = ON
            d.state = RUNNING
            events[d.id] = [(s, Resume(*d.resume[s]))]
        elif d.state == PAUSED:
            d.state = RUNNING
            events[d.id] = [(None, Unpause())]
    return events


# ------------------------------------------------------- model: PSCI functions

Args = tuple[int, int, int]


def m_cpu_on(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    target, entry, ctx = x
    alts = cpu_on_target(model, d, target, entry, ctx)
    masked = target & HWID
    if masked != target and d.index_of(masked) is not None:
        # KVM rejects MPIDR bits outside the affinity fields (INVALID_PARAMETERS);
        # Xen (vaffinity_to_vcpuid) and TF-A (plat_core_pos_by_mpidr) mask them off.
        alts += cpu_on_target(model, d, masked, entry, ctx)
    return alts


def cpu_on_target(model: Model, d: MDomain, target: int, entry: int, ctx: int) -> list[Alt]:
    # TF-A / Xen order: target, then entry point, then the target's state.
    n = d.index_of(target)
    if n is None:
        return ret(model, INVALID_PARAMETERS)
    if not d.entry_ok(entry):
        return ret(model, INVALID_ADDRESS)
    if d.power[n] != OFF:  # a vCPU in CPU_SUSPEND still counts as on
        return ret(model, ALREADY_ON)
    m2, d2 = fork(model, d.name)
    d2.power[n] = ON
    return [Alt(m2, x0={SUCCESS}, changes=True, events={d.id: [(n, Start(entry, ctx))]})]


def m_cpu_off(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    # A running domain keeps a vCPU that is not off (the brief's invariant; design
    # section 8: EL3 denies CPU_OFF of the last CPU), so the last one is DENIED.
    if not d.others_not_off(v):
        return ret(model, DENIED)
    m2, d2 = fork(model, d.name)
    d2.power[v] = OFF
    return [Alt(m2, x0={SUCCESS}, changes=True)]


def affinity_value(d: MDomain, target: int, level: int) -> int:
    """KVM's rule (design section 3): levels 0..3 mask affinity fields."""
    if level > 3 or target & ~HWID:
        return INVALID_PARAMETERS
    wanted = aff_fields(target)[level:]
    matches = [i for i in range(len(d.power)) if aff_fields(mpidr(i))[level:] == wanted]
    if not matches:
        return INVALID_PARAMETERS
    return 0 if any(d.power[i] != OFF for i in matches) else 1


def m_affinity_info(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    target, level, _ = x
    targets = {target, target & HWID}  # bits outside the affinity fields: see CPU_ON
    levels = {level}
    if fid & SMC64:
        # lowest_affinity_level is a uint32 parameter: TF-A truncates it in the
        # SMC64 form, KVM compares the whole register (so junk there is > 3).
        levels.add(level & MASK32)
    return ret(model, *{affinity_value(d, t, lv) for t in targets for lv in levels})


def m_cpu_suspend(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    # power_state is a 32-bit parameter in both forms (TF-A truncates it for SMC64).
    power_state, entry, ctx = x[0] & MASK32, x[1], x[2]
    if power_state & PSTATE_RESERVED:
        return ret(model, INVALID_PARAMETERS)
    if (power_state >> 24) & 0x3 == 3:
        # A domain has three power levels (vCPU, cluster, system): level 3 names none.
        return ret(model, INVALID_PARAMETERS)
    m2, d2 = fork(model, d.name)
    if power_state & PSTATE_POWERDOWN:
        if not d.entry_ok(entry):
            return ret(model, INVALID_ADDRESS)
        d2.power[v] = POWERDOWN
        d2.resume[v] = (entry, ctx)
        return [Alt(m2, x0={SUCCESS}, changes=True)]
    # Standby: the entry point is not used; the call returns when the vCPU wakes.
    d2.power[v] = STANDBY
    return [Alt(m2, blocked=True, changes=True)]


def m_system_suspend(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    entry, ctx, _ = x
    # TF-A: the other cores are checked before the entry point.
    if d.others_not_off(v):
        return ret(model, DENIED)
    if not d.entry_ok(entry):
        return ret(model, INVALID_ADDRESS)
    m2, d2 = fork(model, d.name)
    d2.power[v] = SUSPENDED
    d2.resume[v] = (entry, ctx)
    d2.state = SUSPENDED
    if d.id != 0:
        return [Alt(m2, x0={SUCCESS}, changes=True)]
    # Domain 0's SYSTEM_SUSPEND suspends the host and answers once it is suspended.
    events = host_suspend(m2)
    return [Alt(m2, x0={SUCCESS}, changes=True, others="vcpus", events=events)]


def m_system_off(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    m2, d2 = fork(model, d.name)
    if d.id == 0:
        # The hardware domain powers the board off: every domain stops.
        aborted = model.standby()
        events: Events = {}
        for other in m2.domains.values():
            if other.state != SHUTDOWN:
                events[other.id] = [(None, Shutdown(ShutdownReason.POWEROFF))]
            other.shut_down()
        m2.host = OFF
        alt = Alt(m2, x0={SUCCESS}, changes=True, others="any", events=events)
        alt.aborted = aborted
        return [alt]
    d2.shut_down()
    events = {d.id: [(None, Shutdown(ShutdownReason.POWEROFF))]}
    return [Alt(m2, x0={SUCCESS}, changes=True, events=events, aborted=d.standby())]


def reboot_events(d: MDomain) -> list[tuple[int | None, Any]]:
    return [(None, Shutdown(ShutdownReason.REBOOT)), (0, Start(d.ram_base, 0))]


def m_system_reset(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    m2, d2 = fork(model, d.name)
    if d.id == 0:
        # The hardware domain resets the board: every domain restarts.
        for other in m2.domains.values():
            other.reboot()
        events = {other.id: reboot_events(other) for other in model.domains.values()}
        alt = Alt(m2, x0={SUCCESS}, changes=True, others="any", events=events)
        alt.aborted = model.standby()
        return [alt]
    d2.reboot()
    events = {d.id: reboot_events(d)}
    return [Alt(m2, x0={SUCCESS}, changes=True, events=events, aborted=d.standby())]


def m_system_reset2(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    # reset_type is 32 bits in both forms; only SYSTEM_WARM_RESET (0) is offered.
    if x[0] & MASK32 != 0:
        return ret(model, INVALID_PARAMETERS)
    return m_system_reset(model, d, v, x, fid)


def m_psci_version(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    return ret(model, 0x0001_0001)


def m_psci_features(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    queried = x[0]
    if d.aarch32 and queried & SMC64:
        return ret(model, NOT_SUPPORTED)
    # CPU_SUSPEND's flags are 0: original power_state format, no OS-initiated mode.
    return ret(model, SUCCESS if queried in FEATURE_SUPPORTED else NOT_SUPPORTED)


def m_migrate_info_type(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    return ret(model, 2)


def m_smccc_version(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    return [Alt(model, x0=range(0x1_0000, 0x2_0000))]  # some SMCCC 1.x


def m_smccc_arch_features(model: Model, d: MDomain, v: int, x: Args, fid: int) -> list[Alt]:
    return ret(model, SUCCESS, NOT_SUPPORTED)


ModelHandler = Callable[[Model, MDomain, int, Args, int], list[Alt]]
MODEL_HANDLERS: dict[int, ModelHandler] = {
    PSCI_VERSION: m_psci_version,
    CPU_SUSPEND: m_cpu_suspend,
    CPU_SUSPEND_64: m_cpu_suspend,
    CPU_OFF: m_cpu_off,
    CPU_ON: m_cpu_on,
    CPU_ON_64: m_cpu_on,
    AFFINITY_INFO: m_affinity_info,
    AFFINITY_INFO_64: m_affinity_info,
    MIGRATE_INFO_TYPE: m_migrate_info_type,
    SYSTEM_OFF: m_system_off,
    SYSTEM_RESET: m_system_reset,
    PSCI_FEATURES: m_psci_features,
    SYSTEM_SUSPEND: m_system_suspend,
    SYSTEM_SUSPEND_64: m_system_suspend,
    SYSTEM_RESET2: m_system_reset2,
    SYSTEM_RESET2_64: m_system_reset2,
    SMCCC_VERSION: m_smccc_version,
    SMCCC_ARCH_FEATURES: m_smccc_arch_features,
}


def predict_call(model: Model, name: str, vcpu: int, fid: int, args: list[int]) -> list[Alt]:
    d = model.domains.get(name)
    if d is None:
        return [Alt(model, refused=Refusal.UNKNOWN_DOMAIN)]
    # Design section 3: INVALID_ARGUMENT for a bad request, FAILED_PRECONDITION
    # when the domain is not running or the calling vCPU is not on.
    if len(args) > 17 or not 0 <= vcpu < len(d.power):
        return [Alt(model, refused=Refusal.INVALID_ARGUMENT)]
    if d.state != RUNNING or d.power[vcpu] != ON:
        return [Alt(model, refused=Refusal.FAILED_PRECONDITION)]
    fid &= MASK32
    x = (*args[:3], 0, 0, 0)[:3]
    if not fid & SMC64:
        # SMC32: the upper halves of x1..x3 are ignored, as on hardware.
        x = (x[0] & MASK32, x[1] & MASK32, x[2] & MASK32)
    if d.aarch32 and fid & SMC64:
        return ret(model, NOT_SUPPORTED)
    handler = MODEL_HANDLERS.get(fid)
    if handler is not None:
        return handler(model, d, vcpu, x, fid)
    if fid & (1 << 31) and (fid >> 24) & 0x3F == 0:
        # Other Arm architecture calls (SOC_ID, workarounds...): any answer, no change.
        return [Alt(model, x0=ANY_REG)]
    return ret(model, NOT_SUPPORTED)  # design section 3: unknown function ID


# ------------------------------------------------------------ model: interrupts


def deliver(model: Model, name: str, irq: int, vcpu: int | None) -> list[Alt]:
    """An interrupt reaches domain ``name`` of an active host: the virtual timer of
    vCPU ``vcpu``, or a device SPI (``vcpu`` None)."""
    d = model.domains[name]
    dropped = [Alt(model, irq=IrqOutcome.DROPPED)]
    if d.state == SHUTDOWN:
        return dropped
    if vcpu is not None and d.power[vcpu] == OFF:
        return dropped  # the timer of an off vCPU does not fire
    if d.state == SUSPENDED:
        # Every device of the default board is a wake source (design section 9),
        # and so is the virtual timer: the domain resumes at its entry point.
        s = d.power.index(SUSPENDED)
        m2, d2 = fork(model, name)
        d2.power[s] = ON
        d2.state = RUNNING
        events: Events = {d.id: [(s, Resume(*d.resume[s])), (s, Wake(irq))]}
        return [Alt(m2, irq=IrqOutcome.WOKE_DOMAIN, irq_vcpu=s, changes=True, events=events)]
    alts = []
    # An SPI may go to any vCPU that is not off (GIC routing is the mediator's choice).
    for t in [vcpu] if vcpu is not None else d.indices(ON, STANDBY, POWERDOWN):
        m2, d2 = fork(model, name)
        d2.power[t] = ON
        alt = Alt(m2, irq=IrqOutcome.WOKE_VCPU, irq_vcpu=t, changes=True)
        alt.events = {d.id: [(t, Wake(irq))]}
        if d.power[t] == STANDBY:
            alt.completed = {(d.id, t)}  # the blocked CPU_SUSPEND returns SUCCESS
        elif d.power[t] == POWERDOWN:
            alt.events = {d.id: [(t, Resume(*d.resume[t])), (t, Wake(irq))]}
        else:
            alt.irq = IrqOutcome.DELIVERED
        alts.append(alt)
    return alts


def predict_irq(model: Model, irq: int, name: str, vcpu: int) -> list[Alt]:
    dropped = [Alt(model, irq=IrqOutcome.DROPPED)]
    if irq == VTIMER:
        d = model.domains.get(name)
        if d is None or not 0 <= vcpu < len(d.power):
            return [Alt(model, refused=Refusal.INVALID_ARGUMENT)]
        target: int | None = vcpu
    elif irq in IRQ_DEVICE:
        owner = model.owners[irq]
        if model.host == OFF or owner is None:
            return dropped
        d = model.domains[owner]
        target = None
    else:
        return [Alt(model, refused=Refusal.INVALID_ARGUMENT)]
    if model.host == OFF:
        return dropped
    if model.host == ACTIVE:
        return deliver(model, d.name, irq, target)
    # Design section 6: a wake interrupt resumes the host first, then domain 0,
    # then the interrupt goes to its domain.
    m2 = copy.deepcopy(model)
    resumed = host_resume(m2)
    dom0 = model.domains["dom0"]
    dom0_resume = (0, Resume(*dom0.resume[dom0.power.index(SUSPENDED)]))
    alts = deliver(m2, d.name, irq, target)
    for alt in alts:
        alt.woke_host = True
        alt.changes = True
        alt.others = "vcpus"  # domain 0 resumes; the domUs' vCPUs stay as they are
        for id_, evs in resumed.items():
            alt.events[id_] = evs + alt.events.get(id_, [])
        if alt.irq is not IrqOutcome.DROPPED:
            alt.order = [dom0_resume, (d.id, Wake(irq))]
    if all(a.irq is IrqOutcome.DROPPED for a in alts):
        # It ends up nowhere (a shut-down domain, an off vCPU): whether it still
        # wakes the SoC on the way is the hardware's business.
        alts += dropped
    return alts


DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def config_ok(cfg: DomainConfig) -> bool:
    """The few board-file rules (design section 9) the generated configs can break."""
    return (
        DOMAIN_NAME.fullmatch(cfg.name) is not None
        and 1 <= cfg.vcpus <= 128
        and cfg.ram_size > 0
        and cfg.ram_size % 0x1000 == 0
        and cfg.ram_base % 0x1000 == 0
        and len(set(cfg.devices)) == len(cfg.devices)
    )


# ------------------------------------------------------------------ strategies

u32 = st.integers(0, MASK32)
u64 = st.integers(0, MASK64)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``choices`` drawn in proportion to their weights (0: never); list the
    likeliest first, as Hypothesis leans towards the first ("simplest") one."""
    indices = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(lambda i: choices[i][1])


def with_junk_upper(low: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return st.tuples(low, st.integers(1, MASK32)).map(lambda t: (t[0] & MASK32) | t[1] << 32)


def good_entries(d: MDomain) -> st.SearchStrategy[int]:
    return st.integers(d.ram_base, d.ram_base + d.ram_size - 1).map(lambda a: a & ~0x7)


def entries(d: MDomain | None) -> st.SearchStrategy[int]:
    if d is None:
        return u64
    base, size = d.ram_base, d.ram_size
    return weighted(
        (8, good_entries(d)),
        (2, st.sampled_from([base, base + size - 8, base + size - 1, base + size, base - 8, 0])),
        (1, good_entries(d).map(lambda a: a | 1)),  # bit 0 set: no AArch64 entry point
        (2, with_junk_upper(good_entries(d))),
        (1, u64),
    )


def targets(d: MDomain | None) -> st.SearchStrategy[int]:
    n = len(d.power) if d else 2
    valid = st.sampled_from([mpidr(i) for i in range(n)])
    off = [mpidr(i) for i in d.indices(OFF)] if d else []
    invalid = st.sampled_from(
        [mpidr(n), mpidr(n + 1), 0x10, 0xFF, 0x1F00, 0x1_0000, 1 << 32, HWID, MASK64]
    )
    outside = st.sampled_from([1 << 24, 1 << 30, 1 << 31])  # MT, U, RES1 bits
    return weighted(
        (6 if off else 0, st.sampled_from(off or [0])),
        (3, valid),
        (2, with_junk_upper(valid)),
        (1, st.tuples(valid, outside).map(lambda t: t[0] | t[1])),
        (2, invalid),
        (1, u64),
    )


ctx_ids = st.one_of(u64, st.sampled_from([0, 1, MASK32, MASK64]), u32)
levels = st.one_of(st.integers(0, 5), with_junk_upper(st.integers(0, 5)), u64)
standby_states = st.one_of(
    st.sampled_from([0x0, 0x100_0000, 0x200_0000]),
    st.builds(lambda sid, lvl: sid | lvl << 24, st.integers(0, 0xFFFF), st.integers(0, 2)),
)
powerdown_states = standby_states.map(lambda s: s | PSTATE_POWERDOWN)
power_states = st.one_of(
    st.sampled_from([0x0, 0x1_0000, 0x100_0000, 0x101_0000, 0x201_0000, 0x300_0000]),
    st.builds(
        lambda sid, kind, lvl: sid | kind << 16 | lvl << 24,
        st.integers(0, 0xFFFF),
        st.integers(0, 1),
        st.integers(0, 3),
    ),
    with_junk_upper(st.sampled_from([0x0, 0x1_0000])),
    u32,
)
extra_args = st.lists(u64, max_size=14)
junk_fids = st.one_of(
    u32,
    st.integers(0, 0x1F).map(lambda n: 0x8400_0000 | n),
    st.integers(0, 0x1F).map(lambda n: 0xC400_0000 | n),
    st.sampled_from([0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_8000, 0x0400_0003]),
    with_junk_upper(st.integers(0, 0x1F).map(lambda n: 0x8400_0000 | n)),
).filter(lambda f: (f >> 24) & 0x3F != 2)  # SiP (EEMI) calls are out of this test's scope
junk_args = st.one_of(st.lists(u64, max_size=17), st.lists(u64, min_size=18, max_size=20))


# --------------------------------------------------------------------- machine


class PsciMachine(RuleBasedStateMachine):
    backend = "zynqmp"  # the board it runs on (tests/boards.py)

    """Random guest calls, interrupts and domain changes, checked against ``Model``."""

    def __init__(self) -> None:
        super().__init__()
        self.m: Mediator
        self.model: Model
        self.last_seq: dict[int, int] = {}
        self.ids_seen: set[int] = set()
        self.outstanding: set[tuple[int, int]] = set()  # blocked calls not yet answered
        self.names: dict[int, str] = {}

    @initialize()
    def boot(self) -> None:
        board = BOARDS[self.backend]
        self.m, fx = Mediator.boot(board, create_platform(board, ManualClock()))
        domains = {}
        owners: dict[int, str | None] = dict.fromkeys(IRQ_DEVICE)
        for name, id_, vcpus, base, size, devices in BOOT_DOMAINS:
            domains[name] = MDomain.booted(id_, name, vcpus, base, size, devices=devices)
            for dev in devices:
                owners[DEVICE_IRQ[dev]] = name
            self.ids_seen.add(id_)
            self.names[id_] = name
        self.model = Model(domains, owners)
        starts = {}
        for effect in fx:
            if isinstance(effect, DomainEvent):
                self._check_seq(effect)
                starts[effect.domain_id] = (effect.vcpu, effect.kind)
        for d in domains.values():
            assert starts[d.id] == (0, Start(d.ram_base, 0)), starts

    # ------------------------------------------------------------ drawing

    def _domain(self, data: st.DataObject, include_dom0: bool = True) -> str:
        names = sorted(n for n in self.model.domains if include_dom0 or n != "dom0")
        running = [n for n in names if self.model.domains[n].state == RUNNING]
        return data.draw(
            weighted(
                (12 if running else 0, st.sampled_from(running or ["ghost"])),
                (3, st.sampled_from(names or ["ghost"])),
                (1, st.just("ghost")),
            ),
            label="domain",
        )

    def _vcpu(self, data: st.DataObject, name: str, wanted: tuple[str, ...] = (ON,)) -> int:
        d = self.model.domains.get(name)
        n = len(d.power) if d else 2
        some = d.indices(*wanted) if d else []
        return data.draw(
            weighted(
                (8 if some else 0, st.sampled_from(some or [0])),
                (2, st.integers(0, n - 1)),
                (1, st.sampled_from([n, n + 1, MASK32])),
            ),
            label="vcpu",
        )

    def _live(self, data: st.DataObject, names: list[str]) -> tuple[MDomain, int]:
        """A domain of ``names`` (running, with a vCPU on) and one of its ON vCPUs."""
        d = self.model.domains[data.draw(st.sampled_from(sorted(names)), label="domain")]
        return d, data.draw(st.sampled_from(d.indices(ON)), label="vcpu")

    # ------------------------------------------------------------ checking

    def _check_seq(self, event: DomainEvent) -> None:
        last = self.last_seq.get(event.domain_id, 0)
        assert event.seq == last + 1, f"{event}: expected seq {last + 1}"
        self.last_seq[event.domain_id] = event.seq
        assert event.domain == self.names[event.domain_id], event

    def _check_effects(self, effects: tuple[Effect, ...], alt: Alt, before: Model) -> None:
        """Effects agree with the chosen outcome: numbering, answers of blocked calls,
        the expected events, and a final power / state effect for every change."""
        completed: list[tuple[int, int]] = []
        aborted: list[tuple[int, int]] = []
        events: dict[int, list[tuple[int, Any]]] = {}
        everything: list[tuple[int, Any]] = []
        powers: dict[tuple[int, int], str] = {}
        states: dict[int, str] = {}
        for effect in effects:
            if isinstance(effect, DomainEvent):
                self._check_seq(effect)
                events.setdefault(effect.domain_id, []).append((effect.vcpu, effect.kind))
                everything.append((effect.domain_id, effect.kind))
            elif isinstance(effect, CallCompleted):
                key = (effect.domain_id, effect.vcpu)
                assert key in self.outstanding, f"{effect} answers no blocked call"
                self.outstanding.discard(key)
                assert effect.regs == (0, 0, 0, 0), effect  # standby returns SUCCESS
                completed.append(key)
            elif isinstance(effect, CallAborted):
                key = (effect.domain_id, effect.vcpu)
                assert key in self.outstanding, f"{effect} aborts no blocked call"
                self.outstanding.discard(key)
                aborted.append(key)
            elif isinstance(effect, VcpuPowerChanged):
                powers[(effect.domain_id, effect.vcpu)] = POWER_NAME[effect.power]
            elif isinstance(effect, DomainStateChanged):
                states[effect.domain_id] = STATE_NAME[effect.state]
        assert sorted(completed) == sorted(alt.completed), (completed, alt.completed)
        assert sorted(aborted) == sorted(alt.aborted), (aborted, alt.aborted)
        for id_, wanted in alt.events.items():
            got = iter(events.get(id_, []))
            ok = all(any((v is None or v == gv) and k == gk for gv, gk in got) for v, k in wanted)
            assert ok, f"domain {id_}: events {events.get(id_)} lack {wanted}"
        rest = iter(everything)
        assert all(e in rest for e in alt.order), f"events {everything} not in order {alt.order}"
        # Every power / state change is announced, and the last announcement is the truth.
        for d in alt.model.domains.values():
            old = before.by_id(d.id)
            for i, p in enumerate(d.power):
                if old is not None and old.power[i] != p:
                    assert powers.get((d.id, i)) == p, (d.name, i, p, powers)
                elif (d.id, i) in powers:
                    assert powers[(d.id, i)] == p, (d.name, i, p, powers)
            if old is not None and old.state != d.state:
                assert states.get(d.id) == d.state, (d.name, d.state, states)
            elif d.id in states:
                assert states[d.id] == d.state, (d.name, d.state, states)

    def _snapshot(self) -> bytes:
        """``m.snapshot()``, pickled: the same state, several times cheaper to
        take and compare (the saved GIC registers make deep copies slow)."""
        return pickle.dumps(self.m.system)

    def _unchanged(self, snapshot: bytes, message: str) -> None:
        if pickle.dumps(self.m.system) != snapshot:
            assert pickle.loads(snapshot) == self.m.snapshot(), message

    def _others(self, exclude: int | None) -> dict[int, Any]:
        return {id_: copy.deepcopy(d) for id_, d in self.m.system.domains.items() if id_ != exclude}

    def _unchanged_others(self, others: dict[int, Any], alt: Alt) -> None:
        """A domain never changes because of another domain's step, except for what
        the host does to every domain (suspend pauses them, reset and off stop them)."""
        if alt.others == "any":
            return
        for id_, before in others.items():
            now = self.m.system.domains.get(id_)
            assert now is not None, f"domain {before.name} vanished"
            if alt.others == "vcpus":
                if alt.woke_host and id_ == 0:
                    continue
                assert now.vcpus == before.vcpus, f"{before.name}'s vCPUs changed"
            else:
                assert now == before, f"domain {before.name} changed by another domain's step"

    def _call(
        self, name: str, vcpu: int, fid: int, args: list[int], alts: list[Alt] | None = None
    ) -> None:
        if alts is None:
            alts = predict_call(self.model, name, vcpu, fid, args)
        snapshot = self._snapshot()
        caller = self.model.domains.get(name)
        others = self._others(caller.id if caller else None)
        outcome = self.m.call(name, vcpu, fid, args)

        alt = self._match_call(alts, outcome)
        if isinstance(outcome, Refused):
            self._unchanged(snapshot, "a refused call changed the system")
            return
        if isinstance(outcome, Returned):
            regs = outcome.regs
            assert isinstance(regs, tuple), regs
            assert len(regs) == 4, regs
            assert all(type(r) is int and 0 <= r <= MASK64 for r in regs), regs
        else:
            assert caller is not None
            key = (caller.id, vcpu)
            assert key not in self.outstanding
            self.outstanding.add(key)
        if not alt.changes:
            assert outcome.effects == (), outcome.effects
            self._unchanged(snapshot, "a call without effect changed the system")
        self._check_effects(outcome.effects, alt, self.model)
        self._unchanged_others(others, alt)
        self.model = alt.model

    @staticmethod
    def _match_call(alts: list[Alt], outcome: Returned | Blocked | Refused) -> Alt:
        for alt in alts:
            if alt.refused is not None:
                if isinstance(outcome, Refused) and outcome.reason is alt.refused:
                    return alt
            elif alt.blocked:
                if isinstance(outcome, Blocked):
                    return alt
            elif isinstance(outcome, Returned) and outcome.regs[0] in alt.x0:
                return alt
        wanted = " or ".join(a.describe() for a in alts)
        if isinstance(outcome, Returned):
            got = f"Returned(x0={outcome.regs[0]:#x})"
        else:
            got = repr(outcome)
        raise AssertionError(f"expected {wanted}, got {got}")

    def _irq(self, irq: int, name: str, vcpu: int) -> None:
        alts = predict_irq(self.model, irq, name, vcpu)
        target = None
        if irq == VTIMER:
            target = self.model.domains.get(name)
        elif irq in IRQ_DEVICE and self.model.owners[irq] is not None:
            target = self.model.domains[self.model.owners[irq]]  # type: ignore[index]
        snapshot = self._snapshot()
        others = self._others(target.id if target else None)
        outcome = self.m.raise_interrupt(irq, name, vcpu)

        wanted = [a.describe() for a in alts]
        if isinstance(outcome, Refused):
            assert any(a.refused is outcome.reason for a in alts), f"expected {wanted}: {outcome}"
            self._unchanged(snapshot, "a refused interrupt changed the system")
            return
        assert isinstance(outcome, Raised), outcome
        ok = [
            a
            for a in alts
            if a.irq is outcome.outcome
            and a.woke_host == outcome.woke_host
            and (a.irq is IrqOutcome.DROPPED or a.irq_vcpu == outcome.vcpu)
        ]
        assert ok, f"expected {wanted}, got {outcome}"
        alt = ok[0]
        if alt.irq is not IrqOutcome.DROPPED:
            assert target is not None
            assert outcome.domain == target.name, outcome
        if not alt.changes:
            assert not any(isinstance(e, DomainEvent) for e in outcome.effects), outcome
            self._unchanged(snapshot, "a dropped interrupt changed the system")
        self._check_effects(outcome.effects, alt, self.model)
        self._unchanged_others(others, alt)
        self.model = alt.model

    # ------------------------------------------------ rules: guided steps

    # Hypothesis's swarm testing turns random subsets of the rules off in each run;
    # mixed_step keeps every run a mix of calls and interrupts, and guided_step
    # picks arguments that make sense in the current state, so that sequences like
    # CPU_ON, CPU_SUSPEND, wake-up, SYSTEM_SUSPEND, host suspend happen often.

    @rule(data=st.data())
    def mixed_step(self, data: st.DataObject) -> None:
        steps = [
            (8, self.guided_step),
            (2, self.cpu_on),
            (1, self.cpu_off),
            (2, self.cpu_suspend),
            (1, self.system_suspend),
            (2, self.raise_interrupt),
            (1, self.affinity_info),
            (1, self.version_and_features),
            (1, self.junk_call),
            (1, self.domu_off_or_reset),
        ]
        index = data.draw(weighted(*((w, st.just(i)) for i, (w, _) in enumerate(steps))))
        steps[index][1](data)

    @rule(data=st.data())
    def guided_step(self, data: st.DataObject) -> None:
        """A step chosen for the state a domain is in: CPU_ON while vCPUs are off,
        CPU_SUSPEND once several are on, then CPU_ON / SYSTEM_SUSPEND / AFFINITY_INFO
        of a domain whose sleeping vCPUs must count as on, SYSTEM_SUSPEND (and a
        host suspend) when one is left, and wake-ups."""
        model = self.model
        live = sorted(
            d.name for d in model.domains.values() if d.state == RUNNING and ON in d.power
        )
        sleepers = [
            (d.name, i)
            for d in model.domains.values()
            for i in d.indices(STANDBY, POWERDOWN, SUSPENDED)
        ]
        if not live or (sleepers and data.draw(st.integers(0, 3), label="wake?") == 0):
            if not sleepers or data.draw(st.integers(0, 7), label="any device") == 0:
                self._irq(data.draw(st.sampled_from(sorted(IRQ_DEVICE)), label="irq"), "", 0)
                return
            name, i = data.draw(st.sampled_from(sorted(sleepers)), label="sleeper")
            d = model.domains[name]
            irqs = [DEVICE_IRQ[dev] for dev in d.devices if model.owners[DEVICE_IRQ[dev]] == name]
            if irqs and data.draw(st.booleans(), label="by a device"):
                self._irq(data.draw(st.sampled_from(irqs), label="irq"), "", 0)
            else:
                self._irq(VTIMER, name, i)
            return
        d, v = self._live(data, live)
        off = d.indices(OFF)
        sleeping = d.indices(STANDBY, POWERDOWN)
        others_on = len(d.power) - len(off) > 1
        kind = data.draw(
            weighted(
                (6 if off else 0, st.just("cpu_on")),
                (4 if sleeping else 0, st.just("cpu_on_busy")),
                (4 if others_on else 1, st.just("standby")),
                (3 if others_on else 1, st.just("powerdown")),
                (2 if others_on else 0, st.just("cpu_off")),
                (4 if not others_on or sleeping else 1, st.just("system_suspend")),
                (2 if sleeping else 1, st.just("affinity")),
            ),
            label="kind",
        )
        smc64 = not d.aarch32 and data.draw(st.booleans(), label="SMC64")
        entry = data.draw(weighted((6, good_entries(d)), (1, with_junk_upper(good_entries(d)))))
        ctx = data.draw(ctx_ids, label="context_id")
        if kind == "cpu_off":
            self._call(d.name, v, CPU_OFF, [])
        elif kind in ("cpu_on", "cpu_on_busy"):
            pool = off if kind == "cpu_on" else sleeping
            target = mpidr(data.draw(st.sampled_from(pool), label="target"))
            self._call(d.name, v, CPU_ON_64 if smc64 else CPU_ON, [target, entry, ctx])
        elif kind in ("standby", "powerdown"):
            states = standby_states if kind == "standby" else powerdown_states
            args = [data.draw(states, label="power_state"), entry, ctx]
            self._call(d.name, v, CPU_SUSPEND_64 if smc64 else CPU_SUSPEND, args)
        elif kind == "system_suspend":
            self._call(d.name, v, SYSTEM_SUSPEND_64 if smc64 else SYSTEM_SUSPEND, [entry, ctx])
        else:
            target = mpidr(data.draw(st.sampled_from([*sleeping, 0]), label="target"))
            level = data.draw(st.integers(0, 3), label="level")
            self._call(d.name, v, AFFINITY_INFO_64 if smc64 else AFFINITY_INFO, [target, level])

    # ------------------------------------------------ rules: random calls

    @rule(data=st.data())
    def cpu_on(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        d = self.model.domains.get(name)
        fid = data.draw(st.sampled_from([CPU_ON, CPU_ON_64]), label="fid")
        target = data.draw(targets(d), label="target")
        entry = data.draw(entries(d), label="entry")
        ctx = data.draw(ctx_ids, label="context_id")
        args = [target, entry, ctx, *data.draw(extra_args, label="extra")]
        self._call(name, vcpu, fid, args)

    @rule(data=st.data())
    def cpu_off(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        self._call(name, vcpu, CPU_OFF, data.draw(st.lists(u64, max_size=3), label="args"))

    @rule(data=st.data())
    def affinity_info(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        d = self.model.domains.get(name)
        fid = data.draw(st.sampled_from([AFFINITY_INFO, AFFINITY_INFO_64]), label="fid")
        args = [data.draw(targets(d), label="target"), data.draw(levels, label="level")]
        self._call(name, vcpu, fid, args)

    @rule(data=st.data())
    def cpu_suspend(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        d = self.model.domains.get(name)
        fid = data.draw(st.sampled_from([CPU_SUSPEND, CPU_SUSPEND_64]), label="fid")
        power_state = data.draw(power_states, label="power_state")
        args = [power_state, data.draw(entries(d), label="entry"), data.draw(ctx_ids)]
        self._call(name, vcpu, fid, args)

    @rule(data=st.data())
    def system_suspend(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        d = self.model.domains.get(name)
        fid = data.draw(st.sampled_from([SYSTEM_SUSPEND, SYSTEM_SUSPEND_64]), label="fid")
        args = [data.draw(entries(d), label="entry"), data.draw(ctx_ids, label="context_id")]
        self._call(name, vcpu, fid, args)

    @rule(data=st.data())
    def domu_off_or_reset(self, data: st.DataObject) -> None:
        """SYSTEM_OFF / RESET / RESET2 of a domU (dom0's are the host's: see below).
        A third of the draws only: each one undoes most of what came before."""
        if data.draw(st.integers(0, 2), label="roll"):
            return
        name = self._domain(data, include_dom0=False)
        vcpu = self._vcpu(data, name)
        fid = data.draw(
            st.sampled_from([SYSTEM_RESET, SYSTEM_RESET2, SYSTEM_RESET2_64, SYSTEM_OFF]),
            label="fid",
        )
        reset_type = data.draw(st.one_of(st.just(0), with_junk_upper(st.just(0)), u32, u64))
        self._call(name, vcpu, fid, [reset_type, data.draw(u64, label="cookie")])

    @rule(data=st.data(), roll=st.integers(0, 3))
    def dom0_reset(self, data: st.DataObject, roll: int) -> None:
        """SYSTEM_RESET(2) of dom0 resets the whole board; a quarter of the draws only."""
        if roll:
            return
        vcpu = self._vcpu(data, "dom0")
        fid = data.draw(st.sampled_from([SYSTEM_RESET, SYSTEM_RESET2, SYSTEM_RESET2_64]))
        self._call("dom0", vcpu, fid, [0])

    @rule(data=st.data(), roll=st.integers(0, 15))
    def dom0_off(self, data: st.DataObject, roll: int) -> None:
        """SYSTEM_OFF of dom0 powers the host off and every later call is refused, so
        it is kept rare (1 in 16 draws): enough to check the host-wide shutdown and
        the dead system, without wasting most runs on it."""
        if roll:
            return
        self._call("dom0", self._vcpu(data, "dom0"), SYSTEM_OFF, [])

    @rule(data=st.data())
    def dom0_suspend_with_fault(self, data: st.DataObject) -> None:
        """Domain 0's SYSTEM_SUSPEND with one host step or hardware operation made to
        fail (design section 6): either the fault is not on the suspend path and the
        host suspends, or the call returns DENIED / INTERNAL_FAILURE and everything
        is as before: nothing stays half-suspended."""
        dom0 = self.model.domains["dom0"]
        if dom0.state != RUNNING or ON not in dom0.power:
            return
        v = data.draw(st.sampled_from(dom0.indices(ON)), label="vcpu")
        names = sorted(suspend.FAULTABLE_STEPS | set(self.m.platform.FAULTS))
        fault = data.draw(st.sampled_from(names), label="fault")
        error = data.draw(st.sampled_from([0, DENIED, INTERNAL_FAILURE, NOT_SUPPORTED]))
        assert self.m.inject_fault(fault, 1, error) is None
        entry, ctx = data.draw(good_entries(dom0), label="entry"), data.draw(ctx_ids)
        alts = predict_call(self.model, "dom0", v, SYSTEM_SUSPEND_64, [entry, ctx])
        if alts[0].x0 == {SUCCESS}:
            rollback = Alt(self.model, x0={reg(DENIED), reg(INTERNAL_FAILURE)}, changes=True)
            rollback.others = "vcpus"
            alts.append(rollback)
        try:
            self._call("dom0", v, SYSTEM_SUSPEND_64, [entry, ctx], alts)
        finally:
            self.m.inject_fault(fault, 0, 0)  # disarm it if the suspend never got there

    @rule(data=st.data())
    def version_and_features(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        fid = data.draw(
            st.sampled_from(
                [PSCI_VERSION, PSCI_FEATURES, MIGRATE_INFO_TYPE, SMCCC_VERSION, SMCCC_ARCH_FEATURES]
            ),
            label="fid",
        )
        queried = data.draw(
            st.one_of(
                st.sampled_from(sorted(FEATURE_SUPPORTED)),
                junk_fids,
                with_junk_upper(st.sampled_from(sorted(FEATURE_SUPPORTED))),
            ),
            label="x1",
        )
        self._call(name, vcpu, fid, [queried, *data.draw(st.lists(u64, max_size=3))])

    @rule(data=st.data())
    def junk_call(self, data: st.DataObject) -> None:
        name = self._domain(data)
        vcpu = self._vcpu(data, name)
        fid = data.draw(junk_fids, label="fid")
        if name == "dom0" and fid & MASK32 in HOST_WIDE_FOR_DOM0:
            fid = PSCI_VERSION  # dom0's host-wide calls have their own (rarer) rules
        self._call(name, vcpu, fid, data.draw(junk_args, label="args"))

    @rule(data=st.data())
    def raise_interrupt(self, data: st.DataObject) -> None:
        irq = data.draw(
            weighted(
                (4, st.sampled_from(sorted(IRQ_DEVICE))),
                (3, st.just(VTIMER)),
                (1, st.sampled_from(UNWIRED_IRQS)),
                (1, st.integers(0, 1100)),
            ),
            label="irq",
        )
        name = self._domain(data)
        if data.draw(st.integers(0, 7), label="no domain") == 0:
            name = ""
        self._irq(irq, name, self._vcpu(data, name, (ON, STANDBY, POWERDOWN, SUSPENDED)))

    # ------------------------------------------------------ rules: domains

    @rule(data=st.data())
    def create_domain(self, data: st.DataObject) -> None:
        free = sorted(n for n, irq in DEVICE_IRQ.items() if self.model.owners[irq] is None)
        unused = [n for n in EXTRA_NAMES if n not in self.model.domains]
        devices = data.draw(
            weighted(
                (5, st.just(())),
                (3 if free else 0, st.lists(st.sampled_from(free or ["NOPE"]), min_size=1)),
                (1, st.sampled_from([("UART_0",), ("NOPE",), ("UART_1", "UART_1")])),
            ),
            label="devices",
        )
        cfg = DomainConfig(
            name=data.draw(
                weighted(
                    (6 if unused else 0, st.sampled_from(unused or ["ghost"])),
                    (1, st.sampled_from([*EXTRA_NAMES, "domu1", "dom0", "Bad Name"])),
                ),
                label="name",
            ),
            id=data.draw(st.integers(-1, 5), label="id (ignored)"),
            vcpus=data.draw(weighted((8, st.sampled_from([2, 1, 3, 17])), (1, st.just(0)))),
            ram_base=data.draw(st.sampled_from([0x4000_0000, 0x8000_0000, 0x1_0000_0000])),
            ram_size=data.draw(
                weighted((8, st.sampled_from([0x10_0000, 0x1000_0000, 0x1000])), (1, st.just(0)))
            ),
            aarch32=data.draw(st.booleans(), label="aarch32"),
            devices=tuple(devices),
        )
        reasons: set[Refusal] = set()
        if not config_ok(cfg):
            reasons = {Refusal.INVALID_ARGUMENT}
        else:
            if self.model.host != ACTIVE:
                reasons.add(Refusal.FAILED_PRECONDITION)
            if cfg.name in self.model.domains:
                reasons.add(Refusal.ALREADY_EXISTS)
            for dev in cfg.devices:
                if dev not in DEVICE_IRQ:
                    reasons.add(Refusal.INVALID_ARGUMENT)
                elif self.model.owners[DEVICE_IRQ[dev]] is not None:
                    reasons.add(Refusal.FAILED_PRECONDITION)
        snapshot = self._snapshot()
        outcome = self.m.create_domain(cfg)
        if reasons:
            assert isinstance(outcome, Refused), outcome
            assert outcome.reason in reasons, (outcome, reasons)
            self._unchanged(snapshot, "a refused create changed the system")
            return
        assert isinstance(outcome, Created), outcome
        id_ = outcome.domain.id
        assert id_ not in self.ids_seen, f"domain id {id_} reused"
        self.ids_seen.add(id_)
        self.names[id_] = cfg.name
        after = copy.deepcopy(self.model)
        after.domains[cfg.name] = MDomain.booted(
            id_,
            cfg.name,
            cfg.vcpus,
            cfg.ram_base,
            cfg.ram_size,
            aarch32=cfg.aarch32,
            devices=cfg.devices,
        )
        for dev in cfg.devices:
            after.owners[DEVICE_IRQ[dev]] = cfg.name
        alt = Alt(after, changes=True, events={id_: [(0, Start(cfg.ram_base, 0))]})
        assert DomainCreated(id_, cfg.name) in outcome.effects, outcome.effects
        self._check_effects(outcome.effects, alt, self.model)
        for id2, before in pickle.loads(snapshot).domains.items():
            assert self.m.system.domains[id2] == before, "create changed another domain"
        self.model = after

    @rule(data=st.data())
    def destroy_domain(self, data: st.DataObject) -> None:
        """Mostly the extra domains; dom0 (refused), a missing one, or a domU sometimes."""
        extras = sorted(n for n in self.model.domains if n in EXTRA_NAMES)
        roll = data.draw(st.integers(0, 3), label="roll")
        others = [n for n in self.model.domains if n == "dom0" or roll == 0]
        name = data.draw(
            weighted(
                (6 if extras else 0, st.sampled_from(extras or ["ghost"])),
                (1, st.sampled_from([*sorted(others), "ghost"])),
            ),
            label="name",
        )
        snapshot = self._snapshot()
        outcome = self.m.destroy_domain(name)
        d = self.model.domains.get(name)
        # The design leaves open whether a domain may be destroyed while the host
        # sleeps: either answer is accepted, a refusal changing nothing.
        asleep = self.model.host == SUSPENDED and isinstance(outcome, Refused)
        if d is None or d.id == 0 or asleep:
            assert isinstance(outcome, Refused), outcome
            wanted = Refusal.NOT_FOUND if d is None else Refusal.FAILED_PRECONDITION
            assert outcome.reason is wanted, outcome
            self._unchanged(snapshot, "a refused destroy changed the system")
            return
        assert isinstance(outcome, Destroyed), outcome
        assert DomainDestroyed(d.id, name) in outcome.effects, outcome.effects
        after = copy.deepcopy(self.model)
        del after.domains[name]
        for irq, owner in after.owners.items():
            if owner == name:
                after.owners[irq] = None
        # Whatever it was doing, a standby call of the domain can never return now.
        alt = Alt(after, changes=True, aborted=d.standby())
        self._check_effects(outcome.effects, alt, self.model)
        assert name not in self.m.system.names
        for id2, before in pickle.loads(snapshot).domains.items():
            if id2 != d.id:
                assert self.m.system.domains[id2] == before, "destroy changed another domain"
        for dev in d.devices:
            assert self.m.system.devices[dev].owner is None, dev
        self.model = after

    # ----------------------------------------------------------- invariants

    @invariant()
    def model_matches(self) -> None:
        system = self.m.system
        assert sorted(system.names) == sorted(self.model.domains)
        assert host_name(system.host_state) == self.model.host, system.host_state
        for d in self.model.domains.values():
            real = system.domain(d.name)
            assert real is not None
            assert real.id == d.id
            assert STATE_NAME[real.state] == d.state, (d.name, real.state, d.state)
            powers = [POWER_NAME[v.power] for v in real.vcpus]  # exactly one state each
            assert powers == d.power, (d.name, powers, d.power)
            assert [v.index for v in real.vcpus] == list(range(len(d.power)))
            assert [v.mpidr for v in real.vcpus] == [mpidr(i) for i in range(len(d.power))]
        for irq, owner in self.model.owners.items():
            real_owner = system.devices[IRQ_DEVICE[irq]].owner
            wanted = None if owner is None else self.model.domains[owner].id
            assert real_owner == wanted, (irq, real_owner, wanted)

    @invariant()
    def domain_shapes(self) -> None:
        system = self.m.system
        for real in system.domains.values():
            powers = [v.power for v in real.vcpus]
            if real.state is DomainState.RUNNING:
                assert any(p is not VcpuPower.OFF for p in powers), real
                assert VcpuPower.SUSPENDED not in powers, real
            elif real.state is DomainState.SUSPENDED:
                assert powers.count(VcpuPower.SUSPENDED) == 1, real
                assert all(p in (VcpuPower.OFF, VcpuPower.SUSPENDED) for p in powers), real
            elif real.state is DomainState.SHUTDOWN:
                assert all(p is VcpuPower.OFF for p in powers), real
            else:  # paused by a host suspend (design section 6)
                assert system.host_state is HostState.SUSPENDED, real
                assert VcpuPower.SUSPENDED not in powers, real
        states = {d.state for d in system.domains.values()}
        if system.host_state is HostState.SUSPENDED:
            # Only domain 0's SYSTEM_SUSPEND suspends the host; nothing runs meanwhile.
            assert system.domains[0].state is DomainState.SUSPENDED
            assert DomainState.RUNNING not in states
        elif system.host_state is HostState.ACTIVE:
            assert DomainState.PAUSED not in states
        else:
            assert states == {DomainState.SHUTDOWN}, states

    @invariant()
    def event_numbering(self) -> None:
        for id_, real in self.m.system.domains.items():
            assert real.event_seq == self.last_seq.get(id_, 0), (real.name, real.event_seq)

    @invariant()
    def blocked_calls(self) -> None:
        real_standby = {
            (id_, v.index)
            for id_, d in self.m.system.domains.items()
            for v in d.vcpus
            if v.power is VcpuPower.STANDBY
        }
        assert self.outstanding == real_standby == self.model.standby()

    @invariant()
    def affinity_agrees(self) -> None:
        """AFFINITY_INFO level 0 of every vCPU (and level 1 of cluster 0), called from
        an ON vCPU of each running domain. Elsewhere the model alone answers, and it
        says what model_matches compared."""
        for d in self.model.domains.values():
            if d.state != RUNNING or ON not in d.power:
                continue
            caller = d.power.index(ON)
            for i, power in enumerate(d.power):
                fid = AFFINITY_INFO_64 if i % 2 and not d.aarch32 else AFFINITY_INFO
                self._query(d, caller, fid, [mpidr(i), 0], 1 if power == OFF else 0)
            cluster0 = any(p != OFF for p in d.power[:16])
            self._query(d, caller, AFFINITY_INFO, [0, 1], 0 if cluster0 else 1)

    def _query(self, d: MDomain, caller: int, fid: int, args: list[int], wanted: int) -> None:
        outcome = self.m.call(d.name, caller, fid, args)
        assert isinstance(outcome, Returned), outcome
        assert len(outcome.regs) == 4, outcome
        assert all(0 <= r <= MASK64 for r in outcome.regs), outcome
        assert outcome.regs[0] == wanted, (d.name, hex(args[0]), args[1], outcome)
        assert outcome.effects == (), outcome


TestPsciStateful = PsciMachine.TestCase
TestPsciStateful.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# The same machine on the other boards: the platform protocol is the only seam.
TestPsciStatefulGeneric, TestPsciStatefulImx8 = on_other_backends(PsciMachine, 75)
