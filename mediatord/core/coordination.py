"""Coordinated system suspend (issue 11): the seed left "coordination between Dom0
and DomUs (inform/abort)" out of scope; this is it.

A request (Control.RequestSystemSuspend, from an operator or the hardware domain)
sends SUSPEND_REQUEST{deadline} to vCPU 0 of every running domU. Each suspends
itself (its own SYSTEM_SUSPEND, as Linux's ``echo mem``) or answers
Guest.SuspendVeto. The request ends:

- READY when every domU asked has suspended (``force``: at once, asking nobody;
  ``pause-stragglers``: also at the deadline, the ones still running listed as
  stragglers, which the host suspend will pause as the seed does). The hardware
  domain is then sent SUSPEND_REQUEST too (unless it made the request: then the
  answer is its cue), and its own SYSTEM_SUSPEND suspends the host, in the seed's
  order;
- VETOED or DEADLINE (``wait-all`` only): the host stays up and every domU that
  suspended because it was asked is resumed at its entry point, as a wake would.

Every step is a plain function of the mediator's state: the shell arms a timer for
the deadline and calls :func:`expire`, journalled like any operation. Progress is
re-evaluated after every operation that can change a domain's state
(:func:`progress`): a suspend, a wake that brings an asked domU back, a
shutdown, a destroy, or a host suspend that pre-empts the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mediatord.core.effects import (
    CoordinationOutcome,
    Effect,
    SuspendCoordinated,
    SuspendRequest,
)
from mediatord.core.model import (
    HARDWARE_DOMAIN_ID,
    DomainState,
    HostState,
    SuspendCoordination,
    SuspendPolicy,
)

if TYPE_CHECKING:
    from mediatord.core.mediator import Mediator

# A deadline is how long guests get to quiesce: from a millisecond to an hour.
MIN_DEADLINE_NS: Final = 1_000_000
MAX_DEADLINE_NS: Final = 3_600_000_000_000


def request(
    m: Mediator, policy: SuspendPolicy, deadline_ns: int, by_hardware_domain: bool, fx: list[Effect]
) -> str | None:
    """Open a request (the caller checked the arguments); None, or why it cannot be."""
    system = m.system
    if system.host_state is not HostState.ACTIVE:
        return f"the host is {system.host_state.value}"
    if system.coordination is not None:
        return "a system suspend request is already open"
    hardware = system.domains[HARDWARE_DOMAIN_ID]
    if hardware.state is not DomainState.RUNNING:
        return f"the hardware domain is {hardware.state.value}, so it cannot suspend the host"
    now = m.clock.now_ns()
    system.suspend_requests += 1
    system.coordination = SuspendCoordination(
        system.suspend_requests, policy, by_hardware_domain, now, now + deadline_ns, []
    )
    progress(m, fx)
    return None


def progress(m: Mediator, fx: list[Effect]) -> None:
    """Re-evaluate the open request after any operation that can change a domain:
    ask every domU that runs and was not asked yet (running at the request, created
    since, or woken from an earlier suspend), note who suspended, end it when
    nobody is left to wait for."""
    c = m.system.coordination
    if c is None:
        return
    domains = m.system.domains
    if m.system.host_state is HostState.OFF:
        _finish(m, c, CoordinationOutcome.HOST_OFF, fx, reason="the host was powered off")
        return
    if m.system.host_state is not HostState.ACTIVE:
        # The hardware domain suspended the host without waiting: that ends it.
        _finish(m, c, CoordinationOutcome.READY, fx, ask_hardware_domain=False)
        return
    # Destroyed domains do not count.
    c.asked = [i for i in c.asked if i in domains]
    c.suspended = [i for i in c.suspended if i in domains]
    if c.policy is not SuspendPolicy.FORCE:
        for domain in m.domus():
            if domain.state is DomainState.RUNNING and domain.id not in c.asked:
                c.asked.append(domain.id)
                m.emit_event(domain, 0, SuspendRequest(c.deadline_ns), fx)
    for domain_id in c.asked:
        state = domains[domain_id].state
        if state is DomainState.SUSPENDED and domain_id not in c.suspended:
            c.suspended.append(domain_id)
        elif state is not DomainState.SUSPENDED and domain_id in c.suspended:
            c.suspended.remove(domain_id)  # woken again before the host went down
    if not _waiting(m, c):
        _finish(m, c, CoordinationOutcome.READY, fx)


def veto(m: Mediator, domain_id: int, reason: str, fx: list[Effect]) -> str | None:
    """A domU will not suspend; None, or why its veto is refused."""
    c = m.system.coordination
    if c is None:
        return "no system suspend request is open"
    if domain_id not in c.asked:
        return "this domain was not asked to suspend"
    if any(i == domain_id for i, _ in c.vetoes):
        return "this domain has vetoed this request already"
    c.vetoes.append((domain_id, reason))
    if c.policy is SuspendPolicy.WAIT_ALL:
        name = m.system.domains[domain_id].name
        _finish(m, c, CoordinationOutcome.VETOED, fx, vetoed_by=name, reason=reason)
    else:
        progress(m, fx)  # pause-stragglers: the last one still waited for may have vetoed
    return None


def expire(m: Mediator, fx: list[Effect]) -> str | None:
    """The deadline passed: abort (wait-all) or go ahead (pause-stragglers)."""
    c = m.system.coordination
    if c is None:
        return "no system suspend request is open"
    if c.policy is SuspendPolicy.WAIT_ALL:
        late = ", ".join(m.system.domains[i].name for i in _waiting(m, c))
        reason = f"not suspended by the deadline: {late}"
        _finish(m, c, CoordinationOutcome.DEADLINE, fx, reason=reason)
    else:
        _finish(m, c, CoordinationOutcome.READY, fx)
    return None


def _waiting(m: Mediator, c: SuspendCoordination) -> list[int]:
    """Asked domUs that still run and have not vetoed."""
    vetoed = {i for i, _ in c.vetoes}
    domains = m.system.domains
    return [i for i in c.asked if domains[i].state is DomainState.RUNNING and i not in vetoed]


def _finish(
    m: Mediator,
    c: SuspendCoordination,
    outcome: CoordinationOutcome,
    fx: list[Effect],
    *,
    ask_hardware_domain: bool = True,
    vetoed_by: str = "",
    reason: str = "",
) -> None:
    system = m.system
    system.coordination = None
    names = {d.id: d.name for d in system.domains.values()}
    suspended = tuple(names[i] for i in c.suspended if i in names)
    stragglers = tuple(
        d.name for d in m.domus() if d.state is DomainState.RUNNING and d.id not in c.suspended
    )
    if outcome is not CoordinationOutcome.READY:
        # The host stays up: whoever suspended because it was asked runs again,
        # with what arrived meanwhile, as after a wake.
        for domain_id in c.suspended:
            domain = system.domains.get(domain_id)
            if domain is not None and domain.state is DomainState.SUSPENDED:
                m.resume_domain(domain, fx)
        stragglers = ()
    fx.append(
        SuspendCoordinated(c.request, c.policy, outcome, suspended, stragglers, vetoed_by, reason)
    )
    if outcome is CoordinationOutcome.READY and ask_hardware_domain:
        # Also when the hardware domain asked: its answer may be lost (a broken
        # connection, a restart), the event is not; its agent suspends once.
        m.emit_event(system.domains[HARDWARE_DOMAIN_ID], 0, SuspendRequest(c.deadline_ns), fx)
