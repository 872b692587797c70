"""The authorization matrix of docs/security.md, cell by cell, on the development listener.

``MATRIX`` is the doc's table written out as data: one row per kind of caller (as the
development listener learns it from ``x-mediator-principal`` / ``x-mediator-domain``),
one column per RPC of the two services, each cell the gRPC status the doc promises
(``OK`` meaning "allowed"). A test asserts the columns are exactly the methods of the
proto, so a new RPC cannot be added without deciding its row here.

Each cell runs against a fresh server:
- an allowed cell sends a request that changes nothing and expects what that request
  gets once authorized (OK, or NOT_FOUND / INVALID_ARGUMENT: not an auth status);
- a refused cell sends a request that *would* change the system (SYSTEM_OFF, destroying
  domu2, ...) and expects the refusal with ListDomains and GetSystem unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import grpc
import pytest

from mediatord.api.mediator.v1 import mediator_pb2 as pb

OK: Final = grpc.StatusCode.OK
UNAUTH: Final = grpc.StatusCode.UNAUTHENTICATED
DENIED: Final = grpc.StatusCode.PERMISSION_DENIED
AUTH_CODES: Final = (UNAUTH, DENIED)
DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
PSCI_VERSION: Final = 0x8400_0000
SYSTEM_OFF: Final = 0x8400_0008
POLLS: Final = 200

Metadata = tuple[tuple[str, str], ...]

# How each row's caller presents itself on the development listener.
PRINCIPALS: Final[dict[str, Metadata]] = {
    "anonymous": (),
    "operator/ops": ((PRINCIPAL_KEY, "operator/ops"),),
    "operator/ops naming domu1": ((PRINCIPAL_KEY, "operator/ops"), (DOMAIN_KEY, "domu1")),
    "domain/dom0 for dom0": ((PRINCIPAL_KEY, "domain/dom0"), (DOMAIN_KEY, "dom0")),
    "domain/dom0 for domu1": ((PRINCIPAL_KEY, "domain/dom0"), (DOMAIN_KEY, "domu1")),
    "domain/domu1 for domu1": ((PRINCIPAL_KEY, "domain/domu1"), (DOMAIN_KEY, "domu1")),
    "domain/domu1 for domu2": ((PRINCIPAL_KEY, "domain/domu1"), (DOMAIN_KEY, "domu2")),
    "domain/nosuch": ((PRINCIPAL_KEY, "domain/nosuch"), (DOMAIN_KEY, "nosuch")),
    "malformed bogus": ((PRINCIPAL_KEY, "bogus"), (DOMAIN_KEY, "domu1")),
    "malformed operator/": ((PRINCIPAL_KEY, "operator/"),),
    # Without x-mediator-principal, x-mediator-domain names the caller (and the target).
    "x-mediator-domain dom0": ((DOMAIN_KEY, "dom0"),),
    "x-mediator-domain domu1": ((DOMAIN_KEY, "domu1"),),
    "x-mediator-domain nosuch": ((DOMAIN_KEY, "nosuch"),),
    # The target of a Guest RPC is required on the development listener (security.md,
    # "Identity"); a missing one is UNAUTHENTICATED, as test_identity.py checks.
    "domain/domu1 without a target": ((PRINCIPAL_KEY, "domain/domu1"),),
}

COLUMNS: Final = (
    "Guest/Call",
    "Guest/CallStream",
    "Guest/Attach",
    "Control/GetSystem",
    "Control/ListDomains",
    "Control/WatchEvents",
    "Control/CreateDomain",
    "Control/DestroyDomain",
    "Control/AssignDevice",
    "Control/ReleaseDevice",
    "Control/RaiseInterrupt",
    "Control/InjectFault",
    "Control/ExportState",
    "Guest/SuspendVeto",
    "Control/RequestSystemSuspend",
)

# docs/security.md "The matrix". Columns as COLUMNS: Guest RPCs | Control reads | other Control.
# fmt: off
MATRIX: Final[dict[str, tuple[grpc.StatusCode, ...]]] = {
    "anonymous":                     (UNAUTH,  UNAUTH,  UNAUTH,  OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      UNAUTH, OK),      # noqa: E501
    "operator/ops":                  (DENIED,  DENIED,  DENIED,  OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      DENIED, OK),      # noqa: E501
    "operator/ops naming domu1":     (DENIED,  DENIED,  DENIED,  OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      OK,      DENIED, OK),      # noqa: E501
    "domain/dom0 for dom0":          (OK,      OK,      OK,      OK,      OK,      OK,      DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  OK,     OK),  # noqa: E501
    "domain/dom0 for domu1":         (DENIED,  DENIED,  DENIED,  OK,      OK,      OK,      DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED, OK),  # noqa: E501
    "domain/domu1 for domu1":        (OK,      OK,      OK,      DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  OK,     DENIED),  # noqa: E501
    "domain/domu1 for domu2":        (DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED, DENIED),  # noqa: E501
    "domain/nosuch":                 (UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH, UNAUTH),  # noqa: E501
    "malformed bogus":               (UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH, UNAUTH),  # noqa: E501
    "malformed operator/":           (UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH, UNAUTH),  # noqa: E501
    "x-mediator-domain dom0":        (OK,      OK,      OK,      OK,      OK,      OK,      DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  OK,     OK),  # noqa: E501
    "x-mediator-domain domu1":       (OK,      OK,      OK,      DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  OK,     DENIED),  # noqa: E501
    "x-mediator-domain nosuch":      (UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH,  UNAUTH, UNAUTH),  # noqa: E501
    "domain/domu1 without a target": (UNAUTH,  UNAUTH,  UNAUTH,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  DENIED,  UNAUTH, DENIED),  # noqa: E501
}
# fmt: on


def proto_methods() -> set[str]:
    return {
        f"{service.name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_matrix_covers_every_rpc_of_the_proto() -> None:
    assert {s.name for s in pb.DESCRIPTOR.services_by_name.values()} == {"Guest", "Control"}
    assert set(COLUMNS) == proto_methods()
    assert len(COLUMNS) == len(set(COLUMNS)) == 15
    assert set(MATRIX) == set(PRINCIPALS)
    for row, cells in MATRIX.items():
        assert len(cells) == len(COLUMNS), row
        assert set(cells) <= {OK, UNAUTH, DENIED}, row
    assert set(HARMLESS) == set(HARMFUL) == set(COLUMNS)


# ------------------------------------------------------------------------ probes
#
# A probe is ``async (mediator, metadata) -> (status, reply)``. HARMLESS probes change
# nothing and carry the status they get once authorized; HARMFUL probes would change
# the system if they ran, so a refused cell also proves nothing happened.

Probe = Callable[[Any, Metadata], Any]


async def unary(rpc: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        reply = await rpc
    except grpc.aio.AioRpcError as error:
        return error.code(), None
    return OK, reply


async def streamed(call: Any, served: Callable[[], bool] = lambda: False) -> grpc.StatusCode:
    """OK on the first message or once ``served()``; else the status the stream ends with."""
    read = asyncio.ensure_future(call.read())
    try:
        for _ in range(POLLS):
            done, _ = await asyncio.wait({read}, timeout=0.025)
            if done:
                try:
                    message = read.result()
                except grpc.aio.AioRpcError as error:
                    return error.code()
                assert message is not grpc.aio.EOF, "the stream ended without a status"
                return OK
            if served():
                return OK
        raise AssertionError("the stream was neither served nor refused")
    finally:
        call.cancel()
        read.cancel()


async def smc_call(m: Any, md: Metadata, fid: int) -> grpc.StatusCode:
    code, reply = await unary(
        m.guest.Call(pb.SmcCall(function_id=fid), metadata=md, timeout=m.timeout)
    )
    if code is OK and fid == PSCI_VERSION:
        assert list(reply.regs) == [0x10001, 0, 0, 0]
    return code


async def smc_stream(m: Any, md: Metadata, fid: int) -> grpc.StatusCode:
    call = m.guest.CallStream(iter([pb.SmcCall(function_id=fid)]), metadata=md, timeout=m.timeout)
    try:
        replies = [list(r.regs) async for r in call]
    except grpc.aio.AioRpcError as error:
        return error.code()
    if fid == PSCI_VERSION:
        assert replies == [[0x10001, 0, 0, 0]]
    return OK


async def attach(m: Any, md: Metadata) -> grpc.StatusCode:
    return await streamed(m.guest.Attach(pb.AttachRequest(), metadata=md, timeout=m.timeout))


async def watch(m: Any, md: Metadata) -> grpc.StatusCode:
    before = len(m.server.engine.watchers)
    call = m.control.WatchEvents(pb.WatchEventsRequest(), metadata=md, timeout=m.timeout)
    return await streamed(call, lambda: len(m.server.engine.watchers) > before)


async def veto(m: Any, md: Metadata) -> grpc.StatusCode:
    code, _ = await unary(
        m.guest.SuspendVeto(pb.SuspendVetoRequest(reason="probe"), metadata=md, timeout=m.timeout)
    )
    return code


async def control(m: Any, method: str, request: Any, md: Metadata) -> grpc.StatusCode:
    code, _ = await unary(getattr(m.control, method)(request, metadata=md, timeout=m.timeout))
    return code


HARMLESS: Final[dict[str, tuple[Probe, grpc.StatusCode]]] = {
    "Guest/Call": (lambda m, md: smc_call(m, md, PSCI_VERSION), OK),
    "Guest/CallStream": (lambda m, md: smc_stream(m, md, PSCI_VERSION), OK),
    "Guest/Attach": (attach, OK),
    "Control/GetSystem": (lambda m, md: control(m, "GetSystem", pb.GetSystemRequest(), md), OK),
    "Control/ListDomains": (
        lambda m, md: control(m, "ListDomains", pb.ListDomainsRequest(), md),
        OK,
    ),
    "Control/WatchEvents": (watch, OK),
    "Control/CreateDomain": (
        lambda m, md: control(m, "CreateDomain", pb.CreateDomainRequest(name="p", vcpus=0), md),
        grpc.StatusCode.INVALID_ARGUMENT,  # 0 vCPUs
    ),
    "Control/DestroyDomain": (
        lambda m, md: control(m, "DestroyDomain", pb.DestroyDomainRequest(name="nosuch"), md),
        grpc.StatusCode.NOT_FOUND,
    ),
    "Control/AssignDevice": (
        lambda m, md: control(
            m, "AssignDevice", pb.AssignDeviceRequest(domain="nosuch", device="UART_1"), md
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "Control/ReleaseDevice": (
        lambda m, md: control(
            m, "ReleaseDevice", pb.ReleaseDeviceRequest(domain="nosuch", device="UART_1"), md
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "Control/RaiseInterrupt": (
        lambda m, md: control(m, "RaiseInterrupt", pb.RaiseInterruptRequest(irq=1), md),
        grpc.StatusCode.INVALID_ARGUMENT,  # IRQ 1 is not wired
    ),
    "Control/InjectFault": (
        lambda m, md: control(
            m, "InjectFault", pb.InjectFaultRequest(step="save_gic", count=0), md
        ),
        OK,
    ),
    "Control/ExportState": (
        lambda m, md: control(m, "ExportState", pb.ExportStateRequest(), md),
        OK,
    ),
    "Guest/SuspendVeto": (
        veto,
        grpc.StatusCode.FAILED_PRECONDITION,  # no request is open
    ),
    "Control/RequestSystemSuspend": (
        lambda m, md: control(m, "RequestSystemSuspend", pb.RequestSystemSuspendRequest(), md),
        grpc.StatusCode.INVALID_ARGUMENT,  # a deadline of 0 ms
    ),
}

HARMFUL: Final[dict[str, Probe]] = {
    "Guest/Call": lambda m, md: smc_call(m, md, SYSTEM_OFF),
    "Guest/CallStream": lambda m, md: smc_stream(m, md, SYSTEM_OFF),
    # Attach takes the domain's events out of its mailbox (event_seq stays, the
    # backlog is not in ListDomains): the refusal itself is what is checked.
    "Guest/Attach": attach,
    "Control/GetSystem": lambda m, md: control(m, "GetSystem", pb.GetSystemRequest(), md),
    "Control/ListDomains": lambda m, md: control(m, "ListDomains", pb.ListDomainsRequest(), md),
    "Control/WatchEvents": watch,
    "Control/CreateDomain": lambda m, md: control(
        m,
        "CreateDomain",
        pb.CreateDomainRequest(name="intruder", vcpus=1, ram_base=0x4000_0000, ram_size=0x10_0000),
        md,
    ),
    "Control/DestroyDomain": lambda m, md: control(
        m, "DestroyDomain", pb.DestroyDomainRequest(name="domu2"), md
    ),
    "Control/AssignDevice": lambda m, md: control(
        m, "AssignDevice", pb.AssignDeviceRequest(domain="domu1", device="USB_0"), md
    ),
    "Control/ReleaseDevice": lambda m, md: control(
        m, "ReleaseDevice", pb.ReleaseDeviceRequest(domain="domu2", device="USB_0"), md
    ),
    # UART_1's interrupt to domu1: delivered, it would move domu1's event_seq.
    "Control/RaiseInterrupt": lambda m, md: control(
        m, "RaiseInterrupt", pb.RaiseInterruptRequest(irq=54), md
    ),
    "Control/InjectFault": lambda m, md: control(
        m, "InjectFault", pb.InjectFaultRequest(step="save_gic", count=1), md
    ),
    # A read, but of every domain's queued events: operators only.
    "Control/ExportState": lambda m, md: control(m, "ExportState", pb.ExportStateRequest(), md),
    "Guest/SuspendVeto": veto,
    # Ready at once: dom0 is sent SUSPEND_REQUEST (its event_seq moves).
    "Control/RequestSystemSuspend": lambda m, md: control(
        m,
        "RequestSystemSuspend",
        pb.RequestSystemSuspendRequest(policy=pb.SUSPEND_POLICY_FORCE, deadline_ms=1000),
        md,
    ),
}


async def snapshot(m: Any) -> tuple[pb.ListDomainsResponse, pb.SystemInfo]:
    return await m.domains(), await m.system()


CELLS: Final = [
    pytest.param(row, column, id=f"{row}|{column}") for row in MATRIX for column in COLUMNS
]


@pytest.mark.parametrize(("row", "column"), CELLS)
async def test_cell(mediator, row: str, column: str) -> None:
    expected = MATRIX[row][COLUMNS.index(column)]
    metadata = PRINCIPALS[row]
    if expected is OK:
        probe, authorized = HARMLESS[column]
        code = await probe(mediator, metadata)
        assert code not in AUTH_CODES, f"{row} refused {column}: {code.name}"
        assert code == authorized
        return
    before = await snapshot(mediator)
    code = await HARMFUL[column](mediator, metadata)
    assert code == expected, f"{row} on {column}: {code.name}, the matrix says {expected.name}"
    assert await snapshot(mediator) == before


async def test_harmful_probes_do_change_the_system(mediator) -> None:
    """The refused cells prove something only if their probe, once allowed, changes
    what :func:`snapshot` compares (SYSTEM_OFF through Call, and one Control write)."""
    for column in (
        "Control/RaiseInterrupt",
        "Control/ReleaseDevice",
        "Control/AssignDevice",
        "Control/DestroyDomain",
        "Control/CreateDomain",
    ):
        before = await snapshot(mediator)
        assert await HARMFUL[column](mediator, ()) is OK, column
        assert await snapshot(mediator) != before, column
    for column, domain in (("Guest/Call", "domu1"), ("Guest/CallStream", "intruder")):
        before = await snapshot(mediator)
        assert await HARMFUL[column](mediator, ((DOMAIN_KEY, domain),)) is OK, column
        assert await snapshot(mediator) != before, column
