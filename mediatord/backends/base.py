"""The platform protocol: what the mediator asks of the machine under it.

This is the project's ``plat_psci_ops`` (TF-A): EL3 PSCI for physical CPUs, the
interrupt controller, the generic timer, the watchdog, interrupt delivery and
wake logic. ``mediatord.core`` calls only this protocol and never knows which
SoC is underneath. Every operation the hardware performs is recorded as a
:class:`BackendStep` (drained by the core into effects), and any of them can be
made to fail with :class:`Faults`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from mediatord.core.clock import Clock
from mediatord.core.eemi import PmCall
from mediatord.core.scfw import PowerMode, ScCall


class PcpuState(Enum):
    OFF = "off"
    ON = "on"
    SUSPENDED = "suspended"  # the boot pCPU while the SoC is suspended


class SocState(Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class BackendStep:
    """One thing the hardware did (or refused), with its modelled duration."""

    name: str  # e.g. "el3.cpu_off", "gic.save"
    detail: str
    start_ns: int
    end_ns: int
    result: int = 0  # PSCI-style: 0 ok, negative error


class IrqFate(Enum):
    TAKEN = "taken"  # a running pCPU took it now
    PENDING = "pending"  # latched; taken when the GIC state allows
    WOKE_SOC = "woke-soc"  # it woke the suspended SoC; taken after the resume
    SOC_RESET = "soc-reset"  # the SoC had been reset (watchdog) before it came


@dataclass(frozen=True, slots=True)
class IrqResult:
    fate: IrqFate
    pcpu: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class IrqRoute:
    """How the hypervisor programs one SPI: to which pCPU, at which priority."""

    irq: int
    pcpu: int
    priority: int = 0xA0
    level: bool = True


@dataclass
class Faults:
    """Injected failures: ``name`` fails its next ``count`` times with ``error``."""

    armed: dict[str, tuple[int, int]] = field(default_factory=dict)

    def arm(self, name: str, count: int, error: int) -> None:
        if count <= 0:
            self.armed.pop(name, None)
        else:
            self.armed[name] = (count, error)

    def take(self, name: str) -> int | None:
        """The error to fail ``name`` with now, or None to let it succeed."""
        entry = self.armed.get(name)
        if entry is None:
            return None
        count, error = entry
        if count <= 1:
            del self.armed[name]
        else:
            self.armed[name] = (count - 1, error)
        return error


class PowerFirmware(Protocol):
    """The platform's power-management firmware (ZynqMP: the PMU behind TF-A).
    It sees masters; the mediator makes each domain its own master."""

    def call(self, master: int, call: PmCall) -> tuple[int, int, int, int]: ...
    def node_on(self, node: int) -> bool: ...
    def node_usage(self, node: int) -> dict[int, int]: ...
    def release_all(self, master: int, node: int) -> None: ...
    def set_wake(self, node: int, enabled: bool) -> None: ...
    def clock_enabled(self, clock: int) -> bool: ...


class ScfwFirmware(Protocol):
    """An i.MX8 SCU's firmware: resources by partition, with power modes
    (core/scfw.py mediates the calls)."""

    def call(self, call: ScCall) -> tuple[int, int]: ...
    def set_mode(self, resource: int, mode: PowerMode) -> None: ...
    def resource_on(self, resource: int) -> bool: ...


class Platform(Protocol):
    """Everything the core may ask of a board. Each call is synchronous."""

    name: str
    pcpus: int
    boot_pcpu: int
    clock: Clock
    faults: Faults
    # Operation names a fault can be injected into, with the PSCI error each
    # fails with by default.
    FAULTS: dict[str, int]

    @property
    def firmware(self) -> PowerFirmware | None:
        """None on a platform without EEMI power firmware (SiP calls: NOT_SUPPORTED)."""
        ...

    @property
    def scfw(self) -> ScfwFirmware | None:
        """An i.MX8's SCU firmware (SCFW SiP calls), or None."""
        ...

    # EL3 PSCI for physical CPUs
    def cpu_on(self, pcpu: int, entry_point: int) -> int: ...
    def cpu_off(self, pcpu: int) -> int: ...
    def system_suspend(self, pcpu: int, entry_point: int) -> int: ...
    def system_off(self) -> None: ...
    def system_reset(self) -> None: ...
    def pcpu_state(self, pcpu: int) -> PcpuState: ...
    def soc_state(self) -> SocState: ...

    # Interrupt controller
    def gic_init(self) -> None: ...
    def gic_route(self, route: IrqRoute) -> None: ...
    def gic_unroute(self, irq: int) -> None: ...
    def gic_cpu_init(self, pcpu: int) -> None: ...
    def gic_save(self) -> tuple[int, object]: ...
    def gic_restore(self, context: object) -> int: ...
    def gic_registers(self) -> tuple[int, ...]: ...
    def irq_mask(self, pcpu: int) -> int: ...
    def irq_unmask(self, pcpu: int) -> int: ...

    # Generic timer (the hypervisor's own timer; the counter never stops)
    def timer_init(self, period_ns: int) -> None: ...
    def timer_suspend(self) -> tuple[int, object]: ...
    def timer_resume(self, context: object) -> int: ...
    def timer_registers(self) -> tuple[int, ...]: ...
    def counter(self) -> int: ...

    # Watchdog
    def watchdog_enable(self) -> int: ...
    def watchdog_disable(self) -> int: ...
    def watchdog_enabled(self) -> bool: ...

    # EL2 context of the boot pCPU (lost when the SoC powers down)
    def el2_save(self) -> tuple[int, object]: ...
    def el2_restore(self, context: object) -> int: ...

    # Interrupt lines and wake logic
    def set_wake_source(self, irq: int, enabled: bool) -> None: ...
    def raise_irq(self, irq: int, pcpu: int) -> IrqResult: ...
    def take_pending(self) -> list[tuple[int, int]]: ...

    def drain_steps(self) -> list[BackendStep]: ...

    # Journal snapshots (mediatord.core.statecodec): the platform's state as a
    # dict of encodable values, the classes those values may contain, and the
    # restore of a freshly built platform of the same board to that state.
    STATE_TYPES: tuple[type, ...]

    def save_state(self) -> dict[str, object]: ...
    def load_state(self, state: dict[str, object]) -> None: ...
