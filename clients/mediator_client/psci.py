"""PSCI 1.1 calls by their spec names (the SMC64 forms where they exist, as an
AArch64 Linux issues them). Errors raise :class:`PsciError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mediator_client.calls import Call, Regs
from mediator_client.errors import PsciError
from mediatord.core.psci import AffinityInfo, PsciFn, PsciRet
from mediatord.core.smccc import to_signed


def _code(regs: Regs) -> int:
    return to_signed(regs[0])


def _ok(function: str) -> Callable[[Regs], None]:
    def decode(regs: Regs) -> None:
        code = _code(regs)
        if code != PsciRet.SUCCESS:
            raise PsciError(function, _known(code))

    return decode


def _known(code: int) -> PsciRet | int:
    try:
        return PsciRet(code)
    except ValueError:
        return code


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def _version(regs: Regs) -> Version:
    return Version(regs[0] >> 16 & 0x7FFF, regs[0] & 0xFFFF)


def psci_version() -> Call[Version]:
    return Call("PSCI_VERSION", PsciFn.PSCI_VERSION, (), _version)


def psci_features(function_id: int) -> Call[int]:
    """The feature flags of ``function_id``; PsciError(NOT_SUPPORTED) when absent."""

    def decode(regs: Regs) -> int:
        code = _code(regs)
        if code < 0:
            raise PsciError("PSCI_FEATURES", _known(code))
        return code

    return Call("PSCI_FEATURES", PsciFn.PSCI_FEATURES, (function_id,), decode)


def cpu_on(target_mpidr: int, entry_point: int, context_id: int = 0) -> Call[None]:
    return Call("CPU_ON", PsciFn.CPU_ON_64, (target_mpidr, entry_point, context_id), _ok("CPU_ON"))


def cpu_off() -> Call[None]:
    return Call("CPU_OFF", PsciFn.CPU_OFF, (), _ok("CPU_OFF"))


def cpu_suspend(power_state: int, entry_point: int = 0, context_id: int = 0) -> Call[None]:
    return Call(
        "CPU_SUSPEND",
        PsciFn.CPU_SUSPEND_64,
        (power_state, entry_point, context_id),
        _ok("CPU_SUSPEND"),
    )


def affinity_info(target_affinity: int, lowest_affinity_level: int = 0) -> Call[AffinityInfo]:
    def decode(regs: Regs) -> AffinityInfo:
        code = _code(regs)
        if code < 0:
            raise PsciError("AFFINITY_INFO", _known(code))
        return AffinityInfo(code)

    return Call(
        "AFFINITY_INFO",
        PsciFn.AFFINITY_INFO_64,
        (target_affinity, lowest_affinity_level),
        decode,
    )


def migrate_info_type() -> Call[int]:
    return Call("MIGRATE_INFO_TYPE", PsciFn.MIGRATE_INFO_TYPE, (), _code)


def system_off() -> Call[None]:
    return Call("SYSTEM_OFF", PsciFn.SYSTEM_OFF, (), _ok("SYSTEM_OFF"))


def system_reset() -> Call[None]:
    return Call("SYSTEM_RESET", PsciFn.SYSTEM_RESET, (), _ok("SYSTEM_RESET"))


def system_reset2(reset_type: int = 0, cookie: int = 0) -> Call[None]:
    return Call(
        "SYSTEM_RESET2", PsciFn.SYSTEM_RESET2_64, (reset_type, cookie), _ok("SYSTEM_RESET2")
    )


def system_suspend(entry_point: int, context_id: int = 0) -> Call[None]:
    return Call(
        "SYSTEM_SUSPEND",
        PsciFn.SYSTEM_SUSPEND_64,
        (entry_point, context_id),
        _ok("SYSTEM_SUSPEND"),
    )


def mpidr(vcpu: int) -> int:
    """The MPIDR of vCPU ``vcpu`` (Aff0 = n % 16, Aff1 = n // 16)."""
    return (vcpu // 16) << 8 | vcpu % 16
