"""Stateful property test of the EEMI mediation (design section 7, docs/eemi-access.md).

A ``RuleBasedStateMachine`` drives one :class:`Mediator` booted on the default board
(over the emulated ZynqMP and its PMU firmware) with random EEMI calls from vCPU 0 of
dom0, domu1 and domu2: REQ_NODE, RELEASE_NODE, SET_REQUIREMENT, SET_MAX_LATENCY,
GET_NODE_STATUS, SET_WAKEUP_SOURCE, RESET_ASSERT, CLOCK_ENABLE / CLOCK_DISABLE and
MMIO_WRITE on every node (0..77 and beyond), reset line, clock and register, in the
SMC64 and SMC32 forms, with junk API ids, junk SiP function IDs and junk register
values, plus devices taken from and given to domains with ``assign_device`` /
``release_device`` (the GPU often: it brings GPU_PP_0 and GPU_PP_1 along). Nodes a
REQ_NODE succeeded on go to a bundle, so that RELEASE_NODE, SET_REQUIREMENT,
SET_MAX_LATENCY and GET_NODE_STATUS often find a requirement to work on.

Beside it runs a model written from docs/eemi-access.md, not from the code: who
holds which device (own devices; the hardware domain also every unassigned device,
every device not on the board and the hardware-domain-only nodes), each node's
requirements per master, and each board device's wake source. The tables the page
names as data (``NODE_GRANT``, ``RESET_GRANT``, ``CLOCK_NODES``, ``PLL_CLOCKS``,
``MMIO_RULES``) are read from ``mediatord.core.eemi``; ``test_documented_tables``
checks them against what the page states about them. What is checked:

- every call the model denies answers exactly x0 = 2002 (or the documented
  invalid-argument status) with zero payload, and leaves the firmware and the
  mediator's state exactly as they were;
- an allowed call changes nothing but what it names, and never a node the caller
  does not hold;
- every node's usage count is the number of masters holding a requirement, and the
  requirements are the model's: a domain's requirement goes when it releases the node
  or loses the device that grants it (no leak), and is only ever held on a node the
  domain may access; a device with a requirement on any of its nodes is not idle, so
  it cannot be assigned;
- a node is powered whenever some requirement with non-zero capabilities exists, and
  off once the last one goes (RELEASE_NODE, SET_REQUIREMENT, ReleaseDevice);
- GET_NODE_STATUS answers (power, the caller's capabilities, usage) and the wake
  sources (device, SoC wake logic, firmware) agree with the model.

Where the page leaves an order open (two reasons to refuse one call), each documented
outcome is accepted.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, rule

from mediatord.backends import create_platform
from mediatord.backends.zynqmp.pmu import PmState, Requirement, SlaveNode
from mediatord.board import default_board
from mediatord.core import eemi
from mediatord.core.clock import ManualClock
from mediatord.core.effects import DeviceAssigned, FirmwareCall
from mediatord.core.mediator import Changed, Mediator, Refusal, Refused, Returned
from mediatord.core.model import Device

# ---------------------------------------------------------------- the contract

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF
SIP64 = 0xC200_0000  # function ID 0xC2000000 | api (SMC64, fast, SiP)
SIP32 = 0x8200_0000  # the SMC32 form: 32-bit registers
NOT_SUPPORTED = MASK64

# API ids (docs/eemi-access.md, the table).
GET_NODE_STATUS = 3
SET_WAKEUP_SOURCE = 11
REQ_NODE = 13
RELEASE_NODE = 14
SET_REQUIREMENT = 15
SET_MAX_LATENCY = 16
RESET_ASSERT = 17
MMIO_WRITE = 19
CLOCK_ENABLE = 36
CLOCK_DISABLE = 37
NODE_APIS = (GET_NODE_STATUS, REQ_NODE, RELEASE_NODE, SET_REQUIREMENT, SET_MAX_LATENCY)
# Every API id the page's table names: anything else is "any other API id".
TABLE_APIS = frozenset(
    {1, 24, 0xA03, 35, 5, 0xA01, 63, 7, 9, 3, 13, 14, 15, 16, 6, 8, 10, 11, 17, 18, 20, 19}
    | {36, 37, 39, 43, 38, 40, 44, 41, 42, 49, 51, 48, 50, 34, 21, 2, 22, 23, 26, 27}
    | set(range(28, 34))
    | {0xA02, 12}
)

# Statuses.
SUCCESS = 0
XST_PM_ARGS = 1
INVALID_PARAM = 15
NO_ACCESS = 2002
INVALID_NODE = 2003
DOUBLE_REQ = 2004

NODE_MAX = 78
NODE_APU = 1
APU_CORES = range(2, 6)  # NODE_APU_0..3: the caller's own vCPU n
PROC_FORCEDOFF, PROC_ACTIVE = 0, 1
CLOCK_COUNT = 113  # output clocks 0..112
RESETS = range(1000, 1120)
CAPS_VALID = 0x1 | 0x2 | 0x4 | 0x8  # ACCESS, CONTEXT, WAKEUP, UNUSABLE
MAX_QOS = 100
ACKS = (1, 2, 3)
RESET_ACTIONS = (0, 1, 2)  # release, assert, pulse

# Design section 9: the default board.
DOMAINS = {"dom0": (0, 4), "domu1": (1, 2), "domu2": (2, 2)}  # name -> (id, vCPUs)
DOMAIN_NAMES = tuple(DOMAINS)
NAME_OF = {id_: name for name, (id_, _) in DOMAINS.items()}
BOARD = {
    # device -> (node, owner at boot)
    "UART_0": (33, 0),
    "SD_0": (39, 0),
    "ETH_3": (32, 0),
    "GPU": (58, 0),
    "UART_1": (34, 1),
    "ETH_0": (29, 1),
    "USB_0": (22, 2),
    "SD_1": (40, 2),
}
DEVICE_OF_NODE = {node: name for name, (node, _) in BOARD.items()}


def granted(device: str) -> set[int]:
    """A device's own node and every node that comes with it (``NODE_GRANT``)."""
    return {BOARD[device][0]} | {n for n, d in eemi.NODE_GRANT.items() if d == device}


# docs/eemi-access.md, "Who holds what": hardware-domain-only nodes.
HWDOM_NODES = frozenset(
    eemi.NODES[n] for n in ("UNKNOWN", "EXTERN", "DDR", "IPI_APU", "PCAP", "LPD", "PL")
)
NOBODYS_NODES = frozenset(
    eemi.NODES[n]
    for n in (
        "APU_0",
        "APU_1",
        "APU_2",
        "APU_3",
        "L2",
        "FPD",
        "APLL",
        "DPLL",
        "IOPLL",
        "OCM_BANK_0",
        "OCM_BANK_1",
        "OCM_BANK_2",
        "OCM_BANK_3",
    )
)

# Nodes worth hitting often: the board's, the ones granted through them, the
# virtual APU, hardware-domain-only and nobody's nodes, and the first invalid one.
INTERESTING_NODES = (
    *DEVICE_OF_NODE,
    20,  # GPU_PP_0 (through GPU)
    21,  # GPU_PP_1
    23,  # USB_1 (not on the board)
    41,  # DP
    51,  # VPLL (through DP)
    7,  # RPU_0 (through RPU)
    0,
    1,
    2,
    3,
    4,
    5,
    55,  # DDR
    62,  # LPD
    69,  # PL
    10,  # FPD
    19,  # L2
    77,
    78,
)
CLOCK = eemi.CLOCKS
INTERESTING_CLOCKS = (
    *(
        CLOCK[c]
        for c in (
            "UART0_REF",
            "UART1_REF",
            "USB0_BUS_REF",
            "USB3_DUAL_REF",
            "GPU_REF",
            "GPU_PP0_REF",
            "GEM0_REF",
            "GEM3_REF",
            "GEM_TSU",
            "SDIO0_REF",
            "SDIO1_REF",
            "DLL_REF",
            "RPLL",
            "VPLL",
            "IOPLL",
            "APLL",
            "ACPU",
            "TOPSW_MAIN",
            "PL0_REF",
            "LPD_WDT",
        )
    ),
    CLOCK_COUNT - 1,
    CLOCK_COUNT,
)
R = eemi.RESETS
INTERESTING_RESETS = (
    *(
        R[r]
        for r in (
            "UART0",
            "UART1",
            "USB0_CORERESET",
            "USB0_APB",
            "USB1_APB",
            "GEM0",
            "GEM3",
            "SDIO0",
            "SDIO1",
            "GPU",
            "GPU_PP0",
            "SOFT",
            "OCM",
            "GPO3_PL_5",
            "ACPU0",
            "APU_L2",
            "DDR",
            "APLL",
        )
    ),
    RESETS.start - 1,
    RESETS.stop - 1,
    RESETS.stop,
)
MMIO_ADDRESSES = tuple(
    sorted(
        {a for mmio in eemi.MMIO_RULES for a in (mmio.start, (mmio.end or mmio.start + 4) - 4)}
        | {eemi.IOU_SLCR + 0x316, eemi.IOU_SLCR + 0x600, eemi.PMU_GLOBAL, 0x0}
    )
)

# ------------------------------------------------------------------ strategies

domains = st.sampled_from(DOMAIN_NAMES)
word = st.integers(0, MASK32)
# The nodes in play: the board's, and (as often) those granted through the GPU.
play_nodes = st.one_of(st.sampled_from(tuple(DEVICE_OF_NODE)), st.sampled_from((20, 21, 58)))
nodes = st.one_of(
    play_nodes,
    st.sampled_from(INTERESTING_NODES),
    st.integers(0, NODE_MAX - 1),
    st.integers(NODE_MAX, MASK32),
)
valid_caps = st.sampled_from([0x1, 0x2, 0x4, 0x5, 0x7, 0xF])
valid_qos = st.integers(0, MAX_QOS)
valid_acks = st.sampled_from(ACKS)
caps = st.one_of(st.sampled_from([0x1, 0x2, 0x4, 0x5, 0x7, 0xF, 0x0, 0x8, 0x10]), word)
qos = st.one_of(st.sampled_from([0, 50, 100, 101]), word)
acks = st.one_of(st.sampled_from(ACKS), st.sampled_from([0, 4]), word)
# A few clocks switched often (a device's, the GPU's, a PLL, one driving no node).
play_clocks = st.sampled_from(
    [
        CLOCK[c]
        for c in ("UART1_REF", "USB0_BUS_REF", "GPU_PP0_REF", "GEM3_REF", "RPLL", "TOPSW_MAIN")
    ]
)
clocks = st.one_of(
    st.sampled_from(INTERESTING_CLOCKS), st.integers(0, CLOCK_COUNT - 1), st.integers(0, MASK32)
)
resets = st.one_of(
    st.sampled_from(INTERESTING_RESETS), st.integers(RESETS.start, RESETS.stop - 1), word
)
apu_targets = st.one_of(st.sampled_from([NODE_APU, 2, 3, 4, 5, 0, 6]), word)
enables = st.one_of(st.sampled_from([0, 1]), word)
addresses = st.one_of(st.sampled_from(MMIO_ADDRESSES), word)
masks = st.one_of(st.sampled_from([MASK32, 0x1, 0x3FF0000, 0x8000, 0xFF]), word)
PMAPI_IDS = frozenset(int(a) for a in eemi.PmApi)
junk_apis = st.integers(0, 0xFFFF).filter(lambda a: a not in TABLE_APIS and a not in PMAPI_IDS)
regs64 = st.integers(0, MASK64)
# Devices to assign and release; the GPU often, as it grants more than its
# own node (GPU_PP_0, GPU_PP_1); USB_1 is not on the board, NOPE nowhere.
devices = st.one_of(st.sampled_from((*BOARD, "NOPE", "USB_1")), st.just("GPU"))


def pack(a0: int = 0, a1: int = 0, a2: int = 0, a3: int = 0, a4: int = 0) -> list[int]:
    """docs/eemi-access.md: x1 = arg1 << 32 | arg0, x2 = arg3 << 32 | arg2, x3 = arg4."""
    return [a1 << 32 | a0, a3 << 32 | a2, a4]


def words(regs: list[int], smc32: bool) -> tuple[int, int, int, int, int]:
    """The five 32-bit arguments the firmware sees; SMC32 zeroes the upper halves."""
    x1, x2, x3 = regs
    if smc32:
        x1, x2, x3 = x1 & MASK32, x2 & MASK32, x3 & MASK32
    return (x1 & MASK32, x1 >> 32, x2 & MASK32, x2 >> 32, x3 & MASK32)


# ---------------------------------------------------------------------- model


@dataclass
class Model:
    owners: dict[str, int | None]  # board device -> owning domain id
    reqs: dict[int, dict[int, int]]  # node -> master (domain id) -> capabilities
    wake: dict[str, bool]  # board device -> wake source

    def device(self, dom: int, name: str) -> bool:
        """Own devices; the hardware domain also unassigned and not-on-board ones."""
        if name not in self.owners:
            return dom == 0
        owner = self.owners[name]
        return owner == dom or (owner is None and dom == 0)

    def node(self, dom: int, node: int) -> bool:
        if node in HWDOM_NODES:
            return dom == 0
        grant = eemi.NODE_GRANT.get(node)
        return grant is not None and self.device(dom, grant)

    def reset(self, dom: int, reset: int) -> bool:
        grant = eemi.RESET_GRANT.get(reset)
        if grant is None:
            return False  # nobody's
        return dom == 0 if grant == "hwdom" else self.device(dom, grant)

    def clock(self, dom: int, clock: int) -> bool:
        """PLL clocks pass; else every node it drives must be the domain's; a clock
        that drives no node is the hardware domain's."""
        if clock in eemi.PLL_CLOCKS:
            return True
        driven = eemi.CLOCK_NODES.get(clock, ())
        if not driven:
            return dom == 0
        return all(self.node(dom, n) for n in driven)

    def mmio_bits(self, dom: int, address: int) -> int | None:
        """The bits of the register the domain may write, None when it may not."""
        bits: int | None = None
        for mmio in eemi.MMIO_RULES:
            end = mmio.end if mmio.end is not None else mmio.start + 1
            if not mmio.start <= address < end or mmio.readonly:
                continue
            if dom == 0 if mmio.grant == "hwdom" else self.device(dom, mmio.grant):
                bits = (bits or 0) | (mmio.mask or MASK32)
        return bits

    def requirement(self, node: int, dom: int) -> int | None:
        return self.reqs.get(node, {}).get(dom)

    def required(self, node: int) -> bool:
        return any(self.reqs.get(node, {}).values())


Touch = tuple[str, Any]


@dataclass
class Expect:
    """What one EEMI call may do."""

    # (verdict, status) pairs the call may end with; None: any status, verdict "allow".
    outcomes: set[tuple[str, int]] | None
    # The exact x0..x3 when the model knows them (refusals: the status, payload 0).
    regs: tuple[int, int, int, int] | None = None
    # What in the firmware it may change (only when it succeeds).
    touches: set[Touch] = field(default_factory=set)
    # Applied to the model, the expected system and checked on the firmware when the
    # call answered status 0.
    on_success: Callable[[Fw], None] | None = None
    # A check of the answer given the firmware before the call.
    check: Callable[[tuple[int, ...], Fw], None] | None = None
    # Set when the model says the caller may not make the call at all.
    refused: bool = False


def refusal(*outcomes: tuple[str, int]) -> Expect:
    return Expect(set(outcomes), refused=True)


DENY = ("deny", NO_ACCESS)


class Slave(NamedTuple):
    on: bool
    wake: bool
    requirements: dict[int, tuple[int, ...]]  # master -> every field of its requirement


@dataclass(frozen=True)
class Fw:
    """A copy of the whole firmware state (``PmState``), cheaper than ``Pmu.snapshot``:
    every field is copied, slave nodes and their requirements field by field."""

    slaves: dict[int, Slave]
    fields: dict[str, Any]  # every other PmState field, copied


SLAVE_FIELDS = {f.name for f in dataclasses.fields(SlaveNode)}
REQUIREMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Requirement))
CLOCK_FIELDS = ("clocks_on", "dividers", "parents")


def capture(state: PmState) -> Fw:
    assert {"node", "on", "requirements", "wake"} == SLAVE_FIELDS, SLAVE_FIELDS
    slaves = {
        node: Slave(
            s.on,
            s.wake,
            {
                m: tuple(getattr(r, f) for f in REQUIREMENT_FIELDS)
                for m, r in s.requirements.items()
            },
        )
        for node, s in state.slaves.items()
    }
    rest = {
        f.name: copy.copy(getattr(state, f.name))
        for f in dataclasses.fields(state)
        if f.name != "slaves"
    }
    return Fw(slaves, rest)


def firmware_changes(before: Fw, after: Fw) -> set[Touch]:
    """Which parts of the firmware's state differ: ("slave", node), ("island", node),
    ("reset", line), ("register", address), ("clock", clock) or (field, None)."""
    changed: set[Touch] = {
        ("slave", node) for node, slave in before.slaves.items() if after.slaves[node] != slave
    }
    kinds = {"islands": "island", "resets": "reset", "registers": "register"}
    for name, old in before.fields.items():
        new = after.fields[name]
        if old == new:
            continue
        if name in kinds:
            changed |= {
                (kinds[name], k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
            }
        elif name in CLOCK_FIELDS:
            changed |= {
                ("clock", c) for c, (o, n) in enumerate(zip(old, new, strict=True)) if o != n
            }
        else:
            changed.add((name, None))
    return changed


# -------------------------------------------------------------------- machine


class EemiMachine(RuleBasedStateMachine):
    # (domain, node) pairs some REQ_NODE succeeded for, to release, change and query.
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        board = default_board()
        self.m, _ = Mediator.boot(board, create_platform(board, ManualClock()))
        firmware = self.m.platform.firmware
        assert firmware is not None
        self.fw = firmware
        self.slaves = frozenset(firmware.state.slaves)
        self.system = self.view()  # the expected system state after a call
        self.history: list[str] = []  # devices changing hands, requirements changing
        self.model = Model(
            owners={name: owner for name, (_, owner) in BOARD.items()},
            reqs={},
            # Design section 9: every device is wake-capable and a wake source at boot.
            wake=dict.fromkeys(BOARD, True),
        )

    def capture(self) -> Fw:
        return capture(self.fw.state)

    def view(self) -> tuple[str, dict[str, Device]]:
        """The mediator's whole state (as ``Mediator.snapshot`` would compare it, more
        cheaply): everything but the devices as text, and a copy of each device."""
        system = self.m.system
        rest = repr(dataclasses.replace(system, devices={}))
        return rest, {name: dataclasses.replace(d) for name, d in system.devices.items()}

    # ------------------------------------------------------------ expectations

    def expect(self, name: str, api: int, a: tuple[int, ...], fw: Fw) -> Expect:
        dom = DOMAINS[name][0]
        if api in NODE_APIS:
            return self.expect_node(name, api, a, fw)
        if api == SET_WAKEUP_SOURCE:
            return self.expect_wakeup(name, a)
        if api == RESET_ASSERT:
            reset, action = a[0], a[1]
            if reset not in RESETS:
                return refusal(("invalid", INVALID_PARAM))
            if not self.model.reset(dom, reset):
                return refusal(DENY)
            if action not in RESET_ACTIONS:
                return Expect(None)

            def reset_done(after: Fw) -> None:
                assert after.fields["resets"][reset] == (action == 1), (reset, action)

            return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), {("reset", reset)}, reset_done)
        if api in (CLOCK_ENABLE, CLOCK_DISABLE):
            clock = a[0]
            if clock >= CLOCK_COUNT:
                return refusal(("invalid", INVALID_PARAM))
            if api == CLOCK_ENABLE and fw.fields["clocks_on"][clock]:
                # "CLOCK_ENABLE of an already-enabled clock: SUCCESS for anyone".
                return Expect({("allow", SUCCESS), ("handled", SUCCESS)}, (0, 0, 0, 0))
            if not self.model.clock(dom, clock):
                return refusal(DENY)
            enabled = api == CLOCK_ENABLE

            def clock_done(after: Fw) -> None:
                assert after.fields["clocks_on"][clock] is enabled

            return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), {("clock", clock)}, clock_done)
        if api == MMIO_WRITE:
            address, mask, value = a[0], a[1], a[2]
            bits = self.model.mmio_bits(dom, address)
            if bits is None:
                return refusal(DENY)
            # The mask narrowed to the domain's bits is what reaches the firmware.
            narrowed = mask & bits
            old = fw.fields["registers"].get(address, 0)

            def written(after: Fw) -> None:
                wanted = (old & ~narrowed & MASK32) | (value & narrowed)
                assert after.fields["registers"].get(address, 0) == wanted, (
                    hex(address),
                    hex(bits),
                )

            outcomes = {("allow", SUCCESS)} | ({("allow", INVALID_PARAM)} if address & 3 else set())
            return Expect(outcomes, None, {("register", address)}, written)
        # Any other API id.
        if dom == 0:
            return Expect({("allow", MASK32)}, (NOT_SUPPORTED, 0, 0, 0))
        return Expect({("handled", MASK32)}, (NOT_SUPPORTED, 0, 0, 0), refused=True)

    def expect_node(self, name: str, api: int, a: tuple[int, ...], fw: Fw) -> Expect:
        dom, vcpus = DOMAINS[name]
        node = a[0]
        model = self.model
        if node >= NODE_MAX:
            return refusal(("invalid", INVALID_NODE))
        if node == NODE_APU or node in APU_CORES:
            own = node == NODE_APU or node - APU_CORES.start < vcpus
            if api == GET_NODE_STATUS and own:
                # The virtual APU: the cluster is ACTIVE; vCPU 0 runs, the others are off.
                state = PROC_ACTIVE if node in (NODE_APU, APU_CORES.start) else PROC_FORCEDOFF
                return Expect({("handled", SUCCESS)}, (state << 32, 0, 0, 0), refused=True)
            return refusal(DENY)
        if not model.node(dom, node):
            return refusal(DENY)
        if node not in self.slaves:
            # Processors, islands, PLLs: the page says nothing of their answers.
            return Expect(None, touches=set() if api == GET_NODE_STATUS else {("slave", node)})
        held = model.requirement(node, dom)
        reqs = model.reqs.setdefault(node, {})
        touch = {("slave", node)}
        if api == GET_NODE_STATUS:

            def status(regs: tuple[int, ...], before: Fw) -> None:
                on = int(before.slaves[node].on)
                wanted = (on << 32, (held or 0) | len(reqs) << 32, 0, 0)
                assert regs == wanted, (name, node, [hex(r) for r in regs])
                assert on or not model.required(node), f"node {node} is required but off"

            return Expect({("allow", SUCCESS)}, check=status)
        caps_, qos_, ack = a[1], a[2], a[3]
        bad = caps_ & ~CAPS_VALID or qos_ > MAX_QOS or ack not in ACKS
        if api == REQ_NODE:
            outcomes = set()
            if bad or caps_ == 0:
                outcomes.add(("allow", INVALID_PARAM))
            if held is not None:
                outcomes.add(("allow", DOUBLE_REQ))
            if outcomes:
                return Expect(outcomes)

            def requested(after: Fw) -> None:
                reqs[dom] = caps_
                assert after.slaves[node].on, f"node {node} requested but off"

            return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), touch, requested)
        if held is None:
            return Expect({("allow", XST_PM_ARGS)}, (XST_PM_ARGS, 0, 0, 0))
        if api == RELEASE_NODE:

            def released(after: Fw) -> None:
                del reqs[dom]
                if not model.required(node):
                    assert not after.slaves[node].on, f"node {node} unrequired but on"

            return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), touch, released)
        if api == SET_REQUIREMENT:
            if bad:
                return Expect({("allow", INVALID_PARAM)}, (INVALID_PARAM, 0, 0, 0))

            def changed(after: Fw) -> None:
                reqs[dom] = caps_
                assert after.slaves[node].on is model.required(node), (node, reqs)

            return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), touch, changed)
        # SET_MAX_LATENCY
        return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), touch)

    def expect_wakeup(self, name: str, a: tuple[int, ...]) -> Expect:
        dom, vcpus = DOMAINS[name]
        target, node, enable = a[0], a[1], a[2]
        outcomes: set[tuple[str, int]] = set()
        if not (target == NODE_APU or (target in APU_CORES and target - APU_CORES.start < vcpus)):
            outcomes.add(DENY)
        if node >= NODE_MAX:
            outcomes.add(("invalid", INVALID_NODE))
        elif not self.model.node(dom, node):
            outcomes.add(DENY)
        if enable not in (0, 1):
            outcomes.add(("invalid", INVALID_PARAM))
        if outcomes:
            return Expect(outcomes, refused=True)
        if node not in self.slaves:
            return Expect(None, touches={("slave", node)})
        device = DEVICE_OF_NODE.get(node)

        def woken(after: Fw) -> None:
            assert after.slaves[node].wake is bool(enable)
            if device is not None:
                self.model.wake[device] = bool(enable)
                self.system[1][device] = dataclasses.replace(
                    self.system[1][device], wake_source=bool(enable)
                )

        return Expect({("allow", SUCCESS)}, (0, 0, 0, 0), {("slave", node)}, woken)

    # ------------------------------------------------------------------- calls

    def eemi(self, name: str, api: int, regs: list[int], smc32: bool = False) -> int:
        """One EEMI call from vCPU 0 of ``name``, checked against the model; its status."""
        fid = (SIP32 if smc32 else SIP64) | api
        a = words(regs, smc32)
        before_fw = self.capture()
        self.system = self.view()
        exp = self.expect(name, api, a, before_fw)
        outcome = self.m.call(name, 0, fid, regs)
        assert isinstance(outcome, Returned), outcome
        got = outcome.regs
        status = got[0] & MASK32
        calls = [e for e in outcome.effects if isinstance(e, FirmwareCall)]
        assert len(calls) == 1, outcome.effects
        call = calls[0]
        assert (call.domain, call.api, call.status) == (name, api, status), call
        where = f"{name} api {api} args {[hex(w) for w in a]} -> {[hex(r) for r in got]}"
        if exp.outcomes is not None:
            assert (call.verdict, status) in exp.outcomes, (where, call.verdict, exp.outcomes)
        else:
            assert call.verdict == "allow", (where, call.verdict)
        if exp.outcomes is not None and exp.regs is None and exp.check is None:
            # A refused or failed call sets only the status: its payload words are 0.
            assert got == (status, 0, 0, 0), where
        if exp.regs is not None:
            assert got == exp.regs, (where, [hex(r) for r in exp.regs])
        if exp.check is not None:
            exp.check(got, before_fw)

        after_fw = self.capture()
        changes = firmware_changes(before_fw, after_fw)
        dom = DOMAINS[name][0]
        for kind, node in changes:
            if kind == "slave":
                assert self.model.node(dom, node), f"{where}: changed node {node}, not its own"
        if exp.refused or status != SUCCESS:
            assert not changes, (where, changes)
        else:
            slaves_changed = any(kind == "slave" for kind, _ in changes)
            allowed = exp.touches | (
                {("island", i) for i in after_fw.fields["islands"]} if slaves_changed else set()
            )
            assert changes <= allowed, (where, changes - allowed)
            if exp.on_success is not None:
                exp.on_success(after_fw)
            if api in (REQ_NODE, RELEASE_NODE, SET_REQUIREMENT):
                what = {REQ_NODE: "requested", RELEASE_NODE: "released"}.get(api, "changed")
                self.history.append(f"{name} {what} {eemi.NODE_NAMES.get(a[0], a[0])}")
        assert self.view() == self.system, where
        return status

    @rule(
        target=held,
        name=domains,
        node=play_nodes,
        caps_=valid_caps,
        qos_=valid_qos,
        ack=valid_acks,
    )
    def req_node(self, *, name: str, node: int, caps_: int, qos_: int, ack: int) -> Any:
        if self.eemi(name, REQ_NODE, pack(node, caps_, qos_, ack)) == SUCCESS:
            return multiple((name, node))
        return multiple()

    @rule(name=domains, node=nodes, caps_=caps, qos_=qos, ack=acks, smc32=st.booleans())
    def req_node_any(
        self, *, name: str, node: int, caps_: int, qos_: int, ack: int, smc32: bool
    ) -> None:
        self.eemi(name, REQ_NODE, pack(node, caps_, qos_, ack), smc32)

    @rule(name=domains, node=st.one_of(play_nodes, nodes))
    def release_node(self, *, name: str, node: int) -> None:
        self.eemi(name, RELEASE_NODE, pack(node))

    @rule(requirement=held)
    def release_held(self, *, requirement: tuple[str, int]) -> None:
        """RELEASE_NODE of a node the domain requested (it may have lost it since)."""
        name, node = requirement
        self.eemi(name, RELEASE_NODE, pack(node))

    @rule(requirement=held, caps_=valid_caps | st.just(0), qos_=valid_qos, ack=valid_acks)
    def change_held(self, *, requirement: tuple[str, int], caps_: int, qos_: int, ack: int) -> None:
        name, node = requirement
        self.eemi(name, SET_REQUIREMENT, pack(node, caps_, qos_, ack))

    @rule(requirement=held, latency=word)
    def latency_held(self, *, requirement: tuple[str, int], latency: int) -> None:
        name, node = requirement
        self.eemi(name, SET_MAX_LATENCY, pack(node, latency))

    @rule(requirement=held, smc32=st.booleans())
    def status_held(self, *, requirement: tuple[str, int], smc32: bool) -> None:
        name, node = requirement
        self.eemi(name, GET_NODE_STATUS, pack(node), smc32)

    @rule(name=domains, node=nodes, caps_=caps, qos_=qos, ack=acks)
    def set_requirement_any(self, *, name: str, node: int, caps_: int, qos_: int, ack: int) -> None:
        self.eemi(name, SET_REQUIREMENT, pack(node, caps_, qos_, ack))

    @rule(name=domains, node=st.one_of(play_nodes, nodes), latency=word)
    def set_max_latency(self, *, name: str, node: int, latency: int) -> None:
        self.eemi(name, SET_MAX_LATENCY, pack(node, latency))

    @rule(name=domains, node=nodes, smc32=st.booleans())
    def get_node_status(self, *, name: str, node: int, smc32: bool) -> None:
        self.eemi(name, GET_NODE_STATUS, pack(node), smc32)

    @rule(name=domains, apu=apu_targets, node=nodes, enable=enables)
    def set_wakeup_source(self, *, name: str, apu: int, node: int, enable: int) -> None:
        self.eemi(name, SET_WAKEUP_SOURCE, pack(apu, node, enable))

    @rule(name=domains, reset=resets, action=st.one_of(st.sampled_from(RESET_ACTIONS), word))
    def reset_assert(self, *, name: str, reset: int, action: int) -> None:
        self.eemi(name, RESET_ASSERT, pack(reset, action))

    @rule(name=domains, clock=st.one_of(play_clocks, clocks), enable=st.booleans())
    def clock_switch(self, *, name: str, clock: int, enable: bool) -> None:
        self.eemi(name, CLOCK_ENABLE if enable else CLOCK_DISABLE, pack(clock))

    @rule(name=domains, address=addresses, mask=masks, value=word)
    def mmio_write(self, *, name: str, address: int, mask: int, value: int) -> None:
        self.eemi(name, MMIO_WRITE, pack(address, mask, value))

    @rule(name=domains, api=junk_apis, x1=regs64, x2=regs64, x3=regs64)
    def junk_api(self, *, name: str, api: int, x1: int, x2: int, x3: int) -> None:
        self.eemi(name, api, [x1, x2, x3])

    @rule(
        name=domains,
        api=st.sampled_from(
            (*NODE_APIS, SET_WAKEUP_SOURCE, RESET_ASSERT, MMIO_WRITE, CLOCK_ENABLE, CLOCK_DISABLE)
        ),
        x1=regs64,
        x2=regs64,
        x3=regs64,
        smc32=st.booleans(),
    )
    def junk_registers(
        self, *, name: str, api: int, x1: int, x2: int, x3: int, smc32: bool
    ) -> None:
        self.eemi(name, api, [x1, x2, x3], smc32)

    @rule(name=domains, reserved=st.integers(1, 0xFF), api=st.integers(0, 0xFFFF), x1=regs64)
    def not_eemi(self, *, name: str, reserved: int, api: int, x1: int) -> None:
        """Reserved bits [23:16] set: not EEMI, NOT_SUPPORTED, nothing reaches the firmware."""
        before_fw = self.capture()
        system = self.view()
        outcome = self.m.call(name, 0, SIP64 | reserved << 16 | api, [x1])
        assert isinstance(outcome, Returned), outcome
        assert outcome.regs == (NOT_SUPPORTED, 0, 0, 0)
        assert not [e for e in outcome.effects if isinstance(e, FirmwareCall)]
        assert self.capture() == before_fw
        assert self.view() == system

    # ----------------------------------------------------------------- devices

    @rule(name=domains, device=devices)
    def assign_device(self, name: str, device: str) -> None:
        self.assign(name, device)

    @rule(name=domains, device=devices)
    def move_device(self, name: str, device: str) -> None:
        """What an operator does to hand a device over: release it from its owner
        (if it has one), then assign it."""
        owner = self.model.owners.get(device)
        if owner is not None:
            self.release(NAME_OF[owner], device)
        self.assign(name, device)

    def assign(self, name: str, device: str) -> None:
        dom = DOMAINS[name][0]
        before_fw = self.capture()
        result = self.m.assign_device(name, device)
        if device not in BOARD:
            assert isinstance(result, Refused), result
            assert result.reason is Refusal.NOT_FOUND
            assert self.capture() == before_fw
            return
        nodes_ = granted(device)
        if self.model.owners[device] is not None or any(self.model.reqs.get(n) for n in nodes_):
            # Owned, or not idle: some master holds a requirement on its node "or on
            # any node that comes with it".
            assert isinstance(result, Refused), (name, device, result)
            assert result.reason is Refusal.FAILED_PRECONDITION, result
            assert self.capture() == before_fw
            return
        assert isinstance(result, Changed), (name, device, result)
        assert DeviceAssigned(dom, name, device, True) in result.effects
        self.model.owners[device] = dom
        self.model.wake[device] = True  # "a wake source as the board says"
        self.history.append(f"{device} assigned to {name}")
        changes = firmware_changes(before_fw, self.capture())
        assert changes <= {("slave", BOARD[device][0])}, changes

    @rule(name=domains, device=devices)
    def release_device(self, name: str, device: str) -> None:
        self.release(name, device)

    def release(self, name: str, device: str) -> None:
        dom = DOMAINS[name][0]
        before_fw = self.capture()
        result = self.m.release_device(name, device)
        if device not in BOARD:
            assert isinstance(result, Refused), result
            assert result.reason is Refusal.NOT_FOUND
            assert self.capture() == before_fw
            return
        if self.model.owners[device] != dom:
            assert isinstance(result, Refused), (name, device, result)
            assert result.reason is Refusal.FAILED_PRECONDITION, result
            assert self.capture() == before_fw
            return
        assert isinstance(result, Changed), (name, device, result)
        assert DeviceAssigned(dom, name, device, False) in result.effects
        self.model.owners[device] = None
        self.model.wake[device] = True  # back to the board's default
        self.history.append(f"{device} released by {name}")
        # "the domain's requirements on all those nodes are dropped"
        dropped = [
            n for n in granted(device) if self.model.reqs.get(n, {}).pop(dom, None) is not None
        ]
        after = self.capture()
        changes = firmware_changes(before_fw, after)
        touched = {("slave", n) for n in granted(device)}
        assert {k for k in changes if k[0] != "island"} <= touched, changes
        for node in dropped:
            # "each is unrequested again, and powers off if nobody else wants it".
            assert after.slaves[node].on is self.model.required(node), (device, node)

    # -------------------------------------------------------------- invariants

    @invariant()
    def ownership_matches(self) -> None:
        real = {name: d.owner for name, d in self.m.system.devices.items()}
        assert real == self.model.owners, self.story()
        for name, (id_, _) in DOMAINS.items():
            held = sorted(self.m.system.domains[id_].devices)
            assert held == sorted(d for d, o in self.model.owners.items() if o == id_), name

    @invariant()
    def requirements(self) -> None:
        """Usage = the masters holding a requirement, exactly the model's (nothing
        leaks), each on a node its domain may access; a required node is on."""
        for node, slave in self.fw.state.slaves.items():
            real = {master: r.caps for master, r in slave.requirements.items()}
            wanted = self.model.reqs.get(node, {})
            label = f"{eemi.NODE_NAMES[node]} ({node})"
            assert real == wanted, (label, real, wanted, self.story())
            assert slave.usage == len(wanted) >= 0, label
            for master in real:
                assert self.model.node(master, node), (
                    f"{NAME_OF.get(master, master)} holds a requirement on node {label}, "
                    f"which it may not access (the firmware still counts it); {self.story()}"
                )
            if any(real.values()):
                assert slave.on, f"node {label} is required but off; {self.story()}"

    @invariant()
    def wake_sources_match(self) -> None:
        for device, (node, _) in BOARD.items():
            wanted = self.model.wake[device]
            assert self.m.system.devices[device].wake_source is wanted, device
            assert self.fw.state.slaves[node].wake is wanted, device

    @invariant()
    def node_status_of_board_devices(self) -> None:
        """GET_NODE_STATUS by the domain that holds each board device: its power, the
        caller's capabilities, and usage = the number of masters."""
        for device, (node, _) in BOARD.items():
            owner = self.model.owners[device]
            caller = NAME_OF[0 if owner is None else owner]
            outcome = self.m.call(caller, 0, SIP64 | GET_NODE_STATUS, pack(node))
            assert isinstance(outcome, Returned), outcome
            reqs = self.model.reqs.get(node, {})
            caps_ = reqs.get(DOMAINS[caller][0], 0)
            on = int(self.fw.node_on(node))
            assert outcome.regs == (on << 32, caps_ | len(reqs) << 32, 0, 0), (device, outcome)

    def story(self) -> str:
        return "what changed hands and requirements so far: " + ("; ".join(self.history) or "-")


def test_no_requirement_outlives_the_device_that_grants_the_node() -> None:
    """What the machine found first, in a few steps: a domain's requirement on a node
    held through a device (GPU_PP_0 through GPU) must not survive the device changing
    hands, since the domain may then no longer access, or release, it."""
    board = default_board()
    m, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    firmware = m.platform.firmware
    assert firmware is not None
    gpu_pp_0 = eemi.NODES["GPU_PP_0"]
    assert m.call("dom0", 0, SIP64 | REQ_NODE, pack(gpu_pp_0, 1, 0, 1)).regs == (0, 0, 0, 0)
    assert firmware.node_usage(gpu_pp_0) == {0: 1}
    # Released, the GPU takes dom0's requirement on GPU_PP_0 with it.
    assert isinstance(m.release_device("dom0", "GPU"), Changed)
    assert firmware.node_usage(gpu_pp_0) == {}, "dom0's requirement on GPU_PP_0 leaked"
    # Unassigned, it is dom0's again; while dom0 requires GPU_PP_0 it is not idle.
    assert m.call("dom0", 0, SIP64 | REQ_NODE, pack(gpu_pp_0, 1, 0, 1)).regs == (0, 0, 0, 0)
    refused = m.assign_device("domu1", "GPU")
    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.FAILED_PRECONDITION
    assert m.call("dom0", 0, SIP64 | RELEASE_NODE, pack(gpu_pp_0)).regs == (0, 0, 0, 0)
    assert isinstance(m.assign_device("domu1", "GPU"), Changed)
    assert m.call("dom0", 0, SIP64 | REQ_NODE, pack(gpu_pp_0, 1, 0, 1)).regs == (NO_ACCESS, 0, 0, 0)
    assert m.call("domu1", 0, SIP64 | REQ_NODE, pack(gpu_pp_0, 1, 0, 1)).regs == (0, 0, 0, 0)
    assert firmware.node_usage(gpu_pp_0) == {1: 1}


def test_documented_tables() -> None:
    """The tables the model reads from the code say what docs/eemi-access.md says."""
    n = eemi.NODES
    assert frozenset(eemi.HWDOM_NODES) == HWDOM_NODES
    grants = {"GPU_PP_0": "GPU", "GPU_PP_1": "GPU", "VPLL": "DP", "RPLL": "DP", "RPU_0": "RPU"}
    for node, device in grants.items():
        assert eemi.NODE_GRANT[n[node]] == device, node
    for name in BOARD:
        assert eemi.NODE_GRANT[n[name]] == name
    assert not NOBODYS_NODES & eemi.NODE_GRANT.keys()
    assert not NOBODYS_NODES & HWDOM_NODES
    r = eemi.RESETS
    for reset, device in (("UART1", "UART_1"), ("USB0_CORERESET", "USB_0"), ("GEM3", "ETH_3")):
        assert eemi.RESET_GRANT[r[reset]] == device
    for reset in ("SOFT", "OCM", "IPI", "FPD", "PS_ONLY", "PL", "AFI_FM0", "GPO3_PL_0"):
        assert eemi.RESET_GRANT[r[reset]] == "hwdom", reset
    for reset in ("ACPU0", "ACPU3_PWRON", "APU_L2", "DDR", "APLL", "VPLL"):
        assert r[reset] not in eemi.RESET_GRANT, reset
    assert min(r.values()) == RESETS.start
    assert max(r.values()) == RESETS.stop - 1
    assert len(eemi.CLOCKS) == CLOCK_COUNT


TestEemi = EemiMachine.TestCase
# No shrinking: a failing run would spend minutes (past pytest's 60 s timeout) cutting
# 40 steps down; the assertion messages carry the story that matters instead
# (``EemiMachine.story``), and test_no_requirement_outlives_... is the shrunk case.
TestEemi.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
