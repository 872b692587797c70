"""The emulated i.MX8QM-like board: :class:`ArmSoc` (TF-A's EL3 PSCI, timer, EL2
context, wake logic) with the GIC-500 (a GICv3 with 512 SPIs), the SCU's watchdog,
and the SCU firmware in place of the ZynqMP's PMU.

The SCFW keeps each resource's power mode through a system suspend (the partitions'
own power modes are the SCFW's business, docs/imx8-scfw.md 2.2); what a guest left
ON stays ON. The wake logic is ArmSoc's: the SCU's IRQSTEER arms the wake sources
whose interrupt the GIC has enabled at the moment of suspend.
"""

from __future__ import annotations

from mediatord.backends.armsoc import ArmSoc
from mediatord.backends.gicv3 import GicV3
from mediatord.backends.imx8.scu import Scu
from mediatord.core.clock import Clock

GIC_500_IRQS = 544  # SPIs 0..511: INTIDs up to 543


class Imx8(ArmSoc):
    name = "imx8"
    WATCHDOG = "SCU watchdog"
    GIC_SAVED = "distributor, boot PE redistributor and ICC registers"
    STATE_TYPES: tuple[type, ...] = (*ArmSoc.STATE_TYPES, *GicV3.STATE_TYPES, *Scu.STATE_TYPES)

    def __init__(
        self, pcpus: int, boot_pcpu: int, clock: Clock, resources: frozenset[int] = frozenset()
    ) -> None:
        """``resources``: the SC_R_* of the board's devices (powered at boot)."""
        self.resources = resources
        super().__init__(pcpus, boot_pcpu, clock, GicV3(pcpus, GIC_500_IRQS))

    @property
    def scfw(self) -> Scu | None:
        return self.scu

    def _firmware_reset(self) -> None:
        self.scu = Scu(self.clock, self._record, self.resources)

    def _firmware_state(self) -> dict[str, object]:
        return self.scu.save_state()

    def _load_firmware_state(self, state: dict[str, object]) -> None:
        self.scu.load_state(state)
