"""Control service, standard services and Attach delivery rules, end to end."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from vcpu_events import start, wake

from mediatord.api.mediator.v1 import mediator_pb2 as pb

RAM_BASE = 0x4000_0000
PSCI_VERSION = 0x8400_0000
CPU_SUSPEND = 0x8400_0001
CPU_OFF = 0x8400_0002
CPU_ON = 0x8400_0003
CPU_ON_64 = 0xC400_0003
INVALID_ADDRESS = 0xFFFF_FFFF_FFFF_FFF7

# name: (EEMI node, IRQ, owner) of the embedded default board (design section 9).
DEFAULT_DEVICES = {
    "UART_0": (33, 53, "dom0"),
    "SD_0": (39, 80, "dom0"),
    "ETH_3": (32, 95, "dom0"),
    "GPU": (58, 164, "dom0"),
    "UART_1": (34, 54, "domu1"),
    "ETH_0": (29, 89, "domu1"),
    "USB_0": (22, 97, "domu2"),
    "SD_1": (40, 81, "domu2"),
}


def domu3(**changes: object) -> pb.CreateDomainRequest:
    request = pb.CreateDomainRequest(
        name="domu3", vcpus=2, ram_base=0x8000_0000, ram_size=0x1000_0000
    )
    for key, value in changes.items():
        if key == "devices":
            request.devices.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, key, value)
    return request


def owners(system: pb.SystemInfo) -> dict[str, str]:
    return {d.name: d.owner for d in system.devices}


async def test_get_system_describes_the_default_board(mediator) -> None:
    system = await mediator.system()
    assert system.board == "zcu102"
    assert system.backend == "zynqmp"
    assert system.pcpus == 4
    assert system.boot_pcpu == 0
    assert system.host_state == pb.HOST_STATE_ACTIVE
    assert [(p.index, p.state) for p in system.pcpu_states] == [
        (i, pb.PCPU_STATE_ON) for i in range(4)
    ]
    assert system.watchdog_enabled is True
    assert system.domains == 3
    assert len(system.devices) == 8
    assert {d.name: (d.node_id, d.irq, d.owner) for d in system.devices} == DEFAULT_DEVICES
    assert all(d.wake_capable and d.wake_source for d in system.devices)
    uart1 = next(d for d in system.devices if d.name == "UART_1")
    assert (uart1.mmio_base, uart1.mmio_size) == (0xFF01_0000, 0x1000)


async def test_list_domains_describes_the_booted_board(mediator) -> None:
    listing = await mediator.domains()
    assert [(d.id, d.name, d.hardware_domain) for d in listing.domains] == [
        (0, "dom0", True),
        (1, "domu1", False),
        (2, "domu2", False),
    ]
    dom0, domu1, domu2 = listing.domains
    assert (dom0.ram_base, dom0.ram_size) == (RAM_BASE, 0x4000_0000)
    assert (domu1.ram_base, domu1.ram_size) == (RAM_BASE, 0x1000_0000)
    assert (domu2.ram_base, domu2.ram_size) == (RAM_BASE, 0x1000_0000)
    assert list(dom0.devices) == ["UART_0", "SD_0", "ETH_3", "GPU"]
    assert list(domu1.devices) == ["UART_1", "ETH_0"]
    assert list(domu2.devices) == ["USB_0", "SD_1"]
    for domain, vcpus in ((dom0, 4), (domu1, 2), (domu2, 2)):
        assert domain.state == pb.DOMAIN_STATE_RUNNING
        assert domain.aarch32 is False
        assert domain.event_seq == 1
        assert list(domain.pending_irqs) == []
        assert list(domain.vcpus) == [
            pb.VcpuInfo(
                index=i,
                mpidr=i,
                power=pb.VCPU_POWER_ON if i == 0 else pb.VCPU_POWER_OFF,
                entry_point=RAM_BASE if i == 0 else 0,
            )
            for i in range(vcpus)
        ]


async def test_create_domain_boots_it(mediator) -> None:
    created = await mediator.control.CreateDomain(domu3())
    assert created == pb.DomainInfo(
        id=3,
        name="domu3",
        state=pb.DOMAIN_STATE_RUNNING,
        hardware_domain=False,
        ram_base=0x8000_0000,
        ram_size=0x1000_0000,
        aarch32=False,
        vcpus=[
            pb.VcpuInfo(index=0, mpidr=0, power=pb.VCPU_POWER_ON, entry_point=0x8000_0000),
            pb.VcpuInfo(index=1, mpidr=1, power=pb.VCPU_POWER_OFF),
        ],
        devices=[],
        event_seq=1,
    )
    listing = await mediator.domains()
    assert [d.name for d in listing.domains] == ["dom0", "domu1", "domu2", "domu3"]
    assert listing.domains[3] == created
    assert (await mediator.system()).domains == 4

    events = mediator.attach("domu3")
    assert await events.next() == start(1, 0, 0x8000_0000)
    assert await mediator.call("domu3", PSCI_VERSION) == [0x10001, 0, 0, 0]
    # Its RAM is its own: the domUs' RAM base is outside it.
    assert await mediator.call("domu3", CPU_ON_64, 1, 0x4008_0000, 0) == [INVALID_ADDRESS, 0, 0, 0]
    assert await mediator.call("domu3", CPU_ON_64, 1, 0x8008_0000, 0x33) == [0, 0, 0, 0]
    assert await events.next() == start(2, 1, 0x8008_0000, 0x33)
    events.cancel()


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        pytest.param(domu3(name="domu1"), grpc.StatusCode.ALREADY_EXISTS, id="duplicate"),
        pytest.param(domu3(name="dom0"), grpc.StatusCode.ALREADY_EXISTS, id="duplicate-dom0"),
        pytest.param(domu3(name="Dom U"), grpc.StatusCode.INVALID_ARGUMENT, id="bad-name"),
        pytest.param(domu3(name=""), grpc.StatusCode.INVALID_ARGUMENT, id="empty-name"),
        pytest.param(domu3(vcpus=0), grpc.StatusCode.INVALID_ARGUMENT, id="zero-vcpus"),
        pytest.param(domu3(vcpus=129), grpc.StatusCode.INVALID_ARGUMENT, id="129-vcpus"),
        pytest.param(
            domu3(ram_base=0x8000_0800), grpc.StatusCode.INVALID_ARGUMENT, id="unaligned-base"
        ),
        pytest.param(
            domu3(ram_size=0x1000_0800), grpc.StatusCode.INVALID_ARGUMENT, id="unaligned-size"
        ),
        pytest.param(domu3(ram_size=0), grpc.StatusCode.INVALID_ARGUMENT, id="no-ram"),
        pytest.param(
            domu3(devices=["UART_1"]), grpc.StatusCode.FAILED_PRECONDITION, id="owned-device"
        ),
        pytest.param(
            domu3(devices=["NOPE_0"]), grpc.StatusCode.INVALID_ARGUMENT, id="unknown-device"
        ),
    ],
)
async def test_create_domain_refusals(mediator, request_, code) -> None:
    before, system_before = await mediator.domains(), await mediator.system()
    error = await mediator.refusal(mediator.control.CreateDomain(request_))
    assert error.code() == code
    assert await mediator.domains() == before
    assert await mediator.system() == system_before


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("domu9", grpc.StatusCode.NOT_FOUND, id="unknown"),
        pytest.param("dom0", grpc.StatusCode.FAILED_PRECONDITION, id="hardware-domain"),
    ],
)
async def test_destroy_domain_refusals(mediator, name, code) -> None:
    before = await mediator.domains()
    error = await mediator.refusal(
        mediator.control.DestroyDomain(pb.DestroyDomainRequest(name=name))
    )
    assert error.code() == code
    assert await mediator.domains() == before


async def test_destroy_domain_ends_its_attach_and_frees_its_devices(mediator) -> None:
    events = mediator.attach("domu1")
    assert await events.next() == start(1, 0, RAM_BASE)

    reply = await mediator.control.DestroyDomain(pb.DestroyDomainRequest(name="domu1"))
    assert reply == pb.DestroyDomainResponse()
    error = await events.error()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    system = await mediator.system()
    assert system.domains == 2
    expected = {name: owner for name, (_, _, owner) in DEFAULT_DEVICES.items()}
    expected |= {"UART_1": "", "ETH_0": ""}
    assert owners(system) == expected
    assert [d.name for d in (await mediator.domains()).domains] == ["dom0", "domu2"]
    # Its interrupts now have nobody to go to.
    raised = await mediator.raise_irq(54)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DROPPED
    # The name no longer identifies anybody.
    error = await mediator.refusal(
        mediator.guest.Call(
            pb.SmcCall(function_id=PSCI_VERSION), metadata=mediator.identity("domu1")
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    created = await mediator.control.CreateDomain(domu3(devices=["UART_1", "ETH_0"]))
    assert created.id == 3
    assert list(created.devices) == ["UART_1", "ETH_0"]
    assert owners(await mediator.system()) == expected | {"UART_1": "domu3", "ETH_0": "domu3"}
    events = mediator.attach("domu3")
    assert await events.next() == start(1, 0, 0x8000_0000)
    raised = await mediator.raise_irq(89)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert (raised.domain, raised.vcpu) == ("domu3", 0)
    assert await events.next() == wake(2, 0, 89)
    events.cancel()


async def test_destroy_domain_aborts_its_blocked_call(mediator) -> None:
    blocked = asyncio.create_task(mediator.call("domu2", CPU_SUSPEND, 0))
    try:
        for _ in range(200):
            if (await mediator.domain("domu2")).vcpus[0].power == pb.VCPU_POWER_STANDBY:
                break
        else:
            pytest.fail("vCPU 0 of domu2 never entered standby")
        await mediator.control.DestroyDomain(pb.DestroyDomainRequest(name="domu2"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(blocked, mediator.timeout)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        blocked.cancel()


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(pb.RaiseInterruptRequest(irq=200), id="unwired-spi"),
        pytest.param(pb.RaiseInterruptRequest(irq=0), id="irq-0"),
        pytest.param(pb.RaiseInterruptRequest(irq=27), id="timer-without-domain"),
        pytest.param(pb.RaiseInterruptRequest(irq=27, domain="domu9"), id="timer-unknown-domain"),
        pytest.param(
            pb.RaiseInterruptRequest(irq=27, domain="domu1", vcpu=2), id="timer-no-such-vcpu"
        ),
    ],
)
async def test_raise_interrupt_refusals(mediator, request_) -> None:
    before = await mediator.domains()
    error = await mediator.refusal(mediator.control.RaiseInterrupt(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await mediator.domains() == before


async def test_raise_interrupt_delivery(mediator) -> None:
    events = mediator.attach("domu2")
    assert await events.next() == start(1, 0, RAM_BASE)
    raised = await mediator.raise_irq(81)
    assert raised == pb.RaiseInterruptResponse(
        outcome=pb.RaiseInterruptResponse.OUTCOME_DELIVERED, domain="domu2", vcpu=0
    )
    assert await events.next() == wake(2, 0, 81)
    raised = await mediator.raise_irq(27, domain="domu2", vcpu=0)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert await events.next() == wake(3, 0, 27)
    # The timer of an off vCPU fires into nothing.
    raised = await mediator.raise_irq(27, domain="domu2", vcpu=1)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DROPPED
    assert (await mediator.domain("domu2")).event_seq == 3
    events.cancel()


@pytest.mark.parametrize("service", ["", "mediator.v1.Guest", "mediator.v1.Control"])
async def test_health_is_serving(mediator, service) -> None:
    stub = health_pb2_grpc.HealthStub(mediator.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_watch_streams_the_status(mediator) -> None:
    """grpc_health's Watch sends with context.write rather than yielding: the gate
    must wrap it as such (an async generator around it failed every Watch, UNKNOWN)."""
    stub = health_pb2_grpc.HealthStub(mediator.channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service="mediator.v1.Guest"), timeout=5)
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_health_of_unknown_service_is_not_found(mediator) -> None:
    stub = health_pb2_grpc.HealthStub(mediator.channel)
    error = await mediator.refusal(
        stub.Check(health_pb2.HealthCheckRequest(service="mediator.v1.Nope"), timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(mediator) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(mediator.channel)
    stream = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    replies = [reply async for reply in stream]
    assert len(replies) == 1
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"mediator.v1.Guest", "mediator.v1.Control", "grpc.health.v1.Health"} <= names
    assert names <= {
        "mediator.v1.Guest",
        "mediator.v1.Control",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }


async def test_second_attach_takes_over(mediator) -> None:
    first = mediator.attach("domu1")
    assert await first.next() == start(1, 0, RAM_BASE)
    second = mediator.attach("domu1")
    error = await first.error()
    assert error.code() == grpc.StatusCode.ABORTED

    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0x9) == [0, 0, 0, 0]
    assert await second.next() == start(2, 1, 0x4008_0000, 0x9)
    raised = await mediator.raise_irq(54)
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert await second.next() == wake(3, 0, 54)
    second.cancel()


async def test_events_wait_for_an_attach(mediator) -> None:
    # Nobody is attached to domu1 while these happen.
    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0000, 0x1) == [0, 0, 0, 0]
    assert (await mediator.raise_irq(54)).outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert await mediator.call("domu1", CPU_OFF, vcpu=1) == [0, 0, 0, 0]
    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4009_0000, 0x2) == [0, 0, 0, 0]
    assert (await mediator.domain("domu1")).event_seq == 4

    events = mediator.attach("domu1")
    assert [await events.next() for _ in range(4)] == [
        start(1, 0, RAM_BASE),
        start(2, 1, 0x4008_0000, 0x1),
        wake(3, 0, 54),
        start(4, 1, 0x4009_0000, 0x2),
    ]
    # Live events follow the backlog.
    assert (await mediator.raise_irq(89)).outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert await events.next() == wake(5, 0, 89)
    events.cancel()


async def test_reattach_continues_after_what_was_received(mediator) -> None:
    events = mediator.attach("domu2")
    assert await events.next() == start(1, 0, RAM_BASE)
    events.cancel()
    assert (await mediator.raise_irq(97)).outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED

    events = mediator.attach("domu2")
    assert await events.next() == wake(2, 0, 97)
    events.cancel()


async def test_aarch32_domain_has_no_smc64_calls(mediator) -> None:
    created = await mediator.control.CreateDomain(domu3(aarch32=True))
    assert created.aarch32 is True
    # SMC64 function IDs do not exist for a 32-bit domain.
    assert await mediator.call("domu3", CPU_ON_64, 1, 0x8008_0000, 0) == [
        0xFFFF_FFFF_FFFF_FFFF,
        0,
        0,
        0,
    ]
    # A Thumb entry point (bit 0 set) is valid for it.
    assert await mediator.call("domu3", CPU_ON, 1, 0x8008_0001, 0) == [0, 0, 0, 0]
    # ...but not for a 64-bit domain.
    assert await mediator.call("domu1", CPU_ON_64, 1, 0x4008_0001, 0) == [
        INVALID_ADDRESS,
        0,
        0,
        0,
    ]
