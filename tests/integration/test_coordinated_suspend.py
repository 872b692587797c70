"""Coordinated system suspend end to end (issue 11): Control.RequestSystemSuspend
with real guest agents (mediator_client) that suspend themselves on SUSPEND_REQUEST
(the library's default), veto it, get stuck, or die halfway.

Nothing sleeps to wait for state: events are awaited with ``wait_for(within=)`` and
state with bounded loops of Control RPCs. The deadlines are real time (the
daemon's timer), a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from boards import BOARDS
from mediator_client import AsyncGuestAgent, NotPermittedError, Operator, VcpuHandler, psci
from mediator_client.errors import RpcError
from polling import in_state, until
from prometheus_client import generate_latest

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core import effects as fx
from mediatord.core.config import BoardConfig
from mediatord.journal import Journal

WITHIN = 5.0
ENTRY = {"dom0": 0x4030_0000, "domu1": 0x4010_0000, "domu2": 0x4020_0000}
UART_0_IRQ = 53
READY = pb.RequestSystemSuspendResponse.OUTCOME_READY
VETOED = pb.RequestSystemSuspendResponse.OUTCOME_VETOED
DEADLINE = pb.RequestSystemSuspendResponse.OUTCOME_DEADLINE
SHORT_MS = 1000  # a deadline the stuck guests miss, and the others meet even on a loaded box


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> BoardConfig:
    return BOARDS[request.param]


class Vetoes(VcpuHandler):
    async def on_suspend_request(self, agent: AsyncGuestAgent, vcpu: int, deadline_ns: int) -> None:
        await agent.veto_suspend("a backup is running")


class DiesHalfway(VcpuHandler):
    """Starts suspending as Linux does (secondaries off first), then the agent's
    process dies before SYSTEM_SUSPEND: its connection goes away."""

    async def on_suspend_request(self, agent: AsyncGuestAgent, vcpu: int, deadline_ns: int) -> None:
        await agent.call(psci.cpu_off(), vcpu=1)
        asyncio.get_running_loop().create_task(agent.close())


@pytest.fixture
async def agents(mediator: Any) -> AsyncIterator[dict[str, AsyncGuestAgent]]:
    made: dict[str, AsyncGuestAgent] = {}
    yield made
    for agent in made.values():
        await agent.close()


async def attach(
    mediator: Any,
    made: dict[str, AsyncGuestAgent],
    name: str,
    handler: type[VcpuHandler] = VcpuHandler,
) -> AsyncGuestAgent:
    agent = AsyncGuestAgent(
        mediator.target, name, handler=lambda vcpu: handler(), resume_entry=ENTRY[name]
    )
    made[name] = agent
    await agent.connect()
    await agent.wait_for(lambda e: isinstance(e.kind, fx.Start), within=WITHIN)
    return agent


async def host(op: Operator, state: pb.HostState.ValueType) -> bool:
    return (await op.system()).host_state == state


async def test_wait_all_suspends_every_domu_then_the_host(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    for name in ("dom0", "domu1", "domu2"):
        await attach(mediator, agents, name)
    async with Operator(mediator.target) as op:
        watch = await mediator.watch()
        reply = await op.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, 5000)
        assert (reply.outcome, list(reply.suspended), list(reply.stragglers)) == (
            READY,
            ["domu1", "domu2"],
            [],
        )
        # The hardware domain's agent got SUSPEND_REQUEST too and suspended the host.
        await until(lambda: host(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
        dom0 = agents["dom0"]
        assert any(isinstance(e.kind, fx.SuspendRequest) for e in dom0.events)
        event = (await watch.until(lambda e: e.WhichOneof("kind") == "suspend_coordination"))[-1]
        assert event.suspend_coordination.result.outcome == READY
        # dom0's UART wakes the host, and dom0 resumes where it said.
        await op.raise_irq(UART_0_IRQ)
        assert dom0.suspending is not None
        report = await asyncio.wait_for(dom0.suspending, WITHIN)
        assert report.resumed_by is not None
        assert report.resumed_by.kind == fx.Resume(ENTRY["dom0"], 0)
        assert await in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED)
    exposition = generate_latest(mediator.server.engine.metrics.registry).decode()
    assert (
        'mediatord_system_suspend_requests_total{outcome="ready",policy="wait-all"} 1.0'
        in exposition
    )


async def test_a_veto_aborts_and_the_suspended_guest_resumes(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    await attach(mediator, agents, "dom0")
    domu1 = await attach(mediator, agents, "domu1")
    async with Operator(mediator.target) as op:
        request = asyncio.ensure_future(op.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, 5000))
        await until(lambda: in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED), "domu1 suspended")
        # domu2's agent comes now: its SUSPEND_REQUEST waited in its mailbox.
        await attach(mediator, agents, "domu2", Vetoes)
        reply = await asyncio.wait_for(request, WITHIN)
        assert (reply.outcome, list(reply.suspended), reply.vetoed_by, reply.reason) == (
            VETOED,
            ["domu1"],
            "domu2",
            "a backup is running",
        )
        assert await host(op, pb.HOST_STATE_ACTIVE)
        # domu1 resumes at its entry point, as after a wake.
        assert domu1.suspending is not None
        report = await asyncio.wait_for(domu1.suspending, WITHIN)
        assert report.resumed_by is not None
        assert report.resumed_by.kind == fx.Resume(ENTRY["domu1"], 0)
        assert all(not isinstance(e.kind, fx.SuspendRequest) for e in agents["dom0"].events)


async def test_a_stuck_guest_misses_the_deadline_and_wait_all_aborts(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    await attach(mediator, agents, "dom0")
    await attach(mediator, agents, "domu1")
    # domu2 has no agent at all: its SUSPEND_REQUEST waits in its mailbox.
    async with Operator(mediator.target) as op:
        reply = await op.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, SHORT_MS)
        assert (reply.outcome, list(reply.suspended), reply.reason) == (
            DEADLINE,
            ["domu1"],
            "not suspended by the deadline: domu2",
        )
        domu1 = agents["domu1"]
        assert domu1.suspending is not None
        report = await asyncio.wait_for(domu1.suspending, WITHIN)
        assert report.resumed_by is not None
        assert report.resumed_by.kind == fx.Resume(ENTRY["domu1"], 0)
        assert await host(op, pb.HOST_STATE_ACTIVE)


async def test_a_guest_dying_halfway_is_left_as_it_is_and_the_request_aborts(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    await attach(mediator, agents, "dom0")
    await attach(mediator, agents, "domu1")
    domu2 = await attach(mediator, agents, "domu2", DiesHalfway)
    await domu2.call(psci.cpu_on(psci.mpidr(1), ENTRY["domu2"]))
    async with Operator(mediator.target) as op:
        reply = await op.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, SHORT_MS)
        assert (reply.outcome, reply.reason) == (DEADLINE, "not suspended by the deadline: domu2")
        info = await op.domain("domu2")
        assert info is not None
        # Still running, with what its agent did before it died (vCPU 1 off).
        assert info.state == pb.DOMAIN_STATE_RUNNING
        assert [v.power for v in info.vcpus] == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]
        await until(lambda: in_state(op, "domu1", pb.DOMAIN_STATE_RUNNING), "domu1 running")


async def test_pause_stragglers_goes_ahead_and_pauses_the_stuck_guest(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    await attach(mediator, agents, "dom0")
    await attach(mediator, agents, "domu1")
    async with Operator(mediator.target) as op:
        reply = await op.request_system_suspend(pb.SUSPEND_POLICY_PAUSE_STRAGGLERS, SHORT_MS)
        assert (reply.outcome, list(reply.suspended), list(reply.stragglers)) == (
            READY,
            ["domu1"],
            ["domu2"],
        )
        await until(lambda: host(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
        assert await in_state(op, "domu2", pb.DOMAIN_STATE_PAUSED)
        assert await in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED)


async def test_force_suspends_the_host_at_once(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    await attach(mediator, agents, "dom0")
    async with Operator(mediator.target) as op:
        reply = await op.request_system_suspend(pb.SUSPEND_POLICY_FORCE, 5000)
        assert (reply.outcome, list(reply.suspended), list(reply.stragglers)) == (
            READY,
            [],
            ["domu1", "domu2"],
        )
        await until(lambda: host(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
        for name in ("domu1", "domu2"):
            assert await in_state(op, name, pb.DOMAIN_STATE_PAUSED)


async def test_the_hardware_domain_asks_and_its_agent_suspends_the_host(
    mediator: Any, agents: dict[str, AsyncGuestAgent]
) -> None:
    dom0 = await attach(mediator, agents, "dom0")
    await attach(mediator, agents, "domu1")
    await attach(mediator, agents, "domu2")
    async with Operator(mediator.target, principal="domain/dom0") as own:
        reply = await own.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, 5000)
    assert reply.outcome == READY
    # Sent SUSPEND_REQUEST as well (an answer can be lost, an event is not): its
    # agent suspends once, and that suspends the host.
    async with Operator(mediator.target) as op:
        await until(lambda: host(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
        await op.raise_irq(UART_0_IRQ)
    assert dom0.suspending is not None
    await asyncio.wait_for(dom0.suspending, WITHIN)
    assert sum(isinstance(e.kind, fx.SuspendRequest) for e in dom0.events) == 1


async def test_a_domu_may_not_request_and_a_veto_needs_a_request(mediator: Any) -> None:
    async with Operator(mediator.target, principal="domain/domu1") as domu:
        with pytest.raises(NotPermittedError, match=r"may not call Control\.RequestSystemSuspend"):
            await domu.request_system_suspend(pb.SUSPEND_POLICY_FORCE, 5000)
    agent = AsyncGuestAgent(mediator.target, "domu1")
    try:
        with pytest.raises(RpcError, match="no system suspend request is open"):
            await agent.veto_suspend("why not")
    finally:
        await agent.close()


async def test_each_request_gets_its_own_answer(
    mediator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ends in the core (force: at once) while its outcome is still being written,
    and B begins: each must get its own answer and keep its own deadline."""
    append = Journal.append

    def slow_disk(journal: Journal, batch: Any, meta: Any = None) -> int:
        time.sleep(0.2)  # on the journal thread: an fsync that takes its time
        return append(journal, batch, meta)

    monkeypatch.setattr(Journal, "append", slow_disk)
    engine = mediator.server.engine
    async with Operator(mediator.target) as a, Operator(mediator.target) as b:
        first = asyncio.ensure_future(a.request_system_suspend(pb.SUSPEND_POLICY_FORCE, 1000))
        for _ in range(1000):  # until A has run in the core
            if engine.mediator.system.suspend_requests == 1:
                break
            await asyncio.sleep(0.001)
        second = asyncio.ensure_future(b.request_system_suspend(pb.SUSPEND_POLICY_WAIT_ALL, 300))
        answers = await asyncio.wait_for(asyncio.gather(first, second), WITHIN)
    assert [(r.request, r.outcome) for r in answers] == [(1, READY), (2, DEADLINE)]
    assert engine.mediator.system.coordination is None
