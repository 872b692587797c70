"""Typed board configuration and the rules every domain and device must satisfy.

The TOML reader (:mod:`mediatord.board`) and ``Control.CreateDomain`` both check
domains with :func:`domain_problems`, so a domain that could not be written in
a board file cannot be created at run time either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mediatord.core import scfw

PAGE_SIZE: Final = 0x1000
# A 48-bit IPA space: the largest stage-2 input size of an Armv8.0 core (Cortex-A53).
IPA_LIMIT: Final = 1 << 48
# Xen on Arm's MAX_VIRT_CPUS; vCPU n has MPIDR Aff1 = n // 16, Aff0 = n % 16.
MAX_VCPUS: Final = 128
# GICv2 SPIs are INTIDs 32..1019; 1020..1023 are special.
SPI_FIRST: Final = 32
SPI_LAST: Final = 1019
# EEMI node IDs (TF-A pm_defs.h enum pm_node_id): 1..77, 78 is NODE_MAX.
NODE_FIRST: Final = 1
NODE_MAX: Final = 78
MAX_PCPUS: Final = 64
# Xen's DOMID_FIRST_RESERVED is 0x7FF0: ids above are special.
MAX_DOMAIN_ID: Final = 0x7FEF
DOMAIN_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
DEVICE_NAME: Final = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
BACKENDS: Final = ("zynqmp", "generic", "imx8")
# What each backend's hardware allows: pCPU count and the highest SPI its GIC has
# (ZynqMP: a quad or dual Cortex-A53 APU; GIC-400 with ITLinesNumber 5, INTIDs < 192.
# Generic: QEMU virt's GICv3, ITLinesNumber 8, INTIDs < 288; TF-A's qemu platform
# has PLATFORM_CORE_COUNT 4 per cluster, two clusters).
# i.MX8QM: 4 Cortex-A53 + 2 Cortex-A72; a GIC-500 with 512 SPIs, INTIDs < 544.
BACKEND_MAX_PCPUS: Final = {"zynqmp": 4, "generic": 8, "imx8": 6}
BACKEND_MAX_IRQ: Final = {"zynqmp": 191, "generic": 287, "imx8": 543}
# Backends whose power-management firmware knows devices as EEMI nodes: a device
# there must name its node; elsewhere it has none.
BACKEND_NODES: Final = frozenset({"zynqmp"})
# Backends whose firmware knows devices as SCFW resources (SC_R_*, kept in node_id):
# a device there must name its resource.
BACKEND_RESOURCES: Final = frozenset({"imx8"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration: where (a dotted key) and what."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    name: str  # on the ZynqMP the EEMI node name without its NODE_ prefix, e.g. UART_1
    node_id: int  # 0: the board's firmware has no power nodes (generic)
    irq: int  # GIC INTID of the device's interrupt (an SPI)
    mmio_base: int
    mmio_size: int
    wake_capable: bool


@dataclass(frozen=True, slots=True)
class DomainConfig:
    name: str
    id: int
    vcpus: int
    ram_base: int
    ram_size: int
    aarch32: bool = False
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BoardConfig:
    name: str
    backend: str
    pcpus: int
    boot_pcpu: int
    devices: tuple[DeviceConfig, ...]
    domains: tuple[DomainConfig, ...]


def domain_problems(domain: DomainConfig, key: str = "") -> list[Problem]:
    """What is wrong with one domain on its own (not against other domains)."""
    at = f"{key}." if key else ""
    problems: list[Problem] = []
    if not DOMAIN_NAME.fullmatch(domain.name):
        problems.append(
            Problem(
                f"{at}name",
                f"{domain.name!r} is not a domain name: use 1 to 32 characters from "
                "a-z, 0-9, '-' and '_', starting with a letter",
            )
        )
    if not 1 <= domain.vcpus <= MAX_VCPUS:
        problems.append(Problem(f"{at}vcpus", f"must be from 1 to {MAX_VCPUS}, got {domain.vcpus}"))
    if domain.ram_base % PAGE_SIZE:
        problems.append(Problem(f"{at}ram.base", f"{domain.ram_base:#x} is not aligned to 4 KiB"))
    if domain.ram_size <= 0 or domain.ram_size % PAGE_SIZE:
        problems.append(
            Problem(f"{at}ram.size", f"{domain.ram_size:#x} is not a positive multiple of 4 KiB")
        )
    elif domain.ram_base + domain.ram_size > IPA_LIMIT:
        problems.append(
            Problem(
                f"{at}ram",
                f"{domain.ram_base:#x} + {domain.ram_size:#x} ends above the 48-bit IPA space",
            )
        )
    if len(set(domain.devices)) != len(domain.devices):
        problems.append(Problem(f"{at}devices", "lists a device twice"))
    return problems


def device_problems(
    device: DeviceConfig, key: str = "", nodes: bool = True, resources: bool = False
) -> list[Problem]:
    """What is wrong with one device on its own (``nodes``: its board's firmware
    has EEMI power nodes, so it must name one; ``resources``: SCFW resources)."""
    at = f"{key}." if key else ""
    problems: list[Problem] = []
    if not DEVICE_NAME.fullmatch(device.name):
        problems.append(
            Problem(
                key or device.name,
                f"{device.name!r} is not a device name: use the EEMI node name without "
                "NODE_, e.g. UART_1",
            )
        )
    if resources:
        if not 0 < device.node_id < scfw.SC_R_LAST:
            problems.append(
                Problem(f"{at}resource", f"must be an SCFW resource from 1 to {scfw.SC_R_LAST - 1}")
            )
        elif device.node_id in scfw.SECURE:
            problems.append(
                Problem(
                    f"{at}resource",
                    f"{device.node_id} is in TF-A's secure partition (cores, GIC, "
                    "SC_R_SYSTEM, its MU and timer): no domain may own it",
                )
            )
    elif not nodes and device.node_id:
        problems.append(
            Problem(
                f"{at}node",
                "this backend has no power-management firmware, so devices have no EEMI "
                "node: remove the key",
            )
        )
    elif nodes and not NODE_FIRST <= device.node_id < NODE_MAX:
        problems.append(
            Problem(
                f"{at}node",
                f"must be an EEMI node ID from {NODE_FIRST} to {NODE_MAX - 1}, "
                f"got {device.node_id}",
            )
        )
    if not SPI_FIRST <= device.irq <= SPI_LAST:
        problems.append(
            Problem(
                f"{at}irq",
                f"must be a GIC SPI INTID from {SPI_FIRST} to {SPI_LAST}, got {device.irq}",
            )
        )
    if device.mmio_base % PAGE_SIZE:
        problems.append(Problem(f"{at}mmio.base", f"{device.mmio_base:#x} is not 4 KiB aligned"))
    if device.mmio_size <= 0 or device.mmio_size % PAGE_SIZE:
        problems.append(
            Problem(f"{at}mmio.size", f"{device.mmio_size:#x} is not a positive multiple of 4 KiB")
        )
    return problems


def board_problems(board: BoardConfig) -> list[Problem]:
    """Everything wrong with a board, each problem named by its key."""
    problems: list[Problem] = []
    if board.backend not in BACKENDS:
        problems.append(
            Problem(
                "board.backend",
                f"unknown backend {board.backend!r}; known: {', '.join(BACKENDS)}",
            )
        )
    max_pcpus = BACKEND_MAX_PCPUS.get(board.backend, MAX_PCPUS)
    if not 1 <= board.pcpus <= max_pcpus:
        problems.append(
            Problem("board.pcpus", f"must be from 1 to {max_pcpus} for {board.backend!r}")
        )
    if not 0 <= board.boot_pcpu < board.pcpus:
        problems.append(Problem("board.boot_pcpu", f"must be a pCPU index below {board.pcpus}"))

    devices: dict[str, DeviceConfig] = {}
    nodes: dict[int, str] = {}
    irqs: dict[int, str] = {}
    for device in board.devices:
        key = f"devices.{device.name}"
        problems += device_problems(
            device, key, board.backend in BACKEND_NODES, board.backend in BACKEND_RESOURCES
        )
        if device.node_id and device.node_id in nodes:
            problems.append(
                Problem(f"{key}.node", f"node {device.node_id} is also {nodes[device.node_id]}")
            )
        max_irq = BACKEND_MAX_IRQ.get(board.backend, SPI_LAST)
        if max_irq < device.irq <= SPI_LAST:
            problems.append(
                Problem(f"{key}.irq", f"{board.backend}'s GIC has SPIs up to {max_irq} only")
            )
        if device.irq in irqs:
            problems.append(
                Problem(f"{key}.irq", f"IRQ {device.irq} is also used by {irqs[device.irq]}")
            )
        devices[device.name] = device
        nodes.setdefault(device.node_id, device.name)
        irqs.setdefault(device.irq, device.name)

    names: set[str] = set()
    ids: set[int] = set()
    owners: dict[str, str] = {}
    for index, domain in enumerate(board.domains):
        key = f"domains[{index}]"
        problems += domain_problems(domain, key)
        if domain.name in names:
            problems.append(Problem(f"{key}.name", f"domain {domain.name!r} is defined twice"))
        if not 0 <= domain.id <= MAX_DOMAIN_ID:
            problems.append(Problem(f"{key}.id", f"must be from 0 to {MAX_DOMAIN_ID}"))
        if domain.id in ids:
            problems.append(Problem(f"{key}.id", f"domain id {domain.id} is used twice"))
        names.add(domain.name)
        ids.add(domain.id)
        for device_name in domain.devices:
            if device_name not in devices:
                problems.append(
                    Problem(
                        f"{key}.devices",
                        f"no device {device_name!r} on this board; "
                        f"known: {', '.join(sorted(devices)) or 'none'}",
                    )
                )
            elif device_name in owners and owners[device_name] != domain.name:
                problems.append(
                    Problem(
                        f"{key}.devices",
                        f"{device_name} is already owned by {owners[device_name]}",
                    )
                )
            owners.setdefault(device_name, domain.name)
    if 0 not in ids:
        problems.append(Problem("domains", "no domain has id 0: the hardware domain is required"))
    return problems
