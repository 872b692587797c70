"""A GICv2 (GIC-400) register file and its delivery rule.

Only the state the hypervisor programs and must save across a SoC power-down is
modelled: distributor enable, per-interrupt enable, priority, target and
configuration, and per-CPU interface control, priority mask and binary point.
SGI/PPI enables, priorities and configuration are banked per CPU, as in the
architecture. When the SoC powers down every register returns to its reset
value, so a hypervisor that does not save and restore it loses its interrupts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mediatord.backends.gicbase import SGI_PPI, GicBase

# ZynqMP: GICD_TYPER.ITLinesNumber = 5, so INTIDs 0..191; 4 CPU interfaces.
NUM_IRQS: Final = 192
# Reset values (GIC-400): SGIs edge (read-only), PPIs and SPIs level.
ICFGR_SGI_RESET: Final = 0xAAAA_AAAA
ICFGR_PPI_RESET: Final = 0x5554_0000
ICFGR_SPI_RESET: Final = 0x5555_5555
BPR_RESET: Final = 0x2


@dataclass(slots=True)
class CpuInterface:
    """GICC_CTLR, GICC_PMR, GICC_BPR, plus this CPU's banked distributor state."""

    ctlr: int = 0
    pmr: int = 0
    bpr: int = BPR_RESET
    isenabler0: int = 0  # SGI/PPI enables, banked
    ipriority: list[int] = field(default_factory=lambda: [0] * SGI_PPI)  # banked
    icfgr1: int = ICFGR_PPI_RESET  # PPI configuration, banked


@dataclass(slots=True)
class Distributor:
    ctlr: int = 0
    # ISENABLER1..5 (word n covers INTIDs 32n..32n+31; word 0 is banked per CPU)
    isenabler: list[int] = field(default_factory=lambda: [0] * (NUM_IRQS // 32))
    ipriority: list[int] = field(default_factory=lambda: [0] * NUM_IRQS)
    itargets: list[int] = field(default_factory=lambda: [0] * NUM_IRQS)
    icfgr: list[int] = field(
        default_factory=lambda: (
            [ICFGR_SGI_RESET, ICFGR_PPI_RESET] + [ICFGR_SPI_RESET] * (NUM_IRQS // 16 - 2)
        )
    )


@dataclass(frozen=True, slots=True)
class GicContext:
    """What the hypervisor saves before a power-down (Xen's gicv2 suspend path):
    the distributor and the boot CPU's interface and banked registers."""

    distributor: tuple[int, ...]
    cpu: tuple[int, ...]


class GicV2(GicBase):
    STATE_TYPES: Final = (Distributor, CpuInterface, GicContext)

    def __init__(self, ncpus: int) -> None:
        self.ncpus = ncpus
        self.num_irqs = NUM_IRQS
        self.dist = Distributor()
        self.cpus = [CpuInterface() for _ in range(ncpus)]

    def reset(self) -> None:
        """Power-on reset: every register to its reset value."""
        self.dist = Distributor()
        self.cpus = [CpuInterface() for _ in range(self.ncpus)]

    # ---- what the hypervisor programs

    def enable_distributor(self) -> None:
        self.dist.ctlr = 1

    def _spis(self) -> Distributor:
        return self.dist

    def _banked(self, cpu: int) -> CpuInterface:
        return self.cpus[cpu]

    def route_spi(self, irq: int, cpu: int, priority: int, level: bool) -> None:
        self._program_spi(irq, priority, level)
        self.dist.itargets[irq] = 1 << cpu

    def init_cpu(self, cpu: int, ppis: tuple[int, ...], priority: int, pmr: int) -> None:
        """A pCPU's own GIC bring-up: interface on, its PPIs enabled."""
        interface = self.cpus[cpu]
        interface.ctlr = 1
        interface.pmr = pmr
        interface.bpr = 0
        for ppi in ppis:
            interface.isenabler0 |= 1 << ppi
            interface.ipriority[ppi] = priority

    def cpu_off(self, cpu: int) -> None:
        """A GICv2 CPU interface keeps its registers while its core is off."""

    # ---- delivery

    def why_not(self, irq: int, cpu: int) -> str | None:
        """None when ``cpu``'s interface would signal ``irq``; else the reason."""
        if not self.dist.ctlr & 1:
            return "GIC distributor disabled"
        if not self.enabled(irq, cpu):
            return f"IRQ {irq} disabled in the GIC"
        if irq >= SGI_PPI and not self.dist.itargets[irq] >> cpu & 1:
            return f"IRQ {irq} not targeted at pCPU {cpu}"
        interface = self.cpus[cpu]
        if not interface.ctlr & 1:
            return f"pCPU {cpu} GIC CPU interface disabled"
        if self.priority(irq, cpu) >= interface.pmr:
            return f"IRQ {irq} priority masked by pCPU {cpu}'s GICC_PMR"
        return None

    def spi_target(self, irq: int) -> int | None:
        targets = self.dist.itargets[irq]
        return next((c for c in range(self.ncpus) if targets >> c & 1), None)

    # ---- save / restore

    def save(self, cpu: int) -> GicContext:
        d = self.dist
        c = self.cpus[cpu]
        return GicContext(
            distributor=(d.ctlr, *d.isenabler, *d.ipriority, *d.itargets, *d.icfgr),
            cpu=(c.ctlr, c.pmr, c.bpr, c.isenabler0, *c.ipriority, c.icfgr1),
        )

    def restore(self, cpu: int, context: object) -> bool:
        """Put back what :meth:`save` took; False for anything else."""
        if not isinstance(context, GicContext):
            return False
        values = list(context.distributor)
        words = NUM_IRQS // 32
        self.dist = Distributor(
            ctlr=values[0],
            isenabler=values[1 : 1 + words],
            ipriority=values[1 + words : 1 + words + NUM_IRQS],
            itargets=values[1 + words + NUM_IRQS : 1 + words + 2 * NUM_IRQS],
            icfgr=values[1 + words + 2 * NUM_IRQS :],
        )
        ctlr, pmr, bpr, isenabler0, *rest = context.cpu
        self.cpus[cpu] = CpuInterface(
            ctlr=ctlr,
            pmr=pmr,
            bpr=bpr,
            isenabler0=isenabler0,
            ipriority=list(rest[:SGI_PPI]),
            icfgr1=rest[SGI_PPI],
        )
        return True

    def registers(self) -> tuple[int, ...]:
        """The whole register file, every CPU's banked state included."""
        out: list[int] = list(self.save(0).distributor)
        for cpu in range(self.ncpus):
            out.extend(self.save(cpu).cpu)
        return tuple(out)

    # ---- journal snapshots

    def save_state(self) -> tuple[object, ...]:
        return (self.dist, self.cpus)

    def load_state(self, state: tuple[object, ...]) -> None:
        dist, cpus = state
        if not (isinstance(dist, Distributor) and isinstance(cpus, list)):
            raise ValueError("GICv2 state of the wrong type")
        self.dist, self.cpus = dist, cpus
