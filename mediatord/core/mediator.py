"""The mediator: one object that owns the system state and every transition.

``Mediator.call`` is the dispatcher for guest SMC/HVC calls (SMCCC architecture
calls and virtual PSCI); the Control operations (domains, interrupts) sit beside
it. Every method is synchronous and deterministic and returns its effects.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeVar

from mediatord.backends.base import IrqFate, IrqRoute, PcpuState, Platform, PowerFirmware
from mediatord.core import coordination, eemi, psci, scfw, smccc, statecodec, suspend
from mediatord.core.clock import Clock
from mediatord.core.config import BoardConfig, DeviceConfig, DomainConfig, domain_problems
from mediatord.core.effects import (
    CallAborted,
    CallCompleted,
    DeviceAssigned,
    DomainCreated,
    DomainDestroyed,
    DomainEvent,
    DomainStateChanged,
    Effect,
    EventKind,
    FirmwareCall,
    HardwareStep,
    HostStateChanged,
    HostStep,
    Pause,
    Regs,
    Resume,
    Shutdown,
    ShutdownReason,
    Start,
    SuspendRequest,
    Unpause,
    VcpuPowerChanged,
    Wake,
)
from mediatord.core.model import (
    VTIMER_PPI,
    Device,
    Domain,
    DomainState,
    HostState,
    HostSuspend,
    SuspendCoordination,
    SuspendPolicy,
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
    RESOURCE_EXHAUSTED = "resource-exhausted"  # the shell's limits
    DEADLINE_EXCEEDED = "deadline-exceeded"
    UNAVAILABLE = "unavailable"  # the shell cannot make a change durable


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
    HOST_RESET = "host-reset"


@dataclass(frozen=True, slots=True)
class Raised:
    outcome: IrqOutcome
    domain: str = ""
    vcpu: int = 0
    reason: str = ""
    effects: tuple[Effect, ...] = ()
    woke_host: bool = False


@dataclass(frozen=True, slots=True)
class Created:
    domain: Domain
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Destroyed:
    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    """A Control operation that changed state (device assigned or released)."""

    effects: tuple[Effect, ...]


# GET_NODE_STATUS of a virtual APU core: the vCPU's state as a PU state.
_PROC_STATE: Final = {
    VcpuPower.OFF: eemi.PROC_FORCEDOFF,
    VcpuPower.ON: eemi.PROC_ACTIVE,
    VcpuPower.STANDBY: eemi.PROC_SLEEP,
    VcpuPower.POWERDOWN: eemi.PROC_SLEEP,
    VcpuPower.SUSPENDED: eemi.PROC_SLEEP,
}

_K = TypeVar("_K")
_Done = TypeVar("_Done", "Returned", "Raised")
# The hypervisor's scheduler tick on the generic timer.
HYP_TIMER_PERIOD_NS: Final = 1_000_000

# The answer of a call nothing implements; it changes nothing (the journal skips it).
NOT_SUPPORTED_OUTCOME: Final = Returned((smccc.to_reg(smccc.SmcccRet.NOT_SUPPORTED), 0, 0, 0))
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


def _granted_nodes(device: Device) -> list[int]:
    """The device's own node and every node an owner of it may use through it."""
    granted = [n for n, grant in eemi.NODE_GRANT.items() if grant == device.name]
    return [device.node_id, *(n for n in granted if n != device.node_id)]


def _steps(effects: list[Effect]) -> tuple[HostStep | HardwareStep, ...]:
    return tuple(e for e in effects if isinstance(e, HostStep | HardwareStep))


# Every class the core's state (and a domain's queued VcpuEvents) may contain:
# what a snapshot may hold besides the platform's own STATE_TYPES.
STATE_TYPES: Final = (
    System, Domain, Vcpu, Device, HostSuspend, VcpuPower, DomainState, HostState,
    BoardConfig, DeviceConfig, DomainConfig, HostStep, HardwareStep,
    DomainEvent, Start, Resume, Pause, Unpause, Wake, Shutdown, ShutdownReason, SuspendRequest,
    SuspendCoordination, SuspendPolicy,
)  # fmt: skip


HANDLERS: Final[dict[int, psci.Handler]] = {
    smccc.SMCCC_VERSION: _smccc_version,
    smccc.SMCCC_ARCH_FEATURES: _smccc_arch_features,
    **psci.HANDLERS,
}


class _Owners(Mapping[_K, "int | None"]):
    """Device owners as the access rules read them: a view, not a copy per call."""

    __slots__ = ("_devices",)

    def __init__(self, devices: Mapping[_K, Device]) -> None:
        self._devices = devices

    def __getitem__(self, key: _K) -> int | None:
        return self._devices[key].owner

    def __iter__(self) -> Iterator[_K]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)


class Mediator:
    """Owns a :class:`System` and applies guest calls and Control operations to it."""

    def __init__(
        self,
        system: System,
        platform: Platform,
        suspend_steps: tuple[suspend.Step, ...] = suspend.SUSPEND_STEPS,
        resume_steps: tuple[suspend.Step, ...] = suspend.RESUME_STEPS,
    ) -> None:
        self.system = system
        self.platform = platform
        self.clock: Clock = platform.clock
        # The step tables are data; tests pass edited copies to show that the
        # emulated hardware catches a mediator that skips a step.
        self.suspend_steps = suspend_steps
        self.resume_steps = resume_steps
        # History, not state: the host and hardware steps of the last suspend
        # attempt and of the last resume, for timelines.
        self.last_suspend_steps: tuple[HostStep | HardwareStep, ...] = ()
        self.last_resume_steps: tuple[HostStep | HardwareStep, ...] = ()
        # Which (domain id, vCPU)s a virtual-timer PPI latched on a pCPU is for:
        # one pending bit in the GIC can stand for several vCPUs' timers.
        self._ppi_targets: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._index_devices()

    def _index_devices(self) -> None:
        # The board's devices never change, only their owners; the System may be
        # replaced (load_state), so the views are rebuilt with it.
        self._by_node = {d.node_id: d for d in self.system.devices.values()}
        self._owners_by_name = _Owners(self.system.devices)
        self._owners_by_node = _Owners(self._by_node)

    # ------------------------------------------------------------------ boot

    @classmethod
    def boot(
        cls,
        board: BoardConfig,
        platform: Platform,
        suspend_steps: tuple[suspend.Step, ...] = suspend.SUSPEND_STEPS,
        resume_steps: tuple[suspend.Step, ...] = suspend.RESUME_STEPS,
    ) -> tuple[Mediator, list[Effect]]:
        """Bring the platform up and boot the board's domains (vCPU 0 on at RAM base)."""
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
            hyp_pcpu=platform.boot_pcpu,
        )
        mediator = cls(system, platform, suspend_steps, resume_steps)
        fx: list[Effect] = []
        # The hardware domain first: it boots before any domU.
        for config in sorted(board.domains, key=lambda d: d.id):
            mediator._add_domain(config, fx)
        mediator._bring_up_platform(fx)
        return mediator, fx

    def snapshot(self) -> System:
        """A deep copy of the whole state, comparable with ``==``."""
        return copy.deepcopy(self.system)

    def save_state(self) -> statecodec.Json:
        """The whole state, the core's and the platform's, as statecodec JSON."""
        return statecodec.encode(
            {
                "system": self.system,
                "ppi_targets": self._ppi_targets,
                "last_suspend_steps": self.last_suspend_steps,
                "last_resume_steps": self.last_resume_steps,
                "platform": self.platform.save_state(),
            }
        )

    def load_state(self, data: statecodec.Json) -> None:
        """Put this (freshly booted, same board) mediator and its platform in the
        state ``data`` holds. Raises statecodec.CodecError for data written by an
        incompatible version."""
        decoder = statecodec.Decoder((*STATE_TYPES, *self.platform.STATE_TYPES))
        state = decoder.decode(data)
        if not isinstance(state, dict) or set(state) != {
            "system", "ppi_targets", "last_suspend_steps", "last_resume_steps", "platform",
        }:  # fmt: skip
            raise statecodec.CodecError("the snapshot does not hold a mediator's state")
        if not isinstance(state["system"], System):
            raise statecodec.CodecError("the snapshot's system is not a System")
        self.platform.load_state(state["platform"])
        self.system = state["system"]
        self._index_devices()
        self._ppi_targets = state["ppi_targets"]
        self.last_suspend_steps = state["last_suspend_steps"]
        self.last_resume_steps = state["last_resume_steps"]

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
            if (fid >> smccc.OWNER_SHIFT) & smccc.OWNER_MASK == smccc.Owner.SIP:
                if self.platform.scfw is None:
                    outcome = self._eemi(domain, caller, fid, args)
                elif domain.aarch32 and fid & smccc.SMC64_BIT:
                    outcome = NOT_SUPPORTED_OUTCOME  # as for any SMC64 call of AArch32
                else:
                    outcome = self._scfw(domain, fid, args)
                return self._progressed(outcome) if isinstance(outcome, Returned) else outcome
            return NOT_SUPPORTED_OUTCOME
        x1, x2, x3 = (*args[:3], 0, 0, 0)[:3]
        x: Args = (
            (x1, x2, x3)
            if fid & smccc.SMC64_BIT
            # SMC32: only w1..w3 are meaningful; the upper halves are ignored.
            else (x1 & smccc.MASK32, x2 & smccc.MASK32, x3 & smccc.MASK32)
        )
        fx: list[Effect] = []
        value = handler(self, domain, caller, x, fx)
        if self.system.coordination is not None:
            coordination.progress(self, fx)
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
        if self.system.host_state is not HostState.ACTIVE:
            return Refused(
                Refusal.FAILED_PRECONDITION, f"the host is {self.system.host_state.value}"
            )
        if config.name in self.system.names:
            return Refused(Refusal.ALREADY_EXISTS, f"a domain named {config.name!r} exists")
        for name in config.devices:
            device = self._board_device(name, Refusal.INVALID_ARGUMENT)
            if isinstance(device, Refused):
                return device
            if (owned := self._owned_elsewhere(device)) is not None:
                return owned
        fx: list[Effect] = []
        config = dataclasses.replace(config, id=self.system.next_domain_id)
        self.system.next_domain_id += 1
        domain = self._add_domain(config, fx)
        self._route_devices(domain.devices, fx)
        # A domU made during a coordinated suspend is asked too.
        coordination.progress(self, fx)
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
        if self.system.host_state not in (HostState.ACTIVE, HostState.OFF):
            return Refused(
                Refusal.FAILED_PRECONDITION, f"the host is {self.system.host_state.value}"
            )
        fx: list[Effect] = []
        self._abort_blocked(domain, f"domain {name} was destroyed", fx)
        for device_name in list(domain.devices):
            self._unassign(domain, self.system.devices[device_name], fx)
        del self.system.domains[domain.id]
        del self.system.names[name]
        for targets in self._ppi_targets.values():
            targets[:] = [t for t in targets if t[0] != domain.id]
        fx.append(DomainDestroyed(domain.id, name))
        # A domU gone no longer holds up a coordinated suspend.
        coordination.progress(self, fx)
        return Destroyed(tuple(fx))

    def assign_device(self, domain_name: str, device_name: str) -> Changed | Refused:
        """Give an unassigned, idle device to a running domain (its IRQ is routed
        to it, it is a wake source as the board says)."""
        found = self._device_change(domain_name, device_name)
        if isinstance(found, Refused):
            return found
        domain, device = found
        if (owned := self._owned_elsewhere(device)) is not None:
            return owned
        firmware = self.platform.firmware
        users: set[int] = set()
        if firmware is not None:
            for node in _granted_nodes(device):
                users |= set(firmware.node_usage(node))
        if users:
            return Refused(
                Refusal.FAILED_PRECONDITION,
                f"{device_name} is not idle: {len(users)} master(s) still require it "
                "or a node that comes with it",
            )
        fx: list[Effect] = []
        device.owner = domain.id
        device.wake_source = device.wake_capable
        domain.devices.append(device_name)
        self._route_devices([device_name], fx)
        self.collect(fx)
        fx.append(DeviceAssigned(domain.id, domain.name, device_name, True))
        return Changed(tuple(fx))

    def release_device(self, domain_name: str, device_name: str) -> Changed | Refused:
        """Take a device back from a domain that is not suspended: its requirements
        are dropped (the node is unrequested again) and its IRQ unrouted."""
        found = self._device_change(domain_name, device_name)
        if isinstance(found, Refused):
            return found
        domain, device = found
        if device.owner != domain.id:
            return Refused(
                Refusal.FAILED_PRECONDITION, f"{device_name} is not assigned to {domain.name}"
            )
        fx: list[Effect] = []
        self._unassign(domain, device, fx)
        return Changed(tuple(fx))

    def _progressed(self, result: _Done) -> _Done:
        """``result`` with what it did to an open coordinated suspend request."""
        if self.system.coordination is None:
            return result
        more = list(result.effects)
        coordination.progress(self, more)
        return dataclasses.replace(result, effects=tuple(more))

    def _board_device(self, name: str, missing: Refusal) -> Device | Refused:
        device = self.system.devices.get(name)
        if device is None:
            known = ", ".join(sorted(self.system.devices)) or "none"
            return Refused(missing, f"no device {name!r} on this board; known: {known}")
        return device

    def _owned_elsewhere(self, device: Device) -> Refused | None:
        """A device must be unassigned before a domain can have it."""
        if device.owner is None:
            return None
        owner = self.system.domains[device.owner].name
        return Refused(Refusal.FAILED_PRECONDITION, f"{device.name} is owned by {owner}")

    def _device_change(self, domain_name: str, device_name: str) -> tuple[Domain, Device] | Refused:
        domain = self.system.domain(domain_name)
        if domain is None:
            return Refused(Refusal.NOT_FOUND, f"no domain named {domain_name!r}")
        device = self._board_device(device_name, Refusal.NOT_FOUND)
        if isinstance(device, Refused):
            return device
        if self.system.host_state is not HostState.ACTIVE:
            return Refused(
                Refusal.FAILED_PRECONDITION, f"the host is {self.system.host_state.value}"
            )
        if domain.state is not DomainState.RUNNING:
            return Refused(
                Refusal.FAILED_PRECONDITION,
                f"{domain.name} is {domain.state.value}: devices change hands only while "
                "their domain runs",
            )
        return domain, device

    def _unassign(self, domain: Domain, device: Device, fx: list[Effect]) -> None:
        firmware = self.platform.firmware
        if firmware is not None:
            # Every node the device grants (GPU_PP_0 comes with GPU, VPLL with DP…).
            for node in _granted_nodes(device):
                firmware.release_all(domain.id, node)
        scu = self.platform.scfw
        if scu is not None:
            # As imx-xen tears a partition down: the resource goes back powered off.
            scu.set_mode(device.node_id, scfw.PowerMode.OFF)
            self.collect(fx)
        self._set_wake_source(device, device.wake_capable)
        device.owner = None
        domain.devices.remove(device.name)
        if device.irq in domain.pending_irqs:
            domain.pending_irqs.remove(device.irq)
        self.platform.gic_unroute(device.irq)
        self.collect(fx)
        fx.append(DeviceAssigned(domain.id, domain.name, device.name, False))

    def inject_fault(self, name: str, count: int, error: int) -> Refused | None:
        """Make the host step or hardware operation ``name`` fail its next ``count``
        times with PSCI ``error`` (0: the operation's usual failure)."""
        if name in suspend.FAULTABLE_STEPS:
            default = suspend.INTERNAL_FAILURE
        elif name in self.platform.FAULTS:
            default = self.platform.FAULTS[name]
        else:
            known = ", ".join(sorted((*suspend.FAULTABLE_STEPS, *self.platform.FAULTS)))
            return Refused(Refusal.INVALID_ARGUMENT, f"no step named {name!r}; known: {known}")
        if error > 0 or error < psci.PsciRet.INVALID_ADDRESS:
            return Refused(
                Refusal.INVALID_ARGUMENT,
                f"error must be 0 or a PSCI error code from -1 to -9, got {error}",
            )
        self.platform.faults.arm(name, count, error or default)
        return None

    # ------------------------------------------ Control: coordinated suspend

    def request_system_suspend(
        self, policy: SuspendPolicy, deadline_ns: int, by_hardware_domain: bool
    ) -> Changed | Refused:
        """Control.RequestSystemSuspend (core/coordination.py). The request ends
        with a SuspendCoordinated effect, now or from a later operation."""
        low, high = coordination.MIN_DEADLINE_NS, coordination.MAX_DEADLINE_NS
        if not low <= deadline_ns <= high:
            return Refused(
                Refusal.INVALID_ARGUMENT,
                f"the deadline must be from {low // 1_000_000} ms to {high // 1_000_000} ms",
            )
        fx: list[Effect] = []
        why = coordination.request(self, policy, deadline_ns, by_hardware_domain, fx)
        if why is not None:
            return Refused(Refusal.FAILED_PRECONDITION, why)
        return Changed(tuple(fx))

    def suspend_veto(self, domain_name: str, reason: str) -> Changed | Refused:
        """Guest.SuspendVeto: ``domain_name`` will not suspend, because of ``reason``."""
        domain = self.system.domain(domain_name)
        if domain is None:
            return Refused(Refusal.UNKNOWN_DOMAIN, f"no domain named {domain_name!r}")
        fx: list[Effect] = []
        why = coordination.veto(self, domain.id, reason, fx)
        if why is not None:
            return Refused(Refusal.FAILED_PRECONDITION, why)
        return Changed(tuple(fx))

    def expire_suspend_request(self) -> Changed | Refused:
        """The open request's deadline passed (the shell's timer)."""
        fx: list[Effect] = []
        why = coordination.expire(self, fx)
        if why is not None:
            return Refused(Refusal.FAILED_PRECONDITION, why)
        return Changed(tuple(fx))

    # --------------------------------------------------- Control: interrupts

    def raise_interrupt(self, irq: int, domain_name: str = "", vcpu: int = 0) -> Raised | Refused:
        """Fire interrupt line ``irq``: a device SPI goes to its owner; the virtual
        timer PPI (27) to ``vcpu`` of ``domain_name``. The interrupt goes through
        the platform (GIC, wake logic) first, so it wakes what the hardware wakes."""
        result = self._raise_interrupt(irq, domain_name, vcpu)
        # A wake can bring back a domU that had suspended for the request.
        return self._progressed(result) if isinstance(result, Raised) else result

    def _raise_interrupt(self, irq: int, domain_name: str, vcpu: int) -> Raised | Refused:
        system = self.system
        if irq == VTIMER_PPI:
            found = system.domain(domain_name)
            if found is None:
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"IRQ {VTIMER_PPI} is the per-vCPU virtual timer: name the domain "
                    f"(got {domain_name!r}) and vCPU it fires on",
                )
            if not 0 <= vcpu < len(found.vcpus):
                return Refused(
                    Refusal.INVALID_ARGUMENT,
                    f"vCPU {vcpu} does not exist: {found.name} has vCPUs 0..{len(found.vcpus) - 1}",
                )
            domain = found
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
            vcpu = 0
            if not self.device_powered(device):
                # A powered-off device raises nothing.
                return Raised(IrqOutcome.DROPPED, domain.name, 0, f"{device_name} is powered off")
        if system.host_state is HostState.OFF:
            return Raised(IrqOutcome.DROPPED, domain.name, vcpu, "the host is powered off")

        fx: list[Effect] = []
        suspended = system.host_state is HostState.SUSPENDED
        raised_ns = self.clock.now_ns()
        if irq == VTIMER_PPI:
            # While the host sleeps only the boot pCPU's wake logic listens.
            pcpu = self.platform.boot_pcpu if suspended else self._vcpu_pcpu(vcpu)
            self._ppi_targets.setdefault((irq, pcpu), []).append((domain.id, vcpu))
        else:
            pcpu = self.platform.boot_pcpu
        hardware = self.platform.raise_irq(irq, pcpu)
        self.collect(fx)
        if hardware.fate is IrqFate.SOC_RESET:
            self._cold_boot(fx)
            return Raised(IrqOutcome.HOST_RESET, domain.name, vcpu, hardware.reason, tuple(fx))
        if hardware.fate is IrqFate.PENDING:
            return Raised(IrqOutcome.PENDING, domain.name, vcpu, hardware.reason, tuple(fx))
        if hardware.fate is IrqFate.WOKE_SOC:
            self._resume_host(raised_ns, fx)
            outcome: Raised | None = None
            for taken, on_pcpu in self.platform.take_pending():
                result = self._take(taken, on_pcpu, fx)
                if taken == irq and result is not None:
                    outcome = result
            self.collect(fx)
            if outcome is None:
                outcome = Raised(IrqOutcome.PENDING, domain.name, vcpu, "not taken after resume")
            return Raised(
                outcome.outcome, outcome.domain, outcome.vcpu, outcome.reason, tuple(fx), True
            )
        result = self._take(irq, hardware.pcpu, fx)
        assert result is not None
        return Raised(result.outcome, result.domain, result.vcpu, result.reason, tuple(fx))

    def _take(self, irq: int, pcpu: int, fx: list[Effect]) -> Raised | None:
        """The hypervisor took ``irq`` on ``pcpu``: hand it to the domain it belongs to."""
        if irq == VTIMER_PPI:
            result: Raised | None = None
            for domain_id, vcpu in self._ppi_targets.pop((irq, pcpu), []):
                domain = self.system.domains.get(domain_id)
                if domain is not None:
                    result = self._deliver(domain, irq, domain.vcpus[vcpu], True, fx)
            return result
        device_name = self.system.irq_devices.get(irq)
        if device_name is None:
            return None
        device = self.system.devices[device_name]
        if device.owner is None:
            return Raised(IrqOutcome.DROPPED, reason=f"{device_name} is not assigned")
        domain = self.system.domains[device.owner]
        return self._deliver(domain, irq, None, device.wake_source, fx)

    def _deliver(
        self, domain: Domain, irq: int, target: Vcpu | None, wake_source: bool, fx: list[Effect]
    ) -> Raised:
        """Domain-level delivery: what the virtual GIC does with a taken interrupt."""
        name = domain.name
        vcpu = 0 if target is None else target.index
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
            return Raised(IrqOutcome.WOKE_DOMAIN, name, woken.index)
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
            self.emit_event(domain, target.index, Wake(irq), fx)
            return Raised(IrqOutcome.WOKE_VCPU, name, target.index)
        if target.power is VcpuPower.POWERDOWN:
            self.set_power(domain, target, VcpuPower.ON, fx)
            self.emit_event(domain, target.index, Resume(target.entry_point, target.context_id), fx)
            self.emit_event(domain, target.index, Wake(irq), fx)
            return Raised(IrqOutcome.WOKE_VCPU, name, target.index)
        self.emit_event(domain, target.index, Wake(irq), fx)
        return Raised(IrqOutcome.DELIVERED, name, target.index)

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
        self.emit_event(d, v.index, Start(entry_point, context_id), fx)

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
    ) -> int:
        """vSYSTEM_SUSPEND (seed section 3): the caller's context is reset to
        (entry_point, context_id) and it blocks until a wake interrupt. For the
        hardware domain this is the decision to suspend the host: the call
        succeeds only once the host is suspended, and a failing host step rolls
        everything back and returns its error."""
        previous = (v.entry_point, v.context_id)
        v.entry_point = entry_point
        v.context_id = context_id
        self.set_power(d, v, VcpuPower.SUSPENDED, fx)
        self._set_state(d, DomainState.SUSPENDED, fx)
        if not d.hardware_domain:
            return psci.PsciRet.SUCCESS
        record = HostSuspend(caller_pcpu=self._vcpu_pcpu(v.index), started_ns=self.clock.now_ns())
        self.system.host_suspend = record
        self.system.hyp_pcpu = record.caller_pcpu
        mark = len(fx)
        result = suspend.run_suspend(self, record, fx, self.suspend_steps)
        self.last_suspend_steps = _steps(fx[mark:])
        if result == psci.PsciRet.SUCCESS:
            record.suspended_ns = self.clock.now_ns()
            self.system.last_suspend_ns = (record.started_ns, record.suspended_ns)
            return result
        self.system.host_suspend = None
        # The rollback's move_back returned the hypervisor to the caller's pCPU, where
        # the trap was taken; the trap now returns, and the rest value is the boot pCPU.
        self.system.hyp_pcpu = self.platform.boot_pcpu
        v.entry_point, v.context_id = previous
        self.set_power(d, v, VcpuPower.ON, fx)
        self._set_state(d, DomainState.RUNNING, fx)
        # Only these two reach the guest; anything else a step failed with is internal.
        if result in (psci.PsciRet.DENIED, psci.PsciRet.INTERNAL_FAILURE):
            return result
        return psci.PsciRet.INTERNAL_FAILURE

    def shut_down_domain(self, d: Domain, vcpu: int, fx: list[Effect]) -> None:
        """SYSTEM_OFF of a domU: that domain only stops, and stays until destroyed."""
        self._abort_blocked(d, f"domain {d.name} shut down", fx)
        self._all_off(d, fx)
        self.emit_event(d, vcpu, Shutdown(ShutdownReason.POWEROFF), fx)
        self._set_state(d, DomainState.SHUTDOWN, fx)

    def reboot_domain(self, d: Domain, vcpu: int, fx: list[Effect]) -> None:
        """SYSTEM_RESET of a domU: the domain restarts as it booted."""
        self._abort_blocked(d, f"domain {d.name} rebooted", fx)
        self.emit_event(d, vcpu, Shutdown(ShutdownReason.REBOOT), fx)
        self._all_off(d, fx)
        if d.state is not DomainState.RUNNING:
            self._set_state(d, DomainState.RUNNING, fx)
        self.start_vcpu(d, d.vcpus[0], d.ram_base, 0, fx)

    def power_off_host(self, caller: Vcpu, fx: list[Effect]) -> None:
        """SYSTEM_OFF of the hardware domain powers the board off: every domain stops."""
        hardware = self.system.domains[0]
        for domain in self.domus():
            if domain.state is not DomainState.SHUTDOWN:
                self.shut_down_domain(domain, 0, fx)
        self.shut_down_domain(hardware, caller.index, fx)
        self.platform.system_off()
        self.collect(fx)
        self.set_host_state(HostState.OFF, fx)

    def reset_host(self, caller: Vcpu, fx: list[Effect]) -> None:
        """SYSTEM_RESET of the hardware domain resets the board: every domain reboots."""
        self.platform.system_reset()
        self.collect(fx)
        self._reboot_all(caller.index, fx)
        self._bring_up_platform(fx)

    # -------------------------------------------- host steps (core/suspend.py)

    def domus(self) -> list[Domain]:
        return [d for d in self.system.domains.values() if not d.hardware_domain]

    def set_host_state(self, state: HostState, fx: list[Effect]) -> None:
        self.system.host_state = state
        fx.append(HostStateChanged(state))

    def pause_domain(self, d: Domain, fx: list[Effect]) -> None:
        self._set_state(d, DomainState.PAUSED, fx)
        self.emit_event(d, 0, Pause(), fx)

    def unpause_domain(self, d: Domain, fx: list[Effect]) -> None:
        self._set_state(d, DomainState.RUNNING, fx)
        self.emit_event(d, 0, Unpause(), fx)
        # What arrived while it was paused is delivered now, in arrival order.
        waiting, d.pending_irqs = d.pending_irqs, []
        for irq in waiting:
            device_name = self.system.irq_devices.get(irq)
            wake_source = device_name is None or self.system.devices[device_name].wake_source
            self._deliver(d, irq, None, wake_source, fx)

    def nonboot_pcpus_on(self) -> list[int]:
        return [
            p
            for p in range(self.platform.pcpus)
            if p != self.platform.boot_pcpu and self.platform.pcpu_state(p) is PcpuState.ON
        ]

    def bring_up_pcpu(self, pcpu: int) -> int:
        """EL3 CPU_ON of a secondary, then its own GIC and interrupt set-up."""
        result = self.platform.cpu_on(pcpu, suspend.HYP_SECONDARY_ENTRY)
        if result == psci.PsciRet.SUCCESS:
            self.platform.gic_cpu_init(pcpu)
            result = self.platform.irq_unmask(pcpu)
        return result

    def resume_hardware_domain(self, fx: list[Effect]) -> None:
        """Domain 0 always resumes when the host resumes (seed: Resuming Xen)."""
        hardware = self.system.domains[0]
        if hardware.state is DomainState.SUSPENDED:
            self.resume_suspended(hardware, fx)

    def collect(self, fx: list[Effect]) -> None:
        """Move what the hardware did into the effects, in order."""
        for step in self.platform.drain_steps():
            fx.append(HardwareStep(step.name, step.detail, step.start_ns, step.end_ns, step.result))

    # ---------------------------------------------------------------- helpers

    def _vcpu_pcpu(self, vcpu: int) -> int:
        """Where a vCPU runs: vCPU n on pCPU n mod pCPUs."""
        return vcpu % self.platform.pcpus

    def _bring_up_platform(self, fx: list[Effect]) -> None:
        """What the hypervisor does to the hardware at boot: GIC distributor and
        SPI routes, every pCPU up with its interface, timer, watchdog, wake sources."""
        platform = self.platform
        platform.gic_init()
        self._route_devices([d.name for d in self.system.devices.values()], fx)
        platform.gic_cpu_init(platform.boot_pcpu)
        for pcpu in range(platform.pcpus):
            if pcpu != platform.boot_pcpu and platform.pcpu_state(pcpu) is PcpuState.OFF:
                self.bring_up_pcpu(pcpu)
        platform.timer_init(HYP_TIMER_PERIOD_NS)
        platform.watchdog_enable()
        platform.set_wake_source(VTIMER_PPI, True)
        self.system.hyp_pcpu = platform.boot_pcpu
        self.collect(fx)

    def _route_devices(self, names: list[str], fx: list[Effect]) -> None:
        """Route the SPIs of assigned devices to the boot pCPU (as Xen routes a
        passthrough IRQ), and tell the wake logic which are wake sources. On an
        i.MX8 a device changes hands powered: as the boot loader left every board
        resource, and as its release turned it off."""
        scu = self.platform.scfw
        for name in names:
            device = self.system.devices[name]
            if device.owner is None:
                continue
            if scu is not None and not scu.resource_on(device.node_id):
                scu.set_mode(device.node_id, scfw.PowerMode.ON)
                self.collect(fx)
            self.platform.gic_route(IrqRoute(device.irq, self.platform.boot_pcpu))
            self._set_wake_source(device, device.wake_source)

    def _set_wake_source(self, device: Device, enabled: bool) -> None:
        """One switch for the three places a wake source lives: the domain-level
        rule, the SoC wake logic, and the firmware keeping the node powered."""
        device.wake_source = enabled
        self.platform.set_wake_source(device.irq, enabled)
        firmware = self.platform.firmware
        if firmware is not None:
            firmware.set_wake(device.node_id, enabled)

    # -------------------------------------------------------------------- EEMI

    def _eemi(self, domain: Domain, caller: Vcpu, fid: int, args: Sequence[int]) -> CallOutcome:
        """A SiP call: decode, decide by the domain's rights, then forward to the
        firmware, answer it here (virtualised), or refuse it untouched."""
        firmware = self.platform.firmware
        x1, x2, x3 = (*args[:3], 0, 0, 0)[:3]
        call = eemi.decode(fid, (x1, x2, x3))
        if firmware is None or call is None:
            return NOT_SUPPORTED_OUTCOME
        rights = eemi.Rights(
            domain.id,
            domain.hardware_domain,
            len(domain.vcpus),
            self._owners_by_name,
            firmware.clock_enabled,
        )
        decision = eemi.decide(call, rights)
        fx: list[Effect] = []
        if decision.verdict is eemi.Verdict.ALLOW:
            regs = self._eemi_forward(firmware, domain, call, decision, fx)
        elif decision.verdict is eemi.Verdict.HANDLED:
            regs = self._eemi_local(domain, caller, call, decision, fx)
        else:
            regs = eemi.encode(decision.status)
        status = regs[0] & smccc.MASK32
        fx.append(FirmwareCall(domain.id, domain.name, call.api, decision.verdict.value, status))
        return Returned(regs, tuple(fx))

    def _eemi_forward(
        self,
        firmware: PowerFirmware,
        domain: Domain,
        call: eemi.PmCall,
        decision: eemi.Decision,
        fx: list[Effect],
    ) -> Regs:
        api = call.api
        if decision.mask is not None and api == eemi.PmApi.MMIO_WRITE:
            a = call.args
            call = eemi.PmCall(api, (a[0], decision.mask, a[2], a[3], a[4]))
        regs = firmware.call(domain.id, call)
        self.collect(fx)
        if api == eemi.PmApi.SET_WAKEUP_SOURCE and regs[0] & smccc.MASK32 == 0:
            device = self._device_of_node(call.args[1])
            if device is not None:
                self._set_wake_source(device, bool(call.args[2]))
        return regs

    def _eemi_local(
        self,
        domain: Domain,
        caller: Vcpu,
        call: eemi.PmCall,
        decision: eemi.Decision,
        fx: list[Effect],
    ) -> Regs:
        """The calls the mediator answers itself: the virtual APU, and the ones
        that must not reach the firmware as they are."""
        api, node = call.api, call.arg0
        if decision.status:
            if decision.status < 0:
                return NOT_SUPPORTED_OUTCOME.regs
            return eemi.encode(decision.status)
        if api == eemi.PmApi.GET_NODE_STATUS:
            if node == eemi.NODE_APU:
                return eemi.encode(0, eemi.PROC_ACTIVE)
            return eemi.encode(0, _PROC_STATE[domain.vcpus[node - eemi.NODE_APU_CORES[0]].power])
        if api == eemi.PmApi.REQ_WAKEUP:
            target = domain.vcpus[node - eemi.NODE_APU_CORES[0]]
            if target.power is not VcpuPower.OFF:
                return eemi.encode(0)  # already awake
            # "Use address flag is encoded in the 1st bit of the low-word".
            low, high = call.args[1], call.args[2]
            entry = (
                (high << 32 | (low & ~1)) if low & 1 else (target.entry_point or domain.ram_base)
            )
            if not domain.entry_point_valid(entry):
                return eemi.encode(eemi.PmStatus.INVALID_PARAM)
            self.start_vcpu(domain, target, entry, 0, fx)
            return eemi.encode(0)
        if api == eemi.PmApi.SYSTEM_SHUTDOWN:
            kind, subtype = call.args[:2]
            if subtype > eemi.SHUTDOWN_SUBTYPE_SYSTEM:
                return eemi.encode(eemi.PmStatus.INVALID_PARAM)
            if kind == eemi.SHUTDOWN_TYPE_SHUTDOWN:
                self.power_off_host(caller, fx)
            elif kind == eemi.SHUTDOWN_TYPE_RESET:
                self.reset_host(caller, fx)
            elif kind != eemi.SHUTDOWN_TYPE_SETSCOPE_ONLY:
                return eemi.encode(eemi.PmStatus.INVALID_PARAM)
            return eemi.encode(0)
        return eemi.encode(0)  # SELF_SUSPEND, ABORT_SUSPEND: accepted, ignored

    def device_powered(self, device: Device) -> bool:
        """Whether the board's power firmware keeps the device powered."""
        firmware, scu = self.platform.firmware, self.platform.scfw
        if firmware is not None:
            return firmware.node_on(device.node_id)
        if scu is not None:
            return scu.resource_on(device.node_id)
        return True

    def _scfw(self, domain: Domain, fid: int, args: Sequence[int]) -> CallOutcome:
        """An SCFW SiP call (i.MX8): decode, check against the domain's partition,
        then forward to the SCU firmware, answer it here, or refuse it untouched."""
        scu = self.platform.scfw
        call = scfw.decode(fid, tuple(args))
        if scu is None or call is None:
            return NOT_SUPPORTED_OUTCOME
        rights = scfw.Rights(domain.id, domain.hardware_domain, self._owners_by_node)
        decision = scfw.decide(call, rights)
        if decision.status == scfw.NOT_AN_SCFW_CALL:
            return NOT_SUPPORTED_OUTCOME
        fx: list[Effect] = []
        if decision.verdict is scfw.Verdict.ALLOW:
            status, value = scu.call(call)
            self.collect(fx)
        else:
            status, value = decision.status, decision.value
        fx.append(
            FirmwareCall(
                domain.id, domain.name, fid & 0xFFF, decision.verdict.value, status, "scfw"
            )
        )
        return Returned((status, value, 0, 0), tuple(fx))

    def _device_of_node(self, node: int) -> Device | None:
        return self._by_node.get(node)

    def _resume_host(self, woken_ns: int, fx: list[Effect]) -> None:
        """The SoC woke (at ``woken_ns``): run the resume steps."""
        record = self.system.host_suspend
        assert record is not None
        suspend.run_resume(self, record, fx, self.resume_steps)
        # fx began with the SoC's own wake-up: the whole resume, from the interrupt.
        self.last_resume_steps = _steps(fx)
        self.system.host_suspend = None
        self.system.last_resume_ns = (woken_ns, self.clock.now_ns())

    def _cold_boot(self, fx: list[Effect]) -> None:
        """The SoC was reset behind the hypervisor's back: boot everything again."""
        self.system.host_suspend = None
        self._reboot_all(0, fx)
        self._bring_up_platform(fx)
        self.set_host_state(HostState.ACTIVE, fx)

    def _reboot_all(self, caller_vcpu: int, fx: list[Effect]) -> None:
        self._ppi_targets.clear()
        self.reboot_domain(self.system.domains[0], caller_vcpu, fx)
        for domain in self.domus():
            self.reboot_domain(domain, 0, fx)

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

    def emit_event(self, d: Domain, vcpu: int, kind: EventKind, fx: list[Effect]) -> None:
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

    def resume_suspended(self, d: Domain, fx: list[Effect]) -> Vcpu:
        """A suspended domain runs again: its suspended vCPU resumes at the entry
        point and context ID it gave SYSTEM_SUSPEND."""
        v = next(v for v in d.vcpus if v.power is VcpuPower.SUSPENDED)
        self.set_power(d, v, VcpuPower.ON, fx)
        self._set_state(d, DomainState.RUNNING, fx)
        self.emit_event(d, v.index, Resume(v.entry_point, v.context_id), fx)
        return v

    def _wake_domain(self, d: Domain, irq: int, fx: list[Effect]) -> Vcpu:
        """Resume a suspended domain at its entry point, then hand it every
        interrupt that waited, the waking one last."""
        self._make_pending(d, irq)
        return self.resume_domain(d, fx)

    def resume_domain(self, d: Domain, fx: list[Effect]) -> Vcpu:
        """A suspended domain runs again (a wake, or an aborted system suspend):
        resumed at its entry point, then handed every interrupt that waited."""
        v = self.resume_suspended(d, fx)
        for pending in d.pending_irqs:
            self.emit_event(d, v.index, Wake(pending), fx)
        d.pending_irqs.clear()
        return v
