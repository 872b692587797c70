"""The Python client library (clients/mediator_client) against a real in-process server.

Guest agents and the operator talk to ``mediatord.server.app`` over gRPC as a guest's
PSCI/EEMI drivers and an operator's tools would. Nothing sleeps to wait for state:
events are awaited with ``wait_for(..., within=)`` and state with bounded loops of
Control RPCs (each one a real round trip).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from mediator_client import (
    AsyncGuestAgent,
    DomainGoneError,
    EemiError,
    Event,
    GuestAgent,
    NotPermittedError,
    NotRunningError,
    Operator,
    PsciError,
    VcpuHandler,
    eemi,
    psci,
    timeline,
)
from mediator_client.eemi import PmNode
from mediator_client.psci import Version
from polling import in_state, until
from seed import RESUME_FLOW, SUSPEND_FLOW

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.board import default_board
from mediatord.core import effects as fx
from mediatord.core.eemi import PmStatus
from mediatord.core.psci import AffinityInfo, PsciRet
from mediatord.server import app

WITHIN = 5.0  # seconds an event may take to reach an agent
SECOND = 1_000_000_000
UART_1_IRQ = 54
UART_1_NODE = 34
PSCI_VERSION_FID = 0x8400_0000
PSCI_1_1 = 0x0001_0001
DOMU1_SECONDARY = (0x4008_0000, 0x7)
DOMU1_RESUME = (0x4009_0000, 0x11)
DOMU2_RESUME = (0x4009_0000, 0x22)
DOM0_RESUME = (0x4010_0000, 0x33)
WOKE_DOMAIN = pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN
DELIVERED = pb.RaiseInterruptResponse.OUTCOME_DELIVERED

# Seed section 3, "Suspend Flow", the PMU's wake-up, then "Resume Flow", as
# timeline.of_system shows them.
SEED_TIMELINE = [
    *(("suspend", name) for name in SUSPEND_FLOW),
    ("hardware", "soc.wake (the SoC powers up)"),
    *(("resume", name) for name in RESUME_FLOW),
]


def is_start(vcpu: int) -> Callable[[Event], bool]:
    return lambda e: e.vcpu == vcpu and isinstance(e.kind, fx.Start)


async def finish(task: asyncio.Task[Any]) -> None:
    """Cancel a task the test leaves behind and wait for it to end."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------ 1. seed scenario


async def test_seed_scenario_through_the_library(manual_mediator: Any) -> None:
    target, clock = manual_mediator.target, manual_mediator.clock
    async with (
        AsyncGuestAgent(target, "dom0") as dom0,
        AsyncGuestAgent(target, "domu1") as u1,
        AsyncGuestAgent(target, "domu2") as u2,
        Operator(target) as op,
    ):
        # domu1 brings its secondary up, then holds UART_1 as its wake source.
        await u1.call(psci.cpu_on(psci.mpidr(1), *DOMU1_SECONDARY))
        started = await u1.wait_for(is_start(1), within=WITHIN)
        assert started.kind == fx.Start(*DOMU1_SECONDARY)
        caps = eemi.CAP_ACCESS | eemi.CAP_WAKEUP
        await u1.call(eemi.request_node(PmNode.NODE_UART_1, caps))
        await u1.call(eemi.set_wakeup_source(PmNode.NODE_UART_1))
        assert (await u1.call(eemi.get_node_status(UART_1_NODE))).requirements == caps

        s1 = asyncio.create_task(u1.suspend_to_ram(*DOMU1_RESUME, resume_timeout=10))
        s2 = asyncio.create_task(u2.suspend_to_ram(*DOMU2_RESUME, resume_timeout=10))
        try:
            await until(lambda: in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED), "domu1 suspended")
            await until(lambda: in_state(op, "domu2", pb.DOMAIN_STATE_SUSPENDED), "domu2 suspended")
            s0 = asyncio.create_task(dom0.suspend_to_ram(*DOM0_RESUME, resume_timeout=10))
            try:

                async def host_suspended() -> bool:
                    return (await op.system()).host_state == pb.HOST_STATE_SUSPENDED

                await until(host_suspended, "the host suspended")
                # While suspended, domu1 keeps only WAKEUP on its wake device.
                uart = next(d for d in (await op.system()).devices if d.name == "UART_1")
                assert dict(uart.requirements) == {"domu1": eemi.CAP_WAKEUP}
                assert not s0.done()
                assert not s1.done()
                assert not s2.done()

                clock.advance(5 * SECOND)
                woke = await op.raise_irq(UART_1_IRQ)
                assert woke.outcome == WOKE_DOMAIN
                assert woke.domain == "domu1"
                assert woke.woke_host is True

                r0 = await asyncio.wait_for(s0, WITHIN)
            finally:
                await finish(s0)
            r1 = await asyncio.wait_for(s1, WITHIN)

            assert r0.resumed_by is not None
            assert r0.resumed_by.vcpu == 0
            assert r0.resumed_by.kind == fx.Resume(*DOM0_RESUME)
            assert r1.resumed_by is not None
            assert r1.resumed_by.vcpu == 0
            assert r1.resumed_by.kind == fx.Resume(*DOMU1_RESUME)

            # domu1's secondary went off for the suspend and is back on after it.
            assert r1.secondaries_off == [1]
            assert await u1.call(psci.affinity_info(psci.mpidr(1))) is AffinityInfo.ON
            restarted = await u1.wait_for(is_start(1), after=r1.resumed_by.seq, within=WITHIN)
            assert restarted.seq > r1.resumed_by.seq
            assert restarted.kind == fx.Start(DOMU1_RESUME[0], 0)

            # Its device was put down to WAKEUP and given back what it held.
            assert r1.devices_suspended == {UART_1_NODE: caps}
            assert (await u1.call(eemi.get_node_status(UART_1_NODE))).requirements == caps

            # domu2 was not woken by domu1's device.
            assert await in_state(op, "domu2", pb.DOMAIN_STATE_SUSPENDED)
            assert not s2.done()
        finally:
            await finish(s1)
            await finish(s2)

        system = await op.system()
        assert system.host_state == pb.HOST_STATE_ACTIVE
        rows = timeline.of_system(system)
        assert [(row.phase, row.name) for row in rows] == SEED_TIMELINE
        assert [row.result for row in rows] == [0] * len(SEED_TIMELINE)
        # The SoC slept exactly as long as the manual clock was moved.
        assert rows[10].start_ns - rows[9].end_ns == 5 * SECOND


# ------------------------------------------------------------ 2. VcpuHandler


class Recorder(VcpuHandler):
    """Records what reaches one vCPU's handler; signals the test through ``signals``."""

    def __init__(self, vcpu: int, signals: dict[tuple[str, int], asyncio.Event]) -> None:
        self.vcpu = vcpu
        self.signals = signals
        self.starts: list[tuple[int, fx.Start]] = []
        self.wakes: list[tuple[int, int]] = []

    def _signal(self, kind: str, vcpu: int) -> None:
        self.signals.setdefault((kind, vcpu), asyncio.Event()).set()

    async def on_start(self, agent: AsyncGuestAgent, vcpu: int, start: fx.Start) -> None:
        self.starts.append((vcpu, start))
        self._signal("start", vcpu)

    async def on_wake(self, agent: AsyncGuestAgent, vcpu: int, irq: int) -> None:
        self.wakes.append((vcpu, irq))
        self._signal("wake", vcpu)


async def test_vcpu_handlers_get_their_vcpus_events(mediator: Any) -> None:
    signals = {(kind, vcpu): asyncio.Event() for kind in ("start", "wake") for vcpu in (0, 1)}
    handlers: dict[int, Recorder] = {}

    def make(vcpu: int) -> Recorder:
        assert vcpu not in handlers, f"a second handler for vCPU {vcpu}"
        handlers[vcpu] = Recorder(vcpu, signals)
        return handlers[vcpu]

    async with (
        AsyncGuestAgent(mediator.target, "domu1", handler=make) as agent,
        Operator(mediator.target) as op,
    ):
        agent.start()
        # The boot Start of vCPU 0 reaches vCPU 0's handler.
        await asyncio.wait_for(signals["start", 0].wait(), WITHIN)

        await agent.call(psci.cpu_on(psci.mpidr(1), *DOMU1_SECONDARY))
        await asyncio.wait_for(signals["start", 1].wait(), WITHIN)
        assert handlers[1].starts == [(1, fx.Start(*DOMU1_SECONDARY))]

        woke = await op.raise_irq(UART_1_IRQ)
        assert woke.outcome == DELIVERED
        assert woke.domain == "domu1"
        await asyncio.wait_for(signals["wake", 0].wait(), WITHIN)
        assert handlers[0].wakes == [(0, UART_1_IRQ)]

        # One handler instance per vCPU, each seeing only its own vCPU's events.
        assert sorted(handlers) == [0, 1]
        assert handlers[0] is not handlers[1]
        assert handlers[0].vcpu == 0
        assert handlers[1].vcpu == 1
        assert [vcpu for vcpu, _ in handlers[0].starts] == [0]
        assert handlers[1].wakes == []
        assert not signals["wake", 1].is_set()


# ------------------------------------------------------------ 3. typed errors


async def test_typed_errors(mediator: Any) -> None:
    target = mediator.target
    async with AsyncGuestAgent(target, "domu1") as u1:
        with pytest.raises(EemiError) as eemi_error:
            await u1.call(eemi.request_node(PmNode.NODE_USB_0))
        assert eemi_error.value.status == PmStatus.NO_ACCESS
        assert int(eemi_error.value.status) == 2002
        assert PmNode.NODE_USB_0 not in u1.held

        with pytest.raises(PsciError) as psci_error:
            await u1.call(psci.cpu_on(psci.mpidr(0), DOMU1_SECONDARY[0]))
        assert psci_error.value.code == PsciRet.ALREADY_ON

        # vCPU 1 has not been started: it cannot call.
        with pytest.raises(NotRunningError) as not_running:
            await u1.call(psci.psci_version(), vcpu=1)
        assert not_running.value.code == grpc.StatusCode.FAILED_PRECONDITION

    async with AsyncGuestAgent(target, "domu9") as ghost:
        with pytest.raises(DomainGoneError) as gone:
            await ghost.call(psci.psci_version())
        assert gone.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert "no domain named" in gone.value.details

    async with AsyncGuestAgent(target, "domu2", principal="domain/domu1") as impostor:
        with pytest.raises(NotPermittedError) as refused:
            await impostor.call(psci.psci_version())
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


# ------------------------------------------------------------ 4. restart survival


async def test_agent_survives_a_daemon_restart(socket_dir: Path) -> None:
    path = socket_dir / "restart.sock"
    server = await app.start(default_board(), [app.Listener(unix=path)])
    target = server.addresses[0]
    restarted: app.Server | None = None
    try:
        async with AsyncGuestAgent(target, "domu1") as agent:
            follower = agent.start()
            boot = await agent.wait_for(is_start(0), within=WITHIN)
            assert boot.seq == 1

            await server.stop(0)
            seen = len(agent.events)
            restarted = await app.start(default_board(), [app.Listener(unix=path)])
            assert restarted.addresses[0] == target

            # The new daemon's boot Start, numbered from 1 again (an event not seen before).
            def new_event(e: Event) -> bool:
                return len(agent.events) > seen and e is agent.events[seen]

            again = await agent.wait_for(new_event, after=0, within=WITHIN)
            assert again.seq == 1
            assert again.vcpu == 0
            assert isinstance(again.kind, fx.Start)
            assert agent.last_seq == 1
            assert not follower.done()
            assert agent.error is None
            assert await agent.call(psci.psci_version()) == Version(1, 1)

            async with Operator(target) as op:
                await op.destroy_domain("domu1")
            await asyncio.wait_for(follower, WITHIN)
            # The Attach ended with FAILED_PRECONDITION "domain domu1 was destroyed".
            assert isinstance(agent.error, DomainGoneError)
            assert agent.error.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "was destroyed" in agent.error.details
            with pytest.raises(DomainGoneError) as gone:
                await agent.call(psci.psci_version())
            assert gone.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert "no domain named" in gone.value.details
    finally:
        await server.stop(0)
        if restarted is not None:
            await restarted.stop(0)


# ------------------------------------------------------------ 5. blocking agent


async def test_blocking_guest_agent(mediator: Any) -> None:
    agent = await asyncio.to_thread(GuestAgent, mediator.target, "domu1")
    try:
        assert await asyncio.to_thread(agent.call, psci.psci_version()) == Version(1, 1)
        regs = await asyncio.to_thread(agent.raw, PSCI_VERSION_FID)
        assert regs == (PSCI_1_1, 0, 0, 0)

        async with Operator(mediator.target) as op:
            suspend = asyncio.create_task(
                asyncio.to_thread(agent.suspend_to_ram, *DOMU1_RESUME, resume_timeout=10)
            )
            try:
                await until(
                    lambda: in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED), "domu1 suspended"
                )
                woke = await op.raise_irq(UART_1_IRQ)
                assert woke.outcome == WOKE_DOMAIN
                assert woke.domain == "domu1"
                assert woke.woke_host is False
                report = await asyncio.wait_for(suspend, WITHIN * 2)
            finally:
                if not suspend.done():
                    # The thread stays blocked until its resume_timeout; let it end.
                    await asyncio.gather(suspend, return_exceptions=True)
            assert await in_state(op, "domu1", pb.DOMAIN_STATE_RUNNING)
        assert report.resumed_by is not None
        assert report.resumed_by.vcpu == 0
        assert report.resumed_by.kind == fx.Resume(*DOMU1_RESUME)
        assert report.secondaries_off == []
        assert report.devices_suspended == {}
        assert report.resumed_by in agent.events
    finally:
        await asyncio.to_thread(agent.close)


# ------------------------------------------------------------ 6. vcpus()


async def test_vcpus_counts_each_domains_vcpus(mediator: Any) -> None:
    async with (
        AsyncGuestAgent(mediator.target, "domu1") as u1,
        AsyncGuestAgent(mediator.target, "dom0") as dom0,
    ):
        assert await u1.vcpus() == 2
        assert await dom0.vcpus() == 4
