"""ZynqMP EEMI: the SiP calls guests make to power their devices, and who may make them.

Calls arrive as Linux's ``zynqmp_pm_invoke_fn`` issues them: function ID
``0xC2000000 | api_id`` (SMC64 fast SiP; the SMC32 form ``0x82000000`` is decoded
the same way with 32-bit registers, as TF-A does), two 32-bit arguments per
register (x1 = arg1 << 32 | arg0, x2 = arg3 << 32 | arg2, x3 = arg4), and the
answer in x0 = status | payload1 << 32, x1 = payload2 | payload3 << 32.

The access rules follow the Xilinx Xen mediator (``xilinx-eemi.c`` and
``xilinx-zynqmp-eemi.c``): a node, reset line or clock is the domain's when the
device that grants it is assigned to the domain; the hardware domain also has
everything nobody else was given and the hardware-domain-only entries. Denied
calls answer ``XST_PM_NO_ACCESS`` and never reach the firmware. The decision
table is written out in ``docs/eemi-access.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from mediatord.core import smccc
from mediatord.core.config import NODE_MAX

PM_SIP_SVC: Final = 0xC200_0000
PM_SIP_SVC_32: Final = 0x8200_0000
SIP_FUNCTION_MASK: Final = 0xFFFF


class PmApi(IntEnum):
    """pm_api_id (TF-A plat/xilinx/zynqmp/pm_service/pm_defs.h)."""

    GET_API_VERSION = 1
    SET_CONFIGURATION = 2
    GET_NODE_STATUS = 3
    GET_OP_CHARACTERISTIC = 4
    REGISTER_NOTIFIER = 5
    REQ_SUSPEND = 6
    SELF_SUSPEND = 7
    FORCE_POWERDOWN = 8
    ABORT_SUSPEND = 9
    REQ_WAKEUP = 10
    SET_WAKEUP_SOURCE = 11
    SYSTEM_SHUTDOWN = 12
    REQ_NODE = 13
    RELEASE_NODE = 14
    SET_REQUIREMENT = 15
    SET_MAX_LATENCY = 16
    RESET_ASSERT = 17
    RESET_GET_STATUS = 18
    MMIO_WRITE = 19
    MMIO_READ = 20
    INIT_FINALIZE = 21
    FPGA_LOAD = 22
    FPGA_GET_STATUS = 23
    GET_CHIPID = 24
    SECURE_RSA_AES = 25
    SECURE_SHA = 26
    SECURE_RSA = 27
    PINCTRL_REQUEST = 28
    PINCTRL_RELEASE = 29
    PINCTRL_GET_FUNCTION = 30
    PINCTRL_SET_FUNCTION = 31
    PINCTRL_CONFIG_PARAM_GET = 32
    PINCTRL_CONFIG_PARAM_SET = 33
    IOCTL = 34
    QUERY_DATA = 35
    CLOCK_ENABLE = 36
    CLOCK_DISABLE = 37
    CLOCK_GETSTATE = 38
    CLOCK_SETDIVIDER = 39
    CLOCK_GETDIVIDER = 40
    CLOCK_SETRATE = 41
    CLOCK_GETRATE = 42
    CLOCK_SETPARENT = 43
    CLOCK_GETPARENT = 44
    SECURE_IMAGE = 45
    FPGA_READ = 46
    SECURE_AES = 47
    PLL_SET_PARAMETER = 48
    PLL_GET_PARAMETER = 49
    PLL_SET_MODE = 50
    PLL_GET_MODE = 51
    REGISTER_ACCESS = 52
    EFUSE_ACCESS = 53
    FPGA_GET_VERSION = 54
    FPGA_GET_FEATURE_LIST = 55
    FEATURE_CHECK = 63
    GET_CALLBACK_DATA = 0xA01
    SET_SUSPEND_MODE = 0xA02
    GET_TRUSTZONE_VERSION = 0xA03


class PmStatus(IntEnum):
    """pm_ret_status as the Xilinx Xen mediator and the PMU firmware return them."""

    SUCCESS = 0
    ARGS = 1  # XST_PM_ARGS / XST_FAILURE: illegal arguments
    NOTSUPPORTED = 4
    INVALID_PARAM = 15
    INTERNAL = 2000
    CONFLICT = 2001
    NO_ACCESS = 2002
    INVALID_NODE = 2003
    DOUBLE_REQ = 2004
    ABORT_SUSPEND = 2005
    TIMEOUT = 2006
    NODE_USED = 2007
    NO_FEATURE = 2008


class PmNode(IntEnum):
    """enum pm_node_id (TF-A pm_defs.h); NODE_MAX is 78."""

    NODE_UNKNOWN = 0
    NODE_APU = 1
    NODE_APU_0 = 2
    NODE_APU_1 = 3
    NODE_APU_2 = 4
    NODE_APU_3 = 5
    NODE_RPU = 6
    NODE_RPU_0 = 7
    NODE_RPU_1 = 8
    NODE_PLD = 9
    NODE_FPD = 10
    NODE_OCM_BANK_0 = 11
    NODE_OCM_BANK_1 = 12
    NODE_OCM_BANK_2 = 13
    NODE_OCM_BANK_3 = 14
    NODE_TCM_0_A = 15
    NODE_TCM_0_B = 16
    NODE_TCM_1_A = 17
    NODE_TCM_1_B = 18
    NODE_L2 = 19
    NODE_GPU_PP_0 = 20
    NODE_GPU_PP_1 = 21
    NODE_USB_0 = 22
    NODE_USB_1 = 23
    NODE_TTC_0 = 24
    NODE_TTC_1 = 25
    NODE_TTC_2 = 26
    NODE_TTC_3 = 27
    NODE_SATA = 28
    NODE_ETH_0 = 29
    NODE_ETH_1 = 30
    NODE_ETH_2 = 31
    NODE_ETH_3 = 32
    NODE_UART_0 = 33
    NODE_UART_1 = 34
    NODE_SPI_0 = 35
    NODE_SPI_1 = 36
    NODE_I2C_0 = 37
    NODE_I2C_1 = 38
    NODE_SD_0 = 39
    NODE_SD_1 = 40
    NODE_DP = 41
    NODE_GDMA = 42
    NODE_ADMA = 43
    NODE_NAND = 44
    NODE_QSPI = 45
    NODE_GPIO = 46
    NODE_CAN_0 = 47
    NODE_CAN_1 = 48
    NODE_EXTERN = 49
    NODE_APLL = 50
    NODE_VPLL = 51
    NODE_DPLL = 52
    NODE_RPLL = 53
    NODE_IOPLL = 54
    NODE_DDR = 55
    NODE_IPI_APU = 56
    NODE_IPI_RPU_0 = 57
    NODE_GPU = 58
    NODE_PCIE = 59
    NODE_PCAP = 60
    NODE_RTC = 61
    NODE_LPD = 62
    NODE_VCU = 63
    NODE_IPI_RPU_1 = 64
    NODE_IPI_PL_0 = 65
    NODE_IPI_PL_1 = 66
    NODE_IPI_PL_2 = 67
    NODE_IPI_PL_3 = 68
    NODE_PL = 69
    NODE_GEM_TSU = 70
    NODE_SWDT_0 = 71
    NODE_SWDT_1 = 72
    NODE_CSU = 73
    NODE_PJTAG = 74
    NODE_TRACE = 75
    NODE_TESTSCAN = 76
    NODE_PMU = 77


# Node names as board files spell devices: the PmNode name without NODE_.
NODES: Final = {n.name.removeprefix("NODE_"): n.value for n in PmNode}
NODE_NAMES: Final = {v: k for k, v in NODES.items()}
NODE_APU: Final = 1
NODE_APU_CORES: Final = (2, 3, 4, 5)

CAP_ACCESS: Final = 0x1
CAP_CONTEXT: Final = 0x2
CAP_WAKEUP: Final = 0x4
CAP_UNUSABLE: Final = 0x8
CAPS_VALID: Final = CAP_ACCESS | CAP_CONTEXT | CAP_WAKEUP | CAP_UNUSABLE
MAX_QOS: Final = 100
ACKS: Final = (1, 2, 3)  # REQ_ACK_NO, REQ_ACK_BLOCKING, REQ_ACK_NON_BLOCKING
RESET_ACTIONS: Final = (0, 1, 2)  # RELEASE, ASSERT, PULSE
SHUTDOWN_TYPE_SHUTDOWN: Final = 0
SHUTDOWN_TYPE_RESET: Final = 1
SHUTDOWN_TYPE_SETSCOPE_ONLY: Final = 2
SHUTDOWN_SUBTYPE_SYSTEM: Final = 2  # SUBSYSTEM 0, PS_ONLY 1, SYSTEM 2
# Processor unit states (GET_NODE_STATUS of a PU).
PROC_FORCEDOFF: Final = 0
PROC_ACTIVE: Final = 1
PROC_SLEEP: Final = 2

# Which device grants a node: "If the guest has access to a device's registers, we
# give the guest access to PM API calls that affect that device" (Xilinx mediator,
# pm_node_access). A device is named by its node name as in board files.
_GRANTS: Final = {
    "RPU": "RPU", "RPU_0": "RPU", "RPU_1": "RPU", "IPI_RPU_0": "RPU",
    "GPU": "GPU", "GPU_PP_0": "GPU", "GPU_PP_1": "GPU",
    "DP": "DP", "VPLL": "DP", "RPLL": "DP",
    **{n: n for n in (
        "USB_0", "USB_1", "TTC_0", "TTC_1", "TTC_2", "TTC_3", "SATA", "ETH_0", "ETH_1",
        "ETH_2", "ETH_3", "UART_0", "UART_1", "SPI_0", "SPI_1", "I2C_0", "I2C_1", "SD_0",
        "SD_1", "GDMA", "ADMA", "NAND", "QSPI", "GPIO", "CAN_0", "CAN_1", "PCIE", "RTC",
        "TCM_0_A", "TCM_0_B", "TCM_1_A", "TCM_1_B", "SWDT_1",
    )},
}  # fmt: skip
NODE_GRANT: Final = {NODES[node]: device for node, device in _GRANTS.items()}
# Nodes only the hardware domain may touch (no device grants them).
HWDOM_NODES: Final = frozenset(NODES[n] for n in ("UNKNOWN", "EXTERN", "DDR", "IPI_APU",
                                                    "PCAP", "LPD", "PL"))  # fmt: skip

# Reset lines (Linux enum zynqmp_pm_reset; 1000..1119).
RESET_FIRST: Final = 1000
RESET_LAST: Final = 1119
_RESETS: Final = (
    "PCIE_CFG PCIE_BRIDGE PCIE_CTRL DP SWDT_CRF AFI_FM5 AFI_FM4 AFI_FM3 AFI_FM2 AFI_FM1 "
    "AFI_FM0 GDMA GPU_PP1 GPU_PP0 GPU GT SATA ACPU3_PWRON ACPU2_PWRON ACPU1_PWRON "
    "ACPU0_PWRON APU_L2 ACPU3 ACPU2 ACPU1 ACPU0 DDR APM_FPD SOFT GEM0 GEM1 GEM2 GEM3 QSPI "
    "UART0 UART1 SPI0 SPI1 SDIO0 SDIO1 CAN0 CAN1 I2C0 I2C1 TTC0 TTC1 TTC2 TTC3 SWDT_CRL "
    "NAND ADMA GPIO IOU_CC TIMESTAMP RPU_R50 RPU_R51 RPU_AMBA OCM RPU_PGE USB0_CORERESET "
    "USB1_CORERESET USB0_HIBERRESET USB1_HIBERRESET USB0_APB USB1_APB IPI APM_LPD RTC SYSMON "
    "AFI_FM6 LPD_SWDT FPD RPU_DBG1 RPU_DBG0 DBG_LPD DBG_FPD APLL DPLL VPLL IOPLL RPLL "
    + " ".join(f"GPO3_PL_{i}" for i in range(32))
    + " RPU_LS PS_ONLY PL PS_PL0 PS_PL1 PS_PL2 PS_PL3"
).split()
RESETS: Final = {name: RESET_FIRST + i for i, name in enumerate(_RESETS)}
# pm_reset_access: the device granting each reset line; "hwdom" for the hardware
# domain only; lines absent here (ACPUs, APU_L2, DDR, PLLs) are nobody's.
_RESET_GRANTS: Final = {
    "PCIE_CFG": "PCIE", "PCIE_BRIDGE": "PCIE", "PCIE_CTRL": "PCIE", "DP": "DP",
    "SWDT_CRF": "SWDT_1", "GDMA": "GDMA", "GPU_PP1": "GPU", "GPU_PP0": "GPU", "GPU": "GPU",
    "SATA": "SATA", "GEM0": "ETH_0", "GEM1": "ETH_1", "GEM2": "ETH_2", "GEM3": "ETH_3",
    "QSPI": "QSPI", "UART0": "UART_0", "UART1": "UART_1", "SPI0": "SPI_0", "SPI1": "SPI_1",
    "SDIO0": "SD_0", "SDIO1": "SD_1", "CAN0": "CAN_0", "CAN1": "CAN_1", "I2C0": "I2C_0",
    "I2C1": "I2C_1", "TTC0": "TTC_0", "TTC1": "TTC_1", "TTC2": "TTC_2", "TTC3": "TTC_3",
    "SWDT_CRL": "SWDT_1", "NAND": "NAND", "ADMA": "ADMA", "GPIO": "GPIO",
    "RPU_R50": "RPU", "RPU_R51": "RPU", "RPU_AMBA": "RPU", "RPU_PGE": "RPU",
    "USB0_CORERESET": "USB_0", "USB0_HIBERRESET": "USB_0", "USB0_APB": "USB_0",
    "USB1_CORERESET": "USB_1", "USB1_HIBERRESET": "USB_1", "USB1_APB": "USB_1",
    "RTC": "RTC", "LPD_SWDT": "SWDT_1", "RPU_DBG1": "RPU", "RPU_DBG0": "RPU", "RPU_LS": "RPU",
    **dict.fromkeys(
        ["AFI_FM5", "AFI_FM4", "AFI_FM3", "AFI_FM2", "AFI_FM1", "AFI_FM0", "GT", "APM_FPD",
         "SOFT", "IOU_CC", "TIMESTAMP", "OCM", "IPI", "APM_LPD", "SYSMON", "AFI_FM6", "FPD",
         "DBG_LPD", "DBG_FPD", "PS_ONLY", "PL", *(f"GPO3_PL_{i}" for i in range(32))],
        "hwdom",
    ),
}  # fmt: skip
RESET_GRANT: Final = {RESETS[name]: grant for name, grant in _RESET_GRANTS.items()}

# enum clock_id (TF-A pm_api_clock.h), output clocks in order.
CLOCK_NAMES: Final = (
    "IOPLL RPLL APLL DPLL VPLL IOPLL_TO_FPD RPLL_TO_FPD APLL_TO_LPD DPLL_TO_LPD VPLL_TO_LPD "
    "ACPU ACPU_HALF DBG_FPD DBG_LPD DBG_TRACE DBG_TSTMP DP_VIDEO_REF DP_AUDIO_REF DP_STC_REF "
    "GDMA_REF DPDMA_REF DDR_REF SATA_REF PCIE_REF GPU_REF GPU_PP0_REF GPU_PP1_REF TOPSW_MAIN "
    "TOPSW_LSBUS GTGREF0_REF LPD_SWITCH LPD_LSBUS USB0_BUS_REF USB1_BUS_REF USB3_DUAL_REF "
    "USB0 USB1 CPU_R5 CPU_R5_CORE CSU_SPB CSU_PLL PCAP IOU_SWITCH GEM_TSU_REF GEM_TSU GEM0_TX "
    "GEM1_TX GEM2_TX GEM3_TX GEM0_RX GEM1_RX GEM2_RX GEM3_RX QSPI_REF SDIO0_REF SDIO1_REF "
    "UART0_REF UART1_REF SPI0_REF SPI1_REF NAND_REF I2C0_REF I2C1_REF CAN0_REF CAN1_REF CAN0 "
    "CAN1 DLL_REF ADMA_REF TIMESTAMP_REF AMS_REF PL0_REF PL1_REF PL2_REF PL3_REF FPD_WDT "
    "IOPLL_INT IOPLL_PRE_SRC IOPLL_HALF IOPLL_INT_MUX IOPLL_POST_SRC RPLL_INT RPLL_PRE_SRC "
    "RPLL_HALF RPLL_INT_MUX RPLL_POST_SRC APLL_INT APLL_PRE_SRC APLL_HALF APLL_INT_MUX "
    "APLL_POST_SRC DPLL_INT DPLL_PRE_SRC DPLL_HALF DPLL_INT_MUX DPLL_POST_SRC VPLL_INT "
    "VPLL_PRE_SRC VPLL_HALF VPLL_INT_MUX VPLL_POST_SRC CAN0_MIO CAN1_MIO ACPU_FULL GEM0_REF "
    "GEM1_REF GEM2_REF GEM3_REF GEM0_REF_UNGATED GEM1_REF_UNGATED GEM2_REF_UNGATED "
    "GEM3_REF_UNGATED LPD_WDT"
).split()
CLOCKS: Final = {name: i for i, name in enumerate(CLOCK_NAMES)}
CLOCK_END: Final = len(CLOCK_NAMES)  # clock IDs are 0..CLOCK_END-1 (Xen lets CLOCK_END through)
# PLL clocks pass through: no device is bound to them (clock_id_plls).
PLL_CLOCKS: Final = frozenset(CLOCKS[c] for c in (
    "RPLL VPLL RPLL_TO_FPD VPLL_TO_LPD CSU_PLL IOPLL_INT IOPLL_PRE_SRC IOPLL_INT_MUX "
    "IOPLL_POST_SRC RPLL_INT RPLL_PRE_SRC RPLL_INT_MUX RPLL_POST_SRC VPLL_INT VPLL_PRE_SRC "
    "VPLL_INT_MUX VPLL_POST_SRC").split())  # fmt: skip
# pm_clock_node_map: every node a clock drives; a domain may control the clock
# only when it may access every one of them.
_CLOCK_NODES: Final = {
    "DP_VIDEO_REF": "DP", "DP_AUDIO_REF": "DP", "DP_STC_REF": "DP", "GDMA_REF": "GDMA",
    "DPDMA_REF": "DP", "SATA_REF": "SATA", "PCIE_REF": "PCIE", "GPU_REF": "GPU",
    "GPU_PP0_REF": "GPU", "GPU_PP1_REF": "GPU", "TOPSW_LSBUS": "DDR",
    "LPD_LSBUS": "TTC_0 TTC_1 TTC_2 TTC_3", "USB0_BUS_REF": "USB_0", "USB1_BUS_REF": "USB_1",
    "USB3_DUAL_REF": "USB_0 USB_1", "CPU_R5": "RPU", "CPU_R5_CORE": "RPU", "PCAP": "PCAP",
    "GEM_TSU_REF": "ETH_0 ETH_1 ETH_2 ETH_3", "GEM_TSU": "ETH_0 ETH_1 ETH_2 ETH_3",
    "GEM0_TX": "ETH_0", "GEM1_TX": "ETH_1", "GEM2_TX": "ETH_2", "GEM3_TX": "ETH_3",
    "GEM0_RX": "ETH_0", "GEM1_RX": "ETH_1", "GEM2_RX": "ETH_2", "GEM3_RX": "ETH_3",
    "QSPI_REF": "QSPI", "SDIO0_REF": "SD_0", "SDIO1_REF": "SD_1", "UART0_REF": "UART_0",
    "UART1_REF": "UART_1", "SPI0_REF": "SPI_0", "SPI1_REF": "SPI_1", "NAND_REF": "NAND",
    "I2C0_REF": "I2C_0", "I2C1_REF": "I2C_1", "CAN0_REF": "CAN_0", "CAN1_REF": "CAN_1",
    "CAN0": "CAN_0", "CAN1": "CAN_1", "DLL_REF": "SD_0 SD_1", "ADMA_REF": "ADMA",
    "AMS_REF": "LPD", "PL0_REF": "PL", "PL1_REF": "PL", "PL2_REF": "PL", "PL3_REF": "PL",
    "CAN0_MIO": "CAN_0", "CAN1_MIO": "CAN_1", "GEM0_REF": "ETH_0", "GEM1_REF": "ETH_1",
    "GEM2_REF": "ETH_2", "GEM3_REF": "ETH_3", "GEM0_REF_UNGATED": "ETH_0",
    "GEM1_REF_UNGATED": "ETH_1", "GEM2_REF_UNGATED": "ETH_2", "GEM3_REF_UNGATED": "ETH_3",
    "LPD_WDT": "SWDT_1",
}  # fmt: skip
CLOCK_NODES: Final = {
    CLOCKS[clock]: tuple(NODES[n] for n in nodes.split()) for clock, nodes in _CLOCK_NODES.items()
}
PLL_NODES: Final = range(NODES["APLL"], NODES["IOPLL"] + 1)

# TF-A ioctl ids a domU may use (xilinx-eemi.c): reading PLL fractional mode, and
# the SD tap-delay and DLL controls of an SD node it owns.
IOCTL_SD_DLL_RESET: Final = 6
IOCTL_SET_SD_TAPDELAY: Final = 7
IOCTL_GET_PLL_FRAC_MODE: Final = 9
IOCTL_REGISTER_SGI: Final = 25


# IOU_SLCR and PMU_GLOBAL registers reachable with PM_MMIO_READ / PM_MMIO_WRITE
# (pm_mmio_access): (start, end exclusive or None for one register, mask or 0 for
# all bits, granting device or "hwdom", read-only).
IOU_SLCR: Final = 0xFF18_0000
PMU_GLOBAL: Final = 0xFFD8_0000


@dataclass(frozen=True, slots=True)
class MmioRule:
    start: int
    end: int | None
    mask: int
    grant: str
    readonly: bool = False


MMIO_RULES: Final = (
    MmioRule(IOU_SLCR + 0x000, IOU_SLCR + 0x208, 0, "hwdom"),  # MIO pins
    MmioRule(IOU_SLCR + 0x310, None, 0x1, "SD_0"),  # CTRL_REG_SD
    MmioRule(IOU_SLCR + 0x310, None, 0x1 << 15, "SD_1"),
    MmioRule(IOU_SLCR + 0x314, IOU_SLCR + 0x35C, 0x3FF, "SD_0"),  # SD_ITAPDLY..SD_CDN_CTRL
    MmioRule(IOU_SLCR + 0x314, IOU_SLCR + 0x35C, 0x3FF << 16, "SD_1"),
    MmioRule(IOU_SLCR + 0x360, None, 0x3 << 0, "ETH_0"),  # GEM_CTRL
    MmioRule(IOU_SLCR + 0x360, None, 0x3 << 2, "ETH_1"),
    MmioRule(IOU_SLCR + 0x360, None, 0x3 << 4, "ETH_2"),
    MmioRule(IOU_SLCR + 0x360, None, 0x3 << 6, "ETH_3"),
    MmioRule(IOU_SLCR + 0x390, None, 0x3, "NAND"),  # IOU_TAPDLY_BYPASS
    MmioRule(IOU_SLCR + 0x390, None, 0x1 << 2, "QSPI"),
    *(
        MmioRule(IOU_SLCR + 0x400, None, 0xF << (4 * i), dev)  # IOU_COHERENT_CTRL
        for i, dev in enumerate(
            ("ETH_0", "ETH_1", "ETH_2", "ETH_3", "SD_0", "SD_1", "NAND", "QSPI")
        )
    ),
    MmioRule(IOU_SLCR + 0x404, None, 0, "hwdom"),  # VIDEO_PSS_CLK_SEL
    *(
        MmioRule(IOU_SLCR + 0x500 + 4 * i, None, 0, dev)  # IOU_RAM_*
        for i, dev in enumerate(
            ("ETH_0", "ETH_1", "ETH_2", "ETH_3", "SD_0", "SD_1", "CAN_0", "CAN_1", "QSPI", "NAND")
        )
    ),
    # PWR_STATE and the general storage registers: read-only, and (node 0 in the
    # Xilinx table) only the hardware domain's, which may read anything anyway.
    MmioRule(PMU_GLOBAL + 0x100, None, 0, "hwdom", readonly=True),
    MmioRule(PMU_GLOBAL + 0x30, PMU_GLOBAL + 0x70, 0, "hwdom", readonly=True),
)


class Verdict(Enum):
    ALLOW = "allow"  # forward to the firmware
    DENY = "deny"  # XST_PM_NO_ACCESS, firmware untouched
    INVALID = "invalid"  # the mediator's own argument check failed
    HANDLED = "handled"  # answered by the mediator (virtualised), firmware untouched


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    status: int = PmStatus.SUCCESS
    reason: str = ""
    mask: int | None = None  # MMIO_WRITE: the bits the domain may write


@dataclass(frozen=True, slots=True)
class PmCall:
    """A decoded EEMI call: the API and its 32-bit arguments."""

    api: int
    args: tuple[int, int, int, int, int]

    @property
    def arg0(self) -> int:
        return self.args[0]


def decode(function_id: int, regs: tuple[int, int, int]) -> PmCall | None:
    """An EEMI call from a SiP function ID and x1..x3, or None when it is not one."""
    fid = function_id & smccc.MASK32
    if fid & ~(smccc.SMC64_BIT | SIP_FUNCTION_MASK) != PM_SIP_SVC_32:
        return None
    x1, x2, x3 = regs
    if not fid & smccc.SMC64_BIT:
        # SMC32: the upper halves of the registers are not the caller's to use.
        x1, x2, x3 = x1 & smccc.MASK32, x2 & smccc.MASK32, x3 & smccc.MASK32
    args = (x1 & smccc.MASK32, x1 >> 32, x2 & smccc.MASK32, x2 >> 32, x3 & smccc.MASK32)
    return PmCall(fid & SIP_FUNCTION_MASK, args)


def encode(status: int, v1: int = 0, v2: int = 0, v3: int = 0) -> tuple[int, int, int, int]:
    """x0 = status | payload1 << 32, x1 = payload2 | payload3 << 32 (TF-A SMC_RET2)."""
    m = smccc.MASK32
    return ((status & m) | (v1 & m) << 32, (v2 & m) | (v3 & m) << 32, 0, 0)


@dataclass(frozen=True, slots=True)
class Rights:
    """What the calling domain holds: enough to decide any EEMI call."""

    domain_id: int
    hardware: bool
    vcpus: int
    owners: Mapping[str, int | None]  # board device -> owning domain id
    # Whether a clock is enabled now (the firmware's state; read only for CLOCK_ENABLE).
    clock_on: Callable[[int], bool]

    def device(self, name: str) -> bool:
        """Xilinx's pm_check_access with ownership for iomem permission: the
        owner has it; the hardware domain has every device nobody was given."""
        if name not in self.owners:
            return self.hardware
        owner = self.owners[name]
        return owner == self.domain_id or (owner is None and self.hardware)

    def node(self, node: int) -> bool:
        if node in HWDOM_NODES:
            return self.hardware
        grant = NODE_GRANT.get(node)
        return grant is not None and self.device(grant)

    def reset(self, reset: int) -> bool:
        grant = RESET_GRANT.get(reset)
        if grant is None:
            return False
        return self.hardware if grant == "hwdom" else self.device(grant)

    def clock(self, clock: int) -> bool:
        """domain_has_clock_access: every node the clock drives must be ours."""
        access = self.hardware
        for node in CLOCK_NODES.get(clock, ()):
            if not self.node(node):
                return False
            access = True
        return access

    def own_core(self, node: int) -> bool:
        """NODE_APU_n names the caller's own vCPU n (the mediator virtualises the APU)."""
        return node in NODE_APU_CORES and node - NODE_APU_CORES[0] < self.vcpus

    def mmio(self, write: bool, address: int, mask: int) -> int | None:
        """domain_mediate_mmio_access: None when denied, else the bits a write may
        change (the Xilinx code computes this mask and then forwards the original
        one; here the narrowed mask is what reaches the firmware)."""
        if not write and self.hardware:
            return mask
        allowed = False
        writable = 0
        for rule in MMIO_RULES:
            inside = (
                rule.start <= address < rule.end if rule.end is not None else address == rule.start
            )
            if not inside or (write and rule.readonly):
                continue
            if rule.grant == "hwdom" and not self.hardware:
                continue
            if rule.grant == "hwdom" or self.device(rule.grant):
                allowed = True
                if not write:
                    break
                writable |= rule.mask or smccc.MASK32
                if writable == smccc.MASK32:
                    break
            elif not rule.mask:
                return None  # the whole register belongs to someone else
        if not allowed:
            return None
        return mask & writable if write else mask


ALLOW: Final = Decision(Verdict.ALLOW)
_NODE_APIS: Final = frozenset({PmApi.GET_NODE_STATUS, PmApi.REQ_SUSPEND, PmApi.FORCE_POWERDOWN,
                               PmApi.REQ_WAKEUP, PmApi.REQ_NODE, PmApi.RELEASE_NODE,
                               PmApi.SET_REQUIREMENT, PmApi.SET_MAX_LATENCY})  # fmt: skip
_ALWAYS: Final = frozenset({PmApi.GET_API_VERSION, PmApi.GET_CHIPID,
                            PmApi.GET_TRUSTZONE_VERSION, PmApi.QUERY_DATA,
                            PmApi.REGISTER_NOTIFIER, PmApi.GET_CALLBACK_DATA,
                            PmApi.FEATURE_CHECK})  # fmt: skip
_HWDOM_ONLY: Final = frozenset({PmApi.INIT_FINALIZE, PmApi.SET_CONFIGURATION, PmApi.FPGA_LOAD,
                                PmApi.FPGA_GET_STATUS, PmApi.SECURE_SHA, PmApi.SECURE_RSA,
                                PmApi.PINCTRL_REQUEST, PmApi.PINCTRL_RELEASE,
                                PmApi.PINCTRL_GET_FUNCTION, PmApi.PINCTRL_SET_FUNCTION,
                                PmApi.PINCTRL_CONFIG_PARAM_GET, PmApi.PINCTRL_CONFIG_PARAM_SET,
                                PmApi.SET_SUSPEND_MODE})  # fmt: skip
_CLOCK_CONTROL: Final = frozenset({PmApi.CLOCK_ENABLE, PmApi.CLOCK_DISABLE,
                                   PmApi.CLOCK_SETDIVIDER, PmApi.CLOCK_SETPARENT})  # fmt: skip
_CLOCK_READ: Final = frozenset({PmApi.CLOCK_GETSTATE, PmApi.CLOCK_GETDIVIDER,
                                PmApi.CLOCK_GETPARENT})  # fmt: skip


def _deny(why: str) -> Decision:
    return Decision(Verdict.DENY, PmStatus.NO_ACCESS, why)


def _invalid(status: PmStatus, why: str) -> Decision:
    return Decision(Verdict.INVALID, status, why)


def decide(call: PmCall, rights: Rights) -> Decision:
    """Whether ``rights``' domain may make ``call``: the whole mediation policy."""
    api, arg0 = call.api, call.arg0
    if api in _ALWAYS:
        return ALLOW
    if api in (PmApi.SELF_SUSPEND, PmApi.ABORT_SUSPEND):
        # "We can't allow CPUs to suspend without Xen knowing about it": the
        # suspend itself goes through PSCI; these are accepted and ignored.
        return Decision(Verdict.HANDLED, reason="suspend is mediated through PSCI")
    if api in _NODE_APIS:
        if arg0 >= NODE_MAX:
            return _invalid(PmStatus.INVALID_NODE, f"node {arg0} does not exist")
        if arg0 == NODE_APU or arg0 in NODE_APU_CORES:
            # The APU is virtualised: a domain sees its own vCPUs, and may do to
            # them what PSCI lets it do (query, wake), never power them off.
            if api == PmApi.GET_NODE_STATUS and (arg0 == NODE_APU or rights.own_core(arg0)):
                return Decision(Verdict.HANDLED)
            if api == PmApi.REQ_WAKEUP and rights.own_core(arg0):
                return Decision(Verdict.HANDLED)
            return _deny(f"{NODE_NAMES[arg0]} is a processor the domain cannot control")
        if not rights.node(arg0):
            return _deny(f"node {NODE_NAMES[arg0]} is not the domain's")
        return ALLOW
    if api == PmApi.SET_WAKEUP_SOURCE:
        target, source, enable = arg0, call.args[1], call.args[2]
        if target != NODE_APU and not rights.own_core(target):
            return _deny("only the domain's own processor can be woken")
        if source >= NODE_MAX:
            return _invalid(PmStatus.INVALID_NODE, f"node {source} does not exist")
        if not rights.node(source):
            return _deny(f"node {NODE_NAMES[source]} is not the domain's")
        if enable not in (0, 1):
            return _invalid(PmStatus.INVALID_PARAM, f"enable must be 0 or 1, got {enable}")
        return ALLOW
    if api in (PmApi.RESET_ASSERT, PmApi.RESET_GET_STATUS):
        if not RESET_FIRST <= arg0 <= RESET_LAST:
            return _invalid(PmStatus.INVALID_PARAM, f"reset {arg0} does not exist")
        return ALLOW if rights.reset(arg0) else _deny(f"reset {arg0} is not the domain's")
    if api in (PmApi.MMIO_READ, PmApi.MMIO_WRITE):
        write = api == PmApi.MMIO_WRITE
        mask = call.args[1] if write else smccc.MASK32
        allowed = rights.mmio(write, arg0, mask)
        if allowed is None:
            return _deny(f"register {arg0:#x} is not the domain's")
        return Decision(Verdict.ALLOW, mask=allowed)
    if api in _CLOCK_CONTROL or api in _CLOCK_READ:
        if arg0 >= CLOCK_END:
            return _invalid(PmStatus.INVALID_PARAM, f"clock {arg0} does not exist")
        if api == PmApi.CLOCK_ENABLE and rights.clock_on(arg0):
            # xilinx-eemi.c checks this before any access rule: an enabled clock may
            # be "enabled" again by anyone (critical clocks are shared with devices
            # the guest cannot see).
            return Decision(Verdict.HANDLED, reason="the clock is already on")
        if api in _CLOCK_READ or arg0 in PLL_CLOCKS or rights.clock(arg0):
            return ALLOW
        return _deny(f"clock {arg0} drives a node that is not the domain's")
    if api in (PmApi.CLOCK_SETRATE, PmApi.CLOCK_GETRATE):
        return Decision(Verdict.HANDLED, PmStatus.NOTSUPPORTED, "rates go through dividers")
    if api in (PmApi.PLL_GET_PARAMETER, PmApi.PLL_GET_MODE, PmApi.PLL_SET_PARAMETER,
               PmApi.PLL_SET_MODE):  # fmt: skip
        if arg0 not in PLL_NODES:
            return _invalid(PmStatus.INVALID_PARAM, f"node {arg0} is not a PLL")
        if api in (PmApi.PLL_SET_PARAMETER, PmApi.PLL_SET_MODE) and not rights.node(arg0):
            return _deny(f"PLL {NODE_NAMES[arg0]} is not the domain's")
        return ALLOW
    if api == PmApi.IOCTL:
        ioctl = call.args[1]
        if ioctl == IOCTL_REGISTER_SGI:
            return Decision(Verdict.HANDLED, PmStatus.NOTSUPPORTED, "no SGI callbacks")
        if rights.hardware or ioctl == IOCTL_GET_PLL_FRAC_MODE:
            return ALLOW
        if ioctl in (IOCTL_SET_SD_TAPDELAY, IOCTL_SD_DLL_RESET) and rights.node(arg0):
            return ALLOW
        return _deny(f"ioctl {ioctl} on node {arg0} is not the domain's")
    if api in _HWDOM_ONLY:
        return ALLOW if rights.hardware else _deny("only the hardware domain may")
    if api == PmApi.SYSTEM_SHUTDOWN:
        if not rights.hardware:
            return _deny("only the hardware domain may shut the system down")
        return Decision(Verdict.HANDLED)
    # Anything else the firmware may know: the hardware domain's calls go through,
    # a domU's are unknown to it (Xen: "Unhandled PM Call").
    if rights.hardware:
        return ALLOW
    return Decision(Verdict.HANDLED, -1, "not a call a domU may make")
