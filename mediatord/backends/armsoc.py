"""What every emulated Arm board here shares: TF-A's EL3 PSCI for the pCPUs, the
generic timer, a watchdog, the hypervisor's EL2 context, interrupt delivery
through the board's GIC, and a power controller that wakes the SoC.

EL3 follows TF-A's PSCI rules: CPU_OFF of the last core that is on is DENIED;
SYSTEM_SUSPEND is DENIED unless it comes from the boot core with every other core
off. When the SoC suspends, the GIC register file, the hypervisor timer and the
boot core's EL2 registers return to reset values; the system counter keeps
counting; a watchdog left enabled expires and resets the SoC. The power
controller's wake logic (on the ZynqMP the PMU, TF-A ``pm_client_set_wakeup_
sources``) arms exactly the wake sources whose SPI is enabled in the GIC at the
moment of suspend; other interrupts stay latched until a later wake.

A board (``ZynqMP``, ``Generic``) subclasses :class:`ArmSoc` with its GIC, its
watchdog's name and, if it has one, its power-management firmware.

Durations are modelled, not measured: each operation advances the injected clock
by a latency of the order the real hardware takes (``LATENCY_NS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final, Protocol

from mediatord.backends.base import (
    BackendStep,
    Faults,
    IrqFate,
    IrqResult,
    IrqRoute,
    PcpuState,
    PowerFirmware,
    ScfwFirmware,
    SocState,
)
from mediatord.backends.gicbase import SGI_PPI
from mediatord.core.clock import Clock
from mediatord.core.psci import PsciRet

# EL3's PSCI return codes, as the plain ints the firmware returns.
SUCCESS: Final = int(PsciRet.SUCCESS)
DENIED: Final = int(PsciRet.DENIED)
ALREADY_ON: Final = int(PsciRet.ALREADY_ON)
INTERNAL_FAILURE: Final = int(PsciRet.INTERNAL_FAILURE)
INVALID_ADDRESS: Final = int(PsciRet.INVALID_ADDRESS)

# PPIs every pCPU enables at bring-up: maintenance (25), hypervisor timer (26),
# virtual timer (27).
CPU_PPIS: Final = (25, 26, 27)
PPI_PRIORITY: Final = 0xA0
CPU_PMR: Final = 0xF0
SPI: Final = -1  # the pCPU field of a pending SPI: it is not banked
COUNTER_HZ: Final = 100_000_000
WATCHDOG_TIMEOUT_NS: Final = 10_000_000_000
# The boot core's EL2 system registers once the hypervisor is installed
# (VBAR_EL2, HCR_EL2, VTCR_EL2, SCTLR_EL2, TPIDR_EL2, SP_EL2): what a power-down
# loses and hyp_resume must restore.
EL2_INSTALLED: Final = (
    0x0000_0000_0020_0800,
    0x8000_0000_8003_803F,
    0x8002_3558,
    0x30CD_183D,
    0x0000_0000_0034_A000,
    0x0000_0000_0035_8000,
)

LATENCY_NS: Final = {
    "el3.cpu_on": 250_000,
    "el3.cpu_off": 120_000,
    "el3.system_suspend": 3_000_000,
    "soc.wake": 4_500_000,
    "gic.save": 12_000,
    "gic.restore": 15_000,
    "timer.suspend": 1_000,
    "timer.resume": 1_000,
    "wdt.disable": 2_000,
    "wdt.enable": 2_000,
    "cpu.irq_mask": 100,
    "cpu.irq_unmask": 100,
    "el2.save": 3_000,
    "el2.restore": 3_000,
}


class Gic(Protocol):
    """The interrupt controller a board has (GICv2: zynqmp/gic.py; GICv3: gicv3.py)."""

    def reset(self) -> None: ...
    def enable_distributor(self) -> None: ...
    def route_spi(self, irq: int, cpu: int, priority: int, level: bool) -> None: ...
    def disable_spi(self, irq: int) -> None: ...
    def init_cpu(self, cpu: int, ppis: tuple[int, ...], priority: int, pmr: int) -> None: ...
    def cpu_off(self, cpu: int) -> None: ...
    def enabled(self, irq: int, cpu: int) -> bool: ...
    def why_not(self, irq: int, cpu: int) -> str | None: ...
    def spi_target(self, irq: int) -> int | None: ...
    def save(self, cpu: int) -> object: ...
    def restore(self, cpu: int, context: object) -> bool: ...
    def registers(self) -> tuple[int, ...]: ...
    def save_state(self) -> tuple[object, ...]: ...
    def load_state(self, state: tuple[object, ...]) -> None: ...


class ArmSoc:
    name: str
    # The watchdog's name in the hardware steps (e.g. "FPD SWDT").
    WATCHDOG: ClassVar[str]
    # What gic.save / gic.restore cover, for the hardware steps.
    GIC_SAVED: ClassVar[str]
    FAULTS: dict[str, int] = {  # noqa: RUF012 - a constant table, never mutated
        "el3.cpu_on": INTERNAL_FAILURE,
        "el3.cpu_off": DENIED,  # a core refuses to power off
        "el3.system_suspend": INTERNAL_FAILURE,
        "gic.save": INTERNAL_FAILURE,
        "gic.restore": INTERNAL_FAILURE,
        "timer.suspend": INTERNAL_FAILURE,
        "timer.resume": INTERNAL_FAILURE,
        "wdt.disable": INTERNAL_FAILURE,
        "wdt.enable": INTERNAL_FAILURE,
        "cpu.irq_mask": INTERNAL_FAILURE,
        "cpu.irq_unmask": INTERNAL_FAILURE,
        "el2.save": INTERNAL_FAILURE,
        "el2.restore": INTERNAL_FAILURE,
    }

    # The attributes that hold the hardware's state (the rest is wiring).
    _STATE: Final = (
        "wake_sources", "pcpu", "masked", "soc", "timer_ctl", "timer_cval", "watchdog_on",
        "watchdog_expiry_ns", "el2", "armed", "latched", "pending", "resume_entry",
    )  # fmt: skip
    STATE_TYPES: tuple[type, ...] = (Faults, PcpuState, SocState)

    def __init__(self, pcpus: int, boot_pcpu: int, clock: Clock, gic: Gic) -> None:
        self.pcpus = pcpus
        self.boot_pcpu = boot_pcpu
        self.clock = clock
        self.faults = Faults()
        self.gic = gic
        self.wake_sources: set[int] = set()
        self._steps: list[BackendStep] = []
        self._power_on_reset()

    def _power_on_reset(self) -> None:
        """Cold boot: only the boot core runs, every register at its reset value."""
        self.gic.reset()
        self.pcpu = [PcpuState.OFF] * self.pcpus
        self.pcpu[self.boot_pcpu] = PcpuState.ON
        self.masked = [True] * self.pcpus
        self.masked[self.boot_pcpu] = False
        self.soc = SocState.ACTIVE
        self.timer_ctl = 0
        self.timer_cval = 0
        self.watchdog_on = False
        self.watchdog_expiry_ns: int | None = None
        self.el2: tuple[int, ...] = EL2_INSTALLED
        self.armed: frozenset[int] = frozenset()
        self.latched: list[int] = []
        # Pending interrupts: (INTID, pCPU) for a banked PPI, (INTID, SPI) for an SPI.
        self.pending: set[tuple[int, int]] = set()
        self.resume_entry = 0
        self._firmware_reset()

    # ------------------------------------------ the board's firmware, if any

    @property
    def firmware(self) -> PowerFirmware | None:
        return None

    @property
    def scfw(self) -> ScfwFirmware | None:
        return None

    def _firmware_reset(self) -> None:
        """The power-management firmware restarts with the SoC."""

    def _firmware_suspend(self) -> None:
        """The SoC powers down: the firmware turns off what nobody needs."""

    def _firmware_wake(self) -> None:
        """The SoC powered up: the firmware puts back what it turned off."""

    def _firmware_state(self) -> dict[str, object]:
        return {}

    def _load_firmware_state(self, state: dict[str, object]) -> None:
        if state:
            raise ValueError(f"{self.name} has no firmware state, got {sorted(state)}")

    # ------------------------------------------------------------ plumbing

    def _run(self, name: str, detail: str, body: Callable[[], int]) -> int:
        start = self.clock.now_ns()
        error = self.faults.take(name)
        if error is None:
            self.clock.advance(LATENCY_NS.get(name, 0))
            result = body()
        else:
            result = error
            detail = f"{detail} (injected fault)"
        self._steps.append(BackendStep(name, detail, start, self.clock.now_ns(), result))
        return result

    def _record(self, step: BackendStep) -> None:
        self._steps.append(step)

    def drain_steps(self) -> list[BackendStep]:
        steps, self._steps = self._steps, []
        return steps

    def save_state(self) -> dict[str, object]:
        state: dict[str, object] = {name: getattr(self, name) for name in self._STATE}
        state |= {
            "faults": self.faults,
            "gic": self.gic.save_state(),
            "firmware": self._firmware_state(),
        }
        return state

    def load_state(self, state: dict[str, object]) -> None:
        expected = {*self._STATE, "faults", "gic", "firmware"}
        if set(state) != expected:
            raise ValueError(
                f"{self.name} state has keys {sorted(state)}, expected {sorted(expected)}"
            )
        for name in self._STATE:
            setattr(self, name, state[name])
        faults, gic, firmware = state["faults"], state["gic"], state["firmware"]
        if not (isinstance(faults, Faults) and isinstance(gic, tuple)):
            raise ValueError(f"{self.name} faults or GIC state of the wrong type")
        if not isinstance(firmware, dict):
            raise ValueError(f"{self.name} firmware state is not a dict")
        self.faults = faults
        self.gic.load_state(gic)
        self._load_firmware_state(firmware)

    def pcpu_state(self, pcpu: int) -> PcpuState:
        return self.pcpu[pcpu]

    def soc_state(self) -> SocState:
        return self.soc

    # -------------------------------------------------------- EL3 PSCI

    def cpu_on(self, pcpu: int, entry_point: int) -> int:
        def body() -> int:
            if self.pcpu[pcpu] is not PcpuState.OFF:
                return ALREADY_ON
            if entry_point == 0 or entry_point & 0x3:
                return INVALID_ADDRESS
            self.pcpu[pcpu] = PcpuState.ON
            self.masked[pcpu] = True  # cores start at EL2 with DAIF masked
            return SUCCESS

        return self._run("el3.cpu_on", f"pCPU {pcpu} at {entry_point:#x}", body)

    def cpu_off(self, pcpu: int) -> int:
        def body() -> int:
            if sum(s is PcpuState.ON for s in self.pcpu) == 1:
                return DENIED
            self.pcpu[pcpu] = PcpuState.OFF
            self.gic.cpu_off(pcpu)
            # A core's banked PPIs do not survive its power-down.
            self.pending = {p for p in self.pending if p[1] != pcpu}
            return SUCCESS

        return self._run("el3.cpu_off", f"pCPU {pcpu}", body)

    def system_suspend(self, pcpu: int, entry_point: int) -> int:
        def body() -> int:
            if pcpu != self.boot_pcpu:
                return DENIED
            if any(s is not PcpuState.OFF for c, s in enumerate(self.pcpu) if c != pcpu):
                return DENIED
            if entry_point == 0 or entry_point & 0x3:
                return INVALID_ADDRESS
            # The power controller arms the wake sources the GIC has enabled.
            self.armed = frozenset(irq for irq in self.wake_sources if self.gic.enabled(irq, pcpu))
            # Level-triggered lines stay asserted through the power-down.
            self.latched = sorted({irq for irq, _ in self.pending if irq >= SGI_PPI})
            self.pending = set()
            self.gic.reset()
            self.timer_ctl = self.timer_cval = 0
            self.el2 = (0,) * len(EL2_INSTALLED)
            self._firmware_suspend()
            self.pcpu[pcpu] = PcpuState.SUSPENDED
            self.masked[pcpu] = True
            self.soc = SocState.SUSPENDED
            self.resume_entry = entry_point
            if self.watchdog_on:
                self.watchdog_expiry_ns = self.clock.now_ns() + WATCHDOG_TIMEOUT_NS
            return SUCCESS

        return self._run("el3.system_suspend", f"pCPU {pcpu}, resume at {entry_point:#x}", body)

    def system_off(self) -> None:
        """EL3 SYSTEM_OFF: the power controller powers the whole SoC down."""
        start = self.clock.now_ns()
        self._power_on_reset()
        self.pcpu = [PcpuState.OFF] * self.pcpus
        self.soc = SocState.OFF
        self._steps.append(BackendStep("el3.system_off", "SoC off", start, start))

    def system_reset(self) -> None:
        """EL3 SYSTEM_RESET: a cold reset; only the boot core runs afterwards."""
        start = self.clock.now_ns()
        self._power_on_reset()
        self._steps.append(BackendStep("el3.system_reset", "SoC reset", start, start))

    # ------------------------------------------------------------- GIC

    def gic_init(self) -> None:
        self.gic.enable_distributor()

    def gic_route(self, route: IrqRoute) -> None:
        self.gic.route_spi(route.irq, route.pcpu, route.priority, route.level)

    def gic_unroute(self, irq: int) -> None:
        self.gic.disable_spi(irq)

    def gic_cpu_init(self, pcpu: int) -> None:
        self.gic.init_cpu(pcpu, CPU_PPIS, PPI_PRIORITY, CPU_PMR)

    def gic_save(self) -> tuple[int, object]:
        saved: list[object] = []

        def body() -> int:
            saved.append(self.gic.save(self.boot_pcpu))
            return SUCCESS

        result = self._run("gic.save", self.GIC_SAVED, body)
        return result, (saved[0] if saved else None)

    def gic_restore(self, context: object) -> int:
        def body() -> int:
            return SUCCESS if self.gic.restore(self.boot_pcpu, context) else INTERNAL_FAILURE

        return self._run("gic.restore", self.GIC_SAVED, body)

    def gic_registers(self) -> tuple[int, ...]:
        return self.gic.registers()

    def irq_mask(self, pcpu: int) -> int:
        def body() -> int:
            self.masked[pcpu] = True
            return SUCCESS

        return self._run("cpu.irq_mask", f"pCPU {pcpu}", body)

    def irq_unmask(self, pcpu: int) -> int:
        def body() -> int:
            self.masked[pcpu] = False
            return SUCCESS

        return self._run("cpu.irq_unmask", f"pCPU {pcpu}", body)

    # ----------------------------------------------------------- timer

    def counter(self) -> int:
        return self.clock.now_ns() * COUNTER_HZ // 1_000_000_000

    def timer_init(self, period_ns: int) -> None:
        self.timer_ctl = 1
        self.timer_cval = self.counter() + period_ns * COUNTER_HZ // 1_000_000_000

    def timer_suspend(self) -> tuple[int, object]:
        saved: list[tuple[int, int]] = []

        def body() -> int:
            saved.append((self.timer_ctl, self.timer_cval))
            self.timer_ctl = 0
            return SUCCESS

        result = self._run("timer.suspend", "CNTHP_CTL, CNTHP_CVAL", body)
        return result, (saved[0] if saved else None)

    def timer_resume(self, context: object) -> int:
        def body() -> int:
            if not isinstance(context, tuple):
                return INTERNAL_FAILURE
            self.timer_ctl, self.timer_cval = context
            return SUCCESS

        return self._run("timer.resume", "CNTHP_CTL, CNTHP_CVAL", body)

    def timer_registers(self) -> tuple[int, ...]:
        return (self.timer_ctl, self.timer_cval)

    # -------------------------------------------------------- watchdog

    def watchdog_enable(self) -> int:
        def body() -> int:
            self.watchdog_on = True
            return SUCCESS

        return self._run("wdt.enable", self.WATCHDOG, body)

    def watchdog_disable(self) -> int:
        def body() -> int:
            self.watchdog_on = False
            self.watchdog_expiry_ns = None
            return SUCCESS

        return self._run("wdt.disable", self.WATCHDOG, body)

    def watchdog_enabled(self) -> bool:
        return self.watchdog_on

    # ------------------------------------------------------ EL2 context

    def el2_save(self) -> tuple[int, object]:
        saved: list[tuple[int, ...]] = []

        def body() -> int:
            saved.append(self.el2)
            return SUCCESS

        result = self._run("el2.save", "boot pCPU EL2 system registers", body)
        return result, (saved[0] if saved else None)

    def el2_restore(self, context: object) -> int:
        def body() -> int:
            if not isinstance(context, tuple):
                return INTERNAL_FAILURE
            self.el2 = context
            return SUCCESS

        return self._run("el2.restore", "boot pCPU EL2 system registers", body)

    # --------------------------------------------- interrupts and wake

    def set_wake_source(self, irq: int, enabled: bool) -> None:
        if enabled:
            self.wake_sources.add(irq)
        else:
            self.wake_sources.discard(irq)

    def raise_irq(self, irq: int, pcpu: int) -> IrqResult:
        now = self.clock.now_ns()
        if self.soc is SocState.SUSPENDED:
            if self.watchdog_expiry_ns is not None and now >= self.watchdog_expiry_ns:
                expired = self.watchdog_expiry_ns
                self._power_on_reset()
                self._steps.append(
                    BackendStep("wdt.reset", "watchdog expired during suspend", expired, expired)
                )
                return IrqResult(IrqFate.SOC_RESET, reason="the watchdog expired during suspend")
            if irq not in self.latched:
                self.latched.append(irq)
            if irq not in self.armed:
                return IrqResult(
                    IrqFate.PENDING, reason=f"IRQ {irq} is not an armed wake source of the SoC"
                )
            self._wake()
            return IrqResult(IrqFate.WOKE_SOC, self.boot_pcpu)
        key = (irq, pcpu if irq < SGI_PPI else SPI)
        self.pending.add(key)
        target = self._target(key)
        if target is None:
            return IrqResult(IrqFate.PENDING, reason=f"IRQ {irq} has no target pCPU")
        reason = self._why_not(irq, target)
        if reason is not None:
            return IrqResult(IrqFate.PENDING, target, reason)
        self.pending.discard(key)
        return IrqResult(IrqFate.TAKEN, target)

    def _target(self, key: tuple[int, int]) -> int | None:
        irq, pcpu = key
        return pcpu if irq < SGI_PPI else self.gic.spi_target(irq)

    def _wake(self) -> None:
        """The power controller powers the SoC back up; the boot core restarts at its
        resume entry."""
        start = self.clock.now_ns()
        self.clock.advance(LATENCY_NS["soc.wake"])
        self.soc = SocState.ACTIVE
        self.pcpu[self.boot_pcpu] = PcpuState.ON
        self.masked[self.boot_pcpu] = True
        self.watchdog_expiry_ns = None
        self._firmware_wake()
        # Still-asserted lines are pending again in the freshly reset GIC.
        # A latched PPI (the virtual timer) is pending on the boot pCPU that woke.
        self.pending.update(
            (irq, SPI if irq >= SGI_PPI else self.boot_pcpu) for irq in self.latched
        )
        self.latched = []
        self._steps.append(
            BackendStep(
                "soc.wake", f"boot pCPU at {self.resume_entry:#x}", start, self.clock.now_ns()
            )
        )

    def _why_not(self, irq: int, pcpu: int) -> str | None:
        if self.pcpu[pcpu] is not PcpuState.ON:
            return f"pCPU {pcpu} is {self.pcpu[pcpu].value}"
        reason = self.gic.why_not(irq, pcpu)
        if reason is None and self.masked[pcpu]:
            return f"IRQs masked on pCPU {pcpu}"
        return reason

    def take_pending(self) -> list[tuple[int, int]]:
        """Pending interrupts the GIC would signal now, in INTID order (as a GIC
        with equal priorities picks the lowest ID first)."""
        taken: list[tuple[int, int]] = []
        for key in sorted(self.pending):
            pcpu = self._target(key)
            if pcpu is not None and self._why_not(key[0], pcpu) is None:
                taken.append((key[0], pcpu))
                self.pending.discard(key)
        return taken
