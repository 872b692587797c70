"""EEMI mediation through the Mediator, over the emulated ZynqMP PMU firmware.

The contract is docs/eemi-access.md: its decision table (who may make which
call on which node, reset line, clock or register), the calling convention
(SMC64 / SMC32 packing), what the firmware does with an allowed call, and the
Control-level device hand-over. Expected values are literals written from that
page (and the default board: dom0 owns UART_0, SD_0, ETH_3, GPU; domu1 UART_1,
ETH_0; domu2 USB_0, SD_1), never the tables or ``decide`` of the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.eemi import PmApi, PmCall, decode, encode
from mediatord.core.effects import (
    DeviceAssigned,
    DomainEvent,
    FirmwareCall,
    Shutdown,
    ShutdownReason,
    Start,
)
from mediatord.core.mediator import (
    Changed,
    Created,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import DomainState, HostState, VcpuPower

BOARD = default_board()

SIP64 = 0xC200_0000
SIP32 = 0x8200_0000
MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF
UNK = MASK64  # x0 of a call nobody implements (SMCCC NOT_SUPPORTED)

# XST_PM status codes
SUCCESS = 0
ARGS = 1
NOTSUPPORTED = 4
INVALID_PARAM = 15
NO_ACCESS = 2002
INVALID_NODE = 2003
DOUBLE_REQ = 2004
NO_FEATURE = 2008

# EEMI API ids
GET_API_VERSION = 1
GET_NODE_STATUS = 3
SET_WAKEUP_SOURCE = 11
SYSTEM_SHUTDOWN = 12
REQ_NODE = 13
RELEASE_NODE = 14
SET_REQUIREMENT = 15
SET_MAX_LATENCY = 16
REQ_SUSPEND = 6
REQ_WAKEUP = 10
RESET_ASSERT = 17
RESET_GET_STATUS = 18
MMIO_WRITE = 19
MMIO_READ = 20
INIT_FINALIZE = 21
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
CLOCK_SETPARENT = 43
CLOCK_GETPARENT = 44
PLL_SET_PARAMETER = 48
PLL_GET_PARAMETER = 49
PLL_SET_MODE = 50
PLL_GET_MODE = 51
FEATURE_CHECK = 63

# PSCI function IDs (DEN0022)
CPU_SUSPEND_64 = 0xC400_0001
CPU_OFF = 0x8400_0002
SYSTEM_SUSPEND_64 = 0xC400_000E

# Nodes, islands, IRQs of the default board
NODE_APU = 1
NODE_APU_1 = 3
NODE_APU_2 = 4
FPD = 10
LPD = 62
USB_0, ETH_0, ETH_3, UART_0, UART_1, SPI_0, SPI_1, I2C_0 = 22, 29, 32, 33, 34, 35, 36, 37
SD_0, SD_1, GPU, DDR, RTC, OCM_BANK_0 = 39, 40, 58, 55, 61, 11
BOARD_NODES = (USB_0, ETH_0, ETH_3, UART_0, UART_1, SD_0, SD_1, GPU)
IRQ_UART_0, IRQ_UART_1, IRQ_USB_0 = 53, 54, 97
RESET_UART1 = 1035
CLOCK_UART1_REF = 57
GEM_CTRL = 0xFF18_0360
CTRL_REG_SD = 0xFF18_0310
RAM_BASE = 0x4000_0000
ENTRY = 0x4008_0000

DOMAIN_ID = {"dom0": 0, "domu1": 1, "domu2": 2}
CALLERS = ("domu1", "domu2", "dom0")


# ------------------------------------------------------------------- helpers


def boot() -> Mediator:
    m, _ = Mediator.boot(BOARD, create_platform(BOARD, ManualClock()))
    return m


def pack(*args: int) -> list[int]:
    """Linux's zynqmp_pm_invoke_fn: x1 = arg1 << 32 | arg0, x2 = arg3 << 32 | arg2, x3 = arg4."""
    a = (*args, 0, 0, 0, 0, 0)[:5]
    return [a[1] << 32 | a[0], a[3] << 32 | a[2], a[4]]


def returned(outcome: object) -> Returned:
    assert isinstance(outcome, Returned), outcome
    return outcome


def pm(m: Mediator, domain: str, api: int, *args: int, vcpu: int = 0) -> Returned:
    """An SMC64 EEMI call of ``domain``'s vCPU ``vcpu``."""
    return returned(m.call(domain, vcpu, SIP64 | api, pack(*args)))


def regs(m: Mediator, domain: str, api: int, *args: int, vcpu: int = 0) -> tuple[int, ...]:
    return pm(m, domain, api, *args, vcpu=vcpu).regs


def fw(m: Mediator) -> Any:
    """The emulated PMU firmware (mediatord.backends.zynqmp.pmu.Pmu)."""
    return m.platform.firmware


def slave_on(m: Mediator, node: int) -> bool:
    return bool(fw(m).state.slaves[node].on)


def verdicts(outcome: Returned) -> list[str]:
    return [e.verdict for e in outcome.effects if isinstance(e, FirmwareCall)]


def raised(outcome: object) -> Raised:
    assert isinstance(outcome, Raised), outcome
    return outcome


def changed(outcome: object) -> Changed:
    assert isinstance(outcome, Changed), outcome
    return outcome


def refused(outcome: object, reason: Refusal) -> None:
    assert isinstance(outcome, Refused), outcome
    assert outcome.reason is reason, outcome


def power_states(m: Mediator) -> dict[int, bool]:
    return {n: s.on for n, s in fw(m).state.slaves.items()}


class Unchanged:
    """Snapshots of the mediator's and the firmware's state, to compare with later."""

    def __init__(self, m: Mediator, snapshots: tuple[Any, Any] | None = None) -> None:
        self.m = m
        self.system, self.firmware = snapshots or (m.snapshot(), fw(m).snapshot())

    def check(self, system: bool = True) -> None:
        assert fw(self.m).state == self.firmware
        if system:
            assert self.m.system == self.system


_BOOTED: list[tuple[Any, Any]] = []


def booted_state() -> tuple[Any, Any]:
    """Snapshots of a freshly booted mediator and its firmware (boot is deterministic)."""
    if not _BOOTED:
        m = boot()
        _BOOTED.append((m.snapshot(), fw(m).snapshot()))
    return _BOOTED[0]


def fresh() -> tuple[Mediator, Unchanged]:
    """A freshly booted mediator, and its state before any call."""
    m = boot()
    return m, Unchanged(m, booted_state())


# --------------------------------------------- 1. the decision table as data

# What the doc says becomes of one call, per caller (domu1, domu2, dom0):
#   A<n>  allow: forwarded; the firmware's own answer (status n) comes back untouched
#   D     deny: x0 = 2002 and x1..x3 = 0; firmware and mediator state unchanged
#   I<n>  invalid: the mediator's argument check answers n; nothing changes
#   H<n>  handled by the mediator: regs = (n, 0, 0, 0); nothing changes
#   H<n>* handled, and the mediator's own state may change (a vCPU starts)
#   S     SUCCESS whoever asks, nothing changes (CLOCK_ENABLE of an enabled clock)
# n may be UNK: x0 = 0xFFFFFFFFFFFFFFFF.
T = object()  # where the target goes in an API's arguments

NODE_TARGETS = {
    "UART_1": 34,  # domu1's device
    "USB_0": 22,  # domu2's device
    "SD_0": 39,  # dom0's device
    "SPI_0": 35,  # not on the board: the hardware domain's
    "GPU_PP_0": 20,  # granted through GPU, dom0's
    "DDR": 55,  # hardware-domain-only
    "L2": 19,  # nobody's
    "78": 78,  # NODE_MAX
    "ffffffff": MASK32,
}
# "allow if owner, else deny"; node >= 78: XST_PM_INVALID_NODE.
NODE_RULE = {
    "UART_1": "A D D",
    "USB_0": "D A D",
    "SD_0": "D D A",
    "SPI_0": "D D A",
    "GPU_PP_0": "D D A",
    "DDR": "D D A",
    "L2": "D D D",
    "78": "I2003 I2003 I2003",
    "ffffffff": "I2003 I2003 I2003",
}
APU_TARGETS = {"APU": 1, "APU_0": 2, "APU_1": 3, "APU_2": 4, "APU_3": 5}
# The virtual APU: domUs have 2 vCPUs, dom0 4; vCPU 0 of each is on, the rest off.
APU_DENY = dict.fromkeys(APU_TARGETS, "D D D")
APU_STATUS = {
    "APU": "H0x100000000 H0x100000000 H0x100000000",  # ACTIVE (1) << 32
    "APU_0": "H0x100000000 H0x100000000 H0x100000000",  # vCPU 0 ACTIVE
    "APU_1": "H0 H0 H0",  # vCPU 1 FORCEDOFF (0)
    "APU_2": "D D H0",
    "APU_3": "D D H0",
}
APU_WAKEUP = {
    "APU": "D D D",
    "APU_0": "H0 H0 H0",  # already on: SUCCESS
    "APU_1": "H0* H0* H0*",  # off: starts
    "APU_2": "D D H0*",
    "APU_3": "D D H0*",
}
RESET_TARGETS = {
    "UART1": 1035,  # through UART_1 (domu1)
    "USB0_CORERESET": 1059,  # through USB_0 (domu2)
    "SDIO0": 1038,  # through SD_0 (dom0)
    "SPI0": 1036,  # through SPI_0 (not on the board)
    "GPU": 1014,  # through GPU (dom0)
    "SOFT": 1028,  # hardware-domain-only
    "ACPU0": 1025,  # nobody's
    "DDR": 1026,  # nobody's
    "999": 999,
    "1120": 1120,
    "ffffffff": MASK32,
}
RESET_RULE = {
    "UART1": "A0 D D",
    "USB0_CORERESET": "D A0 D",
    "SDIO0": "D D A0",
    "SPI0": "D D A0",
    "GPU": "D D A0",
    "SOFT": "D D A0",
    "ACPU0": "D D D",
    "DDR": "D D D",
    "999": "I15 I15 I15",
    "1120": "I15 I15 I15",
    "ffffffff": "I15 I15 I15",
}
CLOCK_TARGETS = {
    "UART1_REF": 57,  # drives UART_1 (domu1)
    "USB0_BUS_REF": 32,  # drives USB_0 (domu2)
    "SDIO0_REF": 54,  # drives SD_0 (dom0)
    "SPI0_REF": 58,  # drives SPI_0 (not on the board)
    "TOPSW_LSBUS": 28,  # drives DDR (hardware-domain-only)
    "DLL_REF": 67,  # drives SD_0 (dom0) and SD_1 (domu2): nobody owns both
    "ACPU": 10,  # drives no node: the hardware domain's
    "RPLL": 1,  # a PLL clock: everyone's
    "113": 113,  # the output clocks are 0..112
    "ffffffff": MASK32,
}
CLOCK_CONTROL = {
    "UART1_REF": "A0 D D",
    "USB0_BUS_REF": "D A0 D",
    "SDIO0_REF": "D D A0",
    "SPI0_REF": "D D A0",
    "TOPSW_LSBUS": "D D A0",
    "DLL_REF": "D D D",
    "ACPU": "D D A0",
    "RPLL": "A0 A0 A0",
    "113": "I15 I15 I15",
    "ffffffff": "I15 I15 I15",
}
# Every clock is enabled at boot: "CLOCK_ENABLE of an already-enabled clock: SUCCESS for anyone".
CLOCK_ENABLE_RULE = {
    **dict.fromkeys(list(CLOCK_TARGETS)[:8], "S S S"),
    "113": "I15 I15 I15",
    "ffffffff": "I15 I15 I15",
}
CLOCK_READ = {
    **dict.fromkeys(list(CLOCK_TARGETS)[:8], "A0 A0 A0"),
    "113": "I15 I15 I15",
    "ffffffff": "I15 I15 I15",
}
CLOCK_RATE = dict.fromkeys(CLOCK_TARGETS, "H4 H4 H4")
MMIO_TARGETS = {
    "IOU_RAM_GEM0": 0xFF18_0500,  # wholly ETH_0's (domu1)
    "IOU_RAM_SD1": 0xFF18_0514,  # wholly SD_1's (domu2)
    "IOU_RAM_SD0": 0xFF18_0510,  # wholly SD_0's (dom0)
    "IOU_RAM_GEM1": 0xFF18_0504,  # wholly ETH_1's (not on the board)
    "MIO_PIN_1": 0xFF18_0004,  # MIO pins: hardware-domain-only
    "PWR_STATE": 0xFFD8_0100,  # PMU_GLOBAL: hardware-domain-only, read-only
    "GEM_CTRL": 0xFF18_0360,  # 2 bits per GEM
    "CTRL_REG_SD": 0xFF18_0310,  # bit 0 SD_0, bit 15 SD_1
    "UART1_BASE": 0xFF01_0000,  # no register rule at all
    "ffffffff": MASK32,
}
MMIO_READ_RULE = {
    "IOU_RAM_GEM0": "A0 D A0",
    "IOU_RAM_SD1": "D A0 A0",
    "IOU_RAM_SD0": "D D A0",
    "IOU_RAM_GEM1": "D D A0",
    "MIO_PIN_1": "D D A0",
    "PWR_STATE": "D D A0",
    "GEM_CTRL": "A0 D A0",
    "CTRL_REG_SD": "D A0 A0",
    "UART1_BASE": "D D A0",
    "ffffffff": "D D A15",  # the hardware domain reads anything; the firmware refuses
}
MMIO_WRITE_RULE = {
    "IOU_RAM_GEM0": "A0 D D",
    "IOU_RAM_SD1": "D A0 D",
    "IOU_RAM_SD0": "D D A0",
    "IOU_RAM_GEM1": "D D A0",
    "MIO_PIN_1": "D D A0",
    "PWR_STATE": "D D D",
    "GEM_CTRL": "A0 D A0",
    "CTRL_REG_SD": "D A0 A0",
    "UART1_BASE": "D D D",
    "ffffffff": "D D D",
}
PLL_TARGETS = {
    "APLL": 50,
    "VPLL": 51,  # through DP (not on the board)
    "DPLL": 52,
    "RPLL": 53,  # through DP
    "IOPLL": 54,
    "UART_1": 34,  # not a PLL
    "DDR": 55,  # not a PLL
    "ffffffff": MASK32,
}
PLL_GET = {
    **dict.fromkeys(["APLL", "VPLL", "DPLL", "RPLL", "IOPLL"], "A0 A0 A0"),
    **dict.fromkeys(["UART_1", "DDR", "ffffffff"], "I15 I15 I15"),
}
PLL_SET = {
    "APLL": "D D D",
    "VPLL": "D D A0",
    "DPLL": "D D D",
    "RPLL": "D D A0",
    "IOPLL": "D D D",
    # The doc gives "node not a PLL: 15" in the PLL_GET row; the same check is assumed here.
    **dict.fromkeys(["UART_1", "DDR", "ffffffff"], "I15 I15 I15"),
}
# IOCTL SET_SD_TAPDELAY / SD_DLL_RESET: a domU needs the node; the firmware
# accepts them for SD_0 / SD_1 only (15 otherwise).
IOCTL_SD = {
    "UART_1": "A15 D A15",
    "USB_0": "D A15 A15",
    "SD_0": "D D A0",
    "SPI_0": "D D A15",
    "GPU_PP_0": "D D A15",
    "DDR": "D D A15",
    "L2": "D D A15",
    "78": "D D A15",
    "ffffffff": "D D A15",
}
PIN_RULE = {
    **dict.fromkeys(list(NODE_TARGETS)[:7], "D D A0"),
    "78": "D D A15",  # 78 MIO pins: 0..77
    "ffffffff": "D D A15",
}
FEATURE_CHECK_RULE = {
    **dict.fromkeys(["UART_1", "USB_0", "SD_0", "SPI_0", "GPU_PP_0", "L2"], "A0 A0 A0"),
    # FEATURE_CHECK(55 FPGA_GET_FEATURE_LIST), (78), (0xffffffff): no such call
    **dict.fromkeys(["DDR", "78", "ffffffff"], "A2008 A2008 A2008"),
}


def uniform(targets: dict[str, int], cells: str) -> dict[str, str]:
    return dict.fromkeys(targets, cells)


def allowing(rule: dict[str, str], status: int) -> dict[str, str]:
    """``rule`` with each bare A given the firmware's status."""
    return {
        target: " ".join(f"A{status}" if cell == "A" else cell for cell in cells.split())
        for target, cells in rule.items()
    }


NODE_WITH_INVALID_ANSWERS = {
    **uniform(NODE_TARGETS, "A0 A0 A0"),
    "78": "A2003 A2003 A2003",
    "ffffffff": "A2003 A2003 A2003",
}
HWDOM_ONLY = "D D A0"
UNHANDLED = "HUNK HUNK AUNK"  # domU: NOT_SUPPORTED; dom0: the firmware has no such call

# (label, api id, arguments with T for the target, targets, expected cells)
SPECS: list[tuple[str, int, tuple[Any, ...], dict[str, int], dict[str, str]]] = [
    # harmless queries
    ("GET_API_VERSION", 1, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "A0 A0 A0")),
    ("GET_CHIPID", 24, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "A0 A0 A0")),
    ("GET_TRUSTZONE_VERSION", 0xA03, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "A0 A0 A0")),
    ("QUERY_DATA", 35, (T, 0), NODE_TARGETS, uniform(NODE_TARGETS, "A15 A15 A15")),
    ("REGISTER_NOTIFIER", 5, (T, 1, 0, 1), NODE_TARGETS, NODE_WITH_INVALID_ANSWERS),
    ("GET_CALLBACK_DATA", 0xA01, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "A0 A0 A0")),
    ("FEATURE_CHECK", 63, (T,), NODE_TARGETS, FEATURE_CHECK_RULE),
    # suspend goes through PSCI
    ("SELF_SUSPEND", 7, (T, 0, 0, 0), NODE_TARGETS, uniform(NODE_TARGETS, "H0 H0 H0")),
    ("ABORT_SUSPEND", 9, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "H0 H0 H0")),
    # node calls; on a slave node the firmware refuses the processor calls (2003)
    ("GET_NODE_STATUS", 3, (T,), NODE_TARGETS, allowing(NODE_RULE, 0)),
    ("REQ_SUSPEND", 6, (T, 1, 0, 0), NODE_TARGETS, allowing(NODE_RULE, 2003)),
    ("FORCE_POWERDOWN", 8, (T, 1), NODE_TARGETS, allowing(NODE_RULE, 2003)),
    ("REQ_WAKEUP", 10, (T, 0, 0, 1), NODE_TARGETS, allowing(NODE_RULE, 2003)),
    ("REQ_NODE", 13, (T, 1, 100, 1), NODE_TARGETS, allowing(NODE_RULE, 0)),
    ("RELEASE_NODE", 14, (T,), NODE_TARGETS, allowing(NODE_RULE, 1)),
    ("SET_REQUIREMENT", 15, (T, 1, 100, 1), NODE_TARGETS, allowing(NODE_RULE, 1)),
    ("SET_MAX_LATENCY", 16, (T, 1000), NODE_TARGETS, allowing(NODE_RULE, 1)),
    # the virtual APU
    ("GET_NODE_STATUS@APU", 3, (T,), APU_TARGETS, APU_STATUS),
    ("REQ_WAKEUP@APU", 10, (T, 0, 0, 1), APU_TARGETS, APU_WAKEUP),
    ("REQ_SUSPEND@APU", 6, (T, 1, 0, 0), APU_TARGETS, APU_DENY),
    ("FORCE_POWERDOWN@APU", 8, (T, 1), APU_TARGETS, APU_DENY),
    ("REQ_NODE@APU", 13, (T, 1, 100, 1), APU_TARGETS, APU_DENY),
    ("RELEASE_NODE@APU", 14, (T,), APU_TARGETS, APU_DENY),
    ("SET_REQUIREMENT@APU", 15, (T, 1, 100, 1), APU_TARGETS, APU_DENY),
    ("SET_MAX_LATENCY@APU", 16, (T, 1000), APU_TARGETS, APU_DENY),
    # wake sources, for NODE_APU
    ("SET_WAKEUP_SOURCE", 11, (1, T, 1), NODE_TARGETS, allowing(NODE_RULE, 0)),
    # resets
    ("RESET_ASSERT", 17, (T, 1), RESET_TARGETS, RESET_RULE),
    ("RESET_GET_STATUS", 18, (T,), RESET_TARGETS, RESET_RULE),
    # registers
    ("MMIO_WRITE", 19, (T, MASK32, 0xA5A5_A5A5), MMIO_TARGETS, MMIO_WRITE_RULE),
    ("MMIO_READ", 20, (T,), MMIO_TARGETS, MMIO_READ_RULE),
    # clocks
    ("CLOCK_ENABLE", 36, (T,), CLOCK_TARGETS, CLOCK_ENABLE_RULE),
    ("CLOCK_DISABLE", 37, (T,), CLOCK_TARGETS, CLOCK_CONTROL),
    ("CLOCK_GETSTATE", 38, (T,), CLOCK_TARGETS, CLOCK_READ),
    ("CLOCK_SETDIVIDER", 39, (T, 4), CLOCK_TARGETS, CLOCK_CONTROL),
    ("CLOCK_GETDIVIDER", 40, (T,), CLOCK_TARGETS, CLOCK_READ),
    ("CLOCK_SETRATE", 41, (T, 1_000_000, 0), CLOCK_TARGETS, CLOCK_RATE),
    ("CLOCK_GETRATE", 42, (T,), CLOCK_TARGETS, CLOCK_RATE),
    ("CLOCK_SETPARENT", 43, (T, 1), CLOCK_TARGETS, CLOCK_CONTROL),
    ("CLOCK_GETPARENT", 44, (T,), CLOCK_TARGETS, CLOCK_READ),
    # PLLs
    ("PLL_SET_PARAMETER", 48, (T, 2, 0x1234), PLL_TARGETS, PLL_SET),
    ("PLL_GET_PARAMETER", 49, (T, 2), PLL_TARGETS, PLL_GET),
    ("PLL_SET_MODE", 50, (T, 2), PLL_TARGETS, PLL_SET),
    ("PLL_GET_MODE", 51, (T,), PLL_TARGETS, PLL_GET),
    # IOCTL (node, id, ...): no node is a PLL here, so GET_PLL_FRAC_MODE answers 15
    ("IOCTL_GET_PLL_FRAC_MODE", 34, (T, 9), NODE_TARGETS, uniform(NODE_TARGETS, "A15 A15 A15")),
    ("IOCTL_SET_SD_TAPDELAY", 34, (T, 7, 0, 0), NODE_TARGETS, IOCTL_SD),
    ("IOCTL_SD_DLL_RESET", 34, (T, 6, 0), NODE_TARGETS, IOCTL_SD),
    ("IOCTL_WRITE_GGS", 34, (T, 12, 1, 0x1234), NODE_TARGETS, uniform(NODE_TARGETS, "D D A0")),
    ("IOCTL_REGISTER_SGI", 34, (T, 25), NODE_TARGETS, uniform(NODE_TARGETS, "H4 H4 H4")),
    # the hardware domain's
    ("INIT_FINALIZE", 21, (T,), NODE_TARGETS, uniform(NODE_TARGETS, HWDOM_ONLY)),
    ("SET_CONFIGURATION", 2, (T,), NODE_TARGETS, uniform(NODE_TARGETS, HWDOM_ONLY)),
    ("FPGA_LOAD", 22, (T, 0, 0x1000, 0), NODE_TARGETS, uniform(NODE_TARGETS, HWDOM_ONLY)),
    ("FPGA_GET_STATUS", 23, (T,), NODE_TARGETS, uniform(NODE_TARGETS, HWDOM_ONLY)),
    ("SECURE_SHA", 26, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "D D A4")),
    ("SECURE_RSA", 27, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "D D A4")),
    ("PINCTRL_REQUEST", 28, (T,), NODE_TARGETS, PIN_RULE),
    ("PINCTRL_RELEASE", 29, (T,), NODE_TARGETS, PIN_RULE),
    ("PINCTRL_GET_FUNCTION", 30, (T,), NODE_TARGETS, PIN_RULE),
    ("PINCTRL_SET_FUNCTION", 31, (T, 1), NODE_TARGETS, PIN_RULE),
    ("PINCTRL_CONFIG_PARAM_GET", 32, (T, 1), NODE_TARGETS, PIN_RULE),
    ("PINCTRL_CONFIG_PARAM_SET", 33, (T, 1, 1), NODE_TARGETS, PIN_RULE),
    ("SET_SUSPEND_MODE", 0xA02, (T,), NODE_TARGETS, uniform(NODE_TARGETS, "D D A1")),
    # type = the target: never 0, 1 or 2, so 15
    ("SYSTEM_SHUTDOWN", 12, (T, 0), NODE_TARGETS, uniform(NODE_TARGETS, "D D H15")),
    # any other API id
    ("GET_OP_CHARACTERISTIC", 4, (T, 1), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("SECURE_RSA_AES", 25, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("SECURE_IMAGE", 45, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("FPGA_READ", 46, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("SECURE_AES", 47, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("REGISTER_ACCESS", 52, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("EFUSE_ACCESS", 53, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("FPGA_GET_VERSION", 54, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("FPGA_GET_FEATURE_LIST", 55, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("0x3e", 0x3E, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
    ("0xff01", 0xFF01, (T,), NODE_TARGETS, uniform(NODE_TARGETS, UNHANDLED)),
]


def _cases() -> list[Any]:
    cases = []
    for label, api, template, targets, rule in SPECS:
        assert rule.keys() == targets.keys(), label
        for target, value in targets.items():
            cells = tuple(rule[target].split())
            assert len(cells) == len(CALLERS), (label, target)
            args = tuple(value if a is T else a for a in template)
            cases.append(pytest.param(api, args, cells, id=f"{label}-{target}"))
    return cases


def _expected(cell: str) -> tuple[str, int, bool]:
    kind, rest = cell[0], cell[1:]
    may_change = rest.endswith("*")
    rest = rest.rstrip("*")
    value = UNK if rest == "UNK" else int(rest, 0) if rest else 0
    return kind, value, may_change


VERDICT = {"A": "allow", "D": "deny", "I": "invalid", "H": "handled"}


def judge(caller: str, fid: int, x: list[int], cell: str, call: PmCall | None) -> list[str]:
    """Make one call on a freshly booted mediator; say how the result differs from
    ``cell``. ``call``: the same call made directly to a fresh firmware, whose
    answer an allowed call must return untouched."""
    kind, value, may_change = _expected(cell)
    m, before = fresh()
    outcome = returned(m.call(caller, 0, fid, x))
    got = f"got regs {tuple(hex(r) for r in outcome.regs)}, verdict {verdicts(outcome)}"
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{caller}: expected {cell} ({what}); {got}")

    if kind == "A":
        x0 = outcome.regs[0] if value == UNK else outcome.regs[0] & MASK32
        expect(x0 == value and verdicts(outcome) == ["allow"], "forwarded")
        if call is not None:
            firmware = create_platform(BOARD, ManualClock()).firmware
            assert firmware is not None
            answer = firmware.call(DOMAIN_ID[caller], call)
            expect(outcome.regs == answer, f"the firmware's own answer {answer}")
        return problems
    if kind == "S":
        expect(outcome.regs == (SUCCESS, 0, 0, 0), "SUCCESS")
    else:
        status = NO_ACCESS if kind == "D" else value
        expect(outcome.regs == (status, 0, 0, 0), f"regs ({status}, 0, 0, 0)")
        expect(verdicts(outcome) == [VERDICT[kind]], f"verdict {VERDICT[kind]}")
    expect(fw(m).state == before.firmware, "firmware state unchanged")
    if not may_change:
        expect(m.system == before.system, "mediator state unchanged")
    return problems


def test_boot_is_deterministic() -> None:
    m = boot()
    assert (m.snapshot(), fw(m).snapshot()) == booted_state()


def test_the_table_names_every_api() -> None:
    assert {api for _, api, _, _, _ in SPECS} >= {int(api) for api in PmApi}


@pytest.mark.parametrize(("api", "args", "cells"), _cases())
def test_decision_table(api: int, args: tuple[int, ...], cells: tuple[str, ...]) -> None:
    padded = (*args, 0, 0, 0, 0, 0)[:5]
    problems = [
        problem
        for caller, cell in zip(CALLERS, cells, strict=True)
        for problem in judge(caller, SIP64 | api, pack(*args), cell, PmCall(api, padded))
    ]
    assert not problems, "\n".join(problems)


# A few calls beyond one target per call: SET_WAKEUP_SOURCE's own target, the
# enable flag, and a disabled clock (CLOCK_ENABLE is then an ordinary control call).
@pytest.mark.parametrize(
    ("caller", "args", "cell"),
    [
        ("domu1", (2, UART_1, 1), "A0"),  # own NODE_APU_0
        ("domu1", (3, UART_1, 1), "A0"),  # own NODE_APU_1 (off, still its own)
        ("domu1", (4, UART_1, 1), "D"),  # NODE_APU_2: domu1 has 2 vCPUs
        ("dom0", (5, SD_0, 1), "A0"),  # dom0 has 4
        ("domu1", (UART_1, UART_1, 1), "D"),  # target not an APU node
        ("domu1", (6, UART_1, 1), "D"),  # the RPU is not the domain's processor
        ("domu1", (1, UART_1, 0), "A0"),
        ("domu1", (1, UART_1, 2), "I15"),
        ("dom0", (1, SD_0, MASK32), "I15"),
        ("domu2", (1, 78, 1), "I2003"),
        ("domu2", (1, 0x8000_0000, 1), "I2003"),
    ],
)
def test_set_wakeup_source_targets(caller: str, args: tuple[int, ...], cell: str) -> None:
    call = PmCall(SET_WAKEUP_SOURCE, (*args, 0, 0))
    problems = judge(caller, SIP64 | SET_WAKEUP_SOURCE, pack(*args), cell, call)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("caller", "clock", "cell"),
    [
        ("domu1", 57, "A0"),  # UART1_REF: domu1's
        ("domu2", 57, "D"),
        ("dom0", 57, "D"),
        ("domu2", 32, "A0"),  # USB0_BUS_REF: domu2's
        ("domu1", 32, "D"),
        ("dom0", 10, "A0"),  # ACPU drives no node
        ("domu1", 10, "D"),
        ("domu2", 1, "A0"),  # RPLL: a PLL clock
    ],
)
def test_clock_enable_of_a_disabled_clock(caller: str, clock: int, cell: str) -> None:
    m = boot()
    # Its owner (or, for the PLL and ACPU, dom0) turned it off first.
    owner = {57: "domu1", 32: "domu2", 10: "dom0", 1: "dom0"}[clock]
    assert regs(m, owner, CLOCK_DISABLE, clock) == (SUCCESS, 0, 0, 0)
    before = Unchanged(m)
    outcome = pm(m, caller, CLOCK_ENABLE, clock)
    if cell == "D":
        assert outcome.regs == (NO_ACCESS, 0, 0, 0)
        assert verdicts(outcome) == ["deny"]
        before.check()
        assert regs(m, owner, CLOCK_GETSTATE, clock) == (SUCCESS, 0, 0, 0)
    else:
        assert outcome.regs == (SUCCESS, 0, 0, 0)
        assert verdicts(outcome) == ["allow"]
        assert regs(m, owner, CLOCK_GETSTATE, clock) == (SUCCESS | 1 << 32, 0, 0, 0)


# ----------------------------------------------------- 2. decode and encode


def test_decode_smc64_packing() -> None:
    call = decode(SIP64 | 13, (0x2222_2222 << 32 | 0x1111_1111, 0x4444_4444 << 32 | 0x3333_3333, 5))
    assert call == PmCall(13, (0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444, 5))


def test_decode_smc64_arg4_is_the_low_word_of_x3() -> None:
    call = decode(SIP64 | 48, (51, 0, 0xDEAD_0000_0000_0007))
    assert call == PmCall(48, (51, 0, 0, 0, 7))


def test_decode_smc32_narrows_every_register() -> None:
    call = decode(SIP32 | 13, (0xAAAA_BBBB_0000_0022, 0x0000_0001_0000_0064, 0xFFFF_FFFF_0000_0007))
    # arg1 and arg3 were packed in upper halves: they read as 0
    assert call == PmCall(13, (0x22, 0, 0x64, 0, 7))


def test_decode_smc32_and_smc64_agree_on_low_words() -> None:
    x = (0x0000_0000_0000_0022, 0x0000_0000_0000_0064, 3)
    assert decode(SIP32 | 3, x) == decode(SIP64 | 3, x) == PmCall(3, (0x22, 0, 0x64, 0, 3))


@pytest.mark.parametrize(
    "fid",
    [
        0xC201_0001,  # reserved bits [23:16] set
        0xC280_0001,
        0x8201_0001,
        0xC400_0001,  # standard service (PSCI), not SiP
        0xC300_0001,  # OEM
        0x4200_0001,  # not a fast call
    ],
)
def test_decode_refuses_what_is_not_eemi(fid: int) -> None:
    assert decode(fid, (34, 0, 0)) is None


def test_decode_takes_the_api_from_the_low_16_bits() -> None:
    assert decode(0xC200_0A03, (0, 0, 0)) == PmCall(0xA03, (0, 0, 0, 0, 0))
    assert decode(0x8200_FF01, (0, 0, 0)) == PmCall(0xFF01, (0, 0, 0, 0, 0))


def test_encode_packs_and_masks_32_bit_fields() -> None:
    assert encode(0) == (0, 0, 0, 0)
    assert encode(2002) == (2002, 0, 0, 0)
    assert encode(0, 1, 2, 3) == (1 << 32, 3 << 32 | 2, 0, 0)
    assert encode(0x1_0000_0005, 0x1_0000_0006, 0x1_0000_0007, 0x1_0000_0008) == (
        6 << 32 | 5,
        8 << 32 | 7,
        0,
        0,
    )
    assert encode(-1) == (MASK32, 0, 0, 0)
    assert encode(0, MASK32, MASK32, MASK32) == (MASK32 << 32, MASK64, 0, 0)


def test_reserved_bits_reach_nobody() -> None:
    m = boot()
    before = Unchanged(m)
    outcome = returned(m.call("domu1", 0, 0xC201_0001, pack(UART_1)))
    assert outcome.regs == (UNK, 0, 0, 0)
    assert verdicts(outcome) == []
    before.check()


def test_smc32_request_with_capabilities_in_an_upper_half() -> None:
    m = boot()
    before = Unchanged(m)
    # REQ_NODE(UART_1, caps 1, qos 100, ack 1) packed as SMC64 but issued as SMC32:
    # caps and ack read 0, which the firmware refuses.
    outcome = returned(m.call("domu1", 0, SIP32 | REQ_NODE, pack(UART_1, 1, 100, 1)))
    assert outcome.regs == (INVALID_PARAM, 0, 0, 0)
    assert verdicts(outcome) == ["allow"]
    before.check()


def test_smc32_reset_action_in_an_upper_half_reads_release() -> None:
    m = boot()
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (1 << 32, 0, 0, 0)
    # action 1 (assert) in the upper half of x1: read as 0 (release)
    outcome = returned(m.call("domu1", 0, SIP32 | RESET_ASSERT, pack(RESET_UART1, 1)))
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (0, 0, 0, 0)


def test_smc32_node_in_an_upper_half_is_node_0() -> None:
    m = boot()
    before = Unchanged(m)
    # UART_1 in the upper half: the node is 0 (UNKNOWN), hardware-domain-only
    outcome = returned(m.call("domu1", 0, SIP32 | GET_NODE_STATUS, [UART_1 << 32, 0, 0]))
    assert outcome.regs == (NO_ACCESS, 0, 0, 0)
    before.check()


def test_smc32_answer_is_the_same_as_smc64() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    x = [0xFFFF_FFFF_0000_0000 | UART_1, MASK64, MASK64]
    smc32 = returned(m.call("domu1", 0, SIP32 | GET_NODE_STATUS, x)).regs
    assert smc32 == regs(m, "domu1", GET_NODE_STATUS, UART_1)
    assert smc32 == (1 << 32, 1 << 32 | 1, 0, 0)  # on; caps 1, usage 1


# ------------------------------------------- 3. the firmware behind allowed calls


def node_status(m: Mediator, domain: str, node: int) -> tuple[int, int, int, int]:
    """(status, power, the caller's capabilities, usage) of GET_NODE_STATUS."""
    x0, x1, x2, x3 = regs(m, domain, GET_NODE_STATUS, node)
    assert (x2, x3) == (0, 0)
    return x0 & MASK32, x0 >> 32, x1 & MASK32, x1 >> 32


def test_request_and_release_power_a_node() -> None:
    m = boot()
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 0, 0)  # on from boot
    assert regs(m, "domu1", REQ_NODE, UART_1, 3, 100, 1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 3, 1)
    assert regs(m, "domu1", RELEASE_NODE, UART_1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 0, 0, 0)
    assert slave_on(m, UART_1) is False
    # LPD keeps its memories and IPIs, so the island stays up
    assert fw(m).state.islands[LPD] is True
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 0, 2) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 1, 1)
    assert slave_on(m, UART_1) is True


def test_a_node_that_was_off_powers_on_at_a_request() -> None:
    m = boot()
    assert node_status(m, "dom0", SPI_0) == (SUCCESS, 0, 0, 0)  # not on the board: off
    assert regs(m, "dom0", REQ_NODE, SPI_0, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "dom0", SPI_0) == (SUCCESS, 1, 1, 1)
    assert regs(m, "dom0", RELEASE_NODE, SPI_0) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "dom0", SPI_0) == (SUCCESS, 0, 0, 0)


def test_dom0_holds_several_unassigned_nodes() -> None:
    m = boot()
    for node, caps in ((SPI_0, 1), (SPI_1, 3), (I2C_0, 7)):
        assert regs(m, "dom0", REQ_NODE, node, caps, 50, 1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "dom0", SPI_0) == (SUCCESS, 1, 1, 1)
    assert node_status(m, "dom0", SPI_1) == (SUCCESS, 1, 3, 1)
    assert node_status(m, "dom0", I2C_0) == (SUCCESS, 1, 7, 1)
    assert regs(m, "dom0", RELEASE_NODE, SPI_1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "dom0", SPI_1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "dom0", SPI_0) == (SUCCESS, 1, 1, 1)
    assert node_status(m, "dom0", I2C_0) == (SUCCESS, 1, 7, 1)
    # domUs cannot even look
    assert regs(m, "domu1", GET_NODE_STATUS, SPI_0) == (NO_ACCESS, 0, 0, 0)


def test_usage_follows_the_device_to_its_next_owner() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 1, 1)
    assert regs(m, "dom0", REQ_NODE, UART_1, 1, 100, 1) == (NO_ACCESS, 0, 0, 0)
    changed(m.release_device("domu1", "UART_1"))
    # unassigned: the hardware domain's now; domu1's requirement is gone
    assert node_status(m, "dom0", UART_1) == (SUCCESS, 0, 0, 0)
    created = m.create_domain(DomainConfig("domu3", 0, 1, RAM_BASE, 0x1000_0000))
    assert isinstance(created, Created), created
    assert created.domain.id == 3
    changed(m.assign_device("domu3", "UART_1"))
    assert regs(m, "domu3", REQ_NODE, UART_1, 3, 50, 2) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu3", UART_1) == (SUCCESS, 1, 3, 1)
    assert regs(m, "dom0", GET_NODE_STATUS, UART_1) == (NO_ACCESS, 0, 0, 0)
    assert regs(m, "domu1", GET_NODE_STATUS, UART_1) == (NO_ACCESS, 0, 0, 0)
    assert set(fw(m).state.slaves[UART_1].requirements) == {3}


def test_double_request() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    before = Unchanged(m)
    outcome = pm(m, "domu1", REQ_NODE, UART_1, 7, 0, 2)
    assert outcome.regs == (DOUBLE_REQ, 0, 0, 0)
    assert verdicts(outcome) == ["allow"]
    before.check()
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 1, 1)


@pytest.mark.parametrize("api", [RELEASE_NODE, SET_REQUIREMENT, SET_MAX_LATENCY])
def test_without_a_request(api: int) -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "domu1", api, UART_1, 1, 100, 1) == (ARGS, 0, 0, 0)
    before.check()


@pytest.mark.parametrize(
    ("caps", "qos", "ack"),
    [
        (0, 100, 1),  # no capabilities
        (0x10, 100, 1),  # unknown capability bit
        (0x9 | 0x20, 0, 1),
        (1, 101, 1),  # QoS over 100
        (1, MASK32, 1),
        (1, 100, 0),  # ack not 1..3
        (1, 100, 4),
    ],
)
def test_bad_requirement_is_invalid_param(caps: int, qos: int, ack: int) -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "domu1", REQ_NODE, UART_1, caps, qos, ack) == (INVALID_PARAM, 0, 0, 0)
    before.check()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    before = Unchanged(m)
    if caps == 0:
        return  # SET_REQUIREMENT may drop the capabilities to 0
    assert regs(m, "domu1", SET_REQUIREMENT, UART_1, caps, qos, ack) == (INVALID_PARAM, 0, 0, 0)
    before.check()


def test_set_requirement_to_no_capabilities_powers_off() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", SET_REQUIREMENT, UART_1, 0, 0, 1) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 0, 0, 1)  # still counted
    assert regs(m, "domu1", SET_REQUIREMENT, UART_1, 2, 10, 3) == (SUCCESS, 0, 0, 0)
    assert node_status(m, "domu1", UART_1) == (SUCCESS, 1, 2, 1)
    assert regs(m, "domu1", SET_MAX_LATENCY, UART_1, 5000) == (SUCCESS, 0, 0, 0)


def test_gpu_off_leaves_fpd_on_while_its_memories_are_up() -> None:
    m = boot()
    assert regs(m, "dom0", REQ_NODE, GPU, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", RELEASE_NODE, GPU) == (SUCCESS, 0, 0, 0)
    assert slave_on(m, GPU) is False
    # DDR and L2 are FPD nodes the firmware keeps up
    assert fw(m).state.islands[FPD] is True
    # the hardware domain may look at the LPD island (hardware-domain-only)
    assert regs(m, "dom0", GET_NODE_STATUS, LPD) == (1 << 32, 0, 0, 0)
    assert regs(m, "dom0", GET_NODE_STATUS, FPD) == (NO_ACCESS, 0, 0, 0)  # nobody's


def test_init_finalize_powers_off_what_nobody_requested() -> None:
    m = boot()
    assert all(slave_on(m, n) for n in BOARD_NODES)
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", INIT_FINALIZE) == (NO_ACCESS, 0, 0, 0)
    assert all(slave_on(m, n) for n in BOARD_NODES)
    assert regs(m, "dom0", INIT_FINALIZE) == (SUCCESS, 0, 0, 0)
    assert {n: slave_on(m, n) for n in BOARD_NODES} == {
        USB_0: False,
        ETH_0: False,
        ETH_3: False,
        UART_0: False,
        UART_1: True,
        SD_0: False,
        SD_1: False,
        GPU: False,
    }
    # memories and the RTC stay
    assert slave_on(m, DDR)
    assert slave_on(m, OCM_BANK_0)
    assert slave_on(m, RTC)
    # a powered-off device raises nothing; a requested one does
    usb = raised(m.raise_interrupt(IRQ_USB_0))
    assert (usb.outcome, usb.domain) == (IrqOutcome.DROPPED, "domu2")
    assert "powered off" in usb.reason
    uart = raised(m.raise_interrupt(IRQ_UART_1))
    assert (uart.outcome, uart.domain) == (IrqOutcome.DELIVERED, "domu1")
    # once finalised, a release powers the node off and a request on again
    assert regs(m, "domu2", REQ_NODE, USB_0, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert slave_on(m, USB_0) is True
    assert raised(m.raise_interrupt(IRQ_USB_0)).outcome is IrqOutcome.DELIVERED


def suspend_host(m: Mediator) -> None:
    outcome = returned(m.call("dom0", 0, SYSTEM_SUSPEND_64, [ENTRY, 0]))
    assert outcome.regs == (0, 0, 0, 0)
    assert m.system.host_state is HostState.SUSPENDED


def test_wake_source_off() -> None:
    m = boot()
    assert m.system.devices["UART_1"].wake_source is True
    assert IRQ_UART_1 in m.platform.wake_sources
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 0) == (SUCCESS, 0, 0, 0)
    assert m.system.devices["UART_1"].wake_source is False
    assert IRQ_UART_1 not in m.platform.wake_sources
    assert fw(m).state.slaves[UART_1].wake is False
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 1) == (SUCCESS, 0, 0, 0)
    assert m.system.devices["UART_1"].wake_source is True
    assert IRQ_UART_1 in m.platform.wake_sources
    assert fw(m).state.slaves[UART_1].wake is True


def test_host_suspend_powers_down_an_unrequested_non_wake_device() -> None:
    m = boot()
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 0) == (SUCCESS, 0, 0, 0)
    before = power_states(m)
    assert before[UART_1] is True
    suspend_host(m)
    assert slave_on(m, UART_1) is False
    # the other board devices are wake sources: kept on
    assert all(slave_on(m, n) for n in BOARD_NODES if n != UART_1)
    # UART_1 is off: its interrupt goes nowhere, the host sleeps on
    uart = raised(m.raise_interrupt(IRQ_UART_1))
    assert uart.outcome is IrqOutcome.DROPPED
    assert "powered off" in uart.reason
    assert m.system.host_state is HostState.SUSPENDED
    woke = raised(m.raise_interrupt(IRQ_UART_0))
    assert woke.woke_host is True
    assert m.system.host_state is HostState.ACTIVE
    assert power_states(m) == before


def test_host_suspend_keeps_a_requested_device_on() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 0) == (SUCCESS, 0, 0, 0)
    before = power_states(m)
    suspend_host(m)
    assert slave_on(m, UART_1) is True
    # on, but not a wake source: it does not wake the SoC
    assert raised(m.raise_interrupt(IRQ_UART_1)).outcome is IrqOutcome.PENDING
    assert m.system.host_state is HostState.SUSPENDED
    assert raised(m.raise_interrupt(IRQ_UART_0)).woke_host is True
    assert power_states(m) == before


def test_resets() -> None:
    m = boot()
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (0, 0, 0, 0)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (1 << 32, 0, 0, 0)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 0) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (0, 0, 0, 0)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 2) == (SUCCESS, 0, 0, 0)  # pulse
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (0, 0, 0, 0)
    before = Unchanged(m)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 3) == (INVALID_PARAM, 0, 0, 0)
    before.check()
    # another domain's reset line stays as it was
    assert regs(m, "domu2", RESET_ASSERT, RESET_UART1, 1) == (NO_ACCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_GET_STATUS, RESET_UART1) == (0, 0, 0, 0)


def test_clocks() -> None:
    m = boot()
    c = CLOCK_UART1_REF
    assert regs(m, "domu2", CLOCK_GETSTATE, c) == (1 << 32, 0, 0, 0)  # reads: anyone
    assert regs(m, "domu1", CLOCK_DISABLE, c) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_GETSTATE, c) == (0, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_ENABLE, c) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_GETSTATE, c) == (1 << 32, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_GETDIVIDER, c) == (1 << 32, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_SETDIVIDER, c, 8) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu2", CLOCK_GETDIVIDER, c) == (8 << 32, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_GETPARENT, c) == (0, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_SETPARENT, c, 2) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", CLOCK_GETPARENT, c) == (2 << 32, 0, 0, 0)
    before = Unchanged(m)
    assert regs(m, "domu1", CLOCK_SETDIVIDER, c, 0) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "domu1", CLOCK_SETPARENT, c, 4) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "domu2", CLOCK_SETDIVIDER, c, 2) == (NO_ACCESS, 0, 0, 0)
    assert regs(m, "dom0", CLOCK_DISABLE, c) == (NO_ACCESS, 0, 0, 0)
    before.check()


def test_mmio_write_mask_is_narrowed_to_the_domains_bits() -> None:
    m = boot()
    assert regs(m, "domu1", MMIO_WRITE, GEM_CTRL, 0xFF, 0xFF) == (SUCCESS, 0, 0, 0)
    assert fw(m).state.registers[GEM_CTRL] == 0x3  # ETH_0's bits 0..1 only
    assert regs(m, "domu1", MMIO_READ, GEM_CTRL) == (0x3 << 32, 0, 0, 0)
    # dom0: ETH_1 and ETH_2 (not on the board) and its own ETH_3: bits 2..7
    assert regs(m, "dom0", MMIO_WRITE, GEM_CTRL, MASK32, MASK32) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", MMIO_READ, GEM_CTRL) == (0xFF << 32, 0, 0, 0)
    assert regs(m, "domu1", MMIO_WRITE, GEM_CTRL, MASK32, 0) == (SUCCESS, 0, 0, 0)
    assert fw(m).state.registers[GEM_CTRL] == 0xFC
    # domu2 holds no GEM: not its register at all
    assert regs(m, "domu2", MMIO_WRITE, GEM_CTRL, MASK32, 0) == (NO_ACCESS, 0, 0, 0)
    assert fw(m).state.registers[GEM_CTRL] == 0xFC
    # CTRL_REG_SD: bit 15 is SD_1's (domu2), bit 0 SD_0's (dom0)
    assert regs(m, "domu2", MMIO_WRITE, CTRL_REG_SD, MASK32, MASK32) == (SUCCESS, 0, 0, 0)
    assert fw(m).state.registers[CTRL_REG_SD] == 0x8000
    assert regs(m, "dom0", MMIO_WRITE, CTRL_REG_SD, MASK32, MASK32) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu2", MMIO_READ, CTRL_REG_SD) == (0x8001 << 32, 0, 0, 0)


def test_pll_mode_and_parameters() -> None:
    m = boot()
    vpll, rpll, apll = 51, 53, 50
    assert regs(m, "domu1", PLL_GET_MODE, vpll) == (1 << 32, 0, 0, 0)  # integer
    assert regs(m, "dom0", PLL_SET_MODE, vpll, 2) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", PLL_GET_MODE, vpll) == (2 << 32, 0, 0, 0)
    before = Unchanged(m)
    assert regs(m, "dom0", PLL_SET_MODE, vpll, 3) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "domu1", PLL_SET_MODE, vpll, 0) == (NO_ACCESS, 0, 0, 0)
    assert regs(m, "dom0", PLL_SET_MODE, apll, 0) == (NO_ACCESS, 0, 0, 0)  # nobody's
    before.check()
    assert regs(m, "dom0", PLL_SET_PARAMETER, rpll, 2, 0x1234) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu2", PLL_GET_PARAMETER, rpll, 2) == (0x1234 << 32, 0, 0, 0)
    assert regs(m, "dom0", PLL_GET_PARAMETER, rpll, 9) == (INVALID_PARAM, 0, 0, 0)
    # fractional mode through IOCTL: set by dom0, read by a domU
    assert regs(m, "dom0", IOCTL, vpll, 8, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", IOCTL, vpll, 9) == (1 << 32, 0, 0, 0)
    assert regs(m, "domu1", IOCTL, vpll, 8, 0) == (NO_ACCESS, 0, 0, 0)


def test_pins_for_dom0() -> None:
    m = boot()
    assert regs(m, "dom0", PINCTRL_REQUEST, 5) == (SUCCESS, 0, 0, 0)
    assert fw(m).state.pins_requested == {5}
    assert regs(m, "dom0", PINCTRL_SET_FUNCTION, 5, 3) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", PINCTRL_GET_FUNCTION, 5) == (3 << 32, 0, 0, 0)
    assert regs(m, "dom0", PINCTRL_CONFIG_PARAM_SET, 5, 2, 7) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", PINCTRL_CONFIG_PARAM_GET, 5, 2) == (7 << 32, 0, 0, 0)
    before = Unchanged(m)
    assert regs(m, "dom0", PINCTRL_SET_FUNCTION, 5, 32) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "dom0", PINCTRL_CONFIG_PARAM_SET, 5, 9, 1) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "dom0", PINCTRL_REQUEST, 78) == (INVALID_PARAM, 0, 0, 0)
    assert regs(m, "domu1", PINCTRL_RELEASE, 5) == (NO_ACCESS, 0, 0, 0)
    before.check()
    assert regs(m, "dom0", PINCTRL_RELEASE, 5) == (SUCCESS, 0, 0, 0)
    assert fw(m).state.pins_requested == set()


def test_feature_check() -> None:
    m = boot()
    assert regs(m, "domu1", FEATURE_CHECK, REQ_NODE) == (1 << 32, 0, 0, 0)
    assert regs(m, "domu1", FEATURE_CHECK, 4) == (NO_FEATURE, 0, 0, 0)


def test_query_data() -> None:
    m = boot()
    assert regs(m, "domu1", QUERY_DATA, 12) == (113 << 32, 0, 0, 0)  # clock count
    x0, x1, x2, x3 = regs(m, "domu2", QUERY_DATA, 1, CLOCK_UART1_REF)
    assert (x0, x1, x2, x3) == (0x4552_5F31_5452_4155, 0x46, 0, 0)
    name = x0.to_bytes(8, "little") + x1.to_bytes(8, "little")
    assert name == b"UART1_REF\0\0\0\0\0\0\0"


def test_firmware_identity() -> None:
    m = boot()
    x0 = regs(m, "domu1", GET_API_VERSION)[0]
    assert x0 & MASK32 == SUCCESS
    assert x0 >> 32 >= 0x0001_0000  # Linux needs v1.0 or later
    assert regs(m, "domu1", 0xA03)[0] == 0x0001_0000 << 32  # TrustZone v1.0


def test_system_shutdown_type_0_powers_the_host_off() -> None:
    m = boot()
    outcome = pm(m, "dom0", SYSTEM_SHUTDOWN, 0, 2)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert verdicts(outcome) == ["handled"]
    assert m.system.host_state is HostState.OFF
    assert {d.name: d.state for d in m.system.domains.values()} == {
        "dom0": DomainState.SHUTDOWN,
        "domu1": DomainState.SHUTDOWN,
        "domu2": DomainState.SHUTDOWN,
    }
    shutdowns = [
        e.domain
        for e in outcome.effects
        if isinstance(e, DomainEvent) and e.kind == Shutdown(ShutdownReason.POWEROFF)
    ]
    assert sorted(shutdowns) == ["dom0", "domu1", "domu2"]


def test_system_shutdown_type_1_reboots_every_domain() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_WAKEUP, NODE_APU_1, ENTRY | 1, 0, 1) == (SUCCESS, 0, 0, 0)
    outcome = pm(m, "dom0", SYSTEM_SHUTDOWN, 1, 2)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert m.system.host_state is HostState.ACTIVE
    events = [(e.domain, e.vcpu, e.kind) for e in outcome.effects if isinstance(e, DomainEvent)]
    for name in ("dom0", "domu1", "domu2"):
        assert (name, 0, Start(RAM_BASE, 0)) in events
        assert any(d == name and k == Shutdown(ShutdownReason.REBOOT) for d, _, k in events)
    for domain in m.system.domains.values():
        assert domain.state is DomainState.RUNNING
        assert [v.power for v in domain.vcpus][:2] == [VcpuPower.ON, VcpuPower.OFF]


def test_system_shutdown_type_2_only_answers_success() -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "dom0", SYSTEM_SHUTDOWN, 2, 2) == (SUCCESS, 0, 0, 0)
    before.check()


@pytest.mark.parametrize(("kind", "subtype"), [(3, 0), (0, 3), (1, 3), (2, MASK32), (MASK32, 0)])
def test_system_shutdown_bad_type(kind: int, subtype: int) -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "dom0", SYSTEM_SHUTDOWN, kind, subtype) == (INVALID_PARAM, 0, 0, 0)
    before.check()


def test_virtual_apu_core_status_and_wakeup() -> None:
    m = boot()
    assert regs(m, "domu1", GET_NODE_STATUS, NODE_APU_1) == (0, 0, 0, 0)  # FORCEDOFF
    fw_before = fw(m).snapshot()
    outcome = pm(m, "domu1", REQ_WAKEUP, NODE_APU_1, ENTRY | 1, 0, 1)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    events = [(e.vcpu, e.kind) for e in outcome.effects if isinstance(e, DomainEvent)]
    assert events == [(1, Start(ENTRY, 0))]
    vcpu = m.system.domains[1].vcpus[1]
    assert (vcpu.power, vcpu.entry_point) == (VcpuPower.ON, ENTRY)
    assert fw(m).snapshot() == fw_before  # the firmware never sees the virtual APU
    assert regs(m, "domu1", GET_NODE_STATUS, NODE_APU_1) == (1 << 32, 0, 0, 0)  # ACTIVE
    # already on: SUCCESS, nothing starts
    again = pm(m, "domu1", REQ_WAKEUP, NODE_APU_1, 0x4000_1000 | 1, 0, 1)
    assert again.regs == (SUCCESS, 0, 0, 0)
    assert [e for e in again.effects if isinstance(e, DomainEvent)] == []
    # suspended (CPU_SUSPEND power-down): SLEEP
    cpu_suspend = m.call("domu1", 1, CPU_SUSPEND_64, [1 << 16, ENTRY, 0])
    assert returned(cpu_suspend).regs[0] == 0
    assert regs(m, "domu1", GET_NODE_STATUS, NODE_APU_1) == (2 << 32, 0, 0, 0)
    # the other domain's vCPU 1 is its own and still off
    assert regs(m, "domu2", GET_NODE_STATUS, NODE_APU_1) == (0, 0, 0, 0)


def test_virtual_apu_wakeup_at_the_last_entry_point() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_WAKEUP, NODE_APU_1, ENTRY | 1, 0, 1) == (SUCCESS, 0, 0, 0)
    assert returned(m.call("domu1", 1, CPU_OFF, [])).regs[0] == 0
    assert m.system.domains[1].vcpus[1].power is VcpuPower.OFF
    # bit 0 of addr_lo clear: the address is not used
    outcome = pm(m, "domu1", REQ_WAKEUP, NODE_APU_1, 0x4000_2000, 0, 1)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    events = [(e.vcpu, e.kind) for e in outcome.effects if isinstance(e, DomainEvent)]
    assert events == [(1, Start(ENTRY, 0))]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0x1000 | 1, 0),  # below RAM
        (0x5000_0000 | 1, 0),  # past domu1's 256 MiB
        (ENTRY | 1, 1),  # 0x1_4008_0000
    ],
)
def test_virtual_apu_wakeup_outside_ram(low: int, high: int) -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "domu1", REQ_WAKEUP, NODE_APU_1, low, high, 1) == (INVALID_PARAM, 0, 0, 0)
    before.check()


def test_virtual_apu_beyond_the_domains_vcpus() -> None:
    m = boot()
    before = Unchanged(m)
    assert regs(m, "domu1", GET_NODE_STATUS, NODE_APU_2) == (NO_ACCESS, 0, 0, 0)
    assert regs(m, "domu1", REQ_WAKEUP, NODE_APU_2, ENTRY | 1, 0, 1) == (NO_ACCESS, 0, 0, 0)
    before.check()


def test_physical_rpu_through_the_firmware() -> None:
    m = boot()
    rpu_0 = 7  # RPU is not on the board: the hardware domain's
    assert regs(m, "dom0", GET_NODE_STATUS, rpu_0) == (0, 0, 0, 0)
    assert regs(m, "dom0", REQ_WAKEUP, rpu_0, 0, 0, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", GET_NODE_STATUS, rpu_0) == (1 << 32, 0, 0, 0)
    assert regs(m, "dom0", REQ_SUSPEND, rpu_0, 1, 0, 0) == (SUCCESS, 0, 0, 0)
    assert regs(m, "dom0", GET_NODE_STATUS, rpu_0) == (2 << 32, 0, 0, 0)
    assert regs(m, "domu1", REQ_WAKEUP, rpu_0, 0, 0, 1) == (NO_ACCESS, 0, 0, 0)


# ------------------------------------------- 4. device ownership (Control level)


def test_assign_and_release_refusals() -> None:
    m = boot()
    before = Unchanged(m)
    refused(m.assign_device("nobody", "UART_1"), Refusal.NOT_FOUND)
    refused(m.assign_device("domu1", "NOPE"), Refusal.NOT_FOUND)
    refused(m.release_device("nobody", "UART_1"), Refusal.NOT_FOUND)
    refused(m.release_device("domu1", "NOPE"), Refusal.NOT_FOUND)
    refused(m.assign_device("domu2", "UART_1"), Refusal.FAILED_PRECONDITION)  # domu1's
    refused(m.assign_device("domu1", "UART_1"), Refusal.FAILED_PRECONDITION)  # already
    refused(m.release_device("domu2", "UART_1"), Refusal.FAILED_PRECONDITION)  # not domu2's
    before.check()


def test_assign_refuses_a_device_that_is_not_idle() -> None:
    m = boot()
    changed(m.release_device("domu1", "UART_1"))
    # unassigned: the hardware domain's, and it holds a requirement on it
    assert regs(m, "dom0", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    before = Unchanged(m)
    refused(m.assign_device("domu2", "UART_1"), Refusal.FAILED_PRECONDITION)
    before.check()
    assert regs(m, "dom0", RELEASE_NODE, UART_1) == (SUCCESS, 0, 0, 0)
    changed(m.assign_device("domu2", "UART_1"))
    assert m.system.devices["UART_1"].owner == 2


def test_device_changes_refused_while_the_domain_is_suspended() -> None:
    m = boot()
    changed(m.release_device("domu2", "SD_1"))
    assert returned(m.call("domu1", 0, SYSTEM_SUSPEND_64, [ENTRY, 0])).regs[0] == 0
    assert m.system.domains[1].state is DomainState.SUSPENDED
    before = Unchanged(m)
    refused(m.release_device("domu1", "UART_1"), Refusal.FAILED_PRECONDITION)
    refused(m.assign_device("domu1", "SD_1"), Refusal.FAILED_PRECONDITION)
    before.check()


def test_release_device_effects() -> None:
    m = boot()
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, UART_1, 0) == (SUCCESS, 0, 0, 0)
    assert raised(m.raise_interrupt(IRQ_UART_1)).outcome is IrqOutcome.DELIVERED
    assert m.platform.gic.enabled(IRQ_UART_1, 0) is True
    outcome = changed(m.release_device("domu1", "UART_1"))
    assert DeviceAssigned(1, "domu1", "UART_1", False) in outcome.effects
    device = m.system.devices["UART_1"]
    assert device.owner is None
    assert "UART_1" not in m.system.domains[1].devices
    # the requirement is dropped: unrequested, and off as nobody else wants it
    assert fw(m).state.slaves[UART_1].requirements == {}
    assert slave_on(m, UART_1) is False
    # the wake source is the board's default again (wake-capable: on)
    assert device.wake_source is True
    assert fw(m).state.slaves[UART_1].wake is True
    # unrouted: disabled in the GIC, and nobody takes the interrupt
    assert m.platform.gic.enabled(IRQ_UART_1, 0) is False
    irq = raised(m.raise_interrupt(IRQ_UART_1))
    assert irq.outcome is IrqOutcome.DROPPED
    assert irq.reason == "UART_1 is not assigned"
    # the old owner has lost it, the hardware domain holds it
    assert regs(m, "domu1", REQ_NODE, UART_1, 1, 100, 1) == (NO_ACCESS, 0, 0, 0)
    assert node_status(m, "dom0", UART_1) == (SUCCESS, 0, 0, 0)
    # a new owner
    assigned = changed(m.assign_device("domu2", "UART_1"))
    assert DeviceAssigned(2, "domu2", "UART_1", True) in assigned.effects
    assert m.platform.gic.enabled(IRQ_UART_1, 0) is True
    assert regs(m, "domu2", REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert slave_on(m, UART_1) is True
    assert node_status(m, "domu2", UART_1) == (SUCCESS, 1, 1, 1)
    irq = raised(m.raise_interrupt(IRQ_UART_1))
    assert (irq.outcome, irq.domain) == (IrqOutcome.DELIVERED, "domu2")
    assert regs(m, "domu2", RESET_ASSERT, RESET_UART1, 1) == (SUCCESS, 0, 0, 0)
    assert regs(m, "domu1", RESET_ASSERT, RESET_UART1, 0) == (NO_ACCESS, 0, 0, 0)


# ------------------------------------------------------------ 5. bad input

JUNK = [MASK64, MASK64, MASK64]


@pytest.mark.parametrize(
    ("api", "cells"),
    [
        (GET_NODE_STATUS, "I2003 I2003 I2003"),
        (REQ_NODE, "I2003 I2003 I2003"),
        (RELEASE_NODE, "I2003 I2003 I2003"),
        (REQ_WAKEUP, "I2003 I2003 I2003"),
        (SET_WAKEUP_SOURCE, "D D D"),  # target 0xffffffff is no APU node
        (RESET_ASSERT, "I15 I15 I15"),
        (RESET_GET_STATUS, "I15 I15 I15"),
        (CLOCK_SETDIVIDER, "I15 I15 I15"),
        (CLOCK_GETSTATE, "I15 I15 I15"),
        (MMIO_WRITE, "D D D"),
        (PLL_SET_MODE, "I15 I15 I15"),
        (PLL_GET_MODE, "I15 I15 I15"),
        (SYSTEM_SHUTDOWN, "D D H15"),
        (PINCTRL_REQUEST, "D D A15"),
        (IOCTL, "D D A4"),  # ioctl 0xffffffff: the firmware has none
        (INIT_FINALIZE, "D D A0"),
        (0x7777, "HUNK HUNK AUNK"),
    ],
)
@pytest.mark.parametrize("sip", [SIP64, SIP32])
def test_all_ones_registers(api: int, cells: str, sip: int) -> None:
    problems = [
        problem
        for caller, cell in zip(CALLERS, cells.split(), strict=True)
        for problem in judge(caller, sip | api, JUNK, cell, None)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("node", [78, 79, 0xFF, 0xFFFF, 0x8000_0000, MASK32])
@pytest.mark.parametrize(
    "api", [GET_NODE_STATUS, REQ_NODE, RELEASE_NODE, SET_REQUIREMENT, SET_MAX_LATENCY, REQ_WAKEUP]
)
def test_node_out_of_range(api: int, node: int) -> None:
    m = boot()
    before = Unchanged(m)
    for caller in CALLERS:
        outcome = pm(m, caller, api, node, 1, 100, 1)
        assert outcome.regs == (INVALID_NODE, 0, 0, 0), caller
        assert verdicts(outcome) == ["invalid"]
    assert regs(m, "domu1", SET_WAKEUP_SOURCE, NODE_APU, node, 1) == (INVALID_NODE, 0, 0, 0)
    before.check()


def test_smc32_upper_halves_never_reach_the_firmware() -> None:
    m = boot()
    before = Unchanged(m)
    # REQ_NODE(UART_1, 1, 100, 1) with caps and ack in upper halves (and junk above
    # the node): caps 0 reaches the firmware, which refuses it
    x = [0xFFFF_FFFF << 32 | UART_1, 1 << 32 | 100, MASK64]
    outcome = returned(m.call("domu1", 0, SIP32 | REQ_NODE, x))
    assert outcome.regs == (INVALID_PARAM, 0, 0, 0)
    before.check()
    # MMIO_WRITE(GEM_CTRL, mask 0xff in the upper half, value 0xff): mask 0 writes nothing
    x = [0xFF << 32 | GEM_CTRL, MASK32 << 32 | 0xFF, 0]
    assert returned(m.call("domu1", 0, SIP32 | MMIO_WRITE, x)).regs == (SUCCESS, 0, 0, 0)
    assert fw(m).state.registers.get(GEM_CTRL, 0) == 0
    assert regs(m, "dom0", MMIO_READ, GEM_CTRL) == (0, 0, 0, 0)


@pytest.mark.parametrize("bad", [1 << 64, -1, 1 << 65])
def test_registers_over_64_bits_are_refused(bad: int) -> None:
    m = boot()
    before = Unchanged(m)
    refused(m.call("domu1", 0, SIP64 | REQ_NODE, [bad, 0, 0]), Refusal.INVALID_ARGUMENT)
    refused(m.call("domu1", 0, SIP32 | REQ_NODE, [UART_1, bad, 0]), Refusal.INVALID_ARGUMENT)
    before.check()
