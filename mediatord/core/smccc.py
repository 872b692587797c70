"""SMC Calling Convention: function-ID fields, argument narrowing, return encoding.

Layout of a function ID (SMCCC, TF-A ``include/lib/smccc.h``): bit 31 fast call,
bit 30 SMC64, bits [29:24] owning entity, bits [15:0] function number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

MASK32: Final = 0xFFFF_FFFF
MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF

FAST_CALL: Final = 1 << 31
SMC64_BIT: Final = 1 << 30
OWNER_SHIFT: Final = 24
OWNER_MASK: Final = 0x3F

# At most x1..x17 carry arguments (SMCCC 1.2 for SMC64).
MAX_ARGS: Final = 17


class Owner(IntEnum):
    """Owning entity numbers, bits [29:24] of a function ID."""

    ARCH = 0
    CPU = 1
    SIP = 2
    OEM = 3
    STANDARD_SECURE = 4  # PSCI lives here
    STANDARD_HYPERVISOR = 5
    VENDOR_HYPERVISOR = 6
    VENDOR_EL3 = 7


class SmcccRet(IntEnum):
    """SMCCC return codes (Linux ``include/linux/arm-smccc.h``)."""

    SUCCESS = 0
    NOT_SUPPORTED = -1
    NOT_REQUIRED = -2
    INVALID_PARAMETER = -3


SMCCC_VERSION: Final = 0x8000_0000
SMCCC_ARCH_FEATURES: Final = 0x8000_0001
SMCCC_ARCH_SOC_ID: Final = 0x8000_0002

# Reported by SMCCC_VERSION: major in bits [30:16], minor in [15:0].
SMCCC_VERSION_1_1: Final = 0x0001_0001


@dataclass(frozen=True, slots=True)
class FunctionId:
    """A decoded SMCCC function identifier."""

    value: int
    fast: bool
    smc64: bool
    owner: int
    number: int


def decode(function_id: int) -> FunctionId:
    """Split a 32-bit function ID into its SMCCC fields."""
    fid = function_id & MASK32
    return FunctionId(
        value=fid,
        fast=bool(fid & FAST_CALL),
        smc64=bool(fid & SMC64_BIT),
        owner=(fid >> OWNER_SHIFT) & OWNER_MASK,
        number=fid & 0xFFFF,
    )


def is_smc64(function_id: int) -> bool:
    return bool(function_id & SMC64_BIT)


def to_reg(value: int) -> int:
    """Encode a signed return value as a 64-bit register (two's complement)."""
    return value & MASK64


def to_signed(reg: int) -> int:
    """The inverse of :func:`to_reg`: read a 64-bit register as a signed value."""
    reg &= MASK64
    return reg - (1 << 64) if reg & (1 << 63) else reg
