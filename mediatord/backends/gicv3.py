"""A GICv3 (GIC-500/600, QEMU's ``gicv3``) register file and its delivery rule.

What differs from the GICv2 model (backends/zynqmp/gic.py), as the architecture
has it (Arm IHI 0069):

- Affinity routing (GICD_CTLR.ARE_NS): an SPI goes to the PE named by its
  GICD_IROUTER<n> (Aff3.Aff2.Aff1.Aff0), not to a GICD_ITARGETSR bit mask.
- SGIs and PPIs live in each PE's redistributor (GICR_ISENABLER0,
  GICR_IPRIORITYR<n>, GICR_ICFGR1), and a redistributor is asleep out of reset
  (GICR_WAKER.ProcessorSleep = 1): until the PE's bring-up wakes it, nothing is
  delivered to that PE. A PE powered off puts its redistributor to sleep again
  (TF-A gicv3_rdistif_off).
- The CPU interface is system registers: ICC_SRE_EL2, ICC_IGRPEN1_EL1,
  ICC_PMR_EL1, ICC_BPR1_EL1.

Only Non-secure Group 1 interrupts are modelled (a hypervisor's). Every register
returns to its reset value when the SoC powers down; TF-A saves the distributor
and the boot PE's redistributor for a system suspend (gicv3_distif_save,
gicv3_rdistif_save), and the hypervisor its own CPU interface registers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mediatord.backends.gicbase import SGI_PPI, GicBase

# QEMU virt (gicv3): GICD_TYPER.ITLinesNumber = 8, so INTIDs 0..287 (the default);
# the i.MX8QM's GIC-500 has 512 SPIs, INTIDs 0..543.
NUM_IRQS: Final = 288
GICD_CTLR_ENABLE_GRP1NS: Final = 1 << 1
GICD_CTLR_ARE_NS: Final = 1 << 4
GICR_WAKER_PROCESSOR_SLEEP: Final = 1 << 1
GICR_WAKER_CHILDREN_ASLEEP: Final = 1 << 2
GICR_WAKER_RESET: Final = GICR_WAKER_PROCESSOR_SLEEP | GICR_WAKER_CHILDREN_ASLEEP
ICC_SRE_RESET: Final = 0
ICFGR_PPI_RESET: Final = 0  # PPIs level-sensitive
IROUTER_IRM: Final = 1 << 31  # 1 of N routing: not used by a hypervisor's SPIs


def affinity(pe: int) -> int:
    """GICD_IROUTER / MPIDR affinity of PE ``pe`` on a one-cluster board (Aff0 = pe)."""
    return pe


@dataclass(slots=True)
class Redistributor:
    """One PE's GICR: its wake state and its banked SGI/PPI configuration."""

    waker: int = GICR_WAKER_RESET
    isenabler0: int = 0
    ipriority: list[int] = field(default_factory=lambda: [0] * SGI_PPI)
    icfgr1: int = ICFGR_PPI_RESET


@dataclass(slots=True)
class CpuInterface:
    """The ICC_* system registers of one PE's CPU interface."""

    sre: int = ICC_SRE_RESET
    igrpen1: int = 0
    pmr: int = 0
    bpr1: int = 0


@dataclass(slots=True)
class Distributor:
    ctlr: int
    # GICD_ISENABLER<n> (word 0, SGIs and PPIs, is in the redistributors and stays 0).
    isenabler: list[int]
    ipriority: list[int]
    icfgr: list[int]
    irouter: list[int]

    @classmethod
    def at_reset(cls, num_irqs: int) -> Distributor:
        return cls(
            0, [0] * (num_irqs // 32), [0] * num_irqs, [0] * (num_irqs // 16), [0] * num_irqs
        )


@dataclass(frozen=True, slots=True)
class Gicv3Context:
    """What a system suspend saves: the distributor, the boot PE's redistributor
    and its CPU interface registers."""

    distributor: tuple[int, ...]
    redistributor: tuple[int, ...]
    cpu: tuple[int, ...]


class GicV3(GicBase):
    STATE_TYPES: Final = (Distributor, Redistributor, CpuInterface, Gicv3Context)

    def __init__(self, ncpus: int, num_irqs: int = NUM_IRQS) -> None:
        self.ncpus = ncpus
        self.num_irqs = num_irqs
        self.reset()

    def reset(self) -> None:
        """Power-on reset: every register to its reset value, every GICR asleep."""
        self.dist = Distributor.at_reset(self.num_irqs)
        self.redists = [Redistributor() for _ in range(self.ncpus)]
        self.cpus = [CpuInterface() for _ in range(self.ncpus)]

    # ---- what the hypervisor programs

    def enable_distributor(self) -> None:
        self.dist.ctlr = GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_GRP1NS

    def _spis(self) -> Distributor:
        return self.dist

    def _banked(self, cpu: int) -> Redistributor:
        return self.redists[cpu]

    def route_spi(self, irq: int, cpu: int, priority: int, level: bool) -> None:
        self._program_spi(irq, priority, level)
        self.dist.irouter[irq] = affinity(cpu)

    def init_cpu(self, cpu: int, ppis: tuple[int, ...], priority: int, pmr: int) -> None:
        """A PE's bring-up: wake its redistributor, enable its PPIs, turn on its
        CPU interface (system register access, Group 1, priority mask)."""
        redist = self.redists[cpu]
        redist.waker &= ~(GICR_WAKER_PROCESSOR_SLEEP | GICR_WAKER_CHILDREN_ASLEEP)
        for ppi in ppis:
            redist.isenabler0 |= 1 << ppi
            redist.ipriority[ppi] = priority
        interface = self.cpus[cpu]
        interface.sre = 1
        interface.igrpen1 = 1
        interface.pmr = pmr
        interface.bpr1 = 0

    def cpu_off(self, cpu: int) -> None:
        """The PE powers down: its redistributor goes to sleep (gicv3_rdistif_off)."""
        self.redists[cpu].waker |= GICR_WAKER_PROCESSOR_SLEEP | GICR_WAKER_CHILDREN_ASLEEP

    # ---- delivery

    def why_not(self, irq: int, cpu: int) -> str | None:
        """None when ``cpu``'s CPU interface would signal ``irq``; else the reason."""
        if not self.dist.ctlr & GICD_CTLR_ENABLE_GRP1NS:
            return "GIC distributor disabled (GICD_CTLR.EnableGrp1NS)"
        if not self.enabled(irq, cpu):
            return f"IRQ {irq} disabled in the GIC"
        if irq >= SGI_PPI and self.spi_target(irq) != cpu:
            return f"IRQ {irq} not routed to pCPU {cpu} (GICD_IROUTER)"
        if self.redists[cpu].waker & GICR_WAKER_PROCESSOR_SLEEP:
            return f"pCPU {cpu}'s redistributor is asleep (GICR_WAKER)"
        interface = self.cpus[cpu]
        if not interface.igrpen1:
            return f"pCPU {cpu} Group 1 interrupts disabled (ICC_IGRPEN1_EL1)"
        if self.priority(irq, cpu) >= interface.pmr:
            return f"IRQ {irq} priority masked by pCPU {cpu}'s ICC_PMR_EL1"
        return None

    def spi_target(self, irq: int) -> int | None:
        route = self.dist.irouter[irq]
        if not self.dist.ctlr & GICD_CTLR_ARE_NS or route & IROUTER_IRM:
            return None
        return next((c for c in range(self.ncpus) if affinity(c) == route), None)

    # ---- save / restore

    def save(self, cpu: int) -> Gicv3Context:
        d, r, c = self.dist, self.redists[cpu], self.cpus[cpu]
        return Gicv3Context(
            distributor=(d.ctlr, *d.isenabler, *d.ipriority, *d.icfgr, *d.irouter),
            redistributor=(r.waker, r.isenabler0, *r.ipriority, r.icfgr1),
            cpu=(c.sre, c.igrpen1, c.pmr, c.bpr1),
        )

    def restore(self, cpu: int, context: object) -> bool:
        """Put back what :meth:`save` took; False for anything else."""
        if not isinstance(context, Gicv3Context):
            return False
        values = list(context.distributor)
        n = self.num_irqs
        words, cfg = n // 32, n // 16
        at = 1
        isenabler = values[at : at + words]
        at += words
        ipriority = values[at : at + n]
        at += n
        icfgr = values[at : at + cfg]
        at += cfg
        self.dist = Distributor(values[0], isenabler, ipriority, icfgr, values[at:])
        waker, isenabler0, *rest = context.redistributor
        self.redists[cpu] = Redistributor(waker, isenabler0, list(rest[:SGI_PPI]), rest[SGI_PPI])
        self.cpus[cpu] = CpuInterface(*context.cpu)
        return True

    def registers(self) -> tuple[int, ...]:
        """The whole register file, every PE's redistributor and interface included."""
        out: list[int] = list(self.save(0).distributor)
        for cpu in range(self.ncpus):
            saved = self.save(cpu)
            out.extend((*saved.redistributor, *saved.cpu))
        return tuple(out)

    # ---- journal snapshots

    def save_state(self) -> tuple[object, ...]:
        return (self.dist, self.redists, self.cpus)

    def load_state(self, state: tuple[object, ...]) -> None:
        dist, redists, cpus = state
        if not (isinstance(dist, Distributor) and isinstance(redists, list)):
            raise ValueError("GICv3 state of the wrong type")
        if not isinstance(cpus, list):
            raise ValueError("GICv3 state of the wrong type")
        self.dist, self.redists, self.cpus = dist, redists, cpus
