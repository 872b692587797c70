"""The emulated ZynqMP: four Cortex-A53 pCPUs under TF-A (:class:`ArmSoc`), a
GIC-400 (GICv2), the FPD system watchdog, and the PMU: its wake logic and its
firmware (power nodes, requirements, resets, clocks; pmu.py) behind EEMI.
"""

from __future__ import annotations

from mediatord.backends.armsoc import LATENCY_NS, ArmSoc
from mediatord.backends.base import PowerFirmware
from mediatord.backends.zynqmp.gic import GicV2
from mediatord.backends.zynqmp.pmu import Pmu
from mediatord.core.clock import Clock

__all__ = ["LATENCY_NS", "ZynqMP"]


class ZynqMP(ArmSoc):
    name = "zynqmp"
    WATCHDOG = "FPD SWDT"
    GIC_SAVED = "distributor and boot CPU interface"
    STATE_TYPES: tuple[type, ...] = (
        *ArmSoc.STATE_TYPES,
        *GicV2.STATE_TYPES,
        *Pmu.STATE_TYPES,
    )

    def __init__(
        self, pcpus: int, boot_pcpu: int, clock: Clock, devices: frozenset[int] = frozenset()
    ) -> None:
        """``devices``: EEMI node IDs of the board's peripherals (powered at boot)."""
        self.devices = devices
        super().__init__(pcpus, boot_pcpu, clock, GicV2(pcpus))

    @property
    def firmware(self) -> PowerFirmware | None:
        return self.pmu

    def _firmware_reset(self) -> None:
        self.pmu = Pmu(self.clock, self._record, self.devices)

    def _firmware_suspend(self) -> None:
        self.pmu.power_down_for_suspend()

    def _firmware_wake(self) -> None:
        self.pmu.restore_after_wake()

    def _firmware_state(self) -> dict[str, object]:
        return self.pmu.save_state()

    def _load_firmware_state(self, state: dict[str, object]) -> None:
        self.pmu.load_state(state)
