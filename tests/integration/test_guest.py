"""Guest service end to end: raw SMC calls in, SMCCC results and vCPU events out.

Every test here runs against both development listeners (unix socket and loopback
TCP). Design section 3 is the contract.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from boards import BOARDS
from vcpu_events import resume, start, wake

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core.config import BoardConfig

pytestmark = pytest.mark.parametrize("transport", ["unix", "tcp"])

RAM_BASE = 0x4000_0000
PSCI_VERSION = 0x8400_0000
CPU_SUSPEND = 0x8400_0001
CPU_SUSPEND_64 = 0xC400_0001
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
AFFINITY_INFO = 0x8400_0004
SYSTEM_OFF = 0x8400_0008
SYSTEM_RESET = 0x8400_0009
SYSTEM_SUSPEND_64 = 0xC400_000E

SUCCESS = [0, 0, 0, 0]
NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF
INVALID_PARAMETERS = 0xFFFF_FFFF_FFFF_FFFE
DENIED = 0xFFFF_FFFF_FFFF_FFFD
AFF_ON, AFF_OFF = 0, 1


@pytest.fixture(params=sorted(BOARDS))
def board(request: pytest.FixtureRequest) -> BoardConfig:
    """Every test here runs on each backend (tests/boards.py)."""
    return BOARDS[request.param]


def shutdown(seq: int, vcpu: int, reason: pb.Shutdown.Reason.ValueType) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=vcpu, shutdown=pb.Shutdown(reason=reason))


def powers(info: pb.DomainInfo) -> list[int]:
    return [v.power for v in info.vcpus]


async def test_cpu_on_then_off_round_trip(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE, 0)

    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0xABC) == SUCCESS
    assert await events.next() == start(2, 1, 0x4008_0000, 0xABC)
    assert await mediator.call("domu1", AFFINITY_INFO, 1, 0) == [AFF_ON, 0, 0, 0]
    info = await mediator.domain("domu1")
    assert info.event_seq == 2
    assert list(info.vcpus) == [
        pb.VcpuInfo(index=0, mpidr=0, power=pb.VCPU_POWER_ON, entry_point=RAM_BASE),
        pb.VcpuInfo(
            index=1, mpidr=1, power=pb.VCPU_POWER_ON, entry_point=0x4008_0000, context_id=0xABC
        ),
    ]

    # vCPU 1 (now on) can call, and turns itself off.
    assert await mediator.call("domu1", PSCI_VERSION, vcpu=1) == [0x10001, 0, 0, 0]
    assert await mediator.call("domu1", CPU_OFF, vcpu=1) == SUCCESS
    assert await mediator.call("domu1", AFFINITY_INFO, 1, 0) == [AFF_OFF, 0, 0, 0]
    assert powers(await mediator.domain("domu1")) == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]

    # Only domu1 changed.
    for name in ("dom0", "domu2"):
        info = await mediator.domain(name)
        assert info.state == pb.DOMAIN_STATE_RUNNING
        assert info.event_seq == 1
    events.cancel()


async def test_psci_version_is_1_1_in_four_registers(mediator) -> None:
    regs = await mediator.call("domu2", PSCI_VERSION)
    assert regs[0] == 0x10001
    assert len(regs) == 4
    assert regs == [0x10001, 0, 0, 0]


async def test_unknown_function_id_is_not_supported_not_an_error(mediator) -> None:
    assert await mediator.call("domu1", 0xDEADBEEF) == [NOT_SUPPORTED, 0, 0, 0]
    assert await mediator.call("dom0", 0xDEADBEEF, 1, 2, 3) == [NOT_SUPPORTED, 0, 0, 0]


async def test_domu_system_suspend_and_wake_by_its_device(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE, 0)
    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0) == SUCCESS
    assert await events.next() == start(2, 1, 0x4008_0000, 0)

    # Another vCPU is on: DENIED, and nothing changes.
    before = await mediator.domains()
    assert await mediator.call("domu1", SYSTEM_SUSPEND_64, 0x4000_1000, 0x77) == [DENIED, 0, 0, 0]
    assert await mediator.domains() == before

    assert await mediator.call("domu1", CPU_OFF, vcpu=1) == SUCCESS
    assert await mediator.call("domu1", SYSTEM_SUSPEND_64, 0x4000_1000, 0x77) == SUCCESS
    listing = {d.name: d for d in (await mediator.domains()).domains}
    assert listing["domu1"].state == pb.DOMAIN_STATE_SUSPENDED
    assert powers(listing["domu1"]) == [pb.VCPU_POWER_SUSPENDED, pb.VCPU_POWER_OFF]
    assert listing["dom0"].state == pb.DOMAIN_STATE_RUNNING
    assert listing["domu2"].state == pb.DOMAIN_STATE_RUNNING
    assert (await mediator.system()).host_state == pb.HOST_STATE_ACTIVE

    # A suspended domain cannot call.
    error = await mediator.refusal(
        mediator.guest.Call(
            pb.SmcCall(vcpu=0, function_id=PSCI_VERSION), metadata=mediator.identity("domu1")
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    raised = await mediator.raise_irq(54)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN
    assert raised.domain == "domu1"
    assert raised.vcpu == 0
    assert await events.next() == resume(3, 0, 0x4000_1000, 0x77)
    assert await events.next() == wake(4, 0, 54)

    info = await mediator.domain("domu1")
    assert info.state == pb.DOMAIN_STATE_RUNNING
    assert powers(info) == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]
    assert info.event_seq == 4
    assert await mediator.call("domu1", PSCI_VERSION) == [0x10001, 0, 0, 0]
    events.cancel()


async def test_cpu_suspend_standby_blocks_until_interrupt(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE, 0)

    blocked = asyncio.create_task(mediator.call("domu1", CPU_SUSPEND, 0))
    try:
        # Wait (by RPCs, not by time) until the server has put the vCPU in standby.
        for _ in range(200):
            if (await mediator.domain("domu1")).vcpus[0].power == pb.VCPU_POWER_STANDBY:
                break
        else:
            pytest.fail("vCPU 0 of domu1 never entered standby")
        # Another RPC completed after that; the standby call is still waiting.
        assert await mediator.call("domu2", PSCI_VERSION) == [0x10001, 0, 0, 0]
        assert not blocked.done()
        # The vCPU in standby cannot issue another call.
        error = await mediator.refusal(
            mediator.guest.Call(
                pb.SmcCall(vcpu=0, function_id=PSCI_VERSION), metadata=mediator.identity("domu1")
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert not blocked.done()

        raised = await mediator.raise_irq(27, domain="domu1", vcpu=0)
        assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_WOKE_VCPU
        assert raised.domain == "domu1"
        assert raised.vcpu == 0
        assert await asyncio.wait_for(blocked, mediator.timeout) == SUCCESS
    finally:
        blocked.cancel()
    assert await events.next() == wake(2, 0, 27)
    assert powers(await mediator.domain("domu1")) == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]
    events.cancel()


async def test_call_stream_answers_in_request_order(mediator) -> None:
    requests: list[pb.SmcCall] = []
    expected: list[list[int]] = []
    for i in range(50):
        match i % 5:
            case 0:
                requests.append(pb.SmcCall(function_id=PSCI_VERSION))
                expected.append([0x10001, 0, 0, 0])
            case 1:  # vCPU 0 is on
                requests.append(pb.SmcCall(function_id=AFFINITY_INFO, args=[0, 0]))
                expected.append([AFF_ON, 0, 0, 0])
            case 2:  # vCPU 1 is off
                requests.append(pb.SmcCall(function_id=AFFINITY_INFO, args=[1, 0]))
                expected.append([AFF_OFF, 0, 0, 0])
            case 3:  # junk function IDs
                requests.append(pb.SmcCall(function_id=0xDEAD_0000 + i, args=[i]))
                expected.append([NOT_SUPPORTED, 0, 0, 0])
            case _:  # no vCPU with MPIDR 0x5 in domu1
                requests.append(pb.SmcCall(function_id=AFFINITY_INFO, args=[5, 0]))
                expected.append([INVALID_PARAMETERS, 0, 0, 0])
    results = await mediator.call_stream(mediator.identity("domu1"), requests)
    assert results == expected


async def test_dom0_system_suspend_suspends_the_host(mediator) -> None:
    # Seed 4.3: dom0's own device wakes the host; dom0 resumes, then takes the IRQ.
    events = mediator.attach("dom0")
    assert await events.next() == start(1, 0, RAM_BASE, 0)
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_ACTIVE

    assert await mediator.call("dom0", SYSTEM_SUSPEND_64, 0x4010_0000, 0x3333) == SUCCESS
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_SUSPENDED
    assert [p.state for p in system.pcpu_states] == [
        pb.PCPU_STATE_SUSPENDED,
        pb.PCPU_STATE_OFF,
        pb.PCPU_STATE_OFF,
        pb.PCPU_STATE_OFF,
    ]
    assert (await mediator.domain("dom0")).state == pb.DOMAIN_STATE_SUSPENDED
    assert (await mediator.domain("domu1")).state == pb.DOMAIN_STATE_PAUSED

    raised = await mediator.raise_irq(53)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert (raised.domain, raised.vcpu, raised.woke_host) == ("dom0", 0, True)
    assert await events.next() == resume(2, 0, 0x4010_0000, 0x3333)
    assert await events.next() == wake(3, 0, 53)
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_ACTIVE
    assert (await mediator.domain("dom0")).state == pb.DOMAIN_STATE_RUNNING
    events.cancel()


async def test_domu_system_off_ends_only_that_domain(mediator) -> None:
    events = mediator.attach("domu2")
    assert await events.next() == start(1, 0, RAM_BASE, 0)
    before = {d.name: d for d in (await mediator.domains()).domains}

    assert await mediator.call("domu2", SYSTEM_OFF) == SUCCESS
    assert await events.next() == shutdown(2, 0, pb.Shutdown.POWEROFF)

    after = {d.name: d for d in (await mediator.domains()).domains}
    assert after["domu2"].state == pb.DOMAIN_STATE_SHUTDOWN
    assert powers(after["domu2"]) == [pb.VCPU_POWER_OFF, pb.VCPU_POWER_OFF]
    assert after["domu2"].event_seq == 2
    assert after["dom0"] == before["dom0"]
    assert after["domu1"] == before["domu1"]
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_ACTIVE
    assert system.domains == 3

    error = await mediator.refusal(
        mediator.guest.Call(
            pb.SmcCall(function_id=PSCI_VERSION), metadata=mediator.identity("domu2")
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The other domains still work.
    assert await mediator.call("domu1", PSCI_VERSION) == [0x10001, 0, 0, 0]
    assert await mediator.call("dom0", PSCI_VERSION) == [0x10001, 0, 0, 0]
    events.cancel()


async def test_domu_system_reset_reboots_that_domain(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE, 0)
    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0x5) == SUCCESS
    assert await events.next() == start(2, 1, 0x4008_0000, 0x5)
    before = {d.name: d for d in (await mediator.domains()).domains}

    assert await mediator.call("domu1", SYSTEM_RESET, vcpu=1) == SUCCESS
    assert await events.next() == shutdown(3, 1, pb.Shutdown.REBOOT)
    assert await events.next() == start(4, 0, RAM_BASE, 0)

    after = {d.name: d for d in (await mediator.domains()).domains}
    assert after["domu1"].state == pb.DOMAIN_STATE_RUNNING
    assert after["domu1"].vcpus[0] == pb.VcpuInfo(
        index=0, mpidr=0, power=pb.VCPU_POWER_ON, entry_point=RAM_BASE, context_id=0
    )
    assert powers(after["domu1"]) == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]
    assert after["domu1"].event_seq == 4
    assert after["dom0"] == before["dom0"]
    assert after["domu2"] == before["domu2"]
    assert await mediator.call("domu1", AFFINITY_INFO, 1, 0) == [AFF_OFF, 0, 0, 0]
    events.cancel()


async def test_dom0_system_off_powers_the_host_off(mediator) -> None:
    streams = {name: mediator.attach(name) for name in ("dom0", "domu1", "domu2")}
    for events in streams.values():
        assert await events.next() == start(1, 0, RAM_BASE, 0)

    assert await mediator.call("dom0", SYSTEM_OFF) == SUCCESS
    for events in streams.values():
        assert await events.next() == shutdown(2, 0, pb.Shutdown.POWEROFF)
    system = await mediator.system()
    assert system.host_state == pb.HOST_STATE_OFF
    for info in (await mediator.domains()).domains:
        assert info.state == pb.DOMAIN_STATE_SHUTDOWN, info.name
        assert all(v.power == pb.VCPU_POWER_OFF for v in info.vcpus), info.name

    # Nothing runs any more: calls fail, interrupts are dropped.
    error = await mediator.refusal(
        mediator.guest.Call(
            pb.SmcCall(function_id=PSCI_VERSION), metadata=mediator.identity("dom0")
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    raised = await mediator.raise_irq(54)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DROPPED
    for events in streams.values():
        events.cancel()


async def test_dom0_system_reset_reboots_every_domain(mediator) -> None:
    streams = {name: mediator.attach(name) for name in ("dom0", "domu1", "domu2")}
    for events in streams.values():
        assert await events.next() == start(1, 0, RAM_BASE, 0)
    assert await mediator.call("domu2", SYSTEM_OFF) == SUCCESS
    assert await streams["domu2"].next() == shutdown(2, 0, pb.Shutdown.POWEROFF)
    assert await mediator.call("dom0", CPU_ON_64, 3, 0x4100_0000, 0x3) == SUCCESS
    assert await streams["dom0"].next() == start(2, 3, 0x4100_0000, 0x3)

    assert await mediator.call("dom0", SYSTEM_RESET, vcpu=3) == SUCCESS
    assert await streams["dom0"].next() == shutdown(3, 3, pb.Shutdown.REBOOT)
    assert await streams["dom0"].next() == start(4, 0, RAM_BASE, 0)
    assert await streams["domu1"].next() == shutdown(2, 0, pb.Shutdown.REBOOT)
    assert await streams["domu1"].next() == start(3, 0, RAM_BASE, 0)
    assert await streams["domu2"].next() == shutdown(3, 0, pb.Shutdown.REBOOT)
    assert await streams["domu2"].next() == start(4, 0, RAM_BASE, 0)

    assert (await mediator.system()).host_state == pb.HOST_STATE_ACTIVE
    for info in (await mediator.domains()).domains:
        assert info.state == pb.DOMAIN_STATE_RUNNING, info.name
        assert powers(info) == [pb.VCPU_POWER_ON] + [pb.VCPU_POWER_OFF] * (len(info.vcpus) - 1)
    for events in streams.values():
        events.cancel()


async def test_cpu_suspend_power_down_resumes_at_its_entry_point(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE, 0)
    # power_state: power-down (bit 16), level 0; returns as soon as it took effect.
    assert await mediator.call("domu1", CPU_SUSPEND_64, 0x1_0000, 0x4000_2000, 0x12) == SUCCESS
    info = await mediator.domain("domu1")
    assert info.vcpus[0] == pb.VcpuInfo(
        index=0, mpidr=0, power=pb.VCPU_POWER_POWERDOWN, entry_point=0x4000_2000, context_id=0x12
    )
    assert info.state == pb.DOMAIN_STATE_RUNNING

    raised = await mediator.raise_irq(89)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_WOKE_VCPU
    assert (raised.domain, raised.vcpu) == ("domu1", 0)
    assert await events.next() == resume(2, 0, 0x4000_2000, 0x12)
    assert await events.next() == wake(3, 0, 89)
    assert powers(await mediator.domain("domu1")) == [pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF]
    events.cancel()
