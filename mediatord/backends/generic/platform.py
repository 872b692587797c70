"""The generic board: what is left of a ZynqMP when the SoC-specific parts go.

The pCPUs, EL3 PSCI, the timer, the EL2 context and the wake logic are
:class:`ArmSoc`'s, as on every board here. The interrupt controller is a GICv3
with one redistributor per PE (QEMU virt's ``gic-version=3``). The watchdog is
the SBSA generic watchdog (as on QEMU ``sbsa-ref``; ``virt`` has none), so that a
host suspend must stop it as on the ZynqMP. There is no power-management
firmware: ``firmware`` is None, so the mediator answers every SiP call
NOT_SUPPORTED and devices have no power nodes (always powered).
"""

from __future__ import annotations

from mediatord.backends.armsoc import ArmSoc
from mediatord.backends.gicv3 import GicV3
from mediatord.core.clock import Clock


class Generic(ArmSoc):
    name = "generic"
    WATCHDOG = "SBSA generic watchdog"
    GIC_SAVED = "distributor, boot PE redistributor and ICC registers"
    STATE_TYPES: tuple[type, ...] = (*ArmSoc.STATE_TYPES, *GicV3.STATE_TYPES)

    def __init__(self, pcpus: int, boot_pcpu: int, clock: Clock) -> None:
        super().__init__(pcpus, boot_pcpu, clock, GicV3(pcpus))
