"""The operator's client: the Control service, with typed errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from mediator_client.calls import ClientTls, channel
from mediator_client.errors import from_rpc
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.server.auth import PRINCIPAL_KEY

T = TypeVar("T")


class Operator:
    """Control RPCs. Without ``principal`` it is an anonymous local caller (what the
    development listener allows); with one it states ``operator/<name>``."""

    def __init__(
        self,
        target: str,
        *,
        principal: str | None = None,
        timeout: float = 10.0,
        tls: ClientTls | None = None,
    ):
        self.target = target
        self.timeout = timeout
        if principal is not None and "/" not in principal:
            principal = f"operator/{principal}"
        self.metadata: tuple[tuple[str, str], ...] = (
            () if principal is None else ((PRINCIPAL_KEY, principal),)
        )
        self._channel = channel(target, tls)
        self.stub: pb_grpc.ControlAsyncStub = pb_grpc.ControlStub(self._channel)

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, rpc: Callable[..., Awaitable[T]], request: Message, deadline_s: float | None = None
    ) -> T:
        """``deadline_s``: the RPC's timeout (default: the operator's)."""
        try:
            return await rpc(
                request,
                metadata=self.metadata,
                timeout=self.timeout if deadline_s is None else deadline_s,
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc(error) from None

    async def system(self) -> pb.SystemInfo:
        return await self._call(self.stub.GetSystem, pb.GetSystemRequest())

    async def domains(self) -> list[pb.DomainInfo]:
        reply = await self._call(self.stub.ListDomains, pb.ListDomainsRequest())
        return list(reply.domains)

    async def domain(self, name: str) -> pb.DomainInfo | None:
        return next((d for d in await self.domains() if d.name == name), None)

    async def create_domain(
        self,
        name: str,
        vcpus: int,
        ram_base: int,
        ram_size: int,
        *,
        aarch32: bool = False,
        devices: tuple[str, ...] = (),
    ) -> pb.DomainInfo:
        request = pb.CreateDomainRequest(
            name=name,
            vcpus=vcpus,
            ram_base=ram_base,
            ram_size=ram_size,
            aarch32=aarch32,
            devices=devices,
        )
        return await self._call(self.stub.CreateDomain, request)

    async def destroy_domain(self, name: str) -> None:
        await self._call(self.stub.DestroyDomain, pb.DestroyDomainRequest(name=name))

    async def assign_device(self, domain: str, device: str) -> None:
        await self._call(
            self.stub.AssignDevice, pb.AssignDeviceRequest(domain=domain, device=device)
        )

    async def release_device(self, domain: str, device: str) -> None:
        await self._call(
            self.stub.ReleaseDevice, pb.ReleaseDeviceRequest(domain=domain, device=device)
        )

    async def raise_irq(
        self, irq: int, domain: str = "", vcpu: int = 0
    ) -> pb.RaiseInterruptResponse:
        return await self._call(
            self.stub.RaiseInterrupt, pb.RaiseInterruptRequest(irq=irq, domain=domain, vcpu=vcpu)
        )

    async def inject_fault(self, step: str, count: int = 1, error: int = 0) -> None:
        await self._call(
            self.stub.InjectFault, pb.InjectFaultRequest(step=step, count=count, error=error)
        )

    async def request_system_suspend(
        self, policy: pb.SuspendPolicy.ValueType, deadline_ms: int
    ) -> pb.RequestSystemSuspendResponse:
        """Control.RequestSystemSuspend: answered when every domU has suspended (or
        vetoed, or the deadline passed); the call's timeout covers the deadline."""
        request = pb.RequestSystemSuspendRequest(policy=policy, deadline_ms=deadline_ms)
        return await self._call(
            self.stub.RequestSystemSuspend, request, self.timeout + deadline_ms / 1000
        )

    async def export_state(self) -> dict[str, Any]:
        """The whole state as one document (docs/journal.md, "State export")."""
        reply = await self._call(self.stub.ExportState, pb.ExportStateRequest())
        document: dict[str, Any] = json.loads(reply.json)
        return document

    async def watch(self) -> AsyncIterator[pb.SystemEvent]:
        """Every state change from now on, until the stream ends."""
        stream = self.stub.WatchEvents(pb.WatchEventsRequest(), metadata=self.metadata)
        try:
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as error:
            raise from_rpc(error) from None
