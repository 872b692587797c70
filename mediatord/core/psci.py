"""Virtual PSCI 1.1 (Arm DEN0022), one small function per call.

Each handler takes the already-narrowed x1..x3 of the call, checks its arguments
in the order TF-A / KVM / Xen do and returns the PSCI return code, or None when
the call blocks (standby CPU_SUSPEND). Handlers change state only through the
:class:`~mediatord.core.mediator.Mediator` transitions, after every check passed.
The dispatcher (``Mediator.call``) narrows SMC32 arguments, so handlers never do.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from mediatord.core import smccc
from mediatord.core.model import MPIDR_HWID_BITMASK, Domain, Vcpu, VcpuPower, mpidr_vcpu

if TYPE_CHECKING:
    from mediatord.core.effects import Effect
    from mediatord.core.mediator import Mediator


class PsciFn(IntEnum):
    """PSCI function IDs (Linux ``include/uapi/linux/psci.h``); ``_64`` = SMC64 form."""

    PSCI_VERSION = 0x8400_0000
    CPU_SUSPEND = 0x8400_0001
    CPU_SUSPEND_64 = 0xC400_0001
    CPU_OFF = 0x8400_0002
    CPU_ON = 0x8400_0003
    CPU_ON_64 = 0xC400_0003
    AFFINITY_INFO = 0x8400_0004
    AFFINITY_INFO_64 = 0xC400_0004
    MIGRATE = 0x8400_0005
    MIGRATE_64 = 0xC400_0005
    MIGRATE_INFO_TYPE = 0x8400_0006
    MIGRATE_INFO_UP_CPU = 0x8400_0007
    MIGRATE_INFO_UP_CPU_64 = 0xC400_0007
    SYSTEM_OFF = 0x8400_0008
    SYSTEM_RESET = 0x8400_0009
    PSCI_FEATURES = 0x8400_000A
    CPU_FREEZE = 0x8400_000B
    CPU_DEFAULT_SUSPEND = 0x8400_000C
    CPU_DEFAULT_SUSPEND_64 = 0xC400_000C
    NODE_HW_STATE = 0x8400_000D
    NODE_HW_STATE_64 = 0xC400_000D
    SYSTEM_SUSPEND = 0x8400_000E
    SYSTEM_SUSPEND_64 = 0xC400_000E
    PSCI_SET_SUSPEND_MODE = 0x8400_000F
    PSCI_STAT_RESIDENCY = 0x8400_0010
    PSCI_STAT_RESIDENCY_64 = 0xC400_0010
    PSCI_STAT_COUNT = 0x8400_0011
    PSCI_STAT_COUNT_64 = 0xC400_0011
    SYSTEM_RESET2 = 0x8400_0012
    SYSTEM_RESET2_64 = 0xC400_0012
    MEM_PROTECT = 0x8400_0013
    MEM_PROTECT_CHECK_RANGE = 0x8400_0014
    MEM_PROTECT_CHECK_RANGE_64 = 0xC400_0014
    SYSTEM_OFF2 = 0x8400_0015
    SYSTEM_OFF2_64 = 0xC400_0015


class PsciRet(IntEnum):
    SUCCESS = 0
    NOT_SUPPORTED = -1
    INVALID_PARAMETERS = -2
    DENIED = -3
    ALREADY_ON = -4
    ON_PENDING = -5
    INTERNAL_FAILURE = -6
    NOT_PRESENT = -7
    DISABLED = -8
    INVALID_ADDRESS = -9


class AffinityInfo(IntEnum):
    ON = 0
    OFF = 1
    ON_PENDING = 2


PSCI_VERSION_1_1: Final = 0x0001_0001
# MIGRATE_INFO_TYPE 2: no Trusted OS to migrate (KVM PSCI_0_2_TOS_MP, Xen).
MIGRATE_INFO_TYPE_MP: Final = 2

# CPU_SUSPEND power_state, original format (PSCI_FEATURES reports flags 0:
# original format, platform-coordinated mode only). TF-A PSTATE_VALID_MASK.
PSTATE_RESERVED: Final = 0xFCFE_0000
PSTATE_TYPE_POWERDOWN: Final = 1 << 16
PSTATE_LEVEL_SHIFT: Final = 24
PSTATE_LEVEL_MASK: Final = 0x3
# A domain's power levels: 0 vCPU, 1 cluster (16 vCPUs sharing Aff1), 2 system.
MAX_POWER_LEVEL: Final = 2
CPU_SUSPEND_FEATURES: Final = 0

# AFFINITY_INFO levels 0..3 select Aff0..Aff3; Aff3 sits at bit 32 (MPIDR_LEVEL_SHIFT).
AFFINITY_SHIFT: Final = (0, 8, 16, 32)

RESET_TYPE_SYSTEM_WARM_RESET: Final = 0

# x1..x3 of the call, already narrowed to 32 bits for SMC32 function IDs.
Args = tuple[int, int, int]
Handler = Callable[["Mediator", Domain, Vcpu, Args, list["Effect"]], int | None]


def psci_version(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    return PSCI_VERSION_1_1


def cpu_suspend(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    power_state, entry_point, context_id = x
    if power_state & PSTATE_RESERVED:
        return PsciRet.INVALID_PARAMETERS
    if (power_state >> PSTATE_LEVEL_SHIFT) & PSTATE_LEVEL_MASK > MAX_POWER_LEVEL:
        return PsciRet.INVALID_PARAMETERS
    if power_state & PSTATE_TYPE_POWERDOWN:
        if not d.entry_point_valid(entry_point):
            return PsciRet.INVALID_ADDRESS
        m.power_down_vcpu(d, v, entry_point, context_id, fx)
        return PsciRet.SUCCESS
    m.standby_vcpu(d, v, fx)
    return None


def cpu_off(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    # A domain keeps one vCPU that is not off: with none left nothing could take
    # an interrupt or call again, so the last one is refused as TF-A refuses the
    # last physical CPU.
    if not any(o.power is not VcpuPower.OFF for o in d.vcpus if o is not v):
        return PsciRet.DENIED
    m.set_power(d, v, VcpuPower.OFF, fx)
    return PsciRet.SUCCESS


def cpu_on(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    target_cpu, entry_point, context_id = x
    index = mpidr_vcpu(target_cpu)
    if index is None or index >= len(d.vcpus):
        return PsciRet.INVALID_PARAMETERS
    if not d.entry_point_valid(entry_point):
        return PsciRet.INVALID_ADDRESS
    target = d.vcpus[index]
    if target.power is not VcpuPower.OFF:
        return PsciRet.ALREADY_ON
    m.start_vcpu(d, target, entry_point, context_id, fx)
    return PsciRet.SUCCESS


def affinity_info(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    target_affinity, lowest_affinity_level, *_ = x
    if lowest_affinity_level > 3 or target_affinity & ~MPIDR_HWID_BITMASK:
        return PsciRet.INVALID_PARAMETERS
    mask = MPIDR_HWID_BITMASK & (smccc.MASK64 << AFFINITY_SHIFT[lowest_affinity_level])
    wanted = target_affinity & mask
    found = False
    for other in d.vcpus:
        if other.mpidr & mask == wanted:
            if other.power is not VcpuPower.OFF:
                return AffinityInfo.ON
            found = True
    return AffinityInfo.OFF if found else PsciRet.INVALID_PARAMETERS


def migrate_info_type(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    return MIGRATE_INFO_TYPE_MP


def system_off(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    if d.hardware_domain:
        m.power_off_host(v, fx)
    else:
        m.shut_down_domain(d, v.index, fx)
    return PsciRet.SUCCESS


def system_reset(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    if d.hardware_domain:
        m.reset_host(v, fx)
    else:
        m.reboot_domain(d, v.index, fx)
    return PsciRet.SUCCESS


def system_reset2(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    reset_type = x[0]
    # reset_type is a 32-bit parameter in both forms. Only the architectural
    # warm reset exists here; no vendor-specific types (bit 31) are defined.
    if reset_type & smccc.MASK32 != RESET_TYPE_SYSTEM_WARM_RESET:
        return PsciRet.INVALID_PARAMETERS
    return system_reset(m, d, v, x, fx)


def system_suspend(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    entry_point, context_id, *_ = x
    # TF-A checks the other cores before the entry point; suspended or standby
    # vCPUs are not off.
    if any(o.power is not VcpuPower.OFF for o in d.vcpus if o is not v):
        return PsciRet.DENIED
    if not d.entry_point_valid(entry_point):
        return PsciRet.INVALID_ADDRESS
    return m.suspend_domain(d, v, entry_point, context_id, fx)


def psci_features(m: Mediator, d: Domain, v: Vcpu, x: Args, fx: list[Effect]) -> int | None:
    psci_func_id = x[0]
    if d.aarch32 and smccc.is_smc64(psci_func_id):
        return PsciRet.NOT_SUPPORTED
    return FEATURES.get(psci_func_id, PsciRet.NOT_SUPPORTED)


HANDLERS: Final[dict[int, Handler]] = {
    PsciFn.PSCI_VERSION: psci_version,
    PsciFn.CPU_SUSPEND: cpu_suspend,
    PsciFn.CPU_SUSPEND_64: cpu_suspend,
    PsciFn.CPU_OFF: cpu_off,
    PsciFn.CPU_ON: cpu_on,
    PsciFn.CPU_ON_64: cpu_on,
    PsciFn.AFFINITY_INFO: affinity_info,
    PsciFn.AFFINITY_INFO_64: affinity_info,
    PsciFn.MIGRATE_INFO_TYPE: migrate_info_type,
    PsciFn.SYSTEM_OFF: system_off,
    PsciFn.SYSTEM_RESET: system_reset,
    PsciFn.PSCI_FEATURES: psci_features,
    PsciFn.SYSTEM_SUSPEND: system_suspend,
    PsciFn.SYSTEM_SUSPEND_64: system_suspend,
    PsciFn.SYSTEM_RESET2: system_reset2,
    PsciFn.SYSTEM_RESET2_64: system_reset2,
}

# PSCI_FEATURES: 0 for every implemented function and for SMCCC_VERSION (as
# TF-A, KVM and Xen answer); CPU_SUSPEND reports its feature flags. Everything
# else, MIGRATE and MIGRATE_INFO_UP_CPU included (no Trusted OS), is NOT_SUPPORTED.
FEATURES: Final[dict[int, int]] = {
    **{fid: 0 for fid in HANDLERS},
    PsciFn.CPU_SUSPEND: CPU_SUSPEND_FEATURES,
    PsciFn.CPU_SUSPEND_64: CPU_SUSPEND_FEATURES,
    smccc.SMCCC_VERSION: 0,
}
