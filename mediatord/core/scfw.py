"""NXP i.MX8 SCFW calls as guests make them through mediatord, and the mediator's
rules for them (docs/imx8-scfw.md, section 6: our design, on NXP's numbers).

On an i.MX8 the System Controller Firmware owns every resource (SC_R_*) by
*partition*; a partition may change what it owns and no more (SC_ERR_NOACCESS).
mediatord gives each domain a partition of its own (``2 + domain id``) holding the
resources of the devices the domain owns (the hardware domain also holds every
unassigned one) and checks each call against it before the emulated SCFW sees it,
as the ZynqMP mediator checks EEMI calls against node ownership (eemi.py).

Guests reach the SCFW with SiP SMCs ``0xC2001000 | service << 8 | function`` (the
SCFW's own service and function numbers; SMC32 twin ``0x82001xxx``): arguments from
x1 in SCFW prototype order; x0 answers an ``sc_err_t``, x1 the first out-value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final

from mediatord.core import smccc

SCFW_BASE: Final = 0x0200_1000  # within the SiP range, above NXP TF-A's 0xC20000xx IDs
SCFW_MASK: Final = 0xFFFF_F000


class Svc(IntEnum):
    """sc_rpc_svc_t (ATF sci/sci_rpc.h)."""

    PM = 2
    RM = 3
    TIMER = 5
    PAD = 6
    MISC = 7
    IRQ = 8


class PmFunc(IntEnum):
    """PM service functions (ATF sci/svc/pm/pm_rpc.h), the ones mediatord knows."""

    SET_SYS_POWER_MODE = 19
    SET_PARTITION_POWER_MODE = 1
    GET_SYS_POWER_MODE = 2
    SET_RESOURCE_POWER_MODE = 3
    GET_RESOURCE_POWER_MODE = 4
    REQ_LOW_POWER_MODE = 16
    SET_CPU_RESUME_ADDR = 17
    REQ_SYS_IF_POWER_MODE = 18
    REQ_CPU_LOW_POWER_MODE = 20
    SET_CPU_RESUME = 21
    SET_RESOURCE_POWER_MODE_ALL = 22
    CPU_START = 11
    CPU_RESET = 23
    IS_PARTITION_STARTED = 24
    BOOT = 8
    REBOOT = 9
    RESET = 13
    REBOOT_PARTITION = 12


class RmFunc(IntEnum):
    """RM service functions (ATF sci/svc/rm/rm_rpc.h): the queries anyone may make."""

    GET_PARTITION = 5
    IS_RESOURCE_OWNED = 13
    GET_RESOURCE_OWNER = 33


# The calls that only read, the SCFW's state and the mediator's alike (so the
# journal leaves them out): (service, function).
READ_ONLY: Final = frozenset(
    {
        (Svc.PM, PmFunc.GET_RESOURCE_POWER_MODE),
        (Svc.PM, PmFunc.IS_PARTITION_STARTED),
        (Svc.RM, RmFunc.GET_PARTITION),
        (Svc.RM, RmFunc.IS_RESOURCE_OWNED),
        (Svc.RM, RmFunc.GET_RESOURCE_OWNER),
    }
)


class ScErr(IntEnum):
    """sc_err_t (ATF sci/sci_types.h)."""

    NONE = 0
    VERSION = 1
    CONFIG = 2
    PARM = 3
    NOACCESS = 4
    LOCKED = 5
    UNAVAILABLE = 6
    NOTFOUND = 7
    NOPOWER = 8
    IPC = 9
    BUSY = 10
    FAIL = 11


class PowerMode(IntEnum):
    """sc_pm_power_mode_t: OFF, STBY (standby, context kept), LP (low power), ON."""

    OFF = 0
    STBY = 1
    LP = 2
    ON = 3


SC_R_LAST: Final = 546
MAX_PARTITION: Final = 31  # sc_rm_pt_t: SC_RM_PARTITION_W = 5
# The highest function numbers of the PM and RM services (ATF pm_rpc.h, rm_rpc.h):
# above them, SC_ERR_NOTFOUND as the SCFW dispatcher answers.
PM_LAST_FUNC: Final = 29
RM_LAST_FUNC: Final = 33
# decide()'s status for a function ID in the SCFW range that names no service.
NOT_AN_SCFW_CALL: Final = -1
# The resources a board file may name (docs/imx8-scfw.md 4.1; one numbering for
# every i.MX8 SCFW SoC).
RESOURCES: Final = {
    **{f"SC_R_UART_{n}": 57 + n for n in range(5)},
    **{f"SC_R_SDHC_{n}": 248 + n for n in range(3)},
    "SC_R_ENET_0": 251,
    "SC_R_ENET_1": 252,
    "SC_R_USB_0": 259,
    "SC_R_USB_2": 262,
    **{f"SC_R_GPU_0_PID{n}": 144 + n for n in range(4)},
    "SC_R_DC_0": 32,
    "SC_R_PCIE_A": 152,
    "SC_R_PCIE_B": 169,
    "SC_R_VPU": 540,
    # (MU_0A is TF-A's channel to the SCU: secure, not a board device.)
    **{f"SC_R_MU_{n}A": 213 + n for n in range(1, 7)},
}
RESOURCE_NAMES: Final = {v: k for k, v in RESOURCES.items()}
# TF-A's secure partition (plat/imx/imx8qm/include/sec_rsrc.h): cores, CCI, GIC,
# SC_R_SYSTEM, the wake IRQSTEER, the TF-A timer and its MU. No guest names them.
SECURE: Final = frozenset({*range(0, 10), 10, 18, 355, 321, 207, 213, *range(507, 512)})


def partition_of(domain_id: int) -> int:
    """The SCFW partition mediatord gives a domain."""
    return 2 + domain_id


@dataclass(frozen=True, slots=True)
class ScCall:
    svc: int
    func: int
    args: tuple[int, int, int, int]  # x1..x4, 32-bit values


def decode(function_id: int, regs: tuple[int, ...]) -> ScCall | None:
    """An SCFW call in the SiP range, or None (then it is not one: NOT_SUPPORTED)."""
    fid = function_id & smccc.MASK32
    if fid & SCFW_MASK & ~smccc.SMC64_BIT != smccc.FAST_CALL | SCFW_BASE:
        return None
    low = fid & 0xFFF
    a = (*regs[:4], 0, 0, 0, 0)[:4]
    if not fid & smccc.SMC64_BIT:
        a = tuple(r & smccc.MASK32 for r in a)  # SMC32: only w1..w4 count
    return ScCall(low >> 8, low & 0xFF, (a[0], a[1], a[2], a[3]))


class Verdict(Enum):
    ALLOW = "allow"  # to the emulated SCFW, its sc_err_t returned
    DENY = "deny"  # SC_ERR_NOACCESS, the SCFW untouched
    INVALID = "invalid"  # the mediator's own argument check: SC_ERR_PARM
    HANDLED = "handled"  # answered by mediatord (RM queries of virtual partitions)


@dataclass(frozen=True, slots=True)
class Rights:
    """What one domain may touch: its partition and the owners of resources."""

    domain_id: int
    hardware_domain: bool
    owners: Mapping[int, int | None]  # resource -> owning domain id (None: unassigned)

    def owns(self, resource: int) -> bool:
        if resource not in self.owners:
            return False
        owner = self.owners[resource]
        return owner == self.domain_id or (owner is None and self.hardware_domain)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    status: int = ScErr.NONE
    value: int = 0  # x1 of a HANDLED answer
    reason: str = ""


def _valid_resource(resource: int) -> bool:
    return 0 <= resource < SC_R_LAST


def decide(call: ScCall, rights: Rights) -> Decision:
    """docs/imx8-scfw.md 6.3, the part mediatord implements: argument checks first,
    then ownership; CPU, system and partition-management calls are TF-A's and
    mediatord's business, never a guest's."""
    if any(a >> 32 for a in call.args):
        return Decision(Verdict.INVALID, ScErr.PARM, reason="SCFW arguments are 32-bit")
    match call.svc:
        case Svc.PM:
            return _pm(call, rights)
        case Svc.RM:
            return _rm(call, rights)
        case Svc.TIMER | Svc.PAD | Svc.MISC | Svc.IRQ:
            return Decision(Verdict.INVALID, ScErr.NOTFOUND, reason="not modelled")
    # Not a service at all: not an SCFW call (the caller answers NOT_SUPPORTED).
    return Decision(Verdict.INVALID, NOT_AN_SCFW_CALL, reason=f"no SCFW service {call.svc}")


def _pm(call: ScCall, rights: Rights) -> Decision:
    resource, mode = call.args[0], call.args[1]
    match call.func:
        case PmFunc.SET_RESOURCE_POWER_MODE | PmFunc.GET_RESOURCE_POWER_MODE:
            if not _valid_resource(resource):
                return Decision(Verdict.INVALID, ScErr.PARM, reason="no such resource")
            if call.func == PmFunc.SET_RESOURCE_POWER_MODE and mode > PowerMode.ON:
                return Decision(Verdict.INVALID, ScErr.PARM, reason=f"mode {mode} > ON")
            if resource in SECURE or not rights.owns(resource):
                return Decision(Verdict.DENY, ScErr.NOACCESS, reason="not the partition's")
            return Decision(Verdict.ALLOW)
        case PmFunc.IS_PARTITION_STARTED:
            partition = resource
            if partition > MAX_PARTITION:
                return Decision(Verdict.INVALID, ScErr.PARM, reason=f"no partition {partition}")
            if partition != partition_of(rights.domain_id):
                return Decision(Verdict.DENY, ScErr.NOACCESS, reason="another partition")
            return Decision(Verdict.HANDLED, value=1)
    if call.func <= PM_LAST_FUNC:
        # CPUs, the system, boot, other partitions, clocks, resets: TF-A's and
        # mediatord's business (PSCI, Control), or not modelled: refused untouched.
        return Decision(Verdict.DENY, ScErr.NOACCESS, reason="not a guest's call")
    return Decision(Verdict.INVALID, ScErr.NOTFOUND, reason=f"no PM function {call.func}")


def _rm(call: ScCall, rights: Rights) -> Decision:
    resource = call.args[0]
    match call.func:
        case RmFunc.GET_PARTITION:
            return Decision(Verdict.HANDLED, value=partition_of(rights.domain_id))
        case RmFunc.IS_RESOURCE_OWNED:
            return Decision(Verdict.HANDLED, value=int(rights.owns(resource)))
        case RmFunc.GET_RESOURCE_OWNER:
            if not _valid_resource(resource):
                return Decision(Verdict.INVALID, ScErr.PARM, reason="no such resource")
            owner = rights.owners.get(resource)
            if resource in SECURE or resource not in rights.owners:
                return Decision(Verdict.HANDLED, value=0)  # the SCU's / secure partition
            return Decision(Verdict.HANDLED, value=partition_of(owner or 0))
    if call.func <= RM_LAST_FUNC:
        # Allocating, assigning, moving: ownership is the board file's and Control's.
        return Decision(Verdict.DENY, ScErr.NOACCESS, reason="partitions are mediatord's")
    return Decision(Verdict.INVALID, ScErr.NOTFOUND, reason=f"no RM function {call.func}")
