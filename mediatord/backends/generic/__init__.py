"""A generic PSCI-only board, QEMU ``virt``-like: N pCPUs under TF-A, a GICv3, the
generic timer and an SBSA generic watchdog, and no power-management firmware (SiP
calls answer NOT_SUPPORTED)."""

from mediatord.backends.generic.platform import Generic

__all__ = ["Generic"]
