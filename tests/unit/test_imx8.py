"""The i.MX8 backend's SCFW calls through the mediator (core/scfw.py, docs/imx8-scfw.md
section 6): a domain's partition holds the resources of its devices, and it may change
those and nothing else. Values are the SCFW's (sc_err_t, SC_R_*, power modes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediatord.backends import create_platform
from mediatord.backends.imx8 import Imx8
from mediatord.board import BoardError, load_board, parse_board
from mediatord.core import records
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.mediator import IrqOutcome, Mediator, Raised, Refused, Returned

SET_MODE, GET_MODE = 0xC200_1203, 0xC200_1204
GET_PARTITION, IS_OWNED, GET_OWNER = 0xC200_1305, 0xC200_130D, 0xC200_1321
IS_STARTED = 0xC200_1218
REQ_CPU_LOW_POWER_MODE = 0xC200_1214
OFF, STBY, LP, ON = 0, 1, 2, 3
NONE, PARM, NOACCESS, NOTFOUND = 0, 3, 4, 7
NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF
SC_R_UART_0, SC_R_UART_1, SC_R_USB_0, SC_R_GIC = 57, 58, 259, 18
UART_1_IRQ = 258
BOARD = load_board("imx8")


@pytest.fixture
def m() -> Mediator:
    mediator, _ = Mediator.boot(BOARD, create_platform(BOARD, ManualClock()))
    assert isinstance(mediator.platform, Imx8)
    return mediator


def sc(m: Mediator, domain: str, fid: int, *args: int) -> tuple[int, int]:
    outcome = m.call(domain, 0, fid, list(args))
    assert isinstance(outcome, Returned), outcome
    return outcome.regs[0], outcome.regs[1]


def mode(m: Mediator, resource: int) -> int:
    assert isinstance(m.platform, Imx8)
    return int(m.platform.scu.state.modes[resource])


def test_a_domain_powers_its_own_resource(m: Mediator) -> None:
    assert sc(m, "domu1", SET_MODE, SC_R_UART_1, LP) == (NONE, 0)
    assert mode(m, SC_R_UART_1) == LP
    # The SCFW reports only whether it is powered: LP and STBY read as ON.
    assert sc(m, "domu1", GET_MODE, SC_R_UART_1) == (NONE, ON)
    assert sc(m, "domu1", SET_MODE, SC_R_UART_1, OFF) == (NONE, 0)
    assert sc(m, "domu1", GET_MODE, SC_R_UART_1) == (NONE, OFF)
    # A powered-off device raises nothing.
    raised = m.raise_interrupt(UART_1_IRQ)
    assert isinstance(raised, Raised)
    assert (raised.outcome, raised.reason) == (IrqOutcome.DROPPED, "UART_1 is powered off")


@pytest.mark.parametrize(
    ("domain", "args", "answer"),
    [
        ("domu1", (SC_R_USB_0, OFF), (NOACCESS, 0)),  # domu2's resource
        ("dom0", (SC_R_USB_0, OFF), (NOACCESS, 0)),  # the hardware domain has no more right
        ("dom0", (SC_R_GIC, ON), (NOACCESS, 0)),  # TF-A's secure partition
        ("domu1", (SC_R_UART_1, 4), (PARM, 0)),  # no power mode 4
        ("domu1", (600, ON), (PARM, 0)),  # beyond SC_R_LAST
        ("domu1", (SC_R_UART_1 | 1 << 32, ON), (PARM, 0)),  # SCFW arguments are 32-bit
    ],
)
def test_refused_calls_leave_the_scu_untouched(
    m: Mediator, domain: str, args: tuple[int, int], answer: tuple[int, int]
) -> None:
    assert isinstance(m.platform, Imx8)
    before = dict(m.platform.scu.state.modes)
    assert sc(m, domain, SET_MODE, *args) == answer
    assert m.platform.scu.state.modes == before


def test_the_smc32_form_ignores_the_upper_halves(m: Mediator) -> None:
    assert sc(m, "domu1", 0x8200_1203, SC_R_UART_1 | 0xDEAD << 32, STBY) == (NONE, 0)
    assert mode(m, SC_R_UART_1) == STBY


def test_a_released_resource_goes_back_off_and_is_the_hardware_domains(m: Mediator) -> None:
    assert not isinstance(m.release_device("domu1", "UART_1"), Refused)
    assert mode(m, SC_R_UART_1) == OFF
    assert sc(m, "domu1", SET_MODE, SC_R_UART_1, ON) == (NOACCESS, 0)
    assert sc(m, "dom0", SET_MODE, SC_R_UART_1, ON) == (NONE, 0)  # unassigned: dom0's
    # Handed to a domain again, it comes powered, as the boot loader left it.
    assert sc(m, "dom0", SET_MODE, SC_R_UART_1, OFF) == (NONE, 0)
    m.assign_device("domu2", "UART_1")
    assert mode(m, SC_R_UART_1) == ON


def test_partition_queries(m: Mediator) -> None:
    assert sc(m, "domu1", GET_PARTITION) == (NONE, 3)  # 2 + domain id
    assert sc(m, "domu1", IS_OWNED, SC_R_UART_1) == (NONE, 1)
    assert sc(m, "domu1", IS_OWNED, SC_R_USB_0) == (NONE, 0)
    assert sc(m, "domu1", GET_OWNER, SC_R_USB_0) == (NONE, 4)  # domu2's partition
    assert sc(m, "domu1", GET_OWNER, SC_R_GIC) == (NONE, 0)  # not a domain's


@pytest.mark.parametrize(
    ("fid", "answer"),
    [
        (REQ_CPU_LOW_POWER_MODE, (NOACCESS, 0)),  # cores are TF-A's: PSCI only
        (0xC200_1263, (NOTFOUND, 0)),  # PM has no function 0x63
        (0xC200_1701, (NOTFOUND, 0)),  # MISC: not modelled
        (0xC200_1103, (NOT_SUPPORTED, 0)),  # no SCFW service 1: not an SCFW call
        (0xC200_1219, (NOACCESS, 0)),  # PM 25, reboot_continue: not a guest's
        (0xC200_1340, (NOTFOUND, 0)),  # RM has no function 0x40
        (0xC200_1302, (NOACCESS, 0)),  # RM partition_free: partitions are mediatord's
        (0xC200_0002, (NOT_SUPPORTED, 0)),  # IMX_SIP_SRTC: outside the SCFW scheme
        (0xC200_000D, (NOT_SUPPORTED, 0)),  # an EEMI call on an i.MX8
    ],
)
def test_what_is_not_a_guests_call(m: Mediator, fid: int, answer: tuple[int, int]) -> None:
    assert sc(m, "domu1", fid, SC_R_UART_1) == answer


def test_partitions_other_than_ones_own(m: Mediator) -> None:
    is_started = 0xC200_1218
    assert sc(m, "domu1", is_started, 3) == (NONE, 1)  # its own: 2 + 1
    assert sc(m, "domu1", is_started, 4) == (NOACCESS, 0)
    assert sc(m, "domu1", is_started, 32) == (PARM, 0)  # sc_rm_pt_t is 5 bits


def test_an_aarch32_domain_has_no_smc64_scfw_calls(m: Mediator) -> None:
    created = m.create_domain(
        DomainConfig(
            name="a32", id=0, vcpus=1, ram_base=0x8000_0000, ram_size=0x10_0000, aarch32=True
        )
    )
    assert not isinstance(created, Refused)
    assert sc(m, "a32", GET_PARTITION) == (NOT_SUPPORTED, 0)
    assert sc(m, "a32", 0x8200_1305) == (NONE, 2 + created.domain.id)  # the SMC32 form


def test_a_board_may_not_give_away_the_secure_partition() -> None:
    text = (Path(__file__).parents[2] / "mediatord" / "boards" / "imx8.toml").read_text()
    with pytest.raises(BoardError) as caught:
        parse_board(text.replace('resource = "SC_R_UART_1"', "resource = 355"), "b.toml")
    assert [str(p) for p in caught.value.problems] == [
        "devices.UART_1.resource: 355 is in TF-A's secure partition (cores, GIC, SC_R_SYSTEM, "
        "its MU and timer): no domain may own it"
    ]
    assert "SC_R_MU_0A" not in text


def test_an_imx8_state_survives_a_snapshot(m: Mediator) -> None:
    sc(m, "domu1", SET_MODE, SC_R_UART_1, LP)
    copy, _ = Mediator.boot(BOARD, create_platform(BOARD, ManualClock()))
    copy.clock.set(m.clock.now_ns())
    copy.load_state(json.loads(json.dumps(m.save_state())))
    assert copy.save_state() == m.save_state()
    assert mode(copy, SC_R_UART_1) == LP
    assert mode(copy, SC_R_UART_0) == ON


@pytest.mark.parametrize("smc64", [True, False])
def test_the_scfw_calls_the_journal_leaves_out_change_nothing(m: Mediator, smc64: bool) -> None:
    """records.changes_state says the SCFW queries change nothing: from every domain,
    on every resource and partition (and ones out of range), they do not."""
    sc(m, "domu1", SET_MODE, SC_R_UART_1, LP)
    sc(m, "dom0", SET_MODE, SC_R_UART_0, OFF)
    state = m.save_state()
    queries = (GET_MODE, IS_STARTED, GET_PARTITION, IS_OWNED, GET_OWNER)
    assert not any(records.changes_state(f) for f in queries)
    targets = [*(d.node_id for d in BOARD.devices), SC_R_GIC, 0, 2, 3, 31, 546, 2**32 - 1]
    for fid in queries:
        for domain in ("dom0", "domu1", "domu2"):
            for target in targets:
                m.call(domain, 0, fid if smc64 else fid & ~0x4000_0000, [target, ON, 0, 0])
    assert m.save_state() == state
