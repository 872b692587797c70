"""SMC Calling Convention: function-ID decoding, register encoding, the Arm
architecture calls (SMCCC_VERSION, SMCCC_ARCH_FEATURES) and unknown function IDs."""

from __future__ import annotations

import pytest

from mediatord.core import smccc
from mediatord.core.config import DomainConfig
from mediatord.core.mediator import Created, Mediator, Returned

NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF
NOT_SUPPORTED_REGS = (0xFFFF_FFFF_FFFF_FFFF, 0, 0, 0)


def returned(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> Returned:
    outcome = m.call(domain, vcpu, fid, list(args))
    assert isinstance(outcome, Returned), outcome
    return outcome


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("function_id", "fields"),
    [
        (0x8000_0000, (0x8000_0000, True, False, 0, 0x0000)),  # SMCCC_VERSION
        (0x8000_0001, (0x8000_0001, True, False, 0, 0x0001)),  # SMCCC_ARCH_FEATURES
        (0x8000_8000, (0x8000_8000, True, False, 0, 0x8000)),  # ARCH_WORKAROUND_1
        (0x8100_0005, (0x8100_0005, True, False, 1, 0x0005)),  # CPU service
        (0x8200_0001, (0x8200_0001, True, False, 2, 0x0001)),  # SiP SMC32
        (0xC200_0001, (0xC200_0001, True, True, 2, 0x0001)),  # SiP SMC64
        (0x8300_0010, (0x8300_0010, True, False, 3, 0x0010)),  # OEM
        (0x8400_0000, (0x8400_0000, True, False, 4, 0x0000)),  # PSCI_VERSION
        (0x8400_0003, (0x8400_0003, True, False, 4, 0x0003)),  # CPU_ON
        (0xC400_0003, (0xC400_0003, True, True, 4, 0x0003)),  # CPU_ON SMC64
        (0x8500_0001, (0x8500_0001, True, False, 5, 0x0001)),  # standard hypervisor
        (0xC600_1234, (0xC600_1234, True, True, 6, 0x1234)),  # vendor hypervisor
        (0x8700_0000, (0x8700_0000, True, False, 7, 0x0000)),  # vendor EL3
        (0xBF00_FFFF, (0xBF00_FFFF, True, False, 63, 0xFFFF)),  # trusted OS, highest
        (0x0400_0000, (0x0400_0000, False, False, 4, 0x0000)),  # yielding call
        (0x4400_0005, (0x4400_0005, False, True, 4, 0x0005)),  # yielding SMC64
        (0x0000_0000, (0x0000_0000, False, False, 0, 0x0000)),
        (0xFFFF_FFFF, (0xFFFF_FFFF, True, True, 63, 0xFFFF)),
        # Only the low 32 bits of x0 are the function ID.
        (0x1_8400_0002, (0x8400_0002, True, False, 4, 0x0002)),
        (0xFFFF_FFFF_C400_0001, (0xC400_0001, True, True, 4, 0x0001)),
        (0xDEAD_0000_0000_0000, (0x0000_0000, False, False, 0, 0x0000)),
    ],
)
def test_decode(function_id: int, fields: tuple[int, bool, bool, int, int]) -> None:
    value, fast, smc64, owner, number = fields
    assert smccc.decode(function_id) == smccc.FunctionId(
        value=value, fast=fast, smc64=smc64, owner=owner, number=number
    )


@pytest.mark.parametrize(
    ("function_id", "expected"),
    [
        (0x8400_0003, False),
        (0xC400_0003, True),
        (0x4000_0000, True),
        (0x8000_0000, False),
        (0xBFFF_FFFF, False),
        (0xFFFF_FFFF, True),
    ],
)
def test_is_smc64(function_id: int, expected: bool) -> None:
    assert smccc.is_smc64(function_id) is expected


@pytest.mark.parametrize(
    ("value", "reg"),
    [
        (0, 0x0000_0000_0000_0000),
        (1, 0x0000_0000_0000_0001),
        (2, 0x0000_0000_0000_0002),
        (0x0001_0001, 0x0000_0000_0001_0001),
        (-1, 0xFFFF_FFFF_FFFF_FFFF),
        (-2, 0xFFFF_FFFF_FFFF_FFFE),
        (-3, 0xFFFF_FFFF_FFFF_FFFD),
        (-4, 0xFFFF_FFFF_FFFF_FFFC),
        (-5, 0xFFFF_FFFF_FFFF_FFFB),
        (-6, 0xFFFF_FFFF_FFFF_FFFA),
        (-9, 0xFFFF_FFFF_FFFF_FFF7),
        (2**63 - 1, 0x7FFF_FFFF_FFFF_FFFF),
        (-(2**63), 0x8000_0000_0000_0000),
    ],
)
def test_to_reg_and_back(value: int, reg: int) -> None:
    assert smccc.to_reg(value) == reg
    assert smccc.to_signed(reg) == value


@pytest.mark.parametrize(
    ("reg", "value"),
    [
        (0xFFFF_FFFF, 0xFFFF_FFFF),  # a 32-bit -1 is not sign-extended
        (0x8000_0000, 0x8000_0000),
        (0x1_0000_0000_0000_0000, 0),  # only 64 bits are a register
        (0x1_FFFF_FFFF_FFFF_FFFF, -1),
    ],
)
def test_to_signed_reads_64_bits(reg: int, value: int) -> None:
    assert smccc.to_signed(reg) == value


def test_to_reg_of_a_register_value_is_identity() -> None:
    assert smccc.to_reg(0xFFFF_FFFF_FFFF_FFF7) == 0xFFFF_FFFF_FFFF_FFF7
    assert smccc.to_reg(0x1_0000_0000_0000_0005) == 5


# ------------------------------------------------------------- SMCCC_VERSION


@pytest.mark.parametrize(("domain", "vcpu"), [("dom0", 0), ("domu1", 0), ("domu2", 0)])
def test_smccc_version_is_1_1(m: Mediator, domain: str, vcpu: int) -> None:
    before = m.snapshot()
    outcome = returned(m, domain, vcpu, 0x8000_0000)
    assert outcome.regs == (0x0001_0001, 0, 0, 0)
    assert outcome.effects == ()
    assert m.snapshot() == before


def test_smccc_version_ignores_arguments(m: Mediator) -> None:
    outcome = returned(m, "dom0", 0, 0x8000_0000, 0xFFFF_FFFF_FFFF_FFFF, 7, 9)
    assert outcome.regs == (0x0001_0001, 0, 0, 0)


def test_smccc_version_with_fid_above_32_bits(m: Mediator) -> None:
    assert returned(m, "dom0", 0, 0xFFFF_FFFF_8000_0000).regs == (0x0001_0001, 0, 0, 0)


def test_smccc_version_from_aarch32_domain(m: Mediator) -> None:
    created = m.create_domain(
        DomainConfig(
            name="a32", id=0, vcpus=2, ram_base=0x8000_0000, ram_size=0x10_0000, aarch32=True
        )
    )
    assert isinstance(created, Created)
    assert returned(m, "a32", 0, 0x8000_0000).regs == (0x0001_0001, 0, 0, 0)


# ------------------------------------------------------- SMCCC_ARCH_FEATURES


@pytest.mark.parametrize(
    ("queried", "x0"),
    [
        (0x8000_0000, 0),  # SMCCC_VERSION
        (0x8000_0001, 0),  # SMCCC_ARCH_FEATURES
        # SMC32 call: the upper half of x1 is ignored.
        (0xFFFF_FFFF_8000_0000, 0),
        (0x1_8000_0001, 0),
        (0x8000_0002, 0xFFFF_FFFF_FFFF_FFFF),  # SMCCC_ARCH_SOC_ID
        (0x8000_8000, 0xFFFF_FFFF_FFFF_FFFF),  # ARCH_WORKAROUND_1
        (0x8000_7FFF, 0xFFFF_FFFF_FFFF_FFFF),  # ARCH_WORKAROUND_2
        (0x8000_3FFF, 0xFFFF_FFFF_FFFF_FFFF),  # ARCH_WORKAROUND_3
        (0xC000_0000, 0xFFFF_FFFF_FFFF_FFFF),  # no SMC64 SMCCC_VERSION
        (0x8400_0000, 0xFFFF_FFFF_FFFF_FFFF),  # not an Arm architecture call
        (0x0000_0000, 0xFFFF_FFFF_FFFF_FFFF),
        (0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF),
    ],
)
def test_smccc_arch_features(m: Mediator, queried: int, x0: int) -> None:
    before = m.snapshot()
    outcome = returned(m, "domu1", 0, 0x8000_0001, queried)
    assert outcome.regs == (x0, 0, 0, 0)
    assert outcome.effects == ()
    assert m.snapshot() == before


def test_smccc_arch_features_without_argument_is_not_supported(m: Mediator) -> None:
    # x1 absent reads as 0, which is no architecture call.
    assert returned(m, "dom0", 0, 0x8000_0001).regs == NOT_SUPPORTED_REGS


# ------------------------------------------------------- unknown function IDs


@pytest.mark.parametrize(
    "function_id",
    [
        0x0000_0000,
        0xFFFF_FFFF,
        0x8000_0002,  # SMCCC_ARCH_SOC_ID: not offered
        0x8000_8000,  # ARCH_WORKAROUND_1: not offered
        0xC000_0000,  # SMC64 form of SMCCC_VERSION does not exist
        0xC000_0001,
        0x8200_FF01,  # SiP service UID: not offered
        0xC200_0FFF,  # SiP SMC64, not an EEMI API
        0x8201_0001,  # SiP with reserved bits set
        0x8300_0000,  # OEM
        0x8500_0000,  # standard hypervisor service
        0x8600_0000,  # vendor hypervisor service
        0x8400_0015,  # SYSTEM_OFF2 (PSCI 1.3)
        0xC400_0015,
        0x8400_0016,  # past the last PSCI function
        0x8400_0020,  # outside TF-A's PSCI range (fid & 0xffe0)
        0x8400_FFFF,
        # SMC64 forms of functions that only have an SMC32 form
        0xC400_0000,  # PSCI_VERSION
        0xC400_0002,  # CPU_OFF
        0xC400_0006,  # MIGRATE_INFO_TYPE
        0xC400_0008,  # SYSTEM_OFF
        0xC400_0009,  # SYSTEM_RESET
        0xC400_000A,  # PSCI_FEATURES
        0xC400_000B,  # CPU_FREEZE
        0xC400_000F,  # SET_SUSPEND_MODE
        0xC400_0013,  # MEM_PROTECT
        # yielding (bit 31 clear) versions of implemented fast calls
        0x0400_0000,
        0x0400_0003,
        0x4400_0003,
        0x0400_0001,
        # above 32 bits: the low half decides, and it is unknown
        0x1_0000_0000,
        0x8400_0000_0000_0000,
    ],
)
@pytest.mark.parametrize("domain", ["dom0", "domu1"])
def test_unknown_function_id_is_not_supported(m: Mediator, domain: str, function_id: int) -> None:
    before = m.snapshot()
    outcome = returned(m, domain, 0, function_id, 0x8000_0000, 0x4000_0000, 1)
    assert outcome.regs == (0xFFFF_FFFF_FFFF_FFFF, 0, 0, 0)
    # A SiP call is an EEMI attempt and is recorded as one; nothing else happens.
    sip = function_id >> 24 & 0x3F == 2 and not function_id & 0x00FF_0000
    assert [type(e).__name__ for e in outcome.effects] == (["FirmwareCall"] if sip else [])
    assert m.snapshot() == before


@pytest.mark.parametrize(
    ("function_id", "regs"),
    [
        (0x1_8400_0000, (0x0001_0001, 0, 0, 0)),  # PSCI_VERSION
        (0xFFFF_FFFF_8400_0006, (2, 0, 0, 0)),  # MIGRATE_INFO_TYPE
        (0xABCD_0000_8000_0000, (0x0001_0001, 0, 0, 0)),  # SMCCC_VERSION
        (0x1_C400_0000, NOT_SUPPORTED_REGS),  # SMC64 PSCI_VERSION: still unknown
    ],
)
def test_function_id_above_32_bits_is_masked(
    m: Mediator, function_id: int, regs: tuple[int, int, int, int]
) -> None:
    assert returned(m, "domu2", 0, function_id).regs == regs
