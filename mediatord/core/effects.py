"""Effects: what a core step asks the shell to do, as data.

The core never delivers anything itself. It returns these, and the shell turns
them into Attach events, completed RPCs, log lines and (later) journal records.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mediatord.core.model import DomainState, HostState, SuspendPolicy, VcpuPower

Regs = tuple[int, int, int, int]


class ShutdownReason(Enum):
    POWEROFF = 0
    REBOOT = 1


# ---- the kinds of VcpuEvent (the contract's oneof)


@dataclass(frozen=True, slots=True)
class Start:
    entry_point: int
    context_id: int


@dataclass(frozen=True, slots=True)
class Resume:
    entry_point: int
    context_id: int


@dataclass(frozen=True, slots=True)
class Pause:
    pass


@dataclass(frozen=True, slots=True)
class Unpause:
    pass


@dataclass(frozen=True, slots=True)
class Wake:
    irq: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    reason: ShutdownReason


@dataclass(frozen=True, slots=True)
class SuspendRequest:
    deadline_ns: int


EventKind = Start | Resume | Pause | Unpause | Wake | Shutdown | SuspendRequest


# ---- effects


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """A VcpuEvent for the domain's Attach stream, already numbered."""

    domain_id: int
    domain: str
    seq: int
    vcpu: int
    kind: EventKind


@dataclass(frozen=True, slots=True)
class CallCompleted:
    """A blocked call (standby CPU_SUSPEND) of this vCPU now returns ``regs``."""

    domain_id: int
    vcpu: int
    regs: Regs


@dataclass(frozen=True, slots=True)
class CallAborted:
    """A blocked call of this vCPU can never return (its domain went away)."""

    domain_id: int
    vcpu: int
    reason: str


@dataclass(frozen=True, slots=True)
class VcpuPowerChanged:
    domain_id: int
    domain: str
    vcpu: int
    power: VcpuPower


@dataclass(frozen=True, slots=True)
class DomainStateChanged:
    domain_id: int
    domain: str
    state: DomainState


@dataclass(frozen=True, slots=True)
class DomainCreated:
    domain_id: int
    domain: str


@dataclass(frozen=True, slots=True)
class DomainDestroyed:
    domain_id: int
    domain: str


@dataclass(frozen=True, slots=True)
class HostStateChanged:
    state: HostState


@dataclass(frozen=True, slots=True)
class HostStep:
    """One step of a host suspend, rollback or resume (core/suspend.py)."""

    phase: str  # "suspend", "rollback" or "resume"
    name: str
    start_ns: int
    end_ns: int
    result: int  # 0, or the PSCI error the step failed with
    injected: bool = False


@dataclass(frozen=True, slots=True)
class HardwareStep:
    """One operation the platform performed (a BackendStep, as an effect)."""

    name: str
    detail: str
    start_ns: int
    end_ns: int
    result: int


@dataclass(frozen=True, slots=True)
class FirmwareCall:
    """A power-firmware call and what became of it (verdict: allow / deny / invalid /
    handled): an EEMI API (ZynqMP) or an SCFW service << 8 | function (i.MX8)."""

    domain_id: int
    domain: str
    api: int
    verdict: str
    status: int
    firmware: str = "eemi"


@dataclass(frozen=True, slots=True)
class DeviceAssigned:
    """A device changed hands: assigned to (True) or taken from (False) a domain."""

    domain_id: int
    domain: str
    device: str
    assigned: bool


class CoordinationOutcome(Enum):
    READY = "ready"  # the hardware domain suspends the host now
    VETOED = "vetoed"
    DEADLINE = "deadline"
    HOST_OFF = "host-off"  # the hardware domain powered the host off meanwhile


@dataclass(frozen=True, slots=True)
class SuspendCoordinated:
    """A coordinated system suspend ended (Control.RequestSystemSuspend's answer)."""

    request: int
    policy: SuspendPolicy
    outcome: CoordinationOutcome
    suspended: tuple[str, ...]
    stragglers: tuple[str, ...]
    vetoed_by: str = ""
    reason: str = ""


Effect = (
    DomainEvent
    | CallCompleted
    | CallAborted
    | VcpuPowerChanged
    | DomainStateChanged
    | DomainCreated
    | DomainDestroyed
    | HostStateChanged
    | HostStep
    | HardwareStep
    | FirmwareCall
    | DeviceAssigned
    | SuspendCoordinated
)
