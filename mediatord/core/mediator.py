"""The mediator: one object that owns the system state and every transition.

``Mediator.call`` is the dispatcher for guest SMC/HVC calls (SMCCC architecture
calls and virtual PSCI); the Control operations (domains, interrupts) sit beside
it. Every method is synchronous and deterministic and returns its effects.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from mediatord.core import psci, smccc
from mediatord.core.config import BoardConfig, DomainConfig, domain_problems
from mediatord.core.effects import (
    CallAborted,
    CallCompleted,
    DomainCreated,
    DomainDestroyed,
    DomainEvent,
    DomainStateChanged,
    Effect,
    EventKind,
    HostStateChanged,
    Regs,
    Resume,
    Shutdown,
    ShutdownReason,
    Start,
    VcpuPowerChanged,
    Wake,
)
from mediatord.core.model import (
    VTIMER_PPI,
    Device,
    Domain,
    DomainState,
    HostState,
    System,
    Vcpu,
    VcpuPower,
    vcpu_mpidr,
)
from mediatord.core.psci import Args


class Refusal(Enum):
    """Why the mediator would not even run a request (the shell maps these to gRPC codes)."""

    UNKNOWN_DOMAIN = "unknown-domain"  # a Guest identity naming no domain
    INVALID_ARGUMENT = "invalid-argument"
    FAILED_PRECONDITION = "failed-precondition"
    NOT_FOUND = "not-found"
    ALREADY_EXISTS = "already-exists"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    message: str


@dataclass(frozen=True, slots=True)
class Returned:
    regs: Regs
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Blocked:
    """The call returns later, through a CallCompleted (or CallAborted) effect."""

    effects: tuple[Effect, ...] = ()


CallOutcome = Returned | Blocked | Refused


class IrqOutcome(Enum):
    DELIVERED = "delivered"
    WOKE_VCPU = "woke-vcpu"
    WOKE_DOMAIN = "woke-domain"
    PENDING = "pending"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Raised:
    outcome: IrqOutcome
    domain: str = ""
    vcpu: int = 0
    reason: str = ""
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Created:
    domain: Domain
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Destroyed:
    effects: tuple[Effect, ...]


_NOT_SUPPORTED: Final = Returned((smccc.to_reg(smccc.SmcccRet.NOT_SUPPORTED), 0, 0, 0))
_RESULTS: Final = {value: Returned((smccc.to_reg(value), 0, 0, 0)) for value in range(-9, 3)}


def _smccc_version(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    return smccc.SMCCC_VERSION_1_1


def _smccc_arch_features(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    function_id = x[0]
    # TF-A arm_arch_svc: only the two discovery calls exist; no workaround calls
    # are offered (the ZynqMP's Cortex-A53 needs none).
    if function_id in (smccc.SMCCC_VERSION, smccc.SMCCC_ARCH_FEATURES):
        return smccc.SmcccRet.SUCCESS
    return smccc.SmcccRet.NOT_SUPPORTED


HANDLERS: Final[dict[int, psci.Handler]] = {
    smccc.SMCCC_VERSION: _smccc_version,
    smccc.SMCCC_ARCH_FEATURES: _smccc_arch_features,
    **psci.HANDLERS,
}


class Mediator:
    """Owns a :class:`System` and applies guest calls and Control operations to it."""

    def __init__(self, system: System) -> None:
        self.system = system

    # ------------------------------------------------------------------ boot

    @classmethod
    def boot(cls, board: BoardConfig) -> tuple[Mediator, list[Effect]]:
        """Build the system a board describes, each domain's vCPU 0 on at its RAM base."""
        devices = {
            dev.name: Device(
                name=dev.name,
                node_id=dev.node_id,
                irq=dev.irq,
                mmio_base=dev.mmio_base,
                mmio_size=dev.mmio_size,
                wake_capable=dev.wake_capable,
                wake_source=dev.wake_capable,
            )
            for dev in board.devices
        }
        system = System(
            board=board,
            domains={},
            names={},
            devices=devices,
            irq_devices={dev.irq: dev.name for dev in board.devices},
            next_domain_id=max((d.id for d in board.domains), default=0) + 1,
        )
        mediator = cls(system)
        fx: list[Effect] = []
        # The hardware domain first: it boots before any domU.
        for config in sorted(board.domains, key=lambda d: d.id):
            mediator._add_domain(config, fx)
        return mediator, fx

    def snapshot(self) -> System:
        """A deep copy of the whole state, comparable with ``==``."""
        return copy.deepcopy(self.system)

    # ------------------------------------------------------------ guest calls

    def call(
        self, domain_name: str, vcpu: int, function_id: int, args: Sequence[int]
    ) -> CallOutcome:
        """One SMC/HVC from vCPU ``vcpu`` of ``domain_name``: x0..x3, a block, or a refusal."""
        domain = self.system.domain(domain_name)
        if domain is None:
            return Refused(Refusal.UNKNOWN_DOMAIN, f"no domain named {domain_name!r}")
        if len(args) > smccc.MAX_ARGS:
            return Refused(
                Refusal.INVALID_ARGUMENT,
                f"{len(args)} arguments given; an SMC carries at most {smccc.MAX_ARGS} (x1..x17)",
            )
        for index, reg in enumerate(args, start=1):
            if not 0 <= reg <= smccc.MASK64:
                return Refused(
                    Refusal.INVALID_ARGUMENT, f"x{index} = {reg} is not a 64-bit register value"
                )
        if not 0 <= vcpu < len(domain.vcpus):
            return Refused(
                Refusal.INVALID_ARGUMENT,
                f"vCPU {vcpu} does not exist: {domain.name} has vCPUs 0..{len(domain.vcpus) - 1}",
            )
        if domain.state is not DomainState.RUNNING:
            return Refused(
                Refusal.FAILED_PRECONDITION,
                f"domain {domain.name} is {domain.state.value}, not running",
            )
        caller = domain.vcpus[vcpu]
        if caller.power is not VcpuPower.ON:
            return Refused(
                Refusal.FAILED_PRECONDITION,
                f"vCPU {vcpu} of {domain.name} is {caller.power.value}, so it cannot call",
            )
        fid = function_id & smccc.MASK32
        handler = HANDLERS.get(fid)
        if handler is None or (domain.aarch32 and fid & smccc.SMC64_BIT):
            return _NOT_SUPPORTED
        x1, x2, x3 = (*args[:3], 0, 0, 0)[:3]
        x: Args = (
            (x1, x2, x3)
            if fid & smccc.SMC64_BIT
            # SMC32: only w1..w3 are meaningful; the upper halves are ignored.
            else (x1 & smccc.MASK32, x2 & smccc.MASK32, x3 & smccc.MASK32)
        )
        fx: list[Effect] = []
        value = handler(self, domain, caller, x, fx)
        if value is None:
            return Blocked(tuple(fx))
        if not fx:
            cached = _RESULTS.get(value)
            if cached is not None:
                return cached
        return Returned((smccc.to_reg(value), 0, 0, 0), tuple(fx))

    # ------------------------------------------------------ Control: domains

    def create_domain(self, config: DomainConfig) -> Created | Refused:
        """Create and boot a domain (vCPU 0 on at its RAM base). ``config.id`` is ignored."""
        problems = domain_problems(config)
        if problems:
            return Refused(Refusal.INVALID_ARGUMENT, "; ".join(map(str, problems)))
        if self.system.host_state is HostState.OFF:
            return Refused(Refusal.FAILED_PRECONDITION, "the host is powered off")
        if config.name in self.system.names:
            return Refused(Refusal.ALREADY_EXISTS, f"a domain named {config.name!r} exists")
        for name in config.devices:
            device = self.system.devices.get(name)
            if device is None:
                known = ", ".join(sorted(self.system.devices)) or "none"
                return Refused(
                    Refusal.INVALID_ARGUMENT, f"no device {name!r} on this board; known: {known}"
                )
            if device.owner is not None:
                owner = self.system.domains[device.owner].name
                return Refused(Refusal.FAILED_PRECONDITION, f"{name} is owned by {owner}")
        fx: list[Effect] = []
        config = DomainConfig(
            name=config.name,
            id=self.system.next_domain_id,
            vcpus=config.vcpus,
            ram_base=config.ram_base,
            ram_size=config.ram_size,
            aarch32=config.aarch32,
            devices=config.devices,
        )
        self.system.next_domain_id += 1
        domain = self._add_domain(config, fx)
        return Created(domain, tuple(fx))

    def destroy_domain(self, name: str) -> Destroyed | Refused:
        """Tear a domain down at once, whatever it was doing; its devices become unassigned."""
        domain = self.system.domain(name)
        if domain is None:
            return Refused(Refusal.NOT_FOUND, f"no domain named {name!r}")
        if domain.hardware_domain:
            return Refused(
                Refusal.FAILED_PRECONDITION,
                f"{name} is the hardware domain (id 0) and cannot be destroyed",
            )
        fx: list[Effect] = []
        self._abort_blocked(domain, f"domain {name} was destroyed", fx)
        for device_name in domain.devices:
            self.system.devices[device_name].owner = None
        del self.system.domains[domain.id]
        del self.system.names[name]
        fx.append(DomainDestroyed(domain.id, name))
        return Destroyed(tuple(fx))

    # --------------------------------------------------- Control: interrupts

    def raise_interrupt(self, irq: int, domain_name: str = "", vcpu: int = 0) -> Raised | Refused:
        """Fire interrupt line ``irq``: a device SPI goes to its owner; the virtual
        timer PPI (27) to ``vcpu`` of ``domain_name``. Wakes what it may wake."""
        system = self.system
        target: Vcpu | None = None
        if irq == VTIMER_PPI:
            found = system.domain(domain_name)
            if found is None:
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"IRQ {VTIMER_PPI} is the per-vCPU virtual timer: name the domain "
                    f"(got {domain_name!r}) and vCPU it fires on",
                )
            domain = found
            if not 0 <= vcpu < len(domain.vcpus):
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"vCPU {vcpu} does not exist: {domain.name} has vCPUs "
                    f"0..{len(domain.vcpus) - 1}",
                )
            target = domain.vcpus[vcpu]
            wake_source = True
        else:
            device_name = system.irq_devices.get(irq)
            if device_name is None:
                wired = ", ".join(
                    f"{irq_} ({name})" for irq_, name in sorted(system.irq_devices.items())
                )
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"IRQ {irq} is not wired on this board; device IRQs: {wired}; "
                    f"virtual timer: {VTIMER_PPI}",
                )
            device = system.devices[device_name]
            if system.host_state is HostState.OFF:
                return Raised(IrqOutcome.DROPPED, reason="the host is powered off")
            if device.owner is None:
                return Raised(IrqOutcome.DROPPED, reason=f"{device_name} is not assigned")
            domain = system.domains[device.owner]
            wake_source = device.wake_source
        name = domain.name
        fx: list[Effect] = []

        if system.host_state is HostState.OFF:
            return Raised(IrqOutcome.DROPPED, name, vcpu, "the host is powered off")
        if domain.state is DomainState.SHUTDOWN:
            return Raised(IrqOutcome.DROPPED, name, vcpu, f"{name} is shut down")
        if target is not None and target.power is VcpuPower.OFF:
            return Raised(IrqOutcome.DROPPED, name, vcpu, f"vCPU {vcpu} of {name} is off")
        if domain.state is DomainState.SUSPENDED:
            if not wake_source:
                self._make_pending(domain, irq)
                return Raised(
                    IrqOutcome.PENDING, name, 0, f"IRQ {irq} is not a wake source of {name}"
                )
            woken = self._wake_domain(domain, irq, fx)
            return Raised(IrqOutcome.WOKE_DOMAIN, name, woken.index, "", tuple(fx))
        if domain.state is DomainState.PAUSED:
            self._make_pending(domain, irq)
            return Raised(IrqOutcome.PENDING, name, 0, f"{name} is paused")

        if target is None:
            # An SPI goes to the lowest-numbered vCPU that is not off (GIC
            # ITARGETSR defaults to CPU 0; CPU_OFF never leaves a domain empty).
            target = next(v for v in domain.vcpus if v.power is not VcpuPower.OFF)
        if target.power is VcpuPower.STANDBY:
            self.set_power(domain, target, VcpuPower.ON, fx)
            fx.append(CallCompleted(domain.id, target.index, _RESULTS[0].regs))
            self._emit(domain, target.index, Wake(irq), fx)
            return Raised(IrqOutcome.WOKE_VCPU, name, target.index, "", tuple(fx))
        if target.power is VcpuPower.POWERDOWN:
            self.set_power(domain, target, VcpuPower.ON, fx)
            self._emit(domain, target.index, Resume(target.entry_point, target.context_id), fx)
            self._emit(domain, target.index, Wake(irq), fx)
            return Raised(IrqOutcome.WOKE_VCPU, name, target.index, "", tuple(fx))
        self._emit(domain, target.index, Wake(irq), fx)
        return Raised(IrqOutcome.DELIVERED, name, target.index, "", tuple(fx))

    # ------------------------------------------- transitions (used by psci)

    def set_power(self, d: Domain, v: Vcpu, power: VcpuPower, fx: list[Effect]) -> None:
        v.power = power
        fx.append(VcpuPowerChanged(d.id, d.name, v.index, power))

    def start_vcpu(
        self, d: Domain, v: Vcpu, entry_point: int, context_id: int, fx: list[Effect]
    ) -> None:
        """Reset ``v`` to run from ``entry_point`` with x0 = ``context_id`` (CPU_ON, boot)."""
        v.entry_point = entry_point
        v.context_id = context_id
        self.set_power(d, v, VcpuPower.ON, fx)
        self._emit(d, v.index, Start(entry_point, context_id), fx)

    def standby_vcpu(self, d: Domain, v: Vcpu, fx: list[Effect]) -> None:
        self.set_power(d, v, VcpuPower.STANDBY, fx)

    def power_down_vcpu(
        self, d: Domain, v: Vcpu, entry_point: int, context_id: int, fx: list[Effect]
    ) -> None:
        v.entry_point = entry_point
        v.context_id = context_id
        self.set_power(d, v, VcpuPower.POWERDOWN, fx)

    def suspend_domain(
        self, d: Domain, v: Vcpu, entry_point: int, context_id: int, fx: list[Effect]
    ) -> None:
        """vSYSTEM_SUSPEND (seed section 3): the caller's context is reset to
        (entry_point, context_id) and it blocks until a wake interrupt."""
        v.entry_point = entry_point
        v.context_id = context_id
        self.set_power(d, v, VcpuPower.SUSPENDED, fx)
        self._set_state(d, DomainState.SUSPENDED, fx)
        if d.hardware_domain:
            # The hardware domain's suspend is the decision to suspend the host.
            self.system.host_suspend_requested = True
            fx.append(HostStateChanged(self.system.host_state, True))

    def shut_down_domain(self, d: Domain, vcpu: int, fx: list[Effect]) -> None:
        """SYSTEM_OFF of a domU: that domain only stops, and stays until destroyed."""
        self._abort_blocked(d, f"domain {d.name} shut down", fx)
        self._all_off(d, fx)
        self._emit(d, vcpu, Shutdown(ShutdownReason.POWEROFF), fx)
        self._set_state(d, DomainState.SHUTDOWN, fx)

    def reboot_domain(self, d: Domain, vcpu: int, fx: list[Effect]) -> None:
        """SYSTEM_RESET of a domU: the domain restarts as it booted."""
        self._abort_blocked(d, f"domain {d.name} rebooted", fx)
        self._emit(d, vcpu, Shutdown(ShutdownReason.REBOOT), fx)
        self._all_off(d, fx)
        if d.state is not DomainState.RUNNING:
            self._set_state(d, DomainState.RUNNING, fx)
        self.start_vcpu(d, d.vcpus[0], d.ram_base, 0, fx)

    def power_off_host(self, caller: Vcpu, fx: list[Effect]) -> None:
        """SYSTEM_OFF of the hardware domain powers the board off: every domain stops."""
        hardware = self.system.domains[0]
        for domain in self._domus():
            if domain.state is not DomainState.SHUTDOWN:
                self.shut_down_domain(domain, 0, fx)
        self.shut_down_domain(hardware, caller.index, fx)
        self.system.host_state = HostState.OFF
        self.system.host_suspend_requested = False
        fx.append(HostStateChanged(HostState.OFF, False))

    def reset_host(self, caller: Vcpu, fx: list[Effect]) -> None:
        """SYSTEM_RESET of the hardware domain resets the board: every domain reboots."""
        self.reboot_domain(self.system.domains[0], caller.index, fx)
        for domain in self._domus():
            self.reboot_domain(domain, 0, fx)
        if self.system.host_suspend_requested:
            self.system.host_suspend_requested = False
            fx.append(HostStateChanged(self.system.host_state, False))

    # ---------------------------------------------------------------- helpers

    def _domus(self) -> list[Domain]:
        return [d for d in self.system.domains.values() if not d.hardware_domain]

    def _add_domain(self, config: DomainConfig, fx: list[Effect]) -> Domain:
        domain = Domain(
            id=config.id,
            name=config.name,
            ram_base=config.ram_base,
            ram_size=config.ram_size,
            aarch32=config.aarch32,
            vcpus=[Vcpu(index=i, mpidr=vcpu_mpidr(i)) for i in range(config.vcpus)],
            devices=list(config.devices),
        )
        for device_name in config.devices:
            self.system.devices[device_name].owner = domain.id
        self.system.domains[domain.id] = domain
        self.system.names[domain.name] = domain.id
        fx.append(DomainCreated(domain.id, domain.name))
        self.start_vcpu(domain, domain.vcpus[0], domain.ram_base, 0, fx)
        return domain

    def _emit(self, d: Domain, vcpu: int, kind: EventKind, fx: list[Effect]) -> None:
        d.event_seq += 1
        fx.append(DomainEvent(d.id, d.name, d.event_seq, vcpu, kind))

    def _set_state(self, d: Domain, state: DomainState, fx: list[Effect]) -> None:
        d.state = state
        fx.append(DomainStateChanged(d.id, d.name, state))

    def _all_off(self, d: Domain, fx: list[Effect]) -> None:
        for v in d.vcpus:
            if v.power is not VcpuPower.OFF:
                self.set_power(d, v, VcpuPower.OFF, fx)
        d.pending_irqs.clear()

    def _abort_blocked(self, d: Domain, reason: str, fx: list[Effect]) -> None:
        for v in d.vcpus:
            if v.power is VcpuPower.STANDBY:
                fx.append(CallAborted(d.id, v.index, reason))

    def _make_pending(self, d: Domain, irq: int) -> None:
        if irq not in d.pending_irqs:
            d.pending_irqs.append(irq)

    def _wake_domain(self, d: Domain, irq: int, fx: list[Effect]) -> Vcpu:
        """Resume a suspended domain at its entry point, then hand it every
        interrupt that waited, the waking one last."""
        v = next(v for v in d.vcpus if v.power is VcpuPower.SUSPENDED)
        self.set_power(d, v, VcpuPower.ON, fx)
        self._set_state(d, DomainState.RUNNING, fx)
        self._emit(d, v.index, Resume(v.entry_point, v.context_id), fx)
        self._make_pending(d, irq)
        for pending in d.pending_irqs:
            self._emit(d, v.index, Wake(pending), fx)
        d.pending_irqs.clear()
        if d.hardware_domain and self.system.host_suspend_requested:
            self.system.host_suspend_requested = False
            fx.append(HostStateChanged(self.system.host_state, False))
        return v
