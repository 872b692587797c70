"""Coordinated system suspend in the core (issue 11, core/coordination.py), on each
board: who is asked, when the request ends, what an abort undoes."""

from __future__ import annotations

import pytest
from boards import BOARDS

from mediatord.backends import create_platform
from mediatord.core import records
from mediatord.core.clock import ManualClock
from mediatord.core.config import BoardConfig, DomainConfig
from mediatord.core.effects import (
    CoordinationOutcome,
    DomainEvent,
    Effect,
    Resume,
    SuspendCoordinated,
    SuspendRequest,
    Wake,
)
from mediatord.core.mediator import Changed, Mediator, Refusal, Refused, Returned
from mediatord.core.model import DomainState, HostState, SuspendPolicy

SYSTEM_SUSPEND_64 = 0xC400_000E
CPU_ON_64 = 0xC400_0003
SYSTEM_OFF = 0x8400_0008
ENTRY = {"dom0": 0x4030_0000, "domu1": 0x4010_0000, "domu2": 0x4020_0000, "late": 0x4000_1000}
SECOND = 1_000_000_000
UART_0, UART_1 = 53, 54
WAIT_ALL, PAUSE, FORCE = (
    SuspendPolicy.WAIT_ALL,
    SuspendPolicy.PAUSE_STRAGGLERS,
    SuspendPolicy.FORCE,
)


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> BoardConfig:
    return BOARDS[request.param]


@pytest.fixture
def m(board: BoardConfig) -> Mediator:
    clock = ManualClock(1000)
    mediator, _ = Mediator.boot(board, create_platform(board, clock))
    return mediator


def changed(result: Changed | Refused) -> tuple[Effect, ...]:
    assert isinstance(result, Changed), result
    return result.effects


def requests(effects: tuple[Effect, ...]) -> list[tuple[str, int]]:
    """(domain, deadline) of every SUSPEND_REQUEST sent."""
    return [
        (e.domain, e.kind.deadline_ns)
        for e in effects
        if isinstance(e, DomainEvent) and isinstance(e.kind, SuspendRequest)
    ]


def ended(effects: tuple[Effect, ...]) -> SuspendCoordinated | None:
    found = [e for e in effects if isinstance(e, SuspendCoordinated)]
    assert len(found) <= 1, found
    return found[0] if found else None


def suspend(m: Mediator, domain: str) -> tuple[Effect, ...]:
    outcome = m.call(domain, 0, SYSTEM_SUSPEND_64, [ENTRY[domain], 0xC0])
    assert isinstance(outcome, Returned), outcome
    assert outcome.regs[0] == 0
    return outcome.effects


def state(m: Mediator, name: str) -> DomainState:
    domain = m.system.domain(name)
    assert domain is not None
    return domain.state


def test_wait_all_asks_every_running_domu_then_the_hardware_domain(m: Mediator) -> None:
    now = m.clock.now_ns()
    fx = changed(m.request_system_suspend(WAIT_ALL, 2 * SECOND, by_hardware_domain=False))
    assert requests(fx) == [("domu1", now + 2 * SECOND), ("domu2", now + 2 * SECOND)]
    assert ended(fx) is None
    assert ended(suspend(m, "domu1")) is None  # domu2 still runs
    fx = suspend(m, "domu2")
    assert ended(fx) == SuspendCoordinated(
        1, WAIT_ALL, CoordinationOutcome.READY, ("domu1", "domu2"), ()
    )
    assert requests(fx) == [("dom0", now + 2 * SECOND)]  # after the domUs, in that order
    assert m.system.coordination is None
    suspend(m, "dom0")
    assert m.system.host_state is HostState.SUSPENDED


def test_a_veto_aborts_wait_all_and_resumes_who_suspended(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    fx = changed(m.suspend_veto("domu2", "a backup is running"))
    assert ended(fx) == SuspendCoordinated(
        1, WAIT_ALL, CoordinationOutcome.VETOED, ("domu1",), (), "domu2", "a backup is running"
    )
    resumed = [e for e in fx if isinstance(e, DomainEvent) and isinstance(e.kind, Resume)]
    assert [(e.domain, e.vcpu, e.kind) for e in resumed] == [
        ("domu1", 0, Resume(ENTRY["domu1"], 0xC0))
    ]
    assert requests(fx) == []  # the hardware domain is not asked
    assert (state(m, "domu1"), m.system.host_state) == (DomainState.RUNNING, HostState.ACTIVE)


def test_the_deadline_aborts_wait_all_naming_the_late(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    suspend(m, "domu2")
    fx = changed(m.expire_suspend_request())
    assert ended(fx) == SuspendCoordinated(
        1,
        WAIT_ALL,
        CoordinationOutcome.DEADLINE,
        ("domu2",),
        (),
        reason="not suspended by the deadline: domu1",
    )
    assert state(m, "domu2") is DomainState.RUNNING


def test_pause_stragglers_goes_ahead_at_the_deadline(m: Mediator) -> None:
    changed(m.request_system_suspend(PAUSE, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    fx = changed(m.expire_suspend_request())
    assert ended(fx) == SuspendCoordinated(
        1, PAUSE, CoordinationOutcome.READY, ("domu1",), ("domu2",)
    )
    assert [d for d, _ in requests(fx)] == ["dom0"]
    suspend(m, "dom0")  # the host suspend pauses the straggler, as the seed does
    assert (state(m, "domu2"), m.system.host_state) == (DomainState.PAUSED, HostState.SUSPENDED)


def test_under_pause_stragglers_a_veto_makes_a_straggler(m: Mediator) -> None:
    changed(m.request_system_suspend(PAUSE, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    # The last one waited for vetoes: nobody is left, it goes ahead now.
    fx = changed(m.suspend_veto("domu2", "busy"))
    assert ended(fx) == SuspendCoordinated(
        1, PAUSE, CoordinationOutcome.READY, ("domu1",), ("domu2",)
    )


def test_force_asks_nobody_and_is_ready_at_once(m: Mediator) -> None:
    fx = changed(m.request_system_suspend(FORCE, SECOND, by_hardware_domain=False))
    assert ended(fx) == SuspendCoordinated(
        1, FORCE, CoordinationOutcome.READY, (), ("domu1", "domu2")
    )
    assert [d for d, _ in requests(fx)] == ["dom0"]


def test_the_hardware_domain_is_sent_the_request_even_when_it_asked(m: Mediator) -> None:
    # Its answer may be lost (a connection, a restart); the event is not.
    fx = changed(m.request_system_suspend(FORCE, SECOND, by_hardware_domain=True))
    assert ended(fx) is not None
    assert [d for d, _ in requests(fx)] == ["dom0"]


def test_a_domu_that_comes_to_run_is_asked_too(m: Mediator, board: BoardConfig) -> None:
    suspend(m, "domu2")  # suspended before the request: not asked
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    m.raise_interrupt(27, "domu2", 0)  # woken: it runs, so it is asked now
    created = m.create_domain(
        DomainConfig(name="late", id=0, vcpus=1, ram_base=0x4000_0000, ram_size=0x100_0000)
    )
    assert not isinstance(created, Refused)
    assert [d for d, _ in requests(created.effects)] == ["late"]
    for name in ("domu1", "domu2", "late"):
        fx = suspend(m, name)
    outcome = ended(fx)
    assert outcome is not None
    assert (outcome.outcome, outcome.stragglers) == (CoordinationOutcome.READY, ())


def test_an_abort_hands_over_what_arrived_meanwhile(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    domu1 = m.system.domain("domu1")
    assert domu1 is not None
    domu1.pending_irqs.append(UART_1)  # latched while it slept (not a wake source now)
    fx = changed(m.suspend_veto("domu2", "no"))
    woken = [e.kind for e in fx if isinstance(e, DomainEvent) and e.domain == "domu1"]
    assert woken == [Resume(ENTRY["domu1"], 0xC0), Wake(UART_1)]
    assert domu1.pending_irqs == []


def test_a_destroyed_domu_that_had_suspended_is_forgotten(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    assert not isinstance(m.destroy_domain("domu1"), Refused)
    outcome = ended(changed(m.suspend_veto("domu2", "no")))
    assert outcome is not None
    assert (outcome.outcome, outcome.suspended) == (CoordinationOutcome.VETOED, ())


def test_the_host_powered_off_is_not_ready(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    outcome = m.call("dom0", 0, SYSTEM_OFF, [])
    assert isinstance(outcome, Returned)
    ending = ended(outcome.effects)
    assert ending is not None
    assert ending.outcome is CoordinationOutcome.HOST_OFF


def test_a_domu_woken_again_is_waited_for_again(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    suspend(m, "domu1")
    woke = m.raise_interrupt(27, "domu1", 0)  # its virtual timer
    assert state(m, "domu1") is DomainState.RUNNING, woke
    assert ended(suspend(m, "domu2")) is None  # domu1 runs again: not ready
    assert m.system.coordination is not None
    assert m.system.coordination.suspended == [2]
    assert ended(suspend(m, "domu1")) is not None


def test_a_destroyed_or_shut_down_domu_does_not_hold_it_up(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    assert m.call("domu1", 0, SYSTEM_OFF, []) is not None  # domu1 shuts down
    destroyed = m.destroy_domain("domu2")
    assert not isinstance(destroyed, Refused)
    outcome = ended(destroyed.effects)
    assert outcome == SuspendCoordinated(1, WAIT_ALL, CoordinationOutcome.READY, (), ())


def test_a_host_suspend_without_waiting_ends_the_request(m: Mediator) -> None:
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    fx = suspend(m, "dom0")  # the seed's behaviour: the domUs are paused
    outcome = ended(fx)
    assert outcome is not None
    assert outcome.outcome is CoordinationOutcome.READY
    assert requests(fx) == []  # dom0 is suspending already
    assert m.system.host_state is HostState.SUSPENDED


@pytest.mark.parametrize(
    ("setup", "call", "reason", "message"),
    [
        (None, lambda m: m.request_system_suspend(WAIT_ALL, 999_999, False),
         Refusal.INVALID_ARGUMENT, "the deadline must be from 1 ms to 3600000 ms"),
        ("open", lambda m: m.request_system_suspend(WAIT_ALL, SECOND, False),
         Refusal.FAILED_PRECONDITION, "a system suspend request is already open"),
        (None, lambda m: m.suspend_veto("domu1", "no"),
         Refusal.FAILED_PRECONDITION, "no system suspend request is open"),
        ("open", lambda m: m.suspend_veto("dom0", "no"),
         Refusal.FAILED_PRECONDITION, "this domain was not asked to suspend"),
        ("vetoed", lambda m: m.suspend_veto("domu2", "again"),
         Refusal.FAILED_PRECONDITION, "this domain has vetoed this request already"),
        (None, lambda m: m.expire_suspend_request(),
         Refusal.FAILED_PRECONDITION, "no system suspend request is open"),
        ("suspended", lambda m: m.request_system_suspend(WAIT_ALL, SECOND, False),
         Refusal.FAILED_PRECONDITION, "the host is suspended"),
    ],
)  # fmt: skip
def test_refusals_change_nothing(m: Mediator, setup, call, reason, message) -> None:  # type: ignore[no-untyped-def]
    if setup in ("open", "vetoed"):
        changed(m.request_system_suspend(PAUSE, SECOND, by_hardware_domain=False))
    if setup == "vetoed":
        changed(m.suspend_veto("domu2", "busy"))
    elif setup == "suspended":
        suspend(m, "dom0")
    before = m.save_state()
    refused = call(m)
    assert refused == Refused(reason, message)
    assert m.save_state() == before


def test_the_journal_replays_a_coordinated_suspend(board: BoardConfig) -> None:
    clock = ManualClock(1000)
    m, _ = Mediator.boot(board, create_platform(board, clock))
    journal = [
        records.request_system_suspend(clock.tick(), WAIT_ALL, SECOND, False),
    ]
    changed(m.request_system_suspend(WAIT_ALL, SECOND, by_hardware_domain=False))
    now = clock.tick()
    suspend(m, "domu1")
    journal.append(records.call(now, "domu1", 0, SYSTEM_SUSPEND_64, [ENTRY["domu1"], 0xC0], x0=0))
    clock.advance(SECOND)
    now = clock.tick()
    changed(m.suspend_veto("domu2", "busy"))
    journal.append(records.suspend_veto(now, "domu2", "busy"))
    copy_clock = ManualClock(1000)
    copy, _ = Mediator.boot(board, create_platform(board, copy_clock))
    for kind, body in journal:
        records.replay(copy, copy_clock, kind, body)
    assert copy.save_state() == m.save_state()
