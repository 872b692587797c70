"""An NXP i.MX8QM-like board: Cortex-A53/A72 pCPUs under TF-A, a GIC-500 (GICv3),
and the SCU's firmware (SCFW) owning every resource by partition."""

from mediatord.backends.imx8.platform import Imx8

__all__ = ["Imx8"]
