"""What the GICv2 (zynqmp/gic.py) and GICv3 (gicv3.py) models share: SPIs live in
the distributor (enable, priority, configuration), SGIs and PPIs are banked per PE
(in the GICv2 CPU interface, in the GICv3 redistributor)."""

from __future__ import annotations

from typing import Final, Protocol

SGI_PPI: Final = 32  # INTIDs below are banked per PE


class Banked(Protocol):
    """One PE's banked SGI/PPI state."""

    isenabler0: int
    ipriority: list[int]


class SpiRegisters(Protocol):
    isenabler: list[int]
    ipriority: list[int]
    icfgr: list[int]


class GicBase:
    num_irqs: int

    def _spis(self) -> SpiRegisters:
        raise NotImplementedError

    def _banked(self, cpu: int) -> Banked:
        raise NotImplementedError

    def _program_spi(self, irq: int, priority: int, level: bool) -> None:
        """Priority, trigger (GICD_ICFGR: 0b10 = edge) and enable of one SPI; the
        caller sets its target, which is where the two versions differ."""
        self._check_spi(irq)
        dist = self._spis()
        dist.ipriority[irq] = priority
        edge_bit = 0b10 << (irq % 16) * 2
        word = irq // 16
        dist.icfgr[word] = dist.icfgr[word] & ~edge_bit if level else dist.icfgr[word] | edge_bit
        dist.isenabler[irq // 32] |= 1 << (irq % 32)

    def disable_spi(self, irq: int) -> None:
        self._check_spi(irq)
        self._spis().isenabler[irq // 32] &= ~(1 << (irq % 32))

    def enabled(self, irq: int, cpu: int) -> bool:
        if irq < SGI_PPI:
            return bool(self._banked(cpu).isenabler0 >> irq & 1)
        return bool(self._spis().isenabler[irq // 32] >> (irq % 32) & 1)

    def priority(self, irq: int, cpu: int) -> int:
        if irq < SGI_PPI:
            return self._banked(cpu).ipriority[irq]
        return self._spis().ipriority[irq]

    def _check_spi(self, irq: int) -> None:
        if not SGI_PPI <= irq < self.num_irqs:
            raise ValueError(f"INTID {irq} is not an SPI of this GIC (32..{self.num_irqs - 1})")
