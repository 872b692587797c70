"""The generic board on its own: its GICv3 (affinity routing, redistributors that
sleep, the ICC system registers, a register file lost at SoC power-down and put
back by a save/restore), a board without power firmware, and its board file.

The behaviour it shares with the ZynqMP (TF-A's EL3 rules, timer, watchdog, wake
logic) is ArmSoc's and is tested in test_zynqmp.py; the PSCI and host-suspend
suites run on both boards (tests/boards.py). Expected values are literals.
"""

from __future__ import annotations

import json

import pytest
from boards import BOARDS

from mediatord.backends import create_platform
from mediatord.backends.base import IrqFate, IrqRoute, PcpuState
from mediatord.backends.generic import Generic
from mediatord.backends.gicv3 import GicV3
from mediatord.board import BoardError, embedded_boards, load_board, parse_board
from mediatord.core.clock import ManualClock
from mediatord.core.mediator import Mediator

SUCCESS = 0
INTERNAL_FAILURE = -6
HYP_RESUME = 0x0020_1000
HYP_SECONDARY = 0x0020_0000
UART_0 = 33  # QEMU virt's PL011: SPI 1
# GICD: CTLR, ISENABLER1..9, IPRIORITYR 0..287, ICFGR 0..17, IROUTER 0..287
DIST_WORDS = 1 + 9 + 288 + 18 + 288
# GICR and ICC of one PE: WAKER, ISENABLER0, IPRIORITYR 0..31, ICFGR1; SRE, IGRPEN1, PMR, BPR1
PE_WORDS = 1 + 1 + 32 + 1 + 4


def programmed() -> Generic:
    """A hypervisor's boot: distributor on, UART_0 routed to pCPU 0, pCPU 0 up."""
    p = Generic(4, 0, ManualClock())
    p.gic_init()
    p.gic_route(IrqRoute(UART_0, 0))
    p.gic_cpu_init(0)
    p.drain_steps()
    return p


def test_a_fresh_gicv3_has_its_reset_values() -> None:
    gic = GicV3(4)
    registers = gic.registers()
    assert len(registers) == DIST_WORDS + 4 * PE_WORDS
    # Everything 0 but each GICR_WAKER: ProcessorSleep | ChildrenAsleep (0x6).
    wakers = [DIST_WORDS + n * PE_WORDS for n in range(4)]
    assert [registers[w] for w in wakers] == [0x6] * 4
    assert sum(registers) == 4 * 0x6


def test_route_spi_writes_irouter_priority_config_and_enable() -> None:
    gic = GicV3(4)
    gic.enable_distributor()
    gic.route_spi(40, 2, 0xA0, level=False)
    assert gic.dist.ctlr == 0x12  # ARE_NS | EnableGrp1NS
    assert gic.dist.irouter[40] == 2  # Aff0 = 2
    assert gic.dist.ipriority[40] == 0xA0
    assert gic.dist.icfgr[2] == 0b10 << 16  # INTID 40: ICFGR2 bits [17:16], edge
    assert gic.dist.isenabler[1] == 1 << 8
    assert gic.spi_target(40) == 2


def test_a_sleeping_redistributor_blocks_delivery_until_the_pe_is_brought_up() -> None:
    gic = GicV3(4)
    gic.enable_distributor()
    gic.route_spi(UART_0, 1, 0xA0, level=True)
    assert gic.why_not(UART_0, 1) == "pCPU 1's redistributor is asleep (GICR_WAKER)"
    gic.init_cpu(1, (25, 26, 27), 0xA0, 0xF0)
    assert gic.redists[1].waker == 0
    assert gic.why_not(UART_0, 1) is None
    gic.cpu_off(1)
    assert gic.redists[1].waker == 0x6
    assert gic.why_not(UART_0, 1) == "pCPU 1's redistributor is asleep (GICR_WAKER)"


def test_delivery_needs_the_route_group_enable_and_priority() -> None:
    gic = GicV3(2)
    gic.enable_distributor()
    gic.route_spi(UART_0, 0, 0xF0, level=True)
    gic.init_cpu(0, (), 0xA0, 0xF0)
    assert gic.why_not(UART_0, 0) == "IRQ 33 priority masked by pCPU 0's ICC_PMR_EL1"
    gic.route_spi(UART_0, 0, 0xA0, level=True)
    assert gic.why_not(UART_0, 1) == "IRQ 33 not routed to pCPU 1 (GICD_IROUTER)"
    gic.cpus[0].igrpen1 = 0
    assert gic.why_not(UART_0, 0) == "pCPU 0 Group 1 interrupts disabled (ICC_IGRPEN1_EL1)"


def test_the_register_file_is_lost_at_soc_suspend_and_restored_bit_for_bit() -> None:
    p = programmed()
    before = p.gic_registers()
    result, context = p.gic_save()
    assert result == SUCCESS
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.gic_registers() == GicV3(4).registers()
    assert p.raise_irq(UART_0, 0).fate is IrqFate.PENDING  # not an armed wake source
    p.set_wake_source(UART_0, True)
    assert p.gic_restore(context) == SUCCESS
    assert p.gic_registers() == before
    assert p.gic_restore(("not", "a", "context")) == INTERNAL_FAILURE


def test_the_generic_board_has_no_power_firmware() -> None:
    board = load_board("generic")
    m, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    assert m.platform.firmware is None
    assert isinstance(m.platform, Generic)
    # EEMI PM_GET_API_VERSION and PM_REQ_NODE: NOT_SUPPORTED, as any unknown SiP call.
    for fid in (0xC200_0001, 0xC200_000D):
        outcome = m.call("domu1", 0, fid, [34])
        assert outcome.regs == (0xFFFF_FFFF_FFFF_FFFF, 0, 0, 0)  # type: ignore[union-attr]
    # A CPU_ON still powers pCPUs and the hypervisor brings their GICv3 PE up.
    assert [m.platform.pcpu_state(c) for c in range(4)] == [PcpuState.ON] * 4
    assert all(r.waker == 0 for r in m.platform.gic.redists)  # type: ignore[attr-defined]


def test_a_generic_state_survives_a_snapshot() -> None:
    board = BOARDS["generic"]
    clock = ManualClock()
    m, _ = Mediator.boot(board, create_platform(board, clock))
    m.call("domu1", 0, 0xC400_000E, [0x4000_1000, 1])
    m.call("domu2", 0, 0xC400_000E, [0x4000_1000, 1])
    m.call("dom0", 0, 0xC400_000E, [0x4000_2000, 1])
    data = json.loads(json.dumps(m.save_state()))
    copy, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    copy.clock.set(clock.now_ns())
    copy.load_state(data)
    assert copy.save_state() == m.save_state()
    assert copy.platform.gic_registers() == m.platform.gic_registers()
    # The restored suspended host resumes exactly as the original.
    woken = [x.raise_interrupt(53) for x in (m, copy)]
    assert woken[0] == woken[1]
    assert copy.save_state() == m.save_state()


def test_embedded_boards_by_name() -> None:
    assert embedded_boards() == ["generic", "imx8", "zcu102"]
    assert load_board("generic").backend == "generic"
    assert load_board("zcu102") == load_board(None)


GENERIC = """
[board]
name = "g"
backend = "generic"
pcpus = 4
[devices.UART_0]
{node}irq = 33
mmio = {{ base = 0x09000000, size = 0x1000 }}
[[domains]]
name = "dom0"
id = 0
vcpus = 1
ram = {{ base = 0x40000000, size = 0x1000000 }}
devices = ["UART_0"]
"""


@pytest.mark.parametrize(
    ("backend", "node", "problem"),
    [
        ("generic", "node = 33\n", "devices.UART_0.node: this backend has no power-management "
         "firmware, so devices have no EEMI node: remove the key"),
        ("zynqmp", "", "devices.UART_0.node: missing"),
    ],
)  # fmt: skip
def test_a_node_is_required_where_the_firmware_has_nodes_and_refused_elsewhere(
    backend: str, node: str, problem: str
) -> None:
    text = GENERIC.format(node=node).replace('"generic"', f'"{backend}"')
    with pytest.raises(BoardError) as caught:
        parse_board(text, "b.toml")
    assert [str(p) for p in caught.value.problems] == [problem]


def test_the_generic_gic_has_288_intids() -> None:
    text = GENERIC.format(node="").replace("irq = 33", "irq = 288")
    with pytest.raises(BoardError) as caught:
        parse_board(text, "b.toml")
    assert [str(p) for p in caught.value.problems] == [
        "devices.UART_0.irq: generic's GIC has SPIs up to 287 only"
    ]
    assert parse_board(GENERIC.format(node="").replace("irq = 33", "irq = 287")).devices
