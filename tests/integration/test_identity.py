"""Identity and rights on the development listener (design sections 3 and 4).

Every refused call must leave the system exactly as it was: each refusal is
checked against the full ListDomains response before and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from mediatord.api.mediator.v1 import mediator_pb2 as pb

PSCI_VERSION = 0x8400_0000
AFFINITY_INFO = 0x8400_0004
AFFINITY_INFO_64 = 0xC400_0004
SYSTEM_OFF = 0x8400_0008
MAX64 = 2**64 - 1
INVALID_PARAMETERS = 0xFFFF_FFFF_FFFF_FFFE


@asynccontextmanager
async def unchanged(mediator) -> AsyncIterator[None]:
    """The block must not change any domain (ListDomains compared in full)."""
    before = await mediator.domains()
    system_before = await mediator.system()
    yield
    assert await mediator.domains() == before
    assert await mediator.system() == system_before


async def guest_codes(mediator, metadata, function_id: int = SYSTEM_OFF) -> list[grpc.StatusCode]:
    """Status of Call, CallStream and Attach for the given metadata (all must fail).

    The Call is a SYSTEM_OFF, so a call that wrongly went through would also
    change the state that :func:`unchanged` compares.
    """
    call = await mediator.refusal(
        mediator.guest.Call(
            pb.SmcCall(function_id=function_id), metadata=metadata, timeout=mediator.timeout
        )
    )
    stream = await mediator.call_stream_refusal(metadata)
    attached = mediator.guest.Attach(
        pb.AttachRequest(), metadata=metadata, timeout=mediator.timeout
    )
    try:
        event = await asyncio.wait_for(attached.read(), mediator.timeout)
    except grpc.aio.AioRpcError as error:
        attach_code = error.code()
    else:
        raise AssertionError(f"Attach with {metadata!r} was served: {event!r}")
    return [call.code(), stream.code(), attach_code]


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-metadata"),
        pytest.param((("x-mediator-principal", "domain/domu1"),), id="principal-only"),
        pytest.param((("x-mediator-domain", "domu9"),), id="unknown-domain"),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "domain/domu9")),
            id="unknown-principal-domain",
        ),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "domu1")),
            id="principal-without-kind",
        ),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "domain/")),
            id="principal-without-name",
        ),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "admin/root")),
            id="principal-unknown-kind",
        ),
    ],
)
async def test_guest_unauthenticated(mediator, metadata) -> None:
    async with unchanged(mediator):
        codes = await guest_codes(mediator, metadata)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(
            (("x-mediator-domain", "domu2"), ("x-mediator-principal", "domain/domu1")),
            id="domu1-for-domu2",
        ),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "domain/dom0")),
            id="dom0-for-domu1",
        ),
        pytest.param(
            (("x-mediator-domain", "domu1"), ("x-mediator-principal", "operator/alice")),
            id="operator",
        ),
    ],
)
async def test_guest_permission_denied(mediator, metadata) -> None:
    async with unchanged(mediator):
        codes = await guest_codes(mediator, metadata)
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3


async def test_stated_principal_matching_the_domain_is_served(mediator) -> None:
    metadata = mediator.identity("domu1", "domain/domu1")
    reply = await mediator.guest.Call(pb.SmcCall(function_id=PSCI_VERSION), metadata=metadata)
    assert list(reply.regs) == [0x10001, 0, 0, 0]
    assert await mediator.call_stream(metadata, [pb.SmcCall(function_id=PSCI_VERSION)]) == [
        [0x10001, 0, 0, 0]
    ]
    events = mediator.attach("domu1", "domain/domu1")
    assert await events.next() == pb.VcpuEvent(
        seq=1, vcpu=0, start=pb.Start(entry_point=0x4000_0000, context_id=0)
    )
    events.cancel()


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        pytest.param(
            pb.SmcCall(vcpu=2, function_id=PSCI_VERSION),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="vcpu-2",
        ),
        pytest.param(
            pb.SmcCall(vcpu=4_000_000_000, function_id=PSCI_VERSION),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="vcpu-4e9",
        ),
        pytest.param(
            pb.SmcCall(function_id=PSCI_VERSION, args=[0] * 18),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="18-args",
        ),
        pytest.param(
            pb.SmcCall(function_id=SYSTEM_OFF, args=[MAX64] * 18),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="18-args-system-off",
        ),
        pytest.param(
            pb.SmcCall(function_id=PSCI_VERSION, conduit=7),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
            id="conduit-7",
        ),
        pytest.param(
            pb.SmcCall(function_id=SYSTEM_OFF, conduit=2),  # type: ignore[arg-type]
            grpc.StatusCode.INVALID_ARGUMENT,
            id="conduit-2-system-off",
        ),
        pytest.param(
            pb.SmcCall(vcpu=1, function_id=PSCI_VERSION),
            grpc.StatusCode.FAILED_PRECONDITION,
            id="off-vcpu",
        ),
        pytest.param(
            pb.SmcCall(vcpu=1, function_id=SYSTEM_OFF),
            grpc.StatusCode.FAILED_PRECONDITION,
            id="off-vcpu-system-off",
        ),
    ],
)
async def test_bad_calls_are_refused(mediator, request_, code) -> None:
    metadata = mediator.identity("domu1")
    async with unchanged(mediator):
        error = await mediator.refusal(
            mediator.guest.Call(request_, metadata=metadata, timeout=mediator.timeout)
        )
        assert error.code() == code
        # The same call inside a CallStream fails the stream the same way.
        stream = mediator.guest.CallStream(
            iter([pb.SmcCall(function_id=PSCI_VERSION), request_]),
            metadata=metadata,
            timeout=mediator.timeout,
        )
        first = await asyncio.wait_for(stream.read(), mediator.timeout)
        assert list(first.regs) == [0x10001, 0, 0, 0]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(stream.read(), mediator.timeout)
        assert info.value.code() == code


async def test_full_width_registers_are_accepted(mediator) -> None:
    async with unchanged(mediator):
        # 17 arguments of 2**64-1 is the most an SMC carries.
        assert await mediator.call("domu1", PSCI_VERSION, *[MAX64] * 17) == [0x10001, 0, 0, 0]
        # SMC32: the upper halves are ignored, so this asks about MPIDR 1 at level 0.
        assert await mediator.call(
            "domu1", AFFINITY_INFO, 0xFFFF_FFFF_0000_0001, 0xFFFF_FFFF_0000_0000
        ) == [
            1,
            0,
            0,
            0,
        ]
        # SMC64: the full register counts, and such an MPIDR is invalid.
        assert await mediator.call("domu1", AFFINITY_INFO_64, MAX64, 0) == [
            INVALID_PARAMETERS,
            0,
            0,
            0,
        ]
        # HVC is served like SMC.
        reply = await mediator.guest.Call(
            pb.SmcCall(function_id=PSCI_VERSION, conduit=pb.CONDUIT_HVC, args=[MAX64]),
            metadata=mediator.identity("domu1"),
        )
        assert list(reply.regs) == [0x10001, 0, 0, 0]


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="anonymous"),
        pytest.param((("x-mediator-principal", "operator/alice"),), id="operator"),
    ],
)
async def test_control_open_to_local_callers_and_operators(mediator, metadata) -> None:
    listing = await mediator.control.ListDomains(pb.ListDomainsRequest(), metadata=metadata)
    assert [d.name for d in listing.domains] == ["dom0", "domu1", "domu2"]
    system = await mediator.control.GetSystem(pb.GetSystemRequest(), metadata=metadata)
    assert system.board == "zcu102"
    raised = await mediator.control.RaiseInterrupt(
        pb.RaiseInterruptRequest(irq=97), metadata=metadata
    )
    assert raised.outcome == pb.RaiseInterruptResponse.OUTCOME_DELIVERED
    assert raised.domain == "domu2"
    created = await mediator.control.CreateDomain(
        pb.CreateDomainRequest(name="domu3", vcpus=1, ram_base=0x8000_0000, ram_size=0x100_0000),
        metadata=metadata,
    )
    assert created.id == 3
    await mediator.control.DestroyDomain(pb.DestroyDomainRequest(name="domu3"), metadata=metadata)
    assert [d.name for d in (await mediator.domains()).domains] == ["dom0", "domu1", "domu2"]


CONTROL_CALLS = {
    "GetSystem": lambda c, md: c.GetSystem(pb.GetSystemRequest(), metadata=md),
    "ListDomains": lambda c, md: c.ListDomains(pb.ListDomainsRequest(), metadata=md),
    "CreateDomain": lambda c, md: c.CreateDomain(
        pb.CreateDomainRequest(name="domu3", vcpus=1, ram_base=0x8000_0000, ram_size=0x100_0000),
        metadata=md,
    ),
    "DestroyDomain": lambda c, md: c.DestroyDomain(
        pb.DestroyDomainRequest(name="domu2"), metadata=md
    ),
    "RaiseInterrupt": lambda c, md: c.RaiseInterrupt(pb.RaiseInterruptRequest(irq=54), metadata=md),
}


@pytest.mark.parametrize("rpc", sorted(CONTROL_CALLS))
@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((("x-mediator-domain", "domu1"),), id="domu1"),
        pytest.param((("x-mediator-principal", "domain/domu2"),), id="principal-domu2"),
    ],
)
async def test_control_refused_to_domus(mediator, rpc, metadata) -> None:
    async with unchanged(mediator):
        error = await mediator.refusal(CONTROL_CALLS[rpc](mediator.control, metadata))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((("x-mediator-domain", "dom0"),), id="domain"),
        pytest.param((("x-mediator-principal", "domain/dom0"),), id="principal"),
    ],
)
async def test_hardware_domain_reads_but_does_not_manage(mediator, metadata) -> None:
    system = await CONTROL_CALLS["GetSystem"](mediator.control, metadata)
    system.ClearField("now_ns")
    system.ClearField("counter")
    system.ClearField("last_suspend_steps")
    system.ClearField("last_resume_steps")
    assert system == await mediator.system()
    listing = await CONTROL_CALLS["ListDomains"](mediator.control, metadata)
    assert listing == await mediator.domains()
    for rpc in ("CreateDomain", "DestroyDomain", "RaiseInterrupt"):
        async with unchanged(mediator):
            error = await mediator.refusal(CONTROL_CALLS[rpc](mediator.control, metadata))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, rpc


async def test_control_with_unknown_domain_identity_is_unauthenticated(mediator) -> None:
    async with unchanged(mediator):
        error = await mediator.refusal(
            mediator.control.ListDomains(
                pb.ListDomainsRequest(), metadata=(("x-mediator-domain", "domu9"),)
            )
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
