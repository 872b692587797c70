"""The emulated Xilinx ZynqMP: four Cortex-A53 pCPUs under TF-A, a GIC-400, the
generic timer, the FPD system watchdog and the PMU's wake logic."""

from mediatord.backends.zynqmp.platform import ZynqMP

__all__ = ["ZynqMP"]
