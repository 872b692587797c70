"""Virtual PSCI 1.1 through ``Mediator.call``, the call refusals and the Control
operations, on the embedded default board.

Expected values are literals from the PSCI spec (DEN0022) and design.md sections 3
and 5, never the constants of the code under test, so a wrong constant fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from boards import BOARDS

from mediatord.backends import create_platform
from mediatord.core.clock import ManualClock
from mediatord.core.config import BoardConfig, DomainConfig
from mediatord.core.effects import (
    CallAborted,
    CallCompleted,
    DeviceAssigned,
    DomainCreated,
    DomainDestroyed,
    DomainEvent,
    DomainStateChanged,
    Effect,
    EventKind,
    HardwareStep,
    HostStateChanged,
    Resume,
    Shutdown,
    ShutdownReason,
    Start,
    VcpuPowerChanged,
    Wake,
)
from mediatord.core.mediator import (
    Blocked,
    Created,
    Destroyed,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import Domain, DomainState, HostState, VcpuPower

# ---- PSCI return values as 64-bit x0 (DEN0022 section 5.2.2, sign-extended)
SUCCESS = 0
NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
INVALID_PARAMETERS = 0xFFFF_FFFF_FFFF_FFFE  # -2
DENIED = 0xFFFF_FFFF_FFFF_FFFD  # -3
ALREADY_ON = 0xFFFF_FFFF_FFFF_FFFC  # -4
INVALID_ADDRESS = 0xFFFF_FFFF_FFFF_FFF7  # -9
AFF_ON = 0
AFF_OFF = 1

# ---- function IDs
SMCCC_VERSION = 0x8000_0000
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
SET_SUSPEND_MODE = 0x8400_000F
STAT_RESIDENCY = 0x8400_0010
STAT_RESIDENCY_64 = 0xC400_0010
STAT_COUNT = 0x8400_0011
STAT_COUNT_64 = 0xC400_0011
SYSTEM_RESET2 = 0x8400_0012
SYSTEM_RESET2_64 = 0xC400_0012
MEM_PROTECT = 0x8400_0013
MEM_PROTECT_CHECK_RANGE = 0x8400_0014
MEM_PROTECT_CHECK_RANGE_64 = 0xC400_0014
SYSTEM_OFF2 = 0x8400_0015
SYSTEM_OFF2_64 = 0xC400_0015

# ---- CPU_SUSPEND power_state (original format)
STANDBY = 0x0000_0000
POWERDOWN = 0x0001_0000

# ---- the default board
RAM_BASE = 0x4000_0000
DOMU_RAM_END = 0x5000_0000  # 256 MiB
DOM0_RAM_END = 0x8000_0000  # 1 GiB
ENTRY = 0x4008_0000
VTIMER = 27
UART_0_IRQ = 53  # dom0
UART_1_IRQ = 54  # domu1
ETH_0_IRQ = 89  # domu1
USB_0_IRQ = 97  # domu2
DOMAIN_IDS = {"dom0": 0, "domu1": 1, "domu2": 2}

SMC32_AND_64 = pytest.mark.parametrize("smc64", [False, True], ids=["smc32", "smc64"])


# ------------------------------------------------------------------ helpers


def returned(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> Returned:
    outcome = m.call(domain, vcpu, fid, list(args))
    assert isinstance(outcome, Returned), outcome
    return outcome


def x0(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> int:
    """x0 of a call that returns at once; x1..x3 must be 0."""
    regs = returned(m, domain, vcpu, fid, *args).regs
    assert regs[1:] == (0, 0, 0)
    return regs[0]


def refused(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> Refusal:
    outcome = m.call(domain, vcpu, fid, list(args))
    assert isinstance(outcome, Refused), outcome
    assert outcome.message
    return outcome.reason


def blocked(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> Blocked:
    outcome = m.call(domain, vcpu, fid, list(args))
    assert isinstance(outcome, Blocked), outcome
    return outcome


def raised(m: Mediator, irq: int, domain: str = "", vcpu: int = 0) -> Raised:
    outcome = m.raise_interrupt(irq, domain, vcpu)
    assert isinstance(outcome, Raised), outcome
    return outcome


def events(effects: tuple[Effect, ...], domain: str | None = None) -> list[tuple[int, EventKind]]:
    """(vCPU, kind) of the DomainEvents among ``effects``, optionally of one domain."""
    return [
        (e.vcpu, e.kind)
        for e in effects
        if isinstance(e, DomainEvent) and domain in (None, e.domain)
    ]


def powers(m: Mediator, domain: str) -> list[VcpuPower]:
    found = m.system.domain(domain)
    assert found is not None
    return [v.power for v in found.vcpus]


def dom(m: Mediator, domain: str) -> Domain:
    found = m.system.domain(domain)
    assert found is not None
    return found


@contextmanager
def unchanged(m: Mediator) -> Iterator[None]:
    before = m.snapshot()
    yield
    assert m.snapshot() == before


def cpu_on(m: Mediator, domain: str, target: int, entry: int = ENTRY, ctx: int = 0) -> None:
    assert x0(m, domain, 0, CPU_ON_64, target, entry, ctx) == SUCCESS


def standby(m: Mediator, domain: str, vcpu: int) -> None:
    blocked(m, domain, vcpu, CPU_SUSPEND, STANDBY)


def create(
    m: Mediator,
    name: str,
    *,
    vcpus: int = 2,
    ram_base: int = RAM_BASE,
    ram_size: int = 0x1000_0000,
    devices: tuple[str, ...] = (),
) -> Created:
    config = DomainConfig(name, 0, vcpus, ram_base, ram_size, devices=devices)
    outcome = m.create_domain(config)
    assert isinstance(outcome, Created), outcome
    return outcome


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> BoardConfig:
    """Every test here runs on each backend (conftest's ``m`` boots this board)."""
    return BOARDS[request.param]


@pytest.fixture
def a32(m: Mediator) -> str:
    """An AArch32 domain with 2 vCPUs and 1 MiB of RAM at 0x80000000."""
    outcome = m.create_domain(
        DomainConfig(
            name="a32", id=0, vcpus=2, ram_base=0x8000_0000, ram_size=0x10_0000, aarch32=True
        )
    )
    assert isinstance(outcome, Created), outcome
    return "a32"


# --------------------------------------------------------------------- boot


def test_boot_effects_and_state(board: BoardConfig) -> None:
    m, all_fx = Mediator.boot(board, create_platform(board, ManualClock()))
    fx = [e for e in all_fx if not isinstance(e, HardwareStep)]
    expected: list[Effect] = []
    for name, domain_id in DOMAIN_IDS.items():
        expected += [
            DomainCreated(domain_id, name),
            VcpuPowerChanged(domain_id, name, 0, VcpuPower.ON),
            DomainEvent(domain_id, name, 1, 0, Start(RAM_BASE, 0)),
        ]
    assert fx == expected
    assert powers(m, "dom0") == [VcpuPower.ON, VcpuPower.OFF, VcpuPower.OFF, VcpuPower.OFF]
    assert powers(m, "domu1") == [VcpuPower.ON, VcpuPower.OFF]
    assert powers(m, "domu2") == [VcpuPower.ON, VcpuPower.OFF]
    assert [v.mpidr for v in dom(m, "dom0").vcpus] == [0, 1, 2, 3]
    assert dom(m, "dom0").vcpus[0].entry_point == RAM_BASE
    assert m.system.host_state is HostState.ACTIVE
    assert all(d.state is DomainState.RUNNING for d in m.system.domains.values())
    assert {name: d.owner for name, d in m.system.devices.items()} == {
        "UART_0": 0,
        "SD_0": 0,
        "ETH_3": 0,
        "GPU": 0,
        "UART_1": 1,
        "ETH_0": 1,
        "USB_0": 2,
        "SD_1": 2,
    }
    assert all(d.wake_source for d in m.system.devices.values())


# ------------------------------------------------------------ PSCI_VERSION


@pytest.mark.parametrize("domain", ["dom0", "domu1", "domu2"])
def test_psci_version_is_1_1(m: Mediator, domain: str) -> None:
    with unchanged(m):
        outcome = returned(m, domain, 0, PSCI_VERSION)
    assert outcome.regs == (0x0001_0001, 0, 0, 0)
    assert outcome.effects == ()


def test_psci_version_from_a_started_secondary(m: Mediator) -> None:
    cpu_on(m, "dom0", 3)
    assert x0(m, "dom0", 3, PSCI_VERSION) == 0x0001_0001


# ------------------------------------------------------------ PSCI_FEATURES

IMPLEMENTED = [
    PSCI_VERSION,
    CPU_SUSPEND,
    CPU_SUSPEND_64,
    CPU_OFF,
    CPU_ON,
    CPU_ON_64,
    AFFINITY_INFO,
    AFFINITY_INFO_64,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    PSCI_FEATURES,
    SYSTEM_SUSPEND,
    SYSTEM_SUSPEND_64,
    SYSTEM_RESET2,
    SYSTEM_RESET2_64,
    SMCCC_VERSION,
]
UNIMPLEMENTED = [
    MIGRATE,
    MIGRATE_64,
    MIGRATE_INFO_UP_CPU,
    MIGRATE_INFO_UP_CPU_64,
    CPU_FREEZE,
    CPU_DEFAULT_SUSPEND,
    CPU_DEFAULT_SUSPEND_64,
    NODE_HW_STATE,
    NODE_HW_STATE_64,
    SET_SUSPEND_MODE,
    STAT_RESIDENCY,
    STAT_RESIDENCY_64,
    STAT_COUNT,
    STAT_COUNT_64,
    MEM_PROTECT,
    MEM_PROTECT_CHECK_RANGE,
    MEM_PROTECT_CHECK_RANGE_64,
    SYSTEM_OFF2,
    SYSTEM_OFF2_64,
]
UNKNOWN = [
    0xC400_A011,  # TFTF test_psci_features_invalid_id
    0xC400_0000,  # SMC64 forms that do not exist
    0xC400_0002,
    0xC400_0006,
    0xC400_0008,
    0xC400_0009,
    0xC400_000A,
    0x8400_0016,
    0x8400_0020,
    0x0400_0000,  # yielding
    0x0000_0000,
    0xFFFF_FFFF,
    0x8200_0FFF,  # SiP, not an EEMI API
    0xC000_0000,  # SMC64 SMCCC_VERSION
    0x8000_8000,  # ARCH_WORKAROUND_1
]


@pytest.mark.parametrize("fid", IMPLEMENTED, ids=hex)
def test_features_of_implemented_function_is_0(m: Mediator, fid: int) -> None:
    # 0 for CPU_SUSPEND too: original power_state format (bit 1), no OSI (bit 0).
    with unchanged(m):
        assert x0(m, "domu1", 0, PSCI_FEATURES, fid) == 0


@pytest.mark.parametrize("fid", UNIMPLEMENTED + UNKNOWN, ids=hex)
def test_features_of_other_function_is_not_supported(m: Mediator, fid: int) -> None:
    with unchanged(m):
        assert x0(m, "dom0", 0, PSCI_FEATURES, fid) == 0xFFFF_FFFF_FFFF_FFFF


def test_features_ignores_upper_half_of_argument(m: Mediator) -> None:
    # PSCI_FEATURES is an SMC32 call: w1 is the function ID.
    assert x0(m, "dom0", 0, PSCI_FEATURES, 0xFFFF_FFFF_0000_0000 | CPU_ON_64) == 0
    assert x0(m, "dom0", 0, PSCI_FEATURES, 0x1_0000_0000 | MIGRATE) == NOT_SUPPORTED


def test_features_without_argument_is_not_supported(m: Mediator) -> None:
    # x1 absent reads as 0, which is no PSCI function.
    assert x0(m, "dom0", 0, PSCI_FEATURES) == NOT_SUPPORTED


@pytest.mark.parametrize("fid", UNIMPLEMENTED, ids=hex)
def test_calling_unimplemented_function_is_not_supported(m: Mediator, fid: int) -> None:
    with unchanged(m):
        outcome = returned(m, "dom0", 0, fid, 0, 0, 0)
    assert outcome.regs == (0xFFFF_FFFF_FFFF_FFFF, 0, 0, 0)
    assert outcome.effects == ()


# ----------------------------------------------------------- AArch32 domain

SMC64_IMPLEMENTED = [
    CPU_SUSPEND_64,
    CPU_ON_64,
    AFFINITY_INFO_64,
    SYSTEM_SUSPEND_64,
    SYSTEM_RESET2_64,
]


@pytest.mark.parametrize("fid", SMC64_IMPLEMENTED, ids=hex)
def test_aarch32_domain_cannot_call_smc64(m: Mediator, a32: str, fid: int) -> None:
    with unchanged(m):
        # arguments that would succeed from a 64-bit caller
        outcome = returned(m, a32, 0, fid, 0, 0x8000_0000, 0)
    assert outcome.regs == (0xFFFF_FFFF_FFFF_FFFF, 0, 0, 0)
    assert outcome.effects == ()


@pytest.mark.parametrize("fid", SMC64_IMPLEMENTED, ids=hex)
def test_aarch32_domain_features_of_smc64_is_not_supported(m: Mediator, a32: str, fid: int) -> None:
    assert x0(m, a32, 0, PSCI_FEATURES, fid) == 0xFFFF_FFFF_FFFF_FFFF


@pytest.mark.parametrize("fid", sorted(set(IMPLEMENTED) - set(SMC64_IMPLEMENTED)), ids=hex)
def test_aarch32_domain_features_of_smc32_is_0(m: Mediator, a32: str, fid: int) -> None:
    assert x0(m, a32, 0, PSCI_FEATURES, fid) == 0


def test_aarch32_domain_may_start_a_thumb_entry_point(m: Mediator, a32: str) -> None:
    outcome = returned(m, a32, 0, CPU_ON, 1, 0x8000_1001, 0x55)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [(1, Start(0x8000_1001, 0x55))]
    assert dom(m, a32).vcpus[1].entry_point == 0x8000_1001


@pytest.mark.parametrize("entry", [0x7FFF_F000, 0x8010_0000, 0x8010_0001, 0], ids=hex)
def test_aarch32_domain_entry_must_be_in_its_ram(m: Mediator, a32: str, entry: int) -> None:
    with unchanged(m):
        assert x0(m, a32, 0, CPU_ON, 1, entry, 0) == INVALID_ADDRESS


def test_aarch32_domain_psci_version_and_affinity(m: Mediator, a32: str) -> None:
    assert x0(m, a32, 0, PSCI_VERSION) == 0x0001_0001
    assert x0(m, a32, 0, AFFINITY_INFO, 1, 0) == AFF_OFF


# ------------------------------------------------------------------- CPU_ON


@SMC32_AND_64
def test_cpu_on_starts_the_target(m: Mediator, smc64: bool) -> None:
    fid = CPU_ON_64 if smc64 else CPU_ON
    outcome = returned(m, "dom0", 0, fid, 2, 0x4123_4000, 0x1234_5678)
    assert outcome.regs == (0, 0, 0, 0)
    assert outcome.effects == (
        VcpuPowerChanged(0, "dom0", 2, VcpuPower.ON),
        DomainEvent(0, "dom0", 2, 2, Start(0x4123_4000, 0x1234_5678)),
    )
    v = dom(m, "dom0").vcpus[2]
    assert (v.power, v.entry_point, v.context_id) == (VcpuPower.ON, 0x4123_4000, 0x1234_5678)
    assert powers(m, "dom0") == [VcpuPower.ON, VcpuPower.OFF, VcpuPower.ON, VcpuPower.OFF]
    # the started vCPU can call
    assert x0(m, "dom0", 2, AFFINITY_INFO, 2, 0) == AFF_ON


def test_cpu_on_keeps_a_64_bit_context_id(m: Mediator) -> None:
    outcome = returned(m, "domu1", 0, CPU_ON_64, 1, ENTRY, 0xDEAD_BEEF_CAFE_F00D)
    assert events(outcome.effects) == [(1, Start(ENTRY, 0xDEAD_BEEF_CAFE_F00D))]
    assert dom(m, "domu1").vcpus[1].context_id == 0xDEAD_BEEF_CAFE_F00D


def test_cpu_on_events_are_numbered_per_domain(m: Mediator) -> None:
    seqs = []
    for target in (1, 2, 3):
        outcome = returned(m, "dom0", 0, CPU_ON, target, ENTRY, target)
        seqs += [e.seq for e in outcome.effects if isinstance(e, DomainEvent)]
    outcome = returned(m, "domu1", 0, CPU_ON, 1, ENTRY, 0)
    seqs += [e.seq for e in outcome.effects if isinstance(e, DomainEvent)]
    assert seqs == [2, 3, 4, 2]
    assert dom(m, "dom0").event_seq == 4


def test_cpu_on_from_a_secondary_and_of_vcpu_0_again(m: Mediator) -> None:
    cpu_on(m, "domu1", 1)
    assert x0(m, "domu1", 0, CPU_OFF) == SUCCESS
    outcome = returned(m, "domu1", 1, CPU_ON, 0, 0x4000_2000, 9)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [(0, Start(0x4000_2000, 9))]


@SMC32_AND_64
@pytest.mark.parametrize(("caller", "target"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_cpu_on_of_an_on_vcpu_is_already_on(
    m: Mediator, smc64: bool, caller: int, target: int
) -> None:
    cpu_on(m, "domu1", 1)
    with unchanged(m):
        assert x0(m, "domu1", caller, CPU_ON_64 if smc64 else CPU_ON, target, ENTRY, 0) == (
            0xFFFF_FFFF_FFFF_FFFC
        )


@SMC32_AND_64
@pytest.mark.parametrize("state", [STANDBY, POWERDOWN])
def test_cpu_on_of_a_suspended_vcpu_is_already_on(m: Mediator, smc64: bool, state: int) -> None:
    cpu_on(m, "domu1", 1)
    m.call("domu1", 1, CPU_SUSPEND, [state, ENTRY, 0])
    with unchanged(m):
        assert x0(m, "domu1", 0, CPU_ON_64 if smc64 else CPU_ON, 1, ENTRY, 0) == ALREADY_ON


@SMC32_AND_64
@pytest.mark.parametrize(
    "target",
    [2, 3, 0x10, 0x11, 0x100, 0x101, 0x1_0000, 0x0100_0000, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF],
    ids=hex,
)
def test_cpu_on_of_a_nonexistent_mpidr_is_invalid_parameters(
    m: Mediator, smc64: bool, target: int
) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, CPU_ON_64 if smc64 else CPU_ON, target, ENTRY, 0) == (
            0xFFFF_FFFF_FFFF_FFFE
        )


@pytest.mark.parametrize(
    "target",
    [0x1_0000_0000, 0x1_0000_0001, 0xFF_0000_0000, 0x100_0000_0001, 0xFFFF_FFFF_0000_0001],
    ids=hex,
)
def test_cpu_on_64_of_a_nonexistent_wide_mpidr_is_invalid_parameters(
    m: Mediator, target: int
) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, CPU_ON_64, target, ENTRY, 0) == INVALID_PARAMETERS


def test_cpu_on_dom0_vcpu_4_does_not_exist(m: Mediator) -> None:
    assert x0(m, "dom0", 0, CPU_ON, 3, ENTRY, 0) == SUCCESS
    assert x0(m, "dom0", 0, CPU_ON, 4, ENTRY, 0) == INVALID_PARAMETERS


@SMC32_AND_64
@pytest.mark.parametrize(
    "entry",
    [0, 1, 0x3FFF_F000, 0x3FFF_FFFF, DOMU_RAM_END, DOMU_RAM_END + 0x1000, 0x4000_0001, 0x4FFF_FFFF],
    ids=hex,
)
def test_cpu_on_with_a_bad_entry_is_invalid_address(m: Mediator, smc64: bool, entry: int) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, CPU_ON_64 if smc64 else CPU_ON, 1, entry, 0) == (
            0xFFFF_FFFF_FFFF_FFF7
        )


@pytest.mark.parametrize("entry", [RAM_BASE, 0x4000_0002, 0x4FFF_FFFC], ids=hex)
def test_cpu_on_entry_at_the_edges_of_ram(m: Mediator, entry: int) -> None:
    assert x0(m, "domu1", 0, CPU_ON_64, 1, entry, 0) == SUCCESS


def test_cpu_on_dom0_entry_is_checked_against_its_own_ram(m: Mediator) -> None:
    assert x0(m, "dom0", 0, CPU_ON, 1, DOM0_RAM_END, 0) == INVALID_ADDRESS
    assert x0(m, "dom0", 0, CPU_ON, 1, DOM0_RAM_END - 4, 0) == SUCCESS
    # the same address is outside a domU's 256 MiB
    assert x0(m, "domu1", 0, CPU_ON, 1, DOM0_RAM_END - 4, 0) == INVALID_ADDRESS


def test_cpu_on_checks_target_then_entry_then_state(m: Mediator) -> None:
    with unchanged(m):
        # nonexistent target wins over a bad entry
        assert x0(m, "domu1", 0, CPU_ON, 5, 0, 0) == INVALID_PARAMETERS
        # a bad entry wins over ALREADY_ON (TF-A order)
        assert x0(m, "domu1", 0, CPU_ON, 0, 0, 0) == INVALID_ADDRESS


def test_cpu_on_smc32_ignores_upper_halves(m: Mediator) -> None:
    outcome = returned(
        m, "dom0", 0, CPU_ON, 0xFFFF_FFFF_0000_0001, 0xABCD_0000_4000_1000, 0x1234_5678_9ABC_DEF0
    )
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [(1, Start(0x4000_1000, 0x9ABC_DEF0))]
    v = dom(m, "dom0").vcpus[1]
    assert (v.entry_point, v.context_id) == (0x4000_1000, 0x9ABC_DEF0)


def test_cpu_on_smc64_does_not_narrow(m: Mediator) -> None:
    with unchanged(m):
        assert (
            x0(m, "dom0", 0, CPU_ON_64, 0xFFFF_FFFF_0000_0001, 0xABCD_0000_4000_1000, 0)
            == INVALID_PARAMETERS
        )
        # a valid target, but the entry's upper half puts it outside RAM
        assert x0(m, "dom0", 0, CPU_ON_64, 1, 0x1_4000_1000, 0) == INVALID_ADDRESS


def test_cpu_on_ignores_extra_arguments(m: Mediator) -> None:
    args = [1, ENTRY, 7, *range(100, 114)]
    assert len(args) == 17
    outcome = m.call("domu2", 0, CPU_ON_64, args)
    assert isinstance(outcome, Returned)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [(1, Start(ENTRY, 7))]


def test_cpu_on_in_one_domain_leaves_the_others_alone(m: Mediator) -> None:
    before = m.snapshot()
    cpu_on(m, "domu1", 1)
    after = m.snapshot()
    assert after.domains[0] == before.domains[0]
    assert after.domains[2] == before.domains[2]


# ------------------------------------------------------------ AFFINITY_INFO


@SMC32_AND_64
@pytest.mark.parametrize(
    ("target", "expected"),
    [(0, 0), (1, 1), (2, 1), (3, 1), (4, 0xFFFF_FFFF_FFFF_FFFE), (0x10, 0xFFFF_FFFF_FFFF_FFFE)],
)
def test_affinity_info_level_0_at_boot(
    m: Mediator, smc64: bool, target: int, expected: int
) -> None:
    with unchanged(m):
        assert x0(m, "dom0", 0, AFFINITY_INFO_64 if smc64 else AFFINITY_INFO, target, 0) == (
            expected
        )


@SMC32_AND_64
def test_affinity_info_follows_cpu_on_and_off(m: Mediator, smc64: bool) -> None:
    fid = AFFINITY_INFO_64 if smc64 else AFFINITY_INFO
    cpu_on(m, "dom0", 2)
    assert [x0(m, "dom0", 0, fid, t, 0) for t in range(4)] == [0, 1, 0, 1]
    assert x0(m, "dom0", 2, CPU_OFF) == SUCCESS
    assert [x0(m, "dom0", 0, fid, t, 0) for t in range(4)] == [0, 1, 1, 1]


@SMC32_AND_64
@pytest.mark.parametrize(
    ("target", "level", "expected"),
    [
        (0x0, 1, AFF_ON),
        (0x3, 1, AFF_ON),  # Aff0 is ignored at level 1
        (0xF, 1, AFF_ON),  # even an Aff0 no vCPU has
        (0x100, 1, INVALID_PARAMETERS),  # no cluster 1
        (0x0, 2, AFF_ON),
        (0xFF0F, 2, AFF_ON),  # Aff1 and Aff0 ignored at level 2
        (0x1_0000, 2, INVALID_PARAMETERS),  # no Aff2 = 1
        (0x0, 3, AFF_ON),
        (0xFF_FFFF, 3, AFF_ON),  # only Aff3 counts at level 3
    ],
)
def test_affinity_info_levels(
    m: Mediator, smc64: bool, target: int, level: int, expected: int
) -> None:
    with unchanged(m):
        assert x0(m, "dom0", 0, AFFINITY_INFO_64 if smc64 else AFFINITY_INFO, target, level) == (
            expected
        )


@pytest.mark.parametrize(
    ("target", "level", "expected"),
    [
        (0x1_0000_0000, 3, INVALID_PARAMETERS),  # Aff3 = 1: no such vCPU
        (0xFF_0000_0000, 3, INVALID_PARAMETERS),
        (0x1_0000_0000, 0, INVALID_PARAMETERS),
        (0x1_0000_0000, 2, INVALID_PARAMETERS),
    ],
)
def test_affinity_info_64_aff3(m: Mediator, target: int, level: int, expected: int) -> None:
    assert x0(m, "dom0", 0, AFFINITY_INFO_64, target, level) == expected


def test_affinity_info_smc32_ignores_upper_halves(m: Mediator) -> None:
    # Aff3 = 1 and level 2**32 narrow to target 0, level 0
    assert x0(m, "dom0", 0, AFFINITY_INFO, 0x1_0000_0000, 0x1_0000_0000) == AFF_ON
    assert x0(m, "dom0", 0, AFFINITY_INFO, 0xABCD_0000_0000_0001, 0) == AFF_OFF
    assert x0(m, "dom0", 0, AFFINITY_INFO_64, 0x1_0000_0000, 0x1_0000_0000) == (INVALID_PARAMETERS)


@SMC32_AND_64
@pytest.mark.parametrize("level", [4, 5, 8, 0xFF, 0x8000_0000, 0xFFFF_FFFF])
def test_affinity_info_level_above_3_is_invalid_parameters(
    m: Mediator, smc64: bool, level: int
) -> None:
    with unchanged(m):
        assert x0(m, "dom0", 0, AFFINITY_INFO_64 if smc64 else AFFINITY_INFO, 0, level) == (
            0xFFFF_FFFF_FFFF_FFFE
        )


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("fid", "target"),
    [
        (AFFINITY_INFO, 0x0100_0000),  # bits 31:24 are not affinity
        (AFFINITY_INFO, 0x4000_0000),
        (AFFINITY_INFO, 0x8000_0000),  # MPIDR bit 31 (RES1) is not an affinity bit
        (AFFINITY_INFO, 0xFFFF_FFFF),
        (AFFINITY_INFO_64, 0x0100_0000),
        (AFFINITY_INFO_64, 0x100_0000_0000),  # above Aff3
        (AFFINITY_INFO_64, 0x8000_0000_0000_0000),
    ],
    ids=hex,
)
def test_affinity_info_non_hwid_bits_are_invalid_parameters(
    m: Mediator, fid: int, target: int, level: int
) -> None:
    assert x0(m, "dom0", 0, fid, target, level) == INVALID_PARAMETERS


@pytest.mark.parametrize("state", [STANDBY, POWERDOWN])
def test_affinity_info_counts_suspended_vcpus_as_on(m: Mediator, state: int) -> None:
    cpu_on(m, "domu1", 1)
    m.call("domu1", 1, CPU_SUSPEND_64, [state, ENTRY, 0])
    assert dom(m, "domu1").vcpus[1].power is not VcpuPower.ON
    assert x0(m, "domu1", 0, AFFINITY_INFO, 1, 0) == AFF_ON


def test_affinity_info_with_two_clusters(m: Mediator) -> None:
    create(m, "big", vcpus=18)  # vCPUs 16 and 17 are MPIDR 0x100 and 0x101
    assert [v.mpidr for v in dom(m, "big").vcpus[14:]] == [0xE, 0xF, 0x100, 0x101]
    assert x0(m, "big", 0, AFFINITY_INFO, 0x100, 0) == AFF_OFF
    assert x0(m, "big", 0, AFFINITY_INFO, 0x101, 0) == AFF_OFF
    assert x0(m, "big", 0, AFFINITY_INFO, 0x102, 0) == INVALID_PARAMETERS
    assert x0(m, "big", 0, AFFINITY_INFO, 0x110, 0) == INVALID_PARAMETERS
    assert x0(m, "big", 0, AFFINITY_INFO, 0x1FF, 1) == AFF_OFF  # cluster 1 all off
    assert x0(m, "big", 0, AFFINITY_INFO, 0x200, 1) == INVALID_PARAMETERS
    assert x0(m, "big", 0, AFFINITY_INFO, 0x100, 2) == AFF_ON  # vCPU 0 is in Aff2 = 0
    assert x0(m, "big", 0, CPU_ON, 0x101, ENTRY, 0) == SUCCESS
    assert dom(m, "big").vcpus[17].power is VcpuPower.ON
    assert x0(m, "big", 0, AFFINITY_INFO, 0x100, 0) == AFF_OFF
    assert x0(m, "big", 0, AFFINITY_INFO, 0x101, 0) == AFF_ON
    assert x0(m, "big", 0, AFFINITY_INFO, 0x100, 1) == AFF_ON
    assert x0(m, "big", 17, CPU_ON, 0x0F, ENTRY, 0) == SUCCESS
    assert dom(m, "big").vcpus[15].power is VcpuPower.ON


# ------------------------------------------------------------------ CPU_OFF


def test_cpu_off_of_a_secondary(m: Mediator) -> None:
    cpu_on(m, "dom0", 1)
    outcome = returned(m, "dom0", 1, CPU_OFF)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert outcome.effects == (VcpuPowerChanged(0, "dom0", 1, VcpuPower.OFF),)
    assert powers(m, "dom0")[1] is VcpuPower.OFF
    assert x0(m, "dom0", 0, AFFINITY_INFO, 1, 0) == AFF_OFF
    assert refused(m, "dom0", 1, PSCI_VERSION) is Refusal.FAILED_PRECONDITION


def test_cpu_off_of_vcpu_0_while_another_is_on(m: Mediator) -> None:
    cpu_on(m, "domu2", 1)
    assert x0(m, "domu2", 0, CPU_OFF) == SUCCESS
    assert powers(m, "domu2") == [VcpuPower.OFF, VcpuPower.ON]
    with unchanged(m):
        assert x0(m, "domu2", 1, CPU_OFF) == 0xFFFF_FFFF_FFFF_FFFD


@pytest.mark.parametrize("domain", ["dom0", "domu1", "domu2"])
def test_cpu_off_of_the_last_vcpu_is_denied(m: Mediator, domain: str) -> None:
    with unchanged(m):
        outcome = returned(m, domain, 0, CPU_OFF)
    assert outcome.regs == (0xFFFF_FFFF_FFFF_FFFD, 0, 0, 0)
    assert outcome.effects == ()


def test_cpu_off_while_the_other_vcpu_is_in_standby(m: Mediator) -> None:
    cpu_on(m, "domu1", 1)
    standby(m, "domu1", 1)
    assert x0(m, "domu1", 0, CPU_OFF) == SUCCESS
    # the interrupt goes to the vCPU that is left, and wakes it
    r = raised(m, UART_1_IRQ)
    assert (r.outcome, r.vcpu) == (IrqOutcome.WOKE_VCPU, 1)


def test_cpu_off_then_on_again(m: Mediator) -> None:
    cpu_on(m, "dom0", 3, entry=0x4000_1000, ctx=1)
    assert x0(m, "dom0", 3, CPU_OFF) == SUCCESS
    outcome = returned(m, "dom0", 0, CPU_ON, 3, 0x4000_2000, 2)
    assert events(outcome.effects) == [(3, Start(0x4000_2000, 2))]
    assert dom(m, "dom0").vcpus[3].entry_point == 0x4000_2000


def test_cpu_off_has_no_smc64_form(m: Mediator) -> None:
    cpu_on(m, "dom0", 1)
    with unchanged(m):
        assert x0(m, "dom0", 1, 0xC400_0002) == NOT_SUPPORTED


# -------------------------------------------------------------- CPU_SUSPEND


@SMC32_AND_64
@pytest.mark.parametrize(
    "power_state",
    [
        0x0002_0000,  # bit 17
        0x0080_0000,  # bit 23
        0x0400_0000,  # bit 26
        0x4000_0000,  # bit 30 (extended-format StateType)
        0x8000_0000,  # bit 31
        0xFCFE_0000,
        0x0301_0000 | 0x0002_0000,
        0x0300_0000,  # power level 3: no such level
        0x0301_0000,
        0x0301_FFFF,
    ],
    ids=hex,
)
def test_cpu_suspend_bad_power_state_is_invalid_parameters(
    m: Mediator, smc64: bool, power_state: int
) -> None:
    with unchanged(m):
        assert x0(
            m, "domu1", 0, CPU_SUSPEND_64 if smc64 else CPU_SUSPEND, power_state, ENTRY, 0
        ) == (0xFFFF_FFFF_FFFF_FFFE)


@SMC32_AND_64
@pytest.mark.parametrize(
    "power_state", [0x0000_0000, 0x0000_0001, 0x0000_FFFF, 0x0100_0000, 0x0200_0000], ids=hex
)
def test_cpu_suspend_standby_blocks(m: Mediator, smc64: bool, power_state: int) -> None:
    # the entry point is not used by a standby state, so 0 is fine
    outcome = blocked(m, "domu1", 0, CPU_SUSPEND_64 if smc64 else CPU_SUSPEND, power_state, 0, 0)
    assert outcome.effects == (VcpuPowerChanged(1, "domu1", 0, VcpuPower.STANDBY),)
    assert powers(m, "domu1") == [VcpuPower.STANDBY, VcpuPower.OFF]
    # a vCPU in standby is inside a call: it cannot make another
    assert refused(m, "domu1", 0, PSCI_VERSION) is Refusal.FAILED_PRECONDITION


def test_cpu_suspend_smc32_ignores_upper_half_of_power_state(m: Mediator) -> None:
    blocked(m, "domu1", 0, CPU_SUSPEND, 0xFFFF_FFFF_0000_0000, 0, 0)
    assert powers(m, "domu1")[0] is VcpuPower.STANDBY


@pytest.mark.parametrize("vcpu", [0, 1])
def test_cpu_suspend_standby_woken_by_the_virtual_timer(m: Mediator, vcpu: int) -> None:
    cpu_on(m, "domu1", 1)
    standby(m, "domu1", vcpu)
    r = raised(m, 27, "domu1", vcpu)
    assert (r.outcome, r.domain, r.vcpu) == (IrqOutcome.WOKE_VCPU, "domu1", vcpu)
    assert r.effects == (
        VcpuPowerChanged(1, "domu1", vcpu, VcpuPower.ON),
        CallCompleted(1, vcpu, (0, 0, 0, 0)),
        DomainEvent(1, "domu1", 3, vcpu, Wake(27)),
    )
    assert powers(m, "domu1") == [VcpuPower.ON, VcpuPower.ON]
    assert x0(m, "domu1", vcpu, PSCI_VERSION) == 0x0001_0001


@pytest.mark.parametrize("irq", [UART_1_IRQ, ETH_0_IRQ])
def test_cpu_suspend_standby_woken_by_a_device_interrupt(m: Mediator, irq: int) -> None:
    standby(m, "domu1", 0)
    r = raised(m, irq)
    assert (r.outcome, r.domain, r.vcpu) == (IrqOutcome.WOKE_VCPU, "domu1", 0)
    assert CallCompleted(1, 0, (0, 0, 0, 0)) in r.effects
    assert events(r.effects) == [(0, Wake(irq))]


def test_cpu_suspend_standby_not_woken_by_another_vcpus_timer(m: Mediator) -> None:
    cpu_on(m, "domu1", 1)
    standby(m, "domu1", 0)
    r = raised(m, VTIMER, "domu1", 1)
    assert r.outcome is IrqOutcome.DELIVERED
    assert powers(m, "domu1") == [VcpuPower.STANDBY, VcpuPower.ON]


def test_cpu_suspend_standby_not_woken_by_another_domains_interrupt(m: Mediator) -> None:
    standby(m, "domu1", 0)
    assert raised(m, USB_0_IRQ).domain == "domu2"
    assert raised(m, VTIMER, "domu2", 0).outcome is IrqOutcome.DELIVERED
    assert powers(m, "domu1")[0] is VcpuPower.STANDBY


@SMC32_AND_64
@pytest.mark.parametrize(
    "entry", [0, 1, 0x3FFF_F000, DOMU_RAM_END, 0x4000_0001, 0x4FFF_FFFF], ids=hex
)
def test_cpu_suspend_powerdown_with_bad_entry_is_invalid_address(
    m: Mediator, smc64: bool, entry: int
) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, CPU_SUSPEND_64 if smc64 else CPU_SUSPEND, POWERDOWN, entry, 0) == (
            0xFFFF_FFFF_FFFF_FFF7
        )


@SMC32_AND_64
@pytest.mark.parametrize(
    "power_state", [0x0001_0000, 0x0001_0002, 0x0101_0000, 0x0201_0000], ids=hex
)
def test_cpu_suspend_powerdown_succeeds_and_resumes_on_interrupt(
    m: Mediator, smc64: bool, power_state: int
) -> None:
    fid = CPU_SUSPEND_64 if smc64 else CPU_SUSPEND
    outcome = returned(m, "domu2", 0, fid, power_state, 0x4000_2000, 0x77)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert outcome.effects == (VcpuPowerChanged(2, "domu2", 0, VcpuPower.POWERDOWN),)
    v = dom(m, "domu2").vcpus[0]
    assert (v.power, v.entry_point, v.context_id) == (VcpuPower.POWERDOWN, 0x4000_2000, 0x77)
    assert refused(m, "domu2", 0, PSCI_VERSION) is Refusal.FAILED_PRECONDITION

    r = raised(m, VTIMER, "domu2", 0)
    assert (r.outcome, r.vcpu) == (IrqOutcome.WOKE_VCPU, 0)
    assert r.effects == (
        VcpuPowerChanged(2, "domu2", 0, VcpuPower.ON),
        DomainEvent(2, "domu2", 2, 0, Resume(0x4000_2000, 0x77)),
        DomainEvent(2, "domu2", 3, 0, Wake(27)),
    )
    assert not any(isinstance(e, CallCompleted) for e in r.effects)
    assert v.power is VcpuPower.ON


def test_cpu_suspend_powerdown_context_id_width(m: Mediator) -> None:
    cpu_on(m, "dom0", 1)
    assert x0(m, "dom0", 0, CPU_SUSPEND, POWERDOWN, 0x1_4000_2000, 0x1_0000_0005) == SUCCESS
    assert x0(m, "dom0", 1, CPU_SUSPEND_64, POWERDOWN, 0x4000_3000, 0x1_0000_0005) == SUCCESS
    d = dom(m, "dom0")
    assert (d.vcpus[0].entry_point, d.vcpus[0].context_id) == (0x4000_2000, 5)
    assert (d.vcpus[1].entry_point, d.vcpus[1].context_id) == (0x4000_3000, 0x1_0000_0005)


def test_cpu_suspend_powerdown_woken_by_a_device_interrupt(m: Mediator) -> None:
    assert x0(m, "domu1", 0, CPU_SUSPEND, POWERDOWN, 0x4000_4000, 3) == SUCCESS
    r = raised(m, ETH_0_IRQ)
    assert r.outcome is IrqOutcome.WOKE_VCPU
    assert events(r.effects) == [(0, Resume(0x4000_4000, 3)), (0, Wake(89))]


# -------------------------------------------------------- MIGRATE_INFO_TYPE


@pytest.mark.parametrize("domain", ["dom0", "domu1"])
def test_migrate_info_type_is_2(m: Mediator, domain: str) -> None:
    with unchanged(m):
        outcome = returned(m, domain, 0, MIGRATE_INFO_TYPE)
    assert outcome.regs == (2, 0, 0, 0)
    assert outcome.effects == ()


def test_migrate_info_type_has_no_smc64_form(m: Mediator) -> None:
    assert x0(m, "dom0", 0, 0xC400_0006) == NOT_SUPPORTED


@pytest.mark.parametrize("fid", [MIGRATE, MIGRATE_64])
def test_migrate_is_not_supported(m: Mediator, fid: int) -> None:
    # TFTF test_migrate_info_type: MIGRATE(own MPIDR) must be NOT_SUPPORTED.
    assert x0(m, "dom0", 0, fid, 0) == NOT_SUPPORTED


# ----------------------------------------------------------- SYSTEM_SUSPEND


@SMC32_AND_64
@pytest.mark.parametrize("other", ["on", "standby", "powerdown"])
@pytest.mark.parametrize("entry", [ENTRY, 0, 1], ids=hex)
def test_system_suspend_with_another_vcpu_not_off_is_denied(
    m: Mediator, smc64: bool, other: str, entry: int
) -> None:
    cpu_on(m, "domu1", 1)
    if other == "standby":
        standby(m, "domu1", 1)
    elif other == "powerdown":
        assert x0(m, "domu1", 1, CPU_SUSPEND, POWERDOWN, ENTRY, 0) == SUCCESS
    with unchanged(m):
        # DENIED is checked before the entry point
        assert x0(m, "domu1", 0, SYSTEM_SUSPEND_64 if smc64 else SYSTEM_SUSPEND, entry, 0) == (
            0xFFFF_FFFF_FFFF_FFFD
        )


def test_system_suspend_from_a_secondary_with_vcpu_0_on_is_denied(m: Mediator) -> None:
    cpu_on(m, "dom0", 3)
    assert x0(m, "dom0", 3, SYSTEM_SUSPEND, ENTRY, 0) == DENIED


@SMC32_AND_64
@pytest.mark.parametrize(
    "entry", [0, 1, 0x3FFF_F000, DOMU_RAM_END, 0x4000_0001, 0x4FFF_FFFF], ids=hex
)
def test_system_suspend_with_bad_entry_is_invalid_address(
    m: Mediator, smc64: bool, entry: int
) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, SYSTEM_SUSPEND_64 if smc64 else SYSTEM_SUSPEND, entry, 0) == (
            0xFFFF_FFFF_FFFF_FFF7
        )


def test_system_suspend_smc32_narrows_smc64_does_not(m: Mediator) -> None:
    with unchanged(m):
        assert x0(m, "domu2", 0, SYSTEM_SUSPEND_64, 0x1_4000_3000, 0) == INVALID_ADDRESS
    assert x0(m, "domu2", 0, SYSTEM_SUSPEND, 0x1_4000_3000, 0x1_0000_0009) == SUCCESS
    v = dom(m, "domu2").vcpus[0]
    assert (v.entry_point, v.context_id) == (0x4000_3000, 9)


@SMC32_AND_64
def test_system_suspend_of_a_domu(m: Mediator, smc64: bool) -> None:
    fid = SYSTEM_SUSPEND_64 if smc64 else SYSTEM_SUSPEND
    before = m.snapshot()
    outcome = returned(m, "domu1", 0, fid, 0x4000_3000, 0xC0FFEE)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert outcome.effects == (
        VcpuPowerChanged(1, "domu1", 0, VcpuPower.SUSPENDED),
        DomainStateChanged(1, "domu1", DomainState.SUSPENDED),
    )
    d = dom(m, "domu1")
    assert d.state is DomainState.SUSPENDED
    assert [v.power for v in d.vcpus] == [VcpuPower.SUSPENDED, VcpuPower.OFF]
    assert (d.vcpus[0].entry_point, d.vcpus[0].context_id) == (0x4000_3000, 0xC0FFEE)
    assert m.system.host_state is HostState.ACTIVE
    after = m.snapshot()
    assert after.domains[0] == before.domains[0]
    assert after.domains[2] == before.domains[2]
    # the domain takes no calls while suspended, from any vCPU
    with unchanged(m):
        for vcpu in (0, 1):
            assert refused(m, "domu1", vcpu, PSCI_VERSION) is Refusal.FAILED_PRECONDITION
        assert refused(m, "domu1", 0, 0xFFFF_FFFF) is Refusal.FAILED_PRECONDITION
    # the other domains still do
    assert x0(m, "domu2", 0, PSCI_VERSION) == 0x0001_0001


@pytest.mark.parametrize("irq", [UART_1_IRQ, ETH_0_IRQ])
def test_system_suspend_woken_by_a_wake_source(m: Mediator, irq: int) -> None:
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND_64, 0x4000_3000, 0xC0FFEE) == SUCCESS
    r = raised(m, irq)
    assert (r.outcome, r.domain, r.vcpu) == (IrqOutcome.WOKE_DOMAIN, "domu1", 0)
    assert r.effects == (
        VcpuPowerChanged(1, "domu1", 0, VcpuPower.ON),
        DomainStateChanged(1, "domu1", DomainState.RUNNING),
        DomainEvent(1, "domu1", 2, 0, Resume(0x4000_3000, 0xC0FFEE)),
        DomainEvent(1, "domu1", 3, 0, Wake(irq)),
    )
    d = dom(m, "domu1")
    assert d.state is DomainState.RUNNING
    assert powers(m, "domu1") == [VcpuPower.ON, VcpuPower.OFF]
    assert x0(m, "domu1", 0, PSCI_VERSION) == 0x0001_0001


def test_system_suspend_from_a_secondary_resumes_that_vcpu(m: Mediator) -> None:
    cpu_on(m, "domu1", 1)
    assert x0(m, "domu1", 0, CPU_OFF) == SUCCESS
    assert x0(m, "domu1", 1, SYSTEM_SUSPEND, 0x4000_5000, 4) == SUCCESS
    r = raised(m, UART_1_IRQ)
    assert r.vcpu == 1
    assert events(r.effects) == [(1, Resume(0x4000_5000, 4)), (1, Wake(54))]
    assert powers(m, "domu1") == [VcpuPower.OFF, VcpuPower.ON]


def test_suspended_domain_not_woken_by_other_domains_interrupts(m: Mediator) -> None:
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND, ENTRY, 0) == SUCCESS
    r = raised(m, UART_0_IRQ)
    assert (r.outcome, r.domain) == (IrqOutcome.DELIVERED, "dom0")
    assert events(r.effects) == [(0, Wake(53))]
    assert raised(m, USB_0_IRQ).domain == "domu2"
    assert dom(m, "domu1").state is DomainState.SUSPENDED


def test_suspended_domain_vtimer_of_an_off_vcpu_is_dropped(m: Mediator) -> None:
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND, ENTRY, 0) == SUCCESS
    with unchanged(m):
        assert raised(m, VTIMER, "domu1", 1).outcome is IrqOutcome.DROPPED


def test_non_wake_source_interrupt_stays_pending_while_suspended(m: Mediator) -> None:
    m.system.devices["ETH_0"].wake_source = False
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND, 0x4000_3000, 5) == SUCCESS
    r = raised(m, ETH_0_IRQ)
    assert (r.outcome, r.domain) == (IrqOutcome.PENDING, "domu1")
    assert r.effects == ()
    d = dom(m, "domu1")
    assert d.state is DomainState.SUSPENDED
    assert d.pending_irqs == [89]
    # a pending bit: a second edge is not a second interrupt
    assert raised(m, ETH_0_IRQ).outcome is IrqOutcome.PENDING
    assert d.pending_irqs == [89]

    r = raised(m, UART_1_IRQ)
    assert r.outcome is IrqOutcome.WOKE_DOMAIN
    assert events(r.effects) == [(0, Resume(0x4000_3000, 5)), (0, Wake(89)), (0, Wake(54))]
    assert [e.seq for e in r.effects if isinstance(e, DomainEvent)] == [2, 3, 4]
    assert d.pending_irqs == []
    assert d.state is DomainState.RUNNING
    # once running, the same interrupt is simply delivered
    r = raised(m, ETH_0_IRQ)
    assert r.outcome is IrqOutcome.DELIVERED
    assert events(r.effects) == [(0, Wake(89))]


def test_system_suspend_of_dom0_suspends_the_host(m: Mediator) -> None:
    # The whole step list is tested in test_host_suspend.py; here: the PSCI view.
    outcome = returned(m, "dom0", 0, SYSTEM_SUSPEND_64, 0x4000_6000, 0xAB)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert outcome.effects[:2] == (
        VcpuPowerChanged(0, "dom0", 0, VcpuPower.SUSPENDED),
        DomainStateChanged(0, "dom0", DomainState.SUSPENDED),
    )
    assert HostStateChanged(HostState.SUSPENDED) in outcome.effects
    assert m.system.host_state is HostState.SUSPENDED
    assert dom(m, "dom0").state is DomainState.SUSPENDED
    assert dom(m, "domu1").state is DomainState.PAUSED
    assert refused(m, "dom0", 0, PSCI_VERSION) is Refusal.FAILED_PRECONDITION

    r = raised(m, UART_0_IRQ)
    assert (r.outcome, r.domain, r.woke_host) == (IrqOutcome.DELIVERED, "dom0", True)
    assert events(r.effects, "dom0") == [(0, Resume(0x4000_6000, 0xAB)), (0, Wake(53))]
    assert m.system.host_state is HostState.ACTIVE
    assert dom(m, "dom0").state is DomainState.RUNNING


def test_dom0_suspend_denied_with_a_secondary_on(m: Mediator) -> None:
    cpu_on(m, "dom0", 2)
    with unchanged(m):
        assert x0(m, "dom0", 0, SYSTEM_SUSPEND, ENTRY, 0) == DENIED
    assert m.system.host_state is HostState.ACTIVE


# ---------------------------------------------------------------- SYSTEM_OFF


def test_system_off_of_a_domu(m: Mediator) -> None:
    cpu_on(m, "domu1", 1)
    before = m.snapshot()
    outcome = returned(m, "domu1", 1, SYSTEM_OFF)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [(1, Shutdown(ShutdownReason.POWEROFF))]
    assert DomainStateChanged(1, "domu1", DomainState.SHUTDOWN) in outcome.effects
    assert {e.vcpu for e in outcome.effects if isinstance(e, VcpuPowerChanged)} == {0, 1}
    assert dom(m, "domu1").state is DomainState.SHUTDOWN
    assert powers(m, "domu1") == [VcpuPower.OFF, VcpuPower.OFF]
    after = m.snapshot()
    assert after.domains[0] == before.domains[0]
    assert after.domains[2] == before.domains[2]
    assert after.host_state is HostState.ACTIVE
    with unchanged(m):
        assert refused(m, "domu1", 0, PSCI_VERSION) is Refusal.FAILED_PRECONDITION
        assert raised(m, UART_1_IRQ).outcome is IrqOutcome.DROPPED
        assert raised(m, VTIMER, "domu1", 0).outcome is IrqOutcome.DROPPED


def test_system_off_has_no_smc64_form(m: Mediator) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, 0xC400_0008) == NOT_SUPPORTED


def test_host_reset_clears_pending_irqs_of_a_suspended_domain(m: Mediator) -> None:
    m.system.devices["ETH_0"].wake_source = False
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND, ENTRY, 0) == SUCCESS
    raised(m, ETH_0_IRQ)
    assert x0(m, "dom0", 0, SYSTEM_RESET) == SUCCESS
    d = dom(m, "domu1")
    assert d.pending_irqs == []
    assert d.state is DomainState.RUNNING
    assert powers(m, "domu1") == [VcpuPower.ON, VcpuPower.OFF]


def test_system_off_of_dom0_powers_the_host_off(m: Mediator) -> None:
    cpu_on(m, "domu2", 1)
    assert x0(m, "domu1", 0, SYSTEM_SUSPEND, ENTRY, 0) == SUCCESS
    outcome = returned(m, "dom0", 0, SYSTEM_OFF)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert m.system.host_state is HostState.OFF
    assert HostStateChanged(HostState.OFF) in outcome.effects
    for name in DOMAIN_IDS:
        assert dom(m, name).state is DomainState.SHUTDOWN
        assert set(powers(m, name)) == {VcpuPower.OFF}
        assert events(outcome.effects, name) == [(0, Shutdown(ShutdownReason.POWEROFF))]
    with unchanged(m):
        assert refused(m, "dom0", 0, PSCI_VERSION) is Refusal.FAILED_PRECONDITION
        assert raised(m, UART_0_IRQ).outcome is IrqOutcome.DROPPED
        created = m.create_domain(DomainConfig("late", 0, 1, RAM_BASE, 0x1000))
        assert isinstance(created, Refused)
        assert created.reason is Refusal.FAILED_PRECONDITION


# -------------------------------------------------------------- SYSTEM_RESET


def reset_fid_args(kind: str) -> tuple[int, ...]:
    return {
        "reset": (SYSTEM_RESET,),
        "reset2": (SYSTEM_RESET2, 0, 0),
        "reset2_64": (SYSTEM_RESET2_64, 0, 0xFFFF_FFFF_FFFF_FFFF),
        "reset2_narrowed": (SYSTEM_RESET2, 0xFFFF_FFFF_0000_0000, 0),
    }[kind]


RESET_KINDS = pytest.mark.parametrize("kind", ["reset", "reset2", "reset2_64", "reset2_narrowed"])


@RESET_KINDS
@pytest.mark.parametrize("caller", [0, 1])
def test_system_reset_of_a_domu(m: Mediator, kind: str, caller: int) -> None:
    fid, *args = reset_fid_args(kind)
    cpu_on(m, "domu1", 1, entry=0x4000_7000, ctx=3)
    before = m.snapshot()
    outcome = returned(m, "domu1", caller, fid, *args)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects) == [
        (caller, Shutdown(ShutdownReason.REBOOT)),
        (0, Start(0x4000_0000, 0)),
    ]
    assert [e.seq for e in outcome.effects if isinstance(e, DomainEvent)] == [3, 4]
    d = dom(m, "domu1")
    assert d.state is DomainState.RUNNING
    assert powers(m, "domu1") == [VcpuPower.ON, VcpuPower.OFF]
    assert (d.vcpus[0].entry_point, d.vcpus[0].context_id) == (RAM_BASE, 0)
    after = m.snapshot()
    assert after.domains[0] == before.domains[0]
    assert after.domains[2] == before.domains[2]


@RESET_KINDS
def test_system_reset_of_dom0_reboots_every_domain(m: Mediator, kind: str) -> None:
    fid, *args = reset_fid_args(kind)
    cpu_on(m, "dom0", 1)
    cpu_on(m, "domu1", 1)
    assert x0(m, "domu2", 0, SYSTEM_OFF) == SUCCESS
    outcome = returned(m, "dom0", 1, fid, *args)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert events(outcome.effects, "dom0") == [
        (1, Shutdown(ShutdownReason.REBOOT)),
        (0, Start(0x4000_0000, 0)),
    ]
    for name in ("domu1", "domu2"):
        assert events(outcome.effects, name) == [
            (0, Shutdown(ShutdownReason.REBOOT)),
            (0, Start(0x4000_0000, 0)),
        ]
    for name in DOMAIN_IDS:
        assert dom(m, name).state is DomainState.RUNNING
        assert powers(m, name)[0] is VcpuPower.ON
        assert set(powers(m, name)[1:]) == {VcpuPower.OFF}
    assert m.system.host_state is HostState.ACTIVE


def test_system_reset_has_no_smc64_form(m: Mediator) -> None:
    with unchanged(m):
        assert x0(m, "domu1", 0, 0xC400_0009) == NOT_SUPPORTED


@SMC32_AND_64
@pytest.mark.parametrize(
    "reset_type", [1, 2, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF], ids=hex
)
@pytest.mark.parametrize("domain", ["dom0", "domu1"])
def test_system_reset2_other_types_are_invalid_parameters(
    m: Mediator, smc64: bool, reset_type: int, domain: str
) -> None:
    with unchanged(m):
        assert x0(m, domain, 0, SYSTEM_RESET2_64 if smc64 else SYSTEM_RESET2, reset_type, 0) == (
            0xFFFF_FFFF_FFFF_FFFE
        )


# ------------------------------------------------ blocked calls are aborted


def _aborted(effects: tuple[Effect, ...]) -> list[tuple[int, int]]:
    aborted = [e for e in effects if isinstance(e, CallAborted)]
    assert all(e.reason for e in aborted)
    return [(e.domain_id, e.vcpu) for e in aborted]


@pytest.mark.parametrize("how", ["off", "reset", "reset2", "destroy", "host_off", "host_reset"])
def test_blocked_standby_is_aborted_when_its_domain_goes(m: Mediator, how: str) -> None:
    cpu_on(m, "domu1", 1)
    standby(m, "domu1", 1)
    if how == "off":
        effects = returned(m, "domu1", 0, SYSTEM_OFF).effects
    elif how == "reset":
        effects = returned(m, "domu1", 0, SYSTEM_RESET).effects
    elif how == "reset2":
        effects = returned(m, "domu1", 0, SYSTEM_RESET2_64, 0, 0).effects
    elif how == "destroy":
        destroyed = m.destroy_domain("domu1")
        assert isinstance(destroyed, Destroyed)
        effects = destroyed.effects
    elif how == "host_off":
        effects = returned(m, "dom0", 0, SYSTEM_OFF).effects
    else:
        effects = returned(m, "dom0", 0, SYSTEM_RESET).effects
    assert _aborted(effects) == [(1, 1)]
    # it will never complete instead
    assert not any(isinstance(e, CallCompleted) for e in effects)


def test_blocked_standby_of_another_domain_is_not_aborted(m: Mediator) -> None:
    standby(m, "domu2", 0)
    effects = returned(m, "domu1", 0, SYSTEM_OFF).effects
    assert _aborted(effects) == []
    assert powers(m, "domu2")[0] is VcpuPower.STANDBY


# ----------------------------------------------------------------- refusals


def test_unknown_domain_is_refused(m: Mediator) -> None:
    with unchanged(m):
        for name in ("nope", "", "DOM0", "dom0 "):
            assert refused(m, name, 0, PSCI_VERSION) is Refusal.UNKNOWN_DOMAIN


@pytest.mark.parametrize("count", [18, 19, 64])
def test_more_than_17_args_is_refused(m: Mediator, count: int) -> None:
    with unchanged(m):
        assert refused(m, "dom0", 0, CPU_ON, *([0] * count)) is Refusal.INVALID_ARGUMENT


def test_17_args_are_accepted(m: Mediator) -> None:
    assert x0(m, "dom0", 0, PSCI_VERSION, *([0xFFFF_FFFF_FFFF_FFFF] * 17)) == 0x0001_0001


@pytest.mark.parametrize("bad", [-1, -(2**63), 2**64, 2**64 + 1, 2**100])
@pytest.mark.parametrize("position", [0, 2, 16])
def test_argument_outside_64_bits_is_refused(m: Mediator, bad: int, position: int) -> None:
    args = [1, ENTRY, 0, *([0] * 14)]
    args[position] = bad
    with unchanged(m):
        assert refused(m, "dom0", 0, CPU_ON_64, *args) is Refusal.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("domain", "vcpu"), [("dom0", 4), ("dom0", -1), ("domu1", 2), ("domu2", 99)]
)
def test_vcpu_out_of_range_is_refused(m: Mediator, domain: str, vcpu: int) -> None:
    with unchanged(m):
        assert refused(m, domain, vcpu, PSCI_VERSION) is Refusal.INVALID_ARGUMENT


@pytest.mark.parametrize("fid", [PSCI_VERSION, CPU_ON, CPU_OFF, SYSTEM_OFF, 0xFFFF_FFFF])
@pytest.mark.parametrize(("domain", "vcpu"), [("dom0", 1), ("dom0", 3), ("domu1", 1)])
def test_call_from_an_off_vcpu_is_refused(m: Mediator, fid: int, domain: str, vcpu: int) -> None:
    with unchanged(m):
        assert refused(m, domain, vcpu, fid, 0, ENTRY, 0) is Refusal.FAILED_PRECONDITION


# ------------------------------------------------------ Control: create


@pytest.mark.parametrize(
    "config",
    [
        DomainConfig("Bad", 0, 1, RAM_BASE, 0x1000),
        DomainConfig("", 0, 1, RAM_BASE, 0x1000),
        DomainConfig("1abc", 0, 1, RAM_BASE, 0x1000),
        DomainConfig("a" * 33, 0, 1, RAM_BASE, 0x1000),
        DomainConfig("has space", 0, 1, RAM_BASE, 0x1000),
        DomainConfig("ok", 0, 0, RAM_BASE, 0x1000),
        DomainConfig("ok", 0, 129, RAM_BASE, 0x1000),
        DomainConfig("ok", 0, -1, RAM_BASE, 0x1000),
        DomainConfig("ok", 0, 1, RAM_BASE + 0x800, 0x1000),
        DomainConfig("ok", 0, 1, RAM_BASE, 0),
        DomainConfig("ok", 0, 1, RAM_BASE, 0x1800),
        DomainConfig("ok", 0, 1, RAM_BASE, -0x1000),
        DomainConfig("ok", 0, 1, 2**48 - 0x1000, 0x2000),
        DomainConfig("ok", 0, 1, 2**48, 0x1000),
        DomainConfig("ok", 0, 1, RAM_BASE, 0x1000, devices=("UART_0", "UART_0")),
        DomainConfig("ok", 0, 1, RAM_BASE, 0x1000, devices=("NOPE",)),
    ],
    ids=lambda c: f"{c.name[:8]}-{c.vcpus}-{c.ram_base:#x}-{c.ram_size:#x}-{c.devices}",
)
def test_create_domain_invalid_argument(m: Mediator, config: DomainConfig) -> None:
    with unchanged(m):
        outcome = m.create_domain(config)
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.INVALID_ARGUMENT
        assert outcome.message


@pytest.mark.parametrize("name", ["dom0", "domu1", "domu2"])
def test_create_domain_duplicate_name(m: Mediator, name: str) -> None:
    with unchanged(m):
        outcome = m.create_domain(DomainConfig(name, 9, 1, RAM_BASE, 0x1000))
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.ALREADY_EXISTS


@pytest.mark.parametrize("device", ["UART_0", "UART_1", "SD_1", "GPU"])
def test_create_domain_with_an_owned_device(m: Mediator, device: str) -> None:
    with unchanged(m):
        outcome = m.create_domain(DomainConfig("new", 0, 1, RAM_BASE, 0x1000, devices=(device,)))
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.FAILED_PRECONDITION


def test_create_domain_boots_vcpu_0(m: Mediator) -> None:
    outcome = create(m, "domu3", vcpus=3, ram_base=0x8000_0000, ram_size=0x20_0000)
    d = outcome.domain
    assert d.id == 3
    assert outcome.effects == (
        DomainCreated(3, "domu3"),
        VcpuPowerChanged(3, "domu3", 0, VcpuPower.ON),
        DomainEvent(3, "domu3", 1, 0, Start(0x8000_0000, 0)),
    )
    assert m.system.domain("domu3") is d
    assert m.system.domains[3] is d
    assert powers(m, "domu3") == [VcpuPower.ON, VcpuPower.OFF, VcpuPower.OFF]
    assert d.state is DomainState.RUNNING
    assert x0(m, "domu3", 0, PSCI_VERSION) == 0x0001_0001
    assert x0(m, "domu3", 0, CPU_ON, 2, 0x8000_0000, 0) == SUCCESS
    assert x0(m, "domu3", 0, CPU_ON, 1, 0x4000_0000, 0) == INVALID_ADDRESS
    # ids are never reused
    assert m.destroy_domain("domu3") == Destroyed((DomainDestroyed(3, "domu3"),))
    assert create(m, "domu3").domain.id == 4
    assert create(m, "domu4").domain.id == 5


def test_create_domain_ignores_the_requested_id(m: Mediator) -> None:
    outcome = create(m, "other")
    assert outcome.domain.id == 3
    assert m.system.domains[0].name == "dom0"


def test_create_domain_with_free_devices_and_128_vcpus(m: Mediator) -> None:
    assert isinstance(m.destroy_domain("domu1"), Destroyed)
    outcome = create(m, "owner", vcpus=128, devices=("UART_1", "ETH_0"))
    assert m.system.devices["UART_1"].owner == outcome.domain.id
    assert m.system.devices["ETH_0"].owner == outcome.domain.id
    assert outcome.domain.vcpus[127].mpidr == 0x70F
    r = raised(m, UART_1_IRQ)
    assert (r.outcome, r.domain) == (IrqOutcome.DELIVERED, "owner")


# ----------------------------------------------------- Control: destroy


@pytest.mark.parametrize("name", ["nope", "", "DOMU1"])
def test_destroy_unknown_domain_is_not_found(m: Mediator, name: str) -> None:
    with unchanged(m):
        outcome = m.destroy_domain(name)
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.NOT_FOUND


def test_destroy_dom0_is_refused(m: Mediator) -> None:
    with unchanged(m):
        outcome = m.destroy_domain("dom0")
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.FAILED_PRECONDITION


@pytest.mark.parametrize("state", ["running", "suspended", "shutdown"])
def test_destroy_domain_frees_its_devices(m: Mediator, state: str) -> None:
    if state == "suspended":
        assert x0(m, "domu1", 0, SYSTEM_SUSPEND, ENTRY, 0) == SUCCESS
    elif state == "shutdown":
        assert x0(m, "domu1", 0, SYSTEM_OFF) == SUCCESS
    before = m.snapshot()
    outcome = m.destroy_domain("domu1")
    assert isinstance(outcome, Destroyed)
    # (An i.MX8's SCU also powers the released resources off: hardware steps.)
    assert [e for e in outcome.effects if not isinstance(e, HardwareStep)] == [
        DeviceAssigned(1, "domu1", "UART_1", False),
        DeviceAssigned(1, "domu1", "ETH_0", False),
        DomainDestroyed(1, "domu1"),
    ]
    assert m.system.domain("domu1") is None
    assert 1 not in m.system.domains
    assert m.system.devices["UART_1"].owner is None
    assert m.system.devices["ETH_0"].owner is None
    assert m.snapshot().domains[2] == before.domains[2]
    assert refused(m, "domu1", 0, PSCI_VERSION) is Refusal.UNKNOWN_DOMAIN
    assert isinstance(m.destroy_domain("domu1"), Refused)
    for irq in (UART_1_IRQ, ETH_0_IRQ):
        assert raised(m, irq).outcome is IrqOutcome.DROPPED


# --------------------------------------------------- Control: interrupts


@pytest.mark.parametrize("irq", [0, 1, 15, 16, 26, 28, 31, 32, 52, 55, 1019, 1020, 1023, 5000])
def test_raise_unwired_irq_is_invalid_argument(m: Mediator, irq: int) -> None:
    with unchanged(m):
        outcome = m.raise_interrupt(irq, "dom0", 0)
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.INVALID_ARGUMENT


@pytest.mark.parametrize(("domain", "vcpu"), [("", 0), ("nope", 0), ("dom0", 4), ("domu1", -1)])
def test_raise_vtimer_needs_a_valid_vcpu(m: Mediator, domain: str, vcpu: int) -> None:
    with unchanged(m):
        outcome = m.raise_interrupt(27, domain, vcpu)
        assert isinstance(outcome, Refused)
        assert outcome.reason is Refusal.INVALID_ARGUMENT


def test_raise_unassigned_device_irq_is_dropped(m: Mediator) -> None:
    assert isinstance(m.destroy_domain("domu2"), Destroyed)
    with unchanged(m):
        r = raised(m, USB_0_IRQ)
        assert r.outcome is IrqOutcome.DROPPED
        assert r.reason
        assert r.effects == ()


def test_raise_irq_of_a_shut_down_owner_is_dropped(m: Mediator) -> None:
    assert x0(m, "domu2", 0, SYSTEM_OFF) == SUCCESS
    with unchanged(m):
        r = raised(m, 81)
        assert (r.outcome, r.domain) == (IrqOutcome.DROPPED, "domu2")
        assert r.effects == ()


@pytest.mark.parametrize(
    ("irq", "domain_id", "domain"),
    [(53, 0, "dom0"), (80, 0, "dom0"), (95, 0, "dom0"), (164, 0, "dom0"), (54, 1, "domu1"),
     (89, 1, "domu1"), (97, 2, "domu2"), (81, 2, "domu2")],
)  # fmt: skip
def test_raise_device_irq_is_delivered_to_its_owner(
    m: Mediator, irq: int, domain_id: int, domain: str
) -> None:
    r = raised(m, irq, "ignored", 7)
    assert (r.outcome, r.domain, r.vcpu) == (IrqOutcome.DELIVERED, domain, 0)
    assert r.effects == (DomainEvent(domain_id, domain, 2, 0, Wake(irq)),)
    assert dom(m, domain).event_seq == 2


def test_raise_device_irq_goes_to_the_first_vcpu_that_is_on(m: Mediator) -> None:
    cpu_on(m, "dom0", 2)
    assert x0(m, "dom0", 0, CPU_OFF) == SUCCESS
    r = raised(m, UART_0_IRQ)
    assert (r.outcome, r.vcpu) == (IrqOutcome.DELIVERED, 2)
    assert events(r.effects) == [(2, Wake(53))]


def test_raise_vtimer_on_a_running_vcpu(m: Mediator) -> None:
    cpu_on(m, "dom0", 3)
    r = raised(m, VTIMER, "dom0", 3)
    assert (r.outcome, r.domain, r.vcpu) == (IrqOutcome.DELIVERED, "dom0", 3)
    assert r.effects == (DomainEvent(0, "dom0", 3, 3, Wake(27)),)


def test_raise_vtimer_on_an_off_vcpu_is_dropped(m: Mediator) -> None:
    with unchanged(m):
        r = raised(m, VTIMER, "dom0", 1)
        assert r.outcome is IrqOutcome.DROPPED
        assert r.effects == ()
