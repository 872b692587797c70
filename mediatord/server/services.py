"""The Guest and Control servicers: decode the request, ask the engine, encode.

They hold no state of their own. Authorization already happened in
:class:`mediatord.server.gate.Gate`; here a refusal from the core is
mapped to its gRPC status and everything else becomes a reply.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final, NoReturn

import grpc

from mediatord import logs
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.core.config import DomainConfig
from mediatord.core.mediator import Refusal, Refused
from mediatord.server import convert, export
from mediatord.server.auth import (
    EVENT_STREAM_KEY,
    LAST_EVENT_KEY,
    LAST_EVENT_NONE,
    LAST_EVENT_NOTHING,
    TARGET_DOMAIN,
    metadata_value,
)
from mediatord.server.engine import WATCH_LIMIT, Aborted, Engine

Context = grpc.aio.ServicerContext[Any, Any]

STATUS: Final = {
    Refusal.UNKNOWN_DOMAIN: grpc.StatusCode.UNAUTHENTICATED,
    Refusal.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Refusal.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Refusal.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Refusal.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Refusal.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
CONDUITS: Final = frozenset(pb.Conduit.values())
MAX_SEQ: Final = 2**64 - 1
MAX_SHOWN: Final = 64  # of a bad metadata value, in its error
# A veto's reason is for logs and the operator, not a payload.
MAX_REASON: Final = 1024

log = logs.get("mediatord.rpc")


async def refuse(context: Context, refused: Refused, **fields: object) -> NoReturn:
    log.info("refused", reason=refused.reason.value, message=refused.message, **fields)
    await context.abort(STATUS[refused.reason], refused.message)


def parse_last_event(value: str | None) -> tuple[str | None, int] | Refused | None:
    """``x-mediator-last-event: STREAM/SEQ`` as (stream id, seq); ``0`` (nothing
    received yet, not even the stream id) as (None, 0); None if absent or
    ``none`` (a new agent's first Attach)."""
    if value is None or value == LAST_EVENT_NONE:
        return None
    if value == LAST_EVENT_NOTHING:
        return None, 0
    stream_id, slash, seq = value.rpartition("/")
    well_formed = seq.isascii() and seq.isdecimal() and len(seq) <= len(str(MAX_SEQ))
    if not slash or not stream_id or not well_formed or int(seq) > MAX_SEQ:
        shown = value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "..."
        return Refused(
            Refusal.INVALID_ARGUMENT,
            f"{LAST_EVENT_KEY} must be STREAM/SEQ (the {EVENT_STREAM_KEY} of an earlier "
            f"Attach and the seq of the last event received from it), "
            f"{LAST_EVENT_NOTHING!r} (nothing received, not even the stream) or "
            f"{LAST_EVENT_NONE!r} (a new agent), not {shown!r}",
        )
    return stream_id, int(seq)


async def bad_conduit(context: Context, request: pb.SmcCall, domain: str) -> NoReturn:
    refused = Refused(Refusal.INVALID_ARGUMENT, f"unknown conduit {request.conduit}")
    await refuse(context, refused, domain=domain)


async def refuse_call(
    context: Context, result: Refused | Aborted, request: pb.SmcCall, domain: str
) -> NoReturn:
    """A guest call the engine did not answer with registers."""
    if isinstance(result, Aborted):
        refused = Refused(Refusal.FAILED_PRECONDITION, result.reason)
        await refuse(context, refused, domain=domain, vcpu=request.vcpu)
    function = f"{request.function_id:#010x}"
    await refuse(context, result, domain=domain, vcpu=request.vcpu, function=function)


def calling_domain() -> str:
    # The Gate resolved and authorized it before the handler ran.
    return TARGET_DOMAIN.get()


class GuestService(pb_grpc.GuestServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def Call(self, request: pb.SmcCall, context: Context) -> pb.SmcResult:
        domain = calling_domain()
        if request.conduit not in CONDUITS:
            await bad_conduit(context, request, domain)
        result = await self.engine.call(
            domain, request.vcpu, request.function_id, request.args, context.time_remaining
        )
        if isinstance(result, (Refused, Aborted)):
            await refuse_call(context, result, request, domain)
        return pb.SmcResult(regs=result)

    async def CallStream(
        self, request_iterator: AsyncIterator[pb.SmcCall], context: Context
    ) -> AsyncIterator[pb.SmcResult]:
        # Call's steps inline rather than a shared coroutine awaited per message:
        # that would be one more coroutine every message runs through. What does
        # not change within the stream is looked up once.
        domain = calling_domain()
        call = self.engine.call
        time_remaining = context.time_remaining
        async for request in request_iterator:
            if request.conduit not in CONDUITS:
                await bad_conduit(context, request, domain)
            result = await call(
                domain, request.vcpu, request.function_id, request.args, time_remaining
            )
            if isinstance(result, (Refused, Aborted)):
                await refuse_call(context, result, request, domain)
            yield pb.SmcResult(regs=result)

    async def Attach(
        self, request: pb.AttachRequest, context: Context
    ) -> AsyncIterator[pb.VcpuEvent]:
        domain = calling_domain()
        said = metadata_value(context.invocation_metadata(), LAST_EVENT_KEY)
        last_event = parse_last_event(said)
        if isinstance(last_event, Refused):
            await refuse(context, last_event, domain=domain)
        attached = self.engine.attach(domain, last_event, acking=said is not None)
        if isinstance(attached, Refused):
            await refuse(context, attached, domain=domain)
        mailbox, generation = attached
        await context.send_initial_metadata(((EVENT_STREAM_KEY, mailbox.stream_id),))
        async for event in mailbox.follow(generation):
            yield convert.vcpu_event(event)
        if mailbox.closed is not None:
            code = (
                grpc.StatusCode.UNAVAILABLE
                if mailbox.shutting_down
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, mailbox.closed)
        await context.abort(
            grpc.StatusCode.ABORTED, f"a newer Attach for {domain} took over its events"
        )

    async def SuspendVeto(
        self, request: pb.SuspendVetoRequest, context: Context
    ) -> pb.SuspendVetoResponse:
        domain = calling_domain()
        if len(request.reason) > MAX_REASON:
            refused = Refused(
                Refusal.INVALID_ARGUMENT, f"the reason is longer than {MAX_REASON} characters"
            )
            await refuse(context, refused, domain=domain)
        result = await self.engine.suspend_veto(domain, request.reason)
        if isinstance(result, Refused):
            await refuse(context, result, rpc="SuspendVeto", domain=domain)
        return pb.SuspendVetoResponse()


class ControlService(pb_grpc.ControlServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def CreateDomain(
        self, request: pb.CreateDomainRequest, context: Context
    ) -> pb.DomainInfo:
        result = await self.engine.create_domain(
            DomainConfig(
                name=request.name,
                id=0,
                vcpus=request.vcpus,
                ram_base=request.ram_base,
                ram_size=request.ram_size,
                aarch32=request.aarch32,
                devices=tuple(request.devices),
            )
        )
        if isinstance(result, Refused):
            await refuse(context, result, rpc="CreateDomain", domain=request.name)
        return convert.domain_info(result.domain)

    async def DestroyDomain(
        self, request: pb.DestroyDomainRequest, context: Context
    ) -> pb.DestroyDomainResponse:
        result = await self.engine.destroy_domain(request.name)
        if isinstance(result, Refused):
            await refuse(context, result, rpc="DestroyDomain", domain=request.name)
        return pb.DestroyDomainResponse()

    async def ListDomains(
        self, request: pb.ListDomainsRequest, context: Context
    ) -> pb.ListDomainsResponse:
        def read() -> pb.ListDomainsResponse:
            domains = sorted(self.engine.mediator.system.domains.values(), key=lambda d: d.id)
            return pb.ListDomainsResponse(domains=[convert.domain_info(d) for d in domains])

        reply = await self.engine.view(read)
        if isinstance(reply, Refused):
            await refuse(context, reply, rpc="ListDomains")
        return reply

    async def GetSystem(self, request: pb.GetSystemRequest, context: Context) -> pb.SystemInfo:
        reply = await self.engine.view(lambda: convert.system_info(self.engine.mediator))
        if isinstance(reply, Refused):
            await refuse(context, reply, rpc="GetSystem")
        return reply

    async def RaiseInterrupt(
        self, request: pb.RaiseInterruptRequest, context: Context
    ) -> pb.RaiseInterruptResponse:
        result = await self.engine.raise_interrupt(request.irq, request.domain, request.vcpu)
        if isinstance(result, Refused):
            await refuse(context, result, rpc="RaiseInterrupt", irq=request.irq)
        return convert.raised(result)

    async def AssignDevice(
        self, request: pb.AssignDeviceRequest, context: Context
    ) -> pb.AssignDeviceResponse:
        result = await self.engine.assign_device(request.domain, request.device)
        if isinstance(result, Refused):
            await refuse(context, result, rpc="AssignDevice", device=request.device)
        return pb.AssignDeviceResponse()

    async def ReleaseDevice(
        self, request: pb.ReleaseDeviceRequest, context: Context
    ) -> pb.ReleaseDeviceResponse:
        result = await self.engine.release_device(request.domain, request.device)
        if isinstance(result, Refused):
            await refuse(context, result, rpc="ReleaseDevice", device=request.device)
        return pb.ReleaseDeviceResponse()

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.SystemEvent]:
        watcher = self.engine.watch()
        try:
            while True:
                item = await watcher.queue.get()
                if item is None:
                    break
                event = convert.system_event(item.effect)
                if event is not None:
                    event.seq = item.seq
                    event.time_ns = item.time_ns
                    yield event
        finally:
            self.engine.unwatch(watcher)
        if watcher.overflowed:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this WatchEvents stream fell {WATCH_LIMIT} events behind; watch again",
            )
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def RequestSystemSuspend(
        self, request: pb.RequestSystemSuspendRequest, context: Context
    ) -> pb.RequestSystemSuspendResponse:
        policy = convert.SUSPEND_POLICY_OF.get(request.policy)
        if policy is None:
            refused = Refused(Refusal.INVALID_ARGUMENT, f"unknown policy {request.policy}")
            await refuse(context, refused, rpc="RequestSystemSuspend")
        # Set by the Gate when the hardware domain itself asks.
        by_hardware_domain = TARGET_DOMAIN.get(None) is not None
        result = await self.engine.request_system_suspend(
            policy, request.deadline_ms / 1000, by_hardware_domain
        )
        if isinstance(result, Refused):
            await refuse(context, result, rpc="RequestSystemSuspend")
        return convert.suspend_coordinated(result)

    async def ExportState(
        self, request: pb.ExportStateRequest, context: Context
    ) -> pb.ExportStateResponse:
        engine = self.engine
        journal = None if engine.journal is None else engine.journal.status()
        doc = await engine.view(lambda: export.document(engine.mediator, engine.queued(), journal))
        if isinstance(doc, Refused):
            await refuse(context, doc, rpc="ExportState")
        if engine.journal is not None:
            # Answered only now that everything the document shows is durable.
            doc["journal"]["durable_seq"] = engine.journal.durable
        return pb.ExportStateResponse(json=json.dumps(doc, indent=2))

    async def InjectFault(
        self, request: pb.InjectFaultRequest, context: Context
    ) -> pb.InjectFaultResponse:
        refused = await self.engine.inject_fault(request.step, request.count, request.error)
        if refused is not None:
            await refuse(context, refused, rpc="InjectFault", step=request.step)
        return pb.InjectFaultResponse()
