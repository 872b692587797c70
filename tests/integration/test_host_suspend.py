"""Host suspend-to-RAM and resume end to end (seed section 3 and scenarios 4.1-4.3).

Every step goes through gRPC as the guest agents and an operator would drive it;
the server runs on a ManualClock where durations matter, so they are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import grpc
import pytest
from boards import BOARDS
from seed import RESUME_FLOW, SUSPEND_FLOW
from vcpu_events import kind, pause, resume, start, unpause, wake

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.backends.zynqmp.platform import LATENCY_NS
from mediatord.core.config import BoardConfig

RAM_BASE = 0x4000_0000
PSCI_VERSION = 0x8400_0000
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
SYSTEM_SUSPEND_64 = 0xC400_000E
SUCCESS = [0, 0, 0, 0]
DENIED = [0xFFFF_FFFF_FFFF_FFFD, 0, 0, 0]
INTERNAL_FAILURE = [0xFFFF_FFFF_FFFF_FFFA, 0, 0, 0]
PSCI_DENIED = -3
PSCI_INTERNAL_FAILURE = -6
SECOND = 1_000_000_000

# Where each domain resumes after its SYSTEM_SUSPEND, and with which x0.
DOM0_RESUME = (0x4030_0000, 0xD0)
DOMU1_RESUME = (0x4010_0000, 0xD1)
DOMU2_RESUME = (0x4020_0000, 0xD2)
# IRQs of the default board (design section 9).
UART_0, UART_1, USB_0 = 53, 54, 97
VTIMER = 27

# What each step does to the hardware (and to the host state), in order: the events
# WatchEvents shows between the previous host step and this one.
HOST_STATE = "host_state"
SUSPEND_WORK: dict[str, list[object]] = {
    "move_to_boot_pcpu": [],
    "system_state_suspend": [pb.HOST_STATE_SUSPENDING],
    "disable_watchdog": ["wdt.disable"],
    "pause_domains": [],
    "disable_nonboot_pcpus": ["el3.cpu_off"] * 3,
    "mask_irqs": ["cpu.irq_mask"],
    "suspend_timer": ["timer.suspend"],
    "save_gic": ["gic.save"],
    "save_el2_context": ["el2.save"],
    "el3_system_suspend": ["el3.system_suspend", pb.HOST_STATE_SUSPENDED],
}
RESUME_WORK: dict[str, list[object]] = {
    # The PMU powers the SoC up before the hypervisor runs its first step.
    "restore_el2_context": ["soc.wake", "el2.restore"],
    "system_state_resume": [pb.HOST_STATE_RESUMING],
    "restore_gic": ["gic.restore"],
    "resume_timer": ["timer.resume"],
    "unmask_irqs": ["cpu.irq_unmask"],
    "enable_nonboot_pcpus": ["el3.cpu_on", "cpu.irq_unmask"] * 3,
    "unpause_domains": [],
    "enable_watchdog": ["wdt.enable"],
    "system_state_active": [pb.HOST_STATE_ACTIVE],
    "resume_hardware_domain": [],
}
# Modelled time from dom0's SYSTEM_SUSPEND to the SoC suspended, and from the wake
# to dom0 running again (design section 8: exact on a manual clock).
SUSPEND_NS = (
    LATENCY_NS["wdt.disable"]
    + 3 * LATENCY_NS["el3.cpu_off"]
    + LATENCY_NS["cpu.irq_mask"]
    + LATENCY_NS["timer.suspend"]
    + LATENCY_NS["gic.save"]
    + LATENCY_NS["el2.save"]
    + LATENCY_NS["el3.system_suspend"]
)
RESUME_NS = (
    LATENCY_NS["soc.wake"]
    + LATENCY_NS["el2.restore"]
    + LATENCY_NS["gic.restore"]
    + LATENCY_NS["timer.resume"]
    + 4 * LATENCY_NS["cpu.irq_unmask"]
    + 3 * LATENCY_NS["el3.cpu_on"]
    + LATENCY_NS["wdt.enable"]
)
# Suspend steps with something to undo when a later one fails.
REVERSIBLE = {
    "move_to_boot_pcpu",
    "system_state_suspend",
    "disable_watchdog",
    "pause_domains",
    "disable_nonboot_pcpus",
    "mask_irqs",
    "suspend_timer",
}
# Hardware operations of the suspend path and the step that runs each.
SUSPEND_OPS = {
    "wdt.disable": "disable_watchdog",
    "el3.cpu_off": "disable_nonboot_pcpus",
    "cpu.irq_mask": "mask_irqs",
    "timer.suspend": "suspend_timer",
    "gic.save": "save_gic",
    "el2.save": "save_el2_context",
    "el3.system_suspend": "el3_system_suspend",
}

Kind = Callable[[pb.SystemEvent], bool]


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> BoardConfig:
    """Every test here runs on each backend (tests/boards.py)."""
    return BOARDS[request.param]


def domain_event(domain: str, event: pb.VcpuEvent) -> Kind:
    """Matches the WatchEvents form of ``event`` delivered to ``domain``."""
    wanted = pb.DomainVcpuEvent(domain=domain, event=event)
    return lambda e: kind(e) == "vcpu_event" and e.vcpu_event == wanted


def domain_state(domain: str, state: int) -> Kind:
    wanted = pb.DomainStateChange(domain=domain, state=state)
    return lambda e: kind(e) == "domain_state" and e.domain_state == wanted


def index(events: list[pb.SystemEvent], match: Kind) -> int:
    found = [i for i, e in enumerate(events) if match(e)]
    assert len(found) == 1, f"expected one matching event, found {len(found)}"
    return found[0]


def host_steps(events: list[pb.SystemEvent]) -> list[pb.HostStepEvent]:
    return [e.host_step for e in events if kind(e) == "host_step"]


def work_before_steps(events: list[pb.SystemEvent]) -> dict[tuple[str, str], list[object]]:
    """For each host step, the hardware operations and host states since the previous one."""
    work: dict[tuple[str, str], list[object]] = {}
    pending: list[object] = []
    for event in events:
        if kind(event) == "hardware_step":
            pending.append(event.hardware_step.name)
        elif kind(event) == HOST_STATE:
            pending.append(event.host_state)
        elif kind(event) == "host_step":
            key = (event.host_step.phase, event.host_step.name)
            assert key not in work, f"host step {key} ran twice"
            work[key], pending = pending, []
    assert pending == [], f"hardware work after the last host step: {pending}"
    return work


async def listing(mediator) -> list[pb.DomainInfo]:
    """ListDomains without event_seq, which moves whenever an event is emitted."""
    domains = list((await mediator.domains()).domains)
    for domain in domains:
        domain.ClearField("event_seq")
    return domains


async def suspend_domu(mediator, domain: str, events, entry: tuple[int, int]) -> None:
    """What a domU kernel does (seed, "Suspending Guests"): bring its secondary
    down by CPU_OFF, then SYSTEM_SUSPEND from the boot vCPU."""
    secondary = (RAM_BASE + 0x8_0000, 0x51)
    assert await mediator.call(domain, CPU_ON_64, 1, *secondary) == SUCCESS
    assert await events.next() == start(2, 1, *secondary)
    assert await mediator.call(domain, CPU_OFF, vcpu=1) == SUCCESS
    assert await mediator.call(domain, SYSTEM_SUSPEND_64, *entry) == SUCCESS
    info = await mediator.domain(domain)
    assert info.state == pb.DOMAIN_STATE_SUSPENDED
    assert [(v.power, v.entry_point, v.context_id) for v in info.vcpus] == [
        (pb.VCPU_POWER_SUSPENDED, *entry),
        (pb.VCPU_POWER_OFF, *secondary),
    ]


def pcpus(system: pb.SystemInfo) -> list[int]:
    return [p.state for p in system.pcpu_states]


async def attach_all(mediator) -> dict[str, object]:
    attached = {name: mediator.attach(name) for name in ("dom0", "domu1", "domu2")}
    for events in attached.values():
        assert await events.next() == start(1, 0, RAM_BASE)
    return attached


def cancel(*streams) -> None:
    for stream in streams:
        stream.cancel()


async def test_seed_suspend_and_resume_flow(manual_mediator) -> None:
    mediator = manual_mediator
    clock = mediator.clock
    watch = await mediator.watch()
    attached = await attach_all(mediator)

    # 1) The domUs suspend themselves; the host does not (seed: "After an
    # unprivileged guest suspends, Xen will not suspend").
    await suspend_domu(mediator, "domu1", attached["domu1"], DOMU1_RESUME)
    await suspend_domu(mediator, "domu2", attached["domu2"], DOMU2_RESUME)
    before = await mediator.system()
    assert before.host_state == pb.HOST_STATE_ACTIVE
    assert pcpus(before) == [pb.PCPU_STATE_ON] * 4
    assert before.watchdog_enabled is True
    assert not before.HasField("last_suspend")
    assert not before.HasField("last_resume")

    # 2) dom0 suspends: its call answers once the host is suspended.
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    raw = await mediator.control.GetSystem(pb.GetSystemRequest(), timeout=mediator.timeout)
    suspended_ns, suspended_counter = raw.now_ns, raw.counter
    assert raw.host_state == pb.HOST_STATE_SUSPENDED
    assert pcpus(raw) == [pb.PCPU_STATE_SUSPENDED] + [pb.PCPU_STATE_OFF] * 3
    assert raw.watchdog_enabled is False
    assert raw.last_suspend.end_ns - raw.last_suspend.start_ns == SUSPEND_NS
    assert raw.last_suspend.end_ns == suspended_ns
    assert not raw.HasField("last_resume")
    states = {d.name: d.state for d in (await mediator.domains()).domains}
    # Suspended domUs stay suspended: they are not paused.
    assert states == {
        "dom0": pb.DOMAIN_STATE_SUSPENDED,
        "domu1": pb.DOMAIN_STATE_SUSPENDED,
        "domu2": pb.DOMAIN_STATE_SUSPENDED,
    }

    # 3) Five seconds pass in suspend, then domu1's UART_1 fires (seed 4.2).
    clock.advance(5 * SECOND)
    raised = await mediator.raise_irq(UART_1)
    assert raised == pb.RaiseInterruptResponse(
        outcome=pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN,
        domain="domu1",
        vcpu=0,
        woke_host=True,
    )
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["domu1"].next() == resume(3, 0, *DOMU1_RESUME)
    assert await attached["domu1"].next() == wake(4, 0, UART_1)

    woken = await mediator.control.GetSystem(pb.GetSystemRequest(), timeout=mediator.timeout)
    assert woken.host_state == pb.HOST_STATE_ACTIVE
    assert pcpus(woken) == [pb.PCPU_STATE_ON] * 4
    assert woken.watchdog_enabled is True
    assert woken.last_suspend == raw.last_suspend
    assert woken.last_resume.end_ns - woken.last_resume.start_ns == RESUME_NS
    assert woken.last_resume.start_ns - woken.last_suspend.end_ns == 5 * SECOND
    assert woken.now_ns == woken.last_resume.end_ns
    # The system counter kept counting through the suspend (100 MHz).
    assert woken.counter - suspended_counter == (5 * SECOND + RESUME_NS) // 10

    # 4) domu2 is still suspended: only its own interrupt resumes it (seed 4.1).
    domu2 = await mediator.domain("domu2")
    assert (domu2.state, domu2.event_seq) == (pb.DOMAIN_STATE_SUSPENDED, 2)
    raised = await mediator.raise_irq(USB_0)
    assert raised == pb.RaiseInterruptResponse(
        outcome=pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN, domain="domu2", vcpu=0
    )
    assert await attached["domu2"].next() == resume(3, 0, *DOMU2_RESUME)
    assert await attached["domu2"].next() == wake(4, 0, USB_0)
    assert (await mediator.system()).last_resume == woken.last_resume

    events = await watch.until(domain_event("domu2", wake(4, 0, USB_0)))
    cancel(watch, *attached.values())

    seqs = [e.seq for e in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    steps = host_steps(events)
    assert [(s.phase, s.name) for s in steps] == [("suspend", n) for n in SUSPEND_FLOW] + [
        ("resume", n) for n in RESUME_FLOW
    ]
    assert all(s.result == 0 and not s.injected for s in steps)
    assert [e.host_state for e in events if kind(e) == HOST_STATE] == [
        pb.HOST_STATE_SUSPENDING,
        pb.HOST_STATE_SUSPENDED,
        pb.HOST_STATE_RESUMING,
        pb.HOST_STATE_ACTIVE,
    ]
    # Each step's hardware operations come before it, in order.
    first = next(i for i, e in enumerate(events) if kind(e) == "host_step")
    expected = {("suspend", n): w for n, w in SUSPEND_WORK.items()}
    expected |= {("resume", n): w for n, w in RESUME_WORK.items()}
    assert work_before_steps(events[first:]) == expected

    # Every hardware operation succeeded and took its modelled latency; each
    # step took exactly its operations' time, and the steps follow each other.
    hardware = [e.hardware_step for e in events[first:] if kind(e) == "hardware_step"]
    assert [(h.name, h.end_ns - h.start_ns, h.result) for h in hardware] == [
        (h.name, LATENCY_NS[h.name], 0) for h in hardware
    ]
    for step in steps:
        work = expected[(step.phase, step.name)]
        spent = sum(LATENCY_NS[w] for w in work if isinstance(w, str) and w != "soc.wake")
        assert step.end_ns - step.start_ns == spent, step
    suspend, resume_ = steps[:10], steps[10:]
    for done in (suspend, resume_):
        assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(done))
    assert (suspend[0].start_ns, suspend[-1].end_ns) == (
        woken.last_suspend.start_ns,
        woken.last_suspend.end_ns,
    )
    assert resume_[0].start_ns == woken.last_resume.start_ns + LATENCY_NS["soc.wake"]
    assert resume_[-1].end_ns == woken.last_resume.end_ns

    # Seed 4.2: dom0 runs first (after the whole resume flow), then domu1.
    dom0_resumed = index(events, domain_event("dom0", resume(2, 0, *DOM0_RESUME)))
    domu1_resumed = index(events, domain_event("domu1", resume(3, 0, *DOMU1_RESUME)))
    domu1_woken = index(events, domain_event("domu1", wake(4, 0, UART_1)))
    last_step = index(
        events, lambda e: kind(e) == "host_step" and e.host_step.name == RESUME_FLOW[-1]
    )
    assert dom0_resumed < last_step < domu1_resumed < domu1_woken
    # Nobody was paused: the domUs had suspended themselves.
    assert not [
        e for e in events if kind(e) == "vcpu_event" and e.vcpu_event.event.HasField("pause")
    ]


async def test_host_suspend_pauses_running_domus_and_dom0_irq_resumes(manual_mediator) -> None:
    mediator = manual_mediator
    watch = await mediator.watch()
    attached = await attach_all(mediator)

    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    # Longer than the 10 s watchdog timeout: the suspend disabled it, so no reset.
    mediator.clock.advance(60 * SECOND)
    # The running domUs did not suspend, so the host suspend paused them.
    for name in ("domu1", "domu2"):
        assert await attached[name].next() == pause(2)
        assert (await mediator.domain(name)).state == pb.DOMAIN_STATE_PAUSED
        error = await mediator.refusal(
            mediator.guest.Call(
                pb.SmcCall(function_id=PSCI_VERSION), metadata=mediator.identity(name)
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await mediator.system()).host_state == pb.HOST_STATE_SUSPENDED

    # Seed 4.3: dom0's own UART_0 resumes the host, then dom0 takes it.
    raised = await mediator.raise_irq(UART_0)
    assert raised == pb.RaiseInterruptResponse(
        outcome=pb.RaiseInterruptResponse.OUTCOME_DELIVERED, domain="dom0", vcpu=0, woke_host=True
    )
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["dom0"].next() == wake(3, 0, UART_0)
    for name in ("domu1", "domu2"):
        assert await attached[name].next() == unpause(3)
        assert await mediator.call(name, PSCI_VERSION) == [0x1_0001, 0, 0, 0]
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_ACTIVE
    assert system.watchdog_enabled is True
    assert {d.name: d.state for d in (await mediator.domains()).domains} == {
        "dom0": pb.DOMAIN_STATE_RUNNING,
        "domu1": pb.DOMAIN_STATE_RUNNING,
        "domu2": pb.DOMAIN_STATE_RUNNING,
    }

    events = await watch.until(domain_event("dom0", wake(3, 0, UART_0)))
    cancel(watch, *attached.values())
    at = {
        (e.host_step.phase, e.host_step.name): i for i, e in enumerate(events) if e.host_step.name
    }

    def step(phase: str, name: str) -> int:
        return at[(phase, name)]

    # PAUSE in pause_domains, UNPAUSE in unpause_domains, dom0 RESUME last, then WAKE.
    for name in ("domu1", "domu2"):
        paused = index(events, domain_event(name, pause(2)))
        assert step("suspend", "disable_watchdog") < paused < step("suspend", "pause_domains")
        unpaused = index(events, domain_event(name, unpause(3)))
        assert step("resume", "enable_nonboot_pcpus") < unpaused
        assert unpaused < step("resume", "unpause_domains")
    dom0_resumed = index(events, domain_event("dom0", resume(2, 0, *DOM0_RESUME)))
    assert step("resume", "system_state_active") < dom0_resumed
    assert dom0_resumed < step("resume", "resume_hardware_domain") < len(events) - 1


async def test_paused_domu_irq_resumes_host_then_reaches_it(manual_mediator) -> None:
    """Seed 4.2 for a domU that did not suspend: it was paused, the host resumes
    (dom0 first), the domU is unpaused and then takes its interrupt."""
    mediator = manual_mediator
    attached = await attach_all(mediator)
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    assert await attached["domu1"].next() == pause(2)

    raised = await mediator.raise_irq(UART_1)
    assert raised == pb.RaiseInterruptResponse(
        outcome=pb.RaiseInterruptResponse.OUTCOME_DELIVERED, domain="domu1", vcpu=0, woke_host=True
    )
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["domu1"].next() == unpause(3)
    assert await attached["domu1"].next() == wake(4, 0, UART_1)
    assert await attached["domu2"].next() == pause(2)
    assert await attached["domu2"].next() == unpause(3)
    assert (await mediator.domain("dom0")).event_seq == 2
    cancel(*attached.values())


async def test_virtual_timer_of_a_suspended_domu_resumes_host_then_domu(manual_mediator) -> None:
    """The virtual timer is a wake source (design section 9, docs/host-suspend.md):
    fired for a suspended domU while the host sleeps it resumes the host, dom0
    first, then that domU (seed 4.2) with the timer interrupt."""
    mediator = manual_mediator
    attached = await attach_all(mediator)
    await suspend_domu(mediator, "domu1", attached["domu1"], DOMU1_RESUME)
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS

    raised = await mediator.raise_irq(VTIMER, domain="domu1", vcpu=0)
    assert (raised.outcome, raised.domain, raised.vcpu, raised.woke_host) == (
        pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN,
        "domu1",
        0,
        True,
    ), raised.reason
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["domu1"].next() == resume(3, 0, *DOMU1_RESUME)
    assert await attached["domu1"].next() == wake(4, 0, VTIMER)
    assert (await mediator.domain("domu1")).state == pb.DOMAIN_STATE_RUNNING
    cancel(*attached.values())


async def test_virtual_timer_of_a_paused_domu_resumes_host_then_reaches_it(
    manual_mediator,
) -> None:
    mediator = manual_mediator
    attached = await attach_all(mediator)
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    assert await attached["domu1"].next() == pause(2)

    raised = await mediator.raise_irq(VTIMER, domain="domu1", vcpu=0)
    assert (raised.outcome, raised.domain, raised.vcpu, raised.woke_host) == (
        pb.RaiseInterruptResponse.OUTCOME_DELIVERED,
        "domu1",
        0,
        True,
    ), raised.reason
    assert await attached["dom0"].next() == resume(2, 0, *DOM0_RESUME)
    assert await attached["domu1"].next() == unpause(3)
    assert await attached["domu1"].next() == wake(4, 0, VTIMER)
    cancel(*attached.values())


FAULTS = [
    *[pytest.param(name, name, True, INTERNAL_FAILURE, id=name) for name in SUSPEND_FLOW],
    *[
        pytest.param(op, step, False, DENIED if op == "el3.cpu_off" else INTERNAL_FAILURE, id=op)
        for op, step in SUSPEND_OPS.items()
    ],
]


@pytest.mark.parametrize(("fault", "failing", "injected", "returned"), FAULTS)
async def test_injected_fault_rolls_the_suspend_back(
    mediator, fault, failing, injected, returned
) -> None:
    system_before, domains_before = await mediator.system(), await listing(mediator)
    watch = await mediator.watch()

    await mediator.control.InjectFault(pb.InjectFaultRequest(step=fault, count=1))
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == returned

    # Nothing stays half-suspended.
    assert await mediator.system() == system_before
    assert await listing(mediator) == domains_before
    events = await watch.until(domain_state("dom0", pb.DOMAIN_STATE_RUNNING))

    error = PSCI_DENIED if returned == DENIED else PSCI_INTERNAL_FAILURE
    done = SUSPEND_FLOW[: SUSPEND_FLOW.index(failing)]
    undone = [name for name in reversed(done) if name in REVERSIBLE]
    assert [(s.phase, s.name, s.result, s.injected) for s in host_steps(events)] == [
        *[("suspend", name, 0, False) for name in done],
        ("suspend", failing, error, injected),
        *[("rollback", name, 0, False) for name in undone],
    ]
    failed_ops = [
        (e.hardware_step.name, e.hardware_step.result)
        for e in events
        if kind(e) == "hardware_step" and e.hardware_step.result != 0
    ]
    assert failed_ops == ([] if injected else [(fault, error)])
    host_states = [e.host_state for e in events if kind(e) == HOST_STATE]
    if "system_state_suspend" in done:
        assert host_states == [pb.HOST_STATE_SUSPENDING, pb.HOST_STATE_ACTIVE]
    else:
        assert host_states == []

    # The fault was used up: the next attempt suspends the host.
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_SUSPENDED
    assert pcpus(system) == [pb.PCPU_STATE_SUSPENDED] + [pb.PCPU_STATE_OFF] * 3
    events = await watch.until(
        lambda e: kind(e) == "host_step" and e.host_step.name == SUSPEND_FLOW[-1]
    )
    assert [(s.phase, s.name, s.result) for s in host_steps(events)] == [
        ("suspend", name, 0) for name in SUSPEND_FLOW
    ]
    watch.cancel()


async def test_injected_fault_with_an_explicit_error_and_count(mediator) -> None:
    inject = mediator.control.InjectFault
    await inject(pb.InjectFaultRequest(step="el3.system_suspend", count=2, error=PSCI_DENIED))
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == DENIED
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == DENIED
    # Other errors a step fails with reach the guest as INTERNAL_FAILURE.
    await inject(pb.InjectFaultRequest(step="save_gic", count=1, error=-9))
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == INTERNAL_FAILURE
    # Count 0 disarms a fault.
    await inject(pb.InjectFaultRequest(step="gic.save", count=1))
    await inject(pb.InjectFaultRequest(step="gic.save", count=0))
    assert (await mediator.system()).host_state == pb.HOST_STATE_ACTIVE
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    assert (await mediator.system()).host_state == pb.HOST_STATE_SUSPENDED


@pytest.mark.parametrize(
    ("request_", "metadata", "code"),
    [
        pytest.param(
            pb.InjectFaultRequest(step="no_such_step", count=1),
            (),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="unknown-step",
        ),
        pytest.param(
            pb.InjectFaultRequest(step="gic.save", count=1, error=5),
            (),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="error-5",
        ),
        pytest.param(
            pb.InjectFaultRequest(step="gic.save", count=1, error=-10),
            (),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="error-minus-10",
        ),
        pytest.param(
            pb.InjectFaultRequest(step="gic.save", count=1),
            (("x-mediator-domain", "domu1"),),
            grpc.StatusCode.PERMISSION_DENIED,
            id="domu",
        ),
        pytest.param(
            pb.InjectFaultRequest(step="gic.save", count=1),
            (("x-mediator-domain", "dom0"),),
            grpc.StatusCode.PERMISSION_DENIED,
            id="hardware-domain",
        ),
    ],
)
async def test_inject_fault_refusals(mediator, request_, metadata, code) -> None:
    error = await mediator.refusal(
        mediator.control.InjectFault(request_, metadata=metadata, timeout=mediator.timeout)
    )
    assert error.code() == code
    # Nothing was armed: the host suspends.
    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, *DOM0_RESUME) == SUCCESS
    assert (await mediator.system()).host_state == pb.HOST_STATE_SUSPENDED


async def test_two_watchers_see_the_same_events(mediator) -> None:
    first = await mediator.watch()
    second = await mediator.watch()

    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0x7) == SUCCESS
    seen = [await first.next(), await first.next()]
    assert [await second.next(), await second.next()] == seen
    assert [kind(e) for e in seen] == ["vcpu_power", "vcpu_event"]
    assert seen[0].vcpu_power == pb.VcpuPowerChange(domain="domu1", vcpu=1, power=pb.VCPU_POWER_ON)
    assert seen[1].vcpu_event == pb.DomainVcpuEvent(
        domain="domu1", event=start(2, 1, 0x4008_0000, 0x7)
    )
    assert seen[1].seq == seen[0].seq + 1

    # One client goes away; the other goes on, missing nothing.
    second.cancel()
    raised = await mediator.raise_irq(UART_1)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert await mediator.call("domu1", CPU_OFF, vcpu=1) == SUCCESS
    following = [await first.next(), await first.next()]
    assert [e.seq for e in following] == [seen[1].seq + 1, seen[1].seq + 2]
    assert following[0].vcpu_event == pb.DomainVcpuEvent(domain="domu1", event=wake(3, 0, UART_1))
    assert following[1].vcpu_power == pb.VcpuPowerChange(
        domain="domu1", vcpu=1, power=pb.VCPU_POWER_OFF
    )
    # The server let go of the cancelled stream.
    for _ in range(200):
        if len(mediator.server.engine.watchers) == 1:
            break
        await mediator.system()
    else:
        pytest.fail("the server still follows the cancelled WatchEvents stream")
    first.cancel()


async def test_watch_events_for_the_hardware_domain_only(mediator) -> None:
    refused = await mediator.watch("domu1", served=False)
    error = await refused.error()
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    watch = await mediator.watch("dom0")
    raised = await mediator.raise_irq(UART_0)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    event = await watch.next()
    assert event.vcpu_event == pb.DomainVcpuEvent(domain="dom0", event=wake(2, 0, UART_0))
    watch.cancel()
