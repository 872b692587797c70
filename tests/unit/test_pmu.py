"""The emulated PMU firmware on its own, called directly as each master.

The contract is the section "The emulated PMU firmware" of docs/eemi-access.md:
per-master requirements and usage counts, nodes and their power islands,
INIT_FINALIZE, the suspend sweep and the exact restore at wake, and the state
kept for resets, clocks, PLLs, pins, registers, FPGA and GGS. Calls reach the
firmware unmediated here, so two masters can share a node and nodes nobody may
request through the mediator (memories, L2) can be released. Expected values
are literals.
"""

from __future__ import annotations

from typing import Any

from mediatord.backends.zynqmp.pmu import Pmu
from mediatord.core.clock import ManualClock
from mediatord.core.eemi import PmCall

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF

SUCCESS = 0
ARGS = 1
NOTSUPPORTED = 4
INVALID_PARAM = 15
INVALID_NODE = 2003
DOUBLE_REQ = 2004

GET_NODE_STATUS = 3
REQ_SUSPEND = 6
FORCE_POWERDOWN = 8
REQ_WAKEUP = 10
REQ_NODE = 13
RELEASE_NODE = 14
SET_REQUIREMENT = 15
MMIO_WRITE = 19
MMIO_READ = 20
INIT_FINALIZE = 21
FPGA_LOAD = 22
FPGA_GET_STATUS = 23
SECURE_SHA = 26
IOCTL = 34
SET_SUSPEND_MODE = 0xA02

PLD, FPD, LPD = 9, 10, 62
RPU_0 = 7
USB_0, ETH_0, ETH_3, UART_0, UART_1, SPI_0, SD_0, SD_1, GPU = 22, 29, 32, 33, 34, 35, 39, 40, 58
OCM_BANK_0, DDR, IPI_APU, PL, APLL = 11, 55, 56, 69, 50
BOARD_NODES = frozenset({USB_0, ETH_0, ETH_3, UART_0, UART_1, SD_0, SD_1, GPU})
# Zynq UltraScale+ power islands: the full-power domain's slaves, and the PL's.
FPD_NODES = (19, 20, 21, 28, 41, 42, 55, 58, 59)  # L2 GPU_PP_0/1 SATA DP GDMA DDR GPU PCIE
PLD_NODES = (63, 65, 66, 67, 68, 69)  # VCU IPI_PL_0..3 PL


def pmu() -> tuple[Any, list[Any]]:
    steps: list[Any] = []
    return Pmu(ManualClock(), steps.append, BOARD_NODES), steps


def call(p: Any, master: int, api: int, *args: int) -> tuple[int, ...]:
    return tuple(p.call(master, PmCall(api, (*args, 0, 0, 0, 0, 0)[:5])))


def status(p: Any, master: int, node: int) -> tuple[int, int, int]:
    """GET_NODE_STATUS: (power, the master's capabilities, usage)."""
    x0, x1, x2, x3 = call(p, master, GET_NODE_STATUS, node)
    assert (x0 & MASK32, x2, x3) == (SUCCESS, 0, 0)
    return x0 >> 32, x1 & MASK32, x1 >> 32


def on(p: Any, node: int) -> bool:
    return bool(p.state.slaves[node].on)


def cycle(p: Any, nodes: Any) -> None:
    """Request and release every node as master 0: each ends unrequested and off."""
    for node in nodes:
        assert call(p, 0, REQ_NODE, node, 1, 0, 1) == (SUCCESS, 0, 0, 0)
        assert call(p, 0, RELEASE_NODE, node) == (SUCCESS, 0, 0, 0)


def test_power_at_boot() -> None:
    p, _ = pmu()
    assert all(on(p, n) for n in BOARD_NODES)
    assert on(p, OCM_BANK_0)
    assert on(p, DDR)
    assert on(p, IPI_APU)
    assert on(p, SPI_0) is False  # a peripheral the board does not use
    assert p.state.islands == {FPD: True, LPD: True, PLD: True}


def test_usage_counts_masters() -> None:
    p, _ = pmu()
    assert call(p, 1, REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 2, REQ_NODE, UART_1, 6, 0, 2) == (SUCCESS, 0, 0, 0)
    assert status(p, 1, UART_1) == (1, 1, 2)
    assert status(p, 2, UART_1) == (1, 6, 2)
    assert status(p, 3, UART_1) == (1, 0, 2)
    assert call(p, 1, REQ_NODE, UART_1, 1, 100, 1) == (DOUBLE_REQ, 0, 0, 0)
    assert call(p, 1, RELEASE_NODE, UART_1) == (SUCCESS, 0, 0, 0)
    assert status(p, 2, UART_1) == (1, 6, 1)  # still wanted by master 2
    assert call(p, 1, RELEASE_NODE, UART_1) == (ARGS, 0, 0, 0)
    assert call(p, 2, RELEASE_NODE, UART_1) == (SUCCESS, 0, 0, 0)
    assert status(p, 2, UART_1) == (0, 0, 0)


def test_a_zero_capability_requirement_does_not_hold_the_node() -> None:
    p, _ = pmu()
    assert call(p, 1, REQ_NODE, UART_1, 1, 0, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 2, REQ_NODE, UART_1, 1, 0, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 1, SET_REQUIREMENT, UART_1, 0, 0, 1) == (SUCCESS, 0, 0, 0)
    assert status(p, 1, UART_1) == (1, 0, 2)  # master 2 still needs it
    assert call(p, 2, SET_REQUIREMENT, UART_1, 0, 0, 1) == (SUCCESS, 0, 0, 0)
    assert status(p, 1, UART_1) == (0, 0, 2)


def test_fpd_island_powers_off_with_its_last_node_and_on_for_a_request() -> None:
    p, steps = pmu()
    cycle(p, FPD_NODES)
    assert not any(on(p, n) for n in FPD_NODES)
    assert p.state.islands[FPD] is False
    assert call(p, 0, GET_NODE_STATUS, FPD) == (0, 0, 0, 0)
    assert p.state.islands[LPD] is True
    del steps[:]
    assert call(p, 1, REQ_NODE, GPU, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert [(s.name, s.detail) for s in steps] == [("pmu.island", "FPD on"), ("pmu.node", "GPU on")]
    assert p.state.islands[FPD] is True
    assert call(p, 0, GET_NODE_STATUS, FPD) == (1 << 32, 0, 0, 0)
    assert [n for n in FPD_NODES if on(p, n)] == [GPU]
    del steps[:]
    assert call(p, 1, RELEASE_NODE, GPU) == (SUCCESS, 0, 0, 0)
    assert [(s.name, s.detail) for s in steps] == [
        ("pmu.node", "GPU off"),
        ("pmu.island", "FPD off"),
    ]


def test_lpd_island_powers_off_with_its_last_node() -> None:
    p, _ = pmu()
    lpd_nodes = [n for n in p.state.slaves if n not in FPD_NODES + PLD_NODES]
    assert UART_1 in lpd_nodes
    assert OCM_BANK_0 in lpd_nodes
    cycle(p, lpd_nodes[:-1])
    assert p.state.islands[LPD] is True
    cycle(p, lpd_nodes[-1:])
    assert p.state.islands[LPD] is False
    assert call(p, 1, REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert p.state.islands[LPD] is True
    assert [n for n in lpd_nodes if on(p, n)] == [UART_1]


def test_force_powerdown_of_an_island_drops_every_requirement() -> None:
    p, _ = pmu()
    assert call(p, 1, REQ_NODE, GPU, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, FORCE_POWERDOWN, FPD, 1) == (SUCCESS, 0, 0, 0)
    assert p.state.islands[FPD] is False
    assert not any(on(p, n) for n in FPD_NODES)
    assert status(p, 1, GPU) == (0, 0, 0)


def test_init_finalize_sweeps_what_nobody_requested() -> None:
    p, _ = pmu()
    assert call(p, 1, REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 2, REQ_NODE, SPI_0, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, INIT_FINALIZE) == (SUCCESS, 0, 0, 0)
    assert {n: on(p, n) for n in sorted(BOARD_NODES | {SPI_0})} == {
        USB_0: False,
        ETH_0: False,
        ETH_3: False,
        UART_0: False,
        UART_1: True,
        SPI_0: True,
        SD_0: False,
        SD_1: False,
        GPU: False,
    }
    assert on(p, OCM_BANK_0)
    assert on(p, DDR)
    assert on(p, IPI_APU)


def test_suspend_sweep_and_exact_restore() -> None:
    p, _ = pmu()
    assert call(p, 1, REQ_NODE, UART_1, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    p.set_wake(SD_1, True)
    assert call(p, 2, REQ_NODE, SPI_0, 1, 100, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 2, RELEASE_NODE, SPI_0) == (SUCCESS, 0, 0, 0)  # off before suspend
    before = {n: s.on for n, s in p.state.slaves.items()}
    p.power_down_for_suspend()
    assert on(p, UART_1)  # required
    assert on(p, SD_1)  # a wake source
    assert on(p, DDR)  # memories stay
    assert on(p, IPI_APU)
    assert not on(p, UART_0)
    assert not on(p, GPU)
    assert not on(p, SPI_0)
    p.restore_after_wake()
    assert {n: s.on for n, s in p.state.slaves.items()} == before
    assert on(p, SPI_0) is False
    # a wake without a suspend changes nothing
    p.restore_after_wake()
    assert {n: s.on for n, s in p.state.slaves.items()} == before


def test_processor_nodes() -> None:
    p, _ = pmu()
    assert call(p, 0, GET_NODE_STATUS, RPU_0) == (0, 0, 0, 0)
    assert call(p, 0, REQ_WAKEUP, RPU_0, 0, 0, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, GET_NODE_STATUS, RPU_0) == (1 << 32, 0, 0, 0)
    assert call(p, 0, REQ_SUSPEND, RPU_0, 1, 0, 0) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, GET_NODE_STATUS, RPU_0) == (2 << 32, 0, 0, 0)
    assert call(p, 0, FORCE_POWERDOWN, RPU_0, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, GET_NODE_STATUS, RPU_0) == (0, 0, 0, 0)
    assert call(p, 0, REQ_WAKEUP, UART_1, 0, 0, 1) == (INVALID_NODE, 0, 0, 0)


def test_nodes_that_are_not_slaves() -> None:
    p, _ = pmu()
    assert call(p, 0, GET_NODE_STATUS, APLL) == (1 << 32, 0, 0, 0)
    assert call(p, 0, GET_NODE_STATUS, 78) == (INVALID_NODE, 0, 0, 0)
    assert call(p, 0, REQ_NODE, 1, 1, 100, 1) == (INVALID_NODE, 0, 0, 0)
    assert call(p, 0, RELEASE_NODE, APLL) == (INVALID_NODE, 0, 0, 0)


def test_registers_fpga_ggs_and_the_rest() -> None:
    p, _ = pmu()
    reg = 0xFF18_0500
    assert call(p, 1, MMIO_WRITE, reg, 0x0F0, 0xABC) == (SUCCESS, 0, 0, 0)
    assert call(p, 1, MMIO_READ, reg) == (0x0B0 << 32, 0, 0, 0)
    assert call(p, 1, MMIO_WRITE, reg, 0x00F, 0xFFF) == (SUCCESS, 0, 0, 0)
    assert call(p, 1, MMIO_READ, reg) == (0x0BF << 32, 0, 0, 0)
    assert call(p, 1, MMIO_READ, reg + 2) == (INVALID_PARAM, 0, 0, 0)
    assert call(p, 0, FPGA_GET_STATUS) == (0, 0, 0, 0)
    assert call(p, 0, FPGA_LOAD, 0x1000, 0, 0) == (INVALID_PARAM, 0, 0, 0)  # size 0
    assert call(p, 0, FPGA_LOAD, 0x1000, 0, 0x100, 0) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, FPGA_GET_STATUS) == (0x8 << 32, 0, 0, 0)  # PL_DONE
    assert on(p, PL)
    assert call(p, 0, IOCTL, 0, 12, 2, 0xCAFE) == (SUCCESS, 0, 0, 0)  # WRITE_GGS
    assert call(p, 0, IOCTL, 0, 13, 2) == (0xCAFE << 32, 0, 0, 0)  # READ_GGS
    assert call(p, 0, IOCTL, 0, 15, 2) == (0, 0, 0, 0)  # READ_PGGS: a separate bank
    assert call(p, 0, IOCTL, 0, 13, 4) == (INVALID_PARAM, 0, 0, 0)
    assert call(p, 0, SECURE_SHA, 0x1000, 0, 32) == (NOTSUPPORTED, 0, 0, 0)
    assert call(p, 0, SET_SUSPEND_MODE, 1) == (SUCCESS, 0, 0, 0)
    assert call(p, 0, SET_SUSPEND_MODE, 2) == (ARGS, 0, 0, 0)
    assert call(p, 0, 0x7777) == (MASK64, 0, 0, 0)  # no such call
