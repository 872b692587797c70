"""Host suspend-to-RAM and resume through the Mediator, over each emulated board
(the ZynqMP, and the generic GICv3 board: tests/boards.py).

The contract is the seed's "Suspend Flow" / "Resume Flow" and its resume
scenarios 4.1-4.3, as design.md sections 6 and 8 turn them into a service:
dom0's vSYSTEM_SUSPEND walks the ten suspend steps in order, a failing step
rolls the done ones back in reverse so nothing stays half-suspended, and a wake
interrupt resumes the host (mirror order), then dom0, then the woken domain.
The emulated hardware is the referee: a mediator that skips a step is caught by
lost interrupts, a watchdog reset or an EL3 denial.

Time is a ManualClock, so every duration is exact. Expected values are
literals, never the constants of the code under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from boards import BOARDS
from seed import RESUME_FLOW, SUSPEND_FLOW

from mediatord.backends import create_platform
from mediatord.backends.armsoc import ArmSoc
from mediatord.backends.base import PcpuState
from mediatord.core import suspend
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.effects import (
    DomainEvent,
    Effect,
    EventKind,
    HardwareStep,
    HostStep,
    Pause,
    Resume,
    Shutdown,
    ShutdownReason,
    Start,
    Unpause,
    Wake,
)
from mediatord.core.mediator import (
    Blocked,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import DomainState, HostState, System, VcpuPower

# ---- PSCI function IDs and x0 values (DEN0022)
PSCI_VERSION = 0x8400_0000
CPU_SUSPEND_64 = 0xC400_0001
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
SYSTEM_OFF = 0x8400_0008
SYSTEM_SUSPEND_64 = 0xC400_000E
SUCCESS = 0
DENIED = 0xFFFF_FFFF_FFFF_FFFD  # -3
INTERNAL_FAILURE = 0xFFFF_FFFF_FFFF_FFFA  # -6

RAM_BASE = 0x4000_0000
DOM0_ENTRY = 0x4008_0000
DOM0_CONTEXT = 0xD0D0_0000_0000_0001
DOMU_ENTRY = 0x4000_2000
DOMU1_CONTEXT = 0x1111
DOMU2_CONTEXT = 0x2222

# IRQs of the default board
VTIMER = 27
UART_0 = 53  # dom0
UART_1 = 54  # domu1
SD_1 = 81  # domu2
ETH_0 = 89  # domu1
USB_0 = 97  # domu2

ON = PcpuState.ON
OFF = PcpuState.OFF

# The seed's Suspend Flow and Resume Flow, in order.
SUSPEND_ORDER = SUSPEND_FLOW
RESUME_ORDER = RESUME_FLOW
# Saving a register file changes nothing, so these two have nothing to undo.
NOTHING_TO_UNDO = {"save_gic", "save_el2_context"}


# ------------------------------------------------------------------- helpers


# The board of the test running now (see the autouse fixture below).
CURRENT = {"board": BOARDS["zynqmp"]}


@pytest.fixture(autouse=True, params=sorted(BOARDS))
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on each backend."""
    CURRENT["board"] = BOARDS[request.param]
    yield request.param
    CURRENT["board"] = BOARDS["zynqmp"]


def boot(
    skip: tuple[str, ...] = (),
) -> tuple[Mediator, ManualClock]:
    """The board under test on a manual clock, with the named host steps left out."""
    clock = ManualClock()
    board = CURRENT["board"]
    m, _ = Mediator.boot(
        board,
        create_platform(board, clock),
        suspend_steps=tuple(s for s in suspend.SUSPEND_STEPS if s.name not in skip),
        resume_steps=tuple(s for s in suspend.RESUME_STEPS if s.name not in skip),
    )
    return m, clock


def returned(outcome: object) -> Returned:
    assert isinstance(outcome, Returned), outcome
    return outcome


def x0(m: Mediator, domain: str, vcpu: int, fid: int, *args: int) -> int:
    return returned(m.call(domain, vcpu, fid, list(args))).regs[0]


def raised(outcome: object) -> Raised:
    assert isinstance(outcome, Raised), outcome
    return outcome


def suspend_domu(m: Mediator, name: str, context: int) -> None:
    assert x0(m, name, 0, SYSTEM_SUSPEND_64, DOMU_ENTRY, context) == SUCCESS
    assert m.system.domains[m.system.names[name]].state is DomainState.SUSPENDED


def suspend_host(m: Mediator, vcpu: int = 0) -> Returned:
    return returned(m.call("dom0", vcpu, SYSTEM_SUSPEND_64, [DOM0_ENTRY, DOM0_CONTEXT]))


def steps(effects: tuple[Effect, ...], phase: str) -> list[str]:
    return [e.name for e in effects if isinstance(e, HostStep) and e.phase == phase]


def durations(effects: tuple[Effect, ...], phase: str) -> dict[str, int]:
    return {
        e.name: e.end_ns - e.start_ns
        for e in effects
        if isinstance(e, HostStep) and e.phase == phase
    }


def events(effects: tuple[Effect, ...]) -> list[tuple[str, int, EventKind]]:
    return [(e.domain, e.vcpu, e.kind) for e in effects if isinstance(e, DomainEvent)]


def state(m: Mediator) -> System:
    """The whole system state with the Attach sequence numbers left out (the
    events a rollback sends are real, so the numbers move on)."""
    snapshot = m.snapshot()
    for domain in snapshot.domains.values():
        domain.event_seq = 0
    return snapshot


def hardware(m: Mediator) -> tuple[object, ...]:
    """Everything of the emulated SoC a suspend touches."""
    p = m.platform
    assert isinstance(p, ArmSoc)
    return (
        p.gic_registers(),
        p.timer_registers(),
        p.watchdog_enabled(),
        [p.pcpu_state(c) for c in range(4)],
        list(p.masked),
        p.el2,
        p.soc_state(),
    )


def domain_state(m: Mediator, name: str) -> DomainState:
    return m.system.domains[m.system.names[name]].state


# --------------------------------------------------------------- suspending


def set_domu(m: Mediator, name: str, how: str, context: int) -> None:
    if how == "suspended":
        suspend_domu(m, name, context)
    elif how == "shutdown":
        assert x0(m, name, 0, SYSTEM_OFF) == SUCCESS
    elif how == "two-vcpus":
        assert x0(m, name, 0, CPU_ON_64, 1, DOMU_ENTRY, 0) == SUCCESS
    elif how == "standby":
        assert isinstance(m.call(name, 0, CPU_SUSPEND_64, [0, 0, 0]), Blocked)
    else:
        assert how == "running"


DOMU_STATES = [
    ("running", "running"),
    ("suspended", "running"),
    ("running", "suspended"),
    ("suspended", "suspended"),
    ("shutdown", "two-vcpus"),
    ("standby", "shutdown"),
]


@pytest.mark.parametrize(("domu1", "domu2"), DOMU_STATES)
def test_dom0_system_suspend_suspends_the_host(domu1: str, domu2: str) -> None:
    m, _ = boot()
    set_domu(m, "domu1", domu1, DOMU1_CONTEXT)
    set_domu(m, "domu2", domu2, DOMU2_CONTEXT)
    outcome = suspend_host(m)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert steps(outcome.effects, "suspend") == SUSPEND_ORDER
    assert all(e.result == 0 for e in outcome.effects if isinstance(e, HostStep))
    assert steps(outcome.effects, "rollback") == []

    paused = {"running", "two-vcpus", "standby"}
    assert events(outcome.effects) == [
        (name, 0, Pause()) for name, how in (("domu1", domu1), ("domu2", domu2)) if how in paused
    ]
    after = {
        "running": DomainState.PAUSED,
        "two-vcpus": DomainState.PAUSED,
        "standby": DomainState.PAUSED,
        "suspended": DomainState.SUSPENDED,
        "shutdown": DomainState.SHUTDOWN,
    }
    assert domain_state(m, "domu1") is after[domu1]
    assert domain_state(m, "domu2") is after[domu2]

    assert m.system.host_state is HostState.SUSPENDED
    dom0 = m.system.domains[0]
    assert dom0.state is DomainState.SUSPENDED
    v = dom0.vcpus[0]
    assert (v.power, v.entry_point, v.context_id) == (
        VcpuPower.SUSPENDED,
        DOM0_ENTRY,
        DOM0_CONTEXT,
    )
    p = m.platform
    assert [p.pcpu_state(c) for c in range(4)] == [PcpuState.SUSPENDED, OFF, OFF, OFF]
    assert p.watchdog_enabled() is False
    assert p.timer_registers() == (0, 0)
    assert m.system.host_suspend is not None


# What each board calls its watchdog and what its GIC save covers.
WATCHDOG_AND_GIC = {
    "zynqmp": ("FPD SWDT", "distributor and boot CPU interface"),
    "generic": ("SBSA generic watchdog", "distributor, boot PE redistributor and ICC registers"),
    "imx8": ("SCU watchdog", "distributor, boot PE redistributor and ICC registers"),
}


def test_the_hardware_operations_of_a_suspend(backend: str) -> None:
    watchdog, gic = WATCHDOG_AND_GIC[backend]
    m, _ = boot()
    outcome = suspend_host(m)
    assert [
        (e.name, e.detail, e.result) for e in outcome.effects if isinstance(e, HardwareStep)
    ] == [
        ("wdt.disable", watchdog, 0),
        ("el3.cpu_off", "pCPU 1", 0),
        ("el3.cpu_off", "pCPU 2", 0),
        ("el3.cpu_off", "pCPU 3", 0),
        ("cpu.irq_mask", "pCPU 0", 0),
        ("timer.suspend", "CNTHP_CTL, CNTHP_CVAL", 0),
        ("gic.save", gic, 0),
        ("el2.save", "boot pCPU EL2 system registers", 0),
        ("el3.system_suspend", "pCPU 0, resume at 0x201000", 0),
    ]


def test_suspend_step_durations_are_exact() -> None:
    m, clock = boot()
    start = clock.now_ns()
    outcome = suspend_host(m)
    assert durations(outcome.effects, "suspend") == {
        "move_to_boot_pcpu": 0,
        "system_state_suspend": 0,
        "disable_watchdog": 2_000,
        "pause_domains": 0,
        "disable_nonboot_pcpus": 3 * 120_000,
        "mask_irqs": 100,
        "suspend_timer": 1_000,
        "save_gic": 12_000,
        "save_el2_context": 3_000,
        "el3_system_suspend": 3_000_000,
    }
    host_steps = [e for e in outcome.effects if isinstance(e, HostStep)]
    assert host_steps[0].start_ns == start
    for before, after in itertools.pairwise(host_steps):
        assert after.start_ns == before.end_ns
    assert clock.now_ns() == start + 3_378_100
    assert m.system.last_suspend_ns == (start, start + 3_378_100)


def test_a_domu_system_suspend_does_not_suspend_the_host() -> None:
    m, _ = boot()
    outcome = returned(m.call("domu1", 0, SYSTEM_SUSPEND_64, [DOMU_ENTRY, DOMU1_CONTEXT]))
    assert steps(outcome.effects, "suspend") == []
    assert m.system.host_state is HostState.ACTIVE
    assert [m.platform.pcpu_state(c) for c in range(4)] == [ON, ON, ON, ON]


# ----------------------------------------------------------------- rollback


# (fault name, the suspend step it fails, x0 of dom0's SYSTEM_SUSPEND, step-level)
FAULTS = [
    *[(name, name, INTERNAL_FAILURE, True) for name in SUSPEND_ORDER],
    ("el3.cpu_off", "disable_nonboot_pcpus", DENIED, False),
    ("el3.system_suspend", "el3_system_suspend", INTERNAL_FAILURE, False),
    ("gic.save", "save_gic", INTERNAL_FAILURE, False),
    ("timer.suspend", "suspend_timer", INTERNAL_FAILURE, False),
    ("wdt.disable", "disable_watchdog", INTERNAL_FAILURE, False),
    ("cpu.irq_mask", "mask_irqs", INTERNAL_FAILURE, False),
    ("el2.save", "save_el2_context", INTERNAL_FAILURE, False),
]


@pytest.mark.parametrize(
    ("fault", "failing", "expected", "step_level"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_a_failing_suspend_step_rolls_everything_back(
    fault: str, failing: str, expected: int, step_level: bool
) -> None:
    m, _ = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)  # stays suspended; domu2 runs
    before_state = state(m)
    before_hardware = hardware(m)
    assert m.inject_fault(fault, 1, 0) is None

    outcome = suspend_host(m)

    assert outcome.regs == (expected, 0, 0, 0)
    done = SUSPEND_ORDER[: SUSPEND_ORDER.index(failing)]
    assert steps(outcome.effects, "suspend") == [*done, failing]
    failed = next(
        e
        for e in outcome.effects
        if isinstance(e, HostStep) and e.phase == "suspend" and e.name == failing
    )
    assert failed.result == (-3 if expected == DENIED else -6)
    assert failed.injected is step_level
    assert steps(outcome.effects, "rollback") == [
        name for name in reversed(done) if name not in NOTHING_TO_UNDO
    ]
    assert all(
        e.result == 0 for e in outcome.effects if isinstance(e, HostStep) and e.phase == "rollback"
    )
    if not step_level:
        assert [
            (e.name, e.result) for e in outcome.effects if isinstance(e, HardwareStep) and e.result
        ] == [(fault, -3 if expected == DENIED else -6)]
        assert any(
            isinstance(e, HardwareStep) and e.detail.endswith("(injected fault)")
            for e in outcome.effects
        )
    paused = "pause_domains" in done
    assert events(outcome.effects) == (
        [("domu2", 0, Pause()), ("domu2", 0, Unpause())] if paused else []
    )

    # Nothing stays half-suspended.
    assert state(m) == before_state
    assert hardware(m) == before_hardware
    assert m.system.host_state is HostState.ACTIVE
    assert m.system.host_suspend is None
    dom0 = m.system.domains[0]
    assert dom0.state is DomainState.RUNNING
    v = dom0.vcpus[0]
    assert (v.power, v.entry_point, v.context_id) == (VcpuPower.ON, RAM_BASE, 0)
    assert m.platform.faults.armed == {}

    # The fault is spent: the next try suspends, and a wake brings back the
    # state from before the failed attempt.
    again = suspend_host(m)
    assert again.regs == (SUCCESS, 0, 0, 0)
    assert m.system.host_state is HostState.SUSPENDED
    woke = raised(m.raise_interrupt(UART_1))
    assert (woke.outcome, woke.woke_host) == (IrqOutcome.WOKE_DOMAIN, True)
    assert hardware(m) == before_hardware


@pytest.mark.parametrize(
    ("error", "x0_value"),
    [(-3, DENIED), (-6, INTERNAL_FAILURE), (-2, INTERNAL_FAILURE), (-9, INTERNAL_FAILURE)],
)
def test_only_denied_and_internal_failure_reach_dom0(error: int, x0_value: int) -> None:
    m, _ = boot()
    before = state(m)
    assert m.inject_fault("gic.save", 1, error) is None
    assert suspend_host(m).regs == (x0_value, 0, 0, 0)
    assert state(m) == before


def test_an_injected_fault_with_a_count_fails_that_many_suspends() -> None:
    m, _ = boot()
    assert m.inject_fault("save_el2_context", 2, -3) is None
    assert suspend_host(m).regs == (DENIED, 0, 0, 0)
    assert suspend_host(m).regs == (DENIED, 0, 0, 0)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)


def test_a_pcpu_failing_to_power_off_midway_brings_back_the_ones_already_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EL3 refuses CPU_OFF of pCPU 2 after pCPU 1 went off: the rollback must
    bring pCPU 1 back too (design section 6: nothing stays half-suspended)."""
    m, _ = boot()
    platform = m.platform
    before_state = state(m)
    before_hardware = hardware(m)
    real_cpu_off = platform.cpu_off

    def cpu_off(pcpu: int) -> int:
        if pcpu == 2:
            platform.faults.arm("el3.cpu_off", 1, -3)
        return real_cpu_off(pcpu)

    monkeypatch.setattr(platform, "cpu_off", cpu_off)
    outcome = suspend_host(m)
    assert outcome.regs == (DENIED, 0, 0, 0)
    assert [m.platform.pcpu_state(c) for c in range(4)] == [ON, ON, ON, ON]
    assert state(m) == before_state
    assert hardware(m) == before_hardware


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("no_such_step", 0),
        ("el3.cpu_of", 0),
        ("SAVE_GIC", 0),
        ("save_gic", 1),
        ("save_gic", -10),
        ("gic.save", 2),
        ("gic.save", -11),
    ],
)
def test_inject_fault_refuses_unknown_names_and_errors_outside_the_psci_range(
    name: str, error: int
) -> None:
    m, _ = boot()
    outcome = m.inject_fault(name, 1, error)
    assert isinstance(outcome, Refused)
    assert outcome.reason is Refusal.INVALID_ARGUMENT
    assert m.platform.faults.armed == {}
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)


@pytest.mark.parametrize("error", [0, -1, -9])
def test_inject_fault_accepts_zero_and_every_psci_error(error: int) -> None:
    m, _ = boot()
    assert m.inject_fault("save_gic", 1, error) is None
    assert m.inject_fault("el3.cpu_on", 1, error) is None


@pytest.mark.parametrize("step", RESUME_FLOW)
def test_the_resume_bookkeeping_cannot_be_made_to_fail(step: str) -> None:
    # A resume cannot go back to sleep half-way; only its hardware operations
    # (el3.cpu_on, gic.restore, ...) may fail, and those are reported.
    m, _ = boot()
    refused = m.inject_fault(step, 1, 0)
    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.INVALID_ARGUMENT
    assert m.platform.faults.armed == {}


# ------------------------------------------------------------------- resume


def test_scenario_4_2_a_domu_device_resumes_the_host_then_dom0_then_the_domu() -> None:
    m, clock = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    before = hardware(m)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    assert hardware(m) != before
    clock.advance(5_000_000_000)
    raised_at = clock.now_ns()

    woke = raised(m.raise_interrupt(UART_1))

    assert woke.outcome is IrqOutcome.WOKE_DOMAIN
    assert (woke.domain, woke.vcpu, woke.woke_host) == ("domu1", 0, True)
    assert steps(woke.effects, "resume") == RESUME_ORDER
    assert all(e.result == 0 for e in woke.effects if isinstance(e, HostStep))
    assert events(woke.effects) == [
        ("domu2", 0, Unpause()),
        ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
        ("domu1", 0, Resume(DOMU_ENTRY, DOMU1_CONTEXT)),
        ("domu1", 0, Wake(UART_1)),
    ]
    # The register file, the hypervisor timer, EL2 and the cores are as before.
    assert hardware(m) == before
    assert m.system.host_state is HostState.ACTIVE
    assert m.system.host_suspend is None
    for name in ("dom0", "domu1", "domu2"):
        assert domain_state(m, name) is DomainState.RUNNING
    assert durations(woke.effects, "resume") == {
        "restore_el2_context": 3_000,
        "system_state_resume": 0,
        "restore_gic": 15_000,
        "resume_timer": 1_000,
        "unmask_irqs": 100,
        "enable_nonboot_pcpus": 3 * (250_000 + 100),
        "unpause_domains": 0,
        "enable_watchdog": 2_000,
        "system_state_active": 0,
        "resume_hardware_domain": 0,
    }
    # soc.wake (4.5 ms) and then the resume steps (771.4 us).
    assert m.system.last_resume_ns == (raised_at, raised_at + 5_271_400)
    assert clock.now_ns() == raised_at + 5_271_400
    assert m.system.last_suspend_ns is not None
    assert m.system.last_suspend_ns[1] - m.system.last_suspend_ns[0] == 3_378_100


def test_after_a_resume_device_interrupts_are_delivered_again() -> None:
    m, _ = boot()
    suspend_host(m)
    raised(m.raise_interrupt(UART_0))
    for irq, name in ((UART_1, "domu1"), (ETH_0, "domu1"), (USB_0, "domu2"), (SD_1, "domu2")):
        result = raised(m.raise_interrupt(irq))
        assert (result.outcome, result.domain, result.woke_host) == (
            IrqOutcome.DELIVERED,
            name,
            False,
        )
        assert events(result.effects) == [(name, 0, Wake(irq))]


def test_the_host_suspends_and_resumes_again_and_again() -> None:
    m, clock = boot()
    before = hardware(m)
    for _ in range(3):
        assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
        clock.advance(60_000_000_000)  # far past the watchdog's 10 s
        woke = raised(m.raise_interrupt(UART_0))
        assert (woke.outcome, woke.woke_host) == (IrqOutcome.DELIVERED, True)
        assert hardware(m) == before


def test_scenario_4_3_a_dom0_device_resumes_the_host_and_dom0() -> None:
    m, _ = boot()
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    woke = raised(m.raise_interrupt(UART_0))
    assert woke.outcome is IrqOutcome.DELIVERED
    assert (woke.domain, woke.vcpu, woke.woke_host) == ("dom0", 0, True)
    assert steps(woke.effects, "resume") == RESUME_ORDER
    assert events(woke.effects) == [
        ("domu1", 0, Unpause()),
        ("domu2", 0, Unpause()),
        ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
        ("dom0", 0, Wake(UART_0)),
    ]
    assert m.system.host_state is HostState.ACTIVE


def test_a_paused_domus_device_resumes_the_host_and_reaches_the_domu() -> None:
    m, _ = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    woke = raised(m.raise_interrupt(USB_0))
    assert (woke.outcome, woke.domain, woke.woke_host) == (IrqOutcome.DELIVERED, "domu2", True)
    assert events(woke.effects) == [
        ("domu2", 0, Unpause()),
        ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
        ("domu2", 0, Wake(USB_0)),
    ]
    # domu1 stays suspended until its own wake interrupt.
    assert domain_state(m, "domu1") is DomainState.SUSPENDED


def test_scenario_4_1_a_domu_wakes_while_dom0_runs() -> None:
    m, _ = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    woke = raised(m.raise_interrupt(UART_1))
    assert woke.outcome is IrqOutcome.WOKE_DOMAIN
    assert (woke.domain, woke.vcpu, woke.woke_host) == ("domu1", 0, False)
    assert steps(woke.effects, "resume") == []
    assert not any(isinstance(e, HostStep) for e in woke.effects)
    assert events(woke.effects) == [
        ("domu1", 0, Resume(DOMU_ENTRY, DOMU1_CONTEXT)),
        ("domu1", 0, Wake(UART_1)),
    ]
    assert m.system.host_state is HostState.ACTIVE
    assert domain_state(m, "domu1") is DomainState.RUNNING


def test_dom0s_virtual_timer_wakes_the_host() -> None:
    m, _ = boot()
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    woke = raised(m.raise_interrupt(VTIMER, "dom0", 0))
    assert woke.woke_host is True
    assert steps(woke.effects, "resume") == RESUME_ORDER
    assert m.system.host_state is HostState.ACTIVE
    assert woke.outcome is IrqOutcome.DELIVERED
    assert (woke.domain, woke.vcpu) == ("dom0", 0)
    assert events(woke.effects) == [
        ("domu1", 0, Unpause()),
        ("domu2", 0, Unpause()),
        ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
        ("dom0", 0, Wake(VTIMER)),
    ]


def test_the_virtual_timer_after_a_timer_wake_fires_once() -> None:
    m, _ = boot()
    suspend_host(m)
    raised(m.raise_interrupt(VTIMER, "dom0", 0))
    tick = raised(m.raise_interrupt(VTIMER, "dom0", 0))
    assert tick.outcome is IrqOutcome.DELIVERED
    assert events(tick.effects) == [("dom0", 0, Wake(VTIMER))]


@pytest.mark.parametrize("domu1", ["suspended", "running"])
def test_a_non_wake_interrupt_waits_for_the_next_wake(domu1: str) -> None:
    """ETH_0 (89) is no wake source: while the host sleeps it stays pending and
    the host stays suspended. UART_1 (54) later wakes the host; both lines are
    then taken from the GIC in INTID order (54 before 89, equal priorities), so
    domu1 sees Wake(54) then Wake(89)."""
    m, clock = boot()
    m.system.devices["ETH_0"].wake_source = False
    m.platform.set_wake_source(ETH_0, False)
    set_domu(m, "domu1", domu1, DOMU1_CONTEXT)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)

    pending = raised(m.raise_interrupt(ETH_0))
    assert pending.outcome is IrqOutcome.PENDING
    assert (pending.domain, pending.woke_host) == ("domu1", False)
    assert pending.reason == "IRQ 89 is not an armed wake source of the SoC"
    assert not any(isinstance(e, (HostStep, DomainEvent)) for e in pending.effects)
    assert m.system.host_state is HostState.SUSPENDED
    assert m.platform.pcpu_state(0) is PcpuState.SUSPENDED

    clock.advance(2_000_000_000)
    woke = raised(m.raise_interrupt(UART_1))
    assert woke.woke_host is True
    assert m.system.host_state is HostState.ACTIVE
    if domu1 == "suspended":
        assert woke.outcome is IrqOutcome.WOKE_DOMAIN
        assert events(woke.effects) == [
            ("domu2", 0, Unpause()),
            ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
            ("domu1", 0, Resume(DOMU_ENTRY, DOMU1_CONTEXT)),
            ("domu1", 0, Wake(UART_1)),
            ("domu1", 0, Wake(ETH_0)),
        ]
    else:
        assert woke.outcome is IrqOutcome.DELIVERED
        assert events(woke.effects) == [
            ("domu1", 0, Unpause()),
            ("domu2", 0, Unpause()),
            ("dom0", 0, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
            ("domu1", 0, Wake(UART_1)),
            ("domu1", 0, Wake(ETH_0)),
        ]
    assert m.system.domains[1].pending_irqs == []


# -------------------------------------------- mediator bugs the hardware catches


def test_without_gic_save_and_restore_interrupts_are_lost_after_resume() -> None:
    m, _ = boot(skip=("save_gic", "restore_gic"))
    before = hardware(m)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    # The PMU armed the wake sources before the power-down, so the SoC wakes...
    woke = raised(m.raise_interrupt(UART_1))
    assert woke.woke_host is True
    assert m.system.host_state is HostState.ACTIVE
    # ...but the GIC came back at reset: the waking interrupt is never taken.
    assert woke.outcome is IrqOutcome.PENDING
    assert not any(isinstance(e, DomainEvent) and isinstance(e.kind, Wake) for e in woke.effects)
    assert hardware(m) != before
    for irq, name in ((USB_0, "domu2"), (UART_0, "dom0"), (UART_1, "domu1")):
        assert domain_state(m, name) is DomainState.RUNNING
        lost = raised(m.raise_interrupt(irq))
        assert lost.outcome is IrqOutcome.PENDING
        assert (lost.domain, lost.woke_host) == (name, False)
        assert lost.reason == f"IRQ {irq} has no target pCPU"  # ITARGETSR at reset
        assert events(lost.effects) == []


def test_with_gic_save_and_restore_the_same_interrupts_are_delivered() -> None:
    m, _ = boot()
    suspend_host(m)
    assert raised(m.raise_interrupt(UART_1)).outcome is IrqOutcome.DELIVERED
    for irq, name in ((USB_0, "domu2"), (UART_0, "dom0")):
        result = raised(m.raise_interrupt(irq))
        assert events(result.effects) == [(name, 0, Wake(irq))]


def test_a_watchdog_left_running_through_suspend_resets_the_host() -> None:
    m, clock = boot(skip=("disable_watchdog", "enable_watchdog"))
    booted = hardware(m)
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    assert suspend_host(m).regs == (SUCCESS, 0, 0, 0)
    assert m.platform.watchdog_enabled() is True
    clock.advance(11_000_000_000)
    raised_at = clock.now_ns()

    reset = raised(m.raise_interrupt(UART_1))

    assert reset.outcome is IrqOutcome.HOST_RESET
    assert reset.reason == "the watchdog expired during suspend"
    assert steps(reset.effects, "resume") == []
    assert events(reset.effects) == [
        ("dom0", 0, Shutdown(ShutdownReason.REBOOT)),
        ("dom0", 0, Start(RAM_BASE, 0)),
        ("domu1", 0, Shutdown(ShutdownReason.REBOOT)),
        ("domu1", 0, Start(RAM_BASE, 0)),
        ("domu2", 0, Shutdown(ShutdownReason.REBOOT)),
        ("domu2", 0, Start(RAM_BASE, 0)),
    ]
    assert m.system.host_state is HostState.ACTIVE
    assert m.system.host_suspend is None
    for domain in m.system.domains.values():
        assert domain.state is DomainState.RUNNING
        assert [v.power for v in domain.vcpus] == [VcpuPower.ON] + [VcpuPower.OFF] * (
            len(domain.vcpus) - 1
        )
    # The hypervisor booted the SoC again as at first boot; its timer is armed
    # one 1 ms period after the 3 secondaries came up (3 x 250.1 us).
    timer_armed_at = raised_at + 750_300
    assert m.platform.timer_registers() == (1, timer_armed_at // 10 + 100_000)
    again = hardware(m)
    assert again[:1] + again[2:] == booted[:1] + booted[2:]


def test_with_the_watchdog_disabled_a_long_suspend_is_harmless() -> None:
    m, clock = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    suspend_host(m)
    clock.advance(11_000_000_000)
    woke = raised(m.raise_interrupt(UART_1))
    assert (woke.outcome, woke.woke_host) == (IrqOutcome.WOKE_DOMAIN, True)
    assert m.platform.watchdog_enabled() is True


def dom0_on_vcpu_1(m: Mediator) -> None:
    """dom0's only running vCPU becomes vCPU 1 (on pCPU 1)."""
    # The last vCPU that is on cannot go off, so vCPU 1 comes first.
    assert x0(m, "dom0", 0, CPU_OFF) == DENIED
    assert x0(m, "dom0", 0, CPU_ON_64, 1, RAM_BASE + 0x1000, 0) == SUCCESS
    assert x0(m, "dom0", 0, CPU_OFF) == SUCCESS
    assert [v.power for v in m.system.domains[0].vcpus] == [
        VcpuPower.OFF,
        VcpuPower.ON,
        VcpuPower.OFF,
        VcpuPower.OFF,
    ]


def test_without_moving_to_the_boot_pcpu_el3_denies_the_suspend() -> None:
    m, _ = boot(skip=("move_to_boot_pcpu",))
    dom0_on_vcpu_1(m)
    before_state = state(m)
    before_hardware = hardware(m)
    outcome = suspend_host(m, vcpu=1)
    assert outcome.regs == (DENIED, 0, 0, 0)
    assert [
        (e.name, e.detail, e.result)
        for e in outcome.effects
        if isinstance(e, HardwareStep) and e.name == "el3.system_suspend"
    ] == [("el3.system_suspend", "pCPU 1, resume at 0x201000", -3)]
    assert m.system.host_state is HostState.ACTIVE
    assert state(m) == before_state
    assert hardware(m) == before_hardware


def test_moving_to_the_boot_pcpu_lets_a_secondary_vcpu_suspend_the_host() -> None:
    m, _ = boot()
    dom0_on_vcpu_1(m)
    outcome = suspend_host(m, vcpu=1)
    assert outcome.regs == (SUCCESS, 0, 0, 0)
    assert [
        (e.name, e.detail)
        for e in outcome.effects
        if isinstance(e, HardwareStep) and e.name in ("cpu.irq_mask", "el3.system_suspend")
    ] == [("cpu.irq_mask", "pCPU 0"), ("el3.system_suspend", "pCPU 0, resume at 0x201000")]
    woke = raised(m.raise_interrupt(UART_0))
    assert events(woke.effects)[-2:] == [
        ("dom0", 1, Resume(DOM0_ENTRY, DOM0_CONTEXT)),
        ("dom0", 1, Wake(UART_0)),
    ]


def test_without_disabling_the_nonboot_pcpus_el3_denies_the_suspend() -> None:
    m, _ = boot(skip=("disable_nonboot_pcpus", "enable_nonboot_pcpus"))
    before_state = state(m)
    before_hardware = hardware(m)
    outcome = suspend_host(m)
    assert outcome.regs == (DENIED, 0, 0, 0)
    failed = [e for e in outcome.effects if isinstance(e, HostStep) and e.result]
    assert [(e.name, e.result) for e in failed] == [("el3_system_suspend", -3)]
    assert m.system.host_state is HostState.ACTIVE
    assert state(m) == before_state
    assert hardware(m) == before_hardware


# --------------------------------------------------- while the host sleeps


@pytest.mark.parametrize(
    ("domain", "vcpu", "fid", "args"),
    [
        ("dom0", 0, PSCI_VERSION, []),
        ("dom0", 0, SYSTEM_SUSPEND_64, [DOM0_ENTRY, 0]),
        ("dom0", 1, CPU_ON_64, [2, DOM0_ENTRY, 0]),
        ("domu1", 0, PSCI_VERSION, []),  # suspended
        ("domu2", 0, PSCI_VERSION, []),  # paused
        ("domu2", 0, CPU_ON_64, [1, DOMU_ENTRY, 0]),
        ("domu2", 1, PSCI_VERSION, []),
    ],
)
def test_guest_calls_while_the_host_is_suspended_are_refused(
    domain: str, vcpu: int, fid: int, args: list[int]
) -> None:
    m, _ = boot()
    suspend_domu(m, "domu1", DOMU1_CONTEXT)
    suspend_host(m)
    before_state = state(m)
    before_hardware = hardware(m)
    outcome = m.call(domain, vcpu, fid, args)
    assert isinstance(outcome, Refused)
    assert outcome.reason is Refusal.FAILED_PRECONDITION
    assert state(m) == before_state
    assert hardware(m) == before_hardware


def test_create_domain_while_the_host_is_suspended_is_refused() -> None:
    m, _ = boot()
    suspend_host(m)
    before = m.snapshot()
    outcome = m.create_domain(DomainConfig("domu3", 0, 1, 0x8000_0000, 0x20_0000))
    assert isinstance(outcome, Refused)
    assert outcome.reason is Refusal.FAILED_PRECONDITION
    assert m.snapshot() == before


def test_destroy_domain_while_the_host_is_suspended_is_refused() -> None:
    m, _ = boot()
    suspend_host(m)
    before = m.snapshot()
    outcome = m.destroy_domain("domu1")
    assert isinstance(outcome, Refused)
    assert outcome.reason is Refusal.FAILED_PRECONDITION
    assert m.snapshot() == before
