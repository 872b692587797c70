"""Guest agents: one per domain, standing in for the guest kernel's PSCI/EEMI drivers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc

from mediator_client import eemi, psci
from mediator_client.calls import Call, ClientTls, Event, Regs, channel, raw
from mediator_client.errors import DomainGoneError, PsciError, UnavailableError, from_rpc
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.core import effects as fx
from mediatord.core.eemi import CAP_WAKEUP, PM_SIP_SVC, PmApi
from mediatord.core.psci import AffinityInfo, PsciRet
from mediatord.server.auth import (
    DOMAIN_KEY,
    EVENT_STREAM_KEY,
    LAST_EVENT_KEY,
    LAST_EVENT_NONE,
    LAST_EVENT_NOTHING,
    PRINCIPAL_KEY,
    metadata_value,
)

T = TypeVar("T")
MAX_VCPUS: Final = 128
RECONNECT_ATTEMPTS: Final = 50
RECONNECT_DELAY_S: Final = 0.1


class VcpuHandler:
    """What one vCPU does with its events. Subclass and override what you need;
    each vCPU's events reach its handler one at a time, in order."""

    async def on_start(self, agent: AsyncGuestAgent, vcpu: int, start: fx.Start) -> None: ...
    async def on_resume(self, agent: AsyncGuestAgent, vcpu: int, resume: fx.Resume) -> None: ...
    async def on_wake(self, agent: AsyncGuestAgent, vcpu: int, irq: int) -> None: ...
    async def on_pause(self, agent: AsyncGuestAgent, vcpu: int) -> None: ...
    async def on_unpause(self, agent: AsyncGuestAgent, vcpu: int) -> None: ...
    async def on_shutdown(self, agent: AsyncGuestAgent, vcpu: int, reason: str) -> None: ...

    async def on_suspend_request(self, agent: AsyncGuestAgent, vcpu: int, deadline_ns: int) -> None:
        """The host is to suspend (Control.RequestSystemSuspend): by default the
        domain suspends itself to RAM, as Linux would on ``echo mem``. Override to
        veto instead (``agent.veto_suspend(reason)``) or to do nothing."""
        if vcpu == 0 and agent.suspend_on_request() is None and not agent.suspend_in_progress:
            # Better a clear veto than a deadline nobody explains.
            await agent.veto_suspend(
                "the agent knows no resume entry point (give AsyncGuestAgent resume_entry)"
            )

    async def handle(self, agent: AsyncGuestAgent, event: Event) -> None:
        kind, vcpu = event.kind, event.vcpu
        match kind:
            case fx.Start():
                await self.on_start(agent, vcpu, kind)
            case fx.Resume():
                await self.on_resume(agent, vcpu, kind)
            case fx.Wake(irq):
                await self.on_wake(agent, vcpu, irq)
            case fx.Pause():
                await self.on_pause(agent, vcpu)
            case fx.Unpause():
                await self.on_unpause(agent, vcpu)
            case fx.Shutdown(reason):
                await self.on_shutdown(agent, vcpu, reason.name)
            case fx.SuspendRequest(deadline):
                await self.on_suspend_request(agent, vcpu, deadline)


@dataclass
class SuspendReport:
    """What ``suspend_to_ram`` did, in order, with the event that resumed it."""

    secondaries_off: list[int] = field(default_factory=list)
    devices_suspended: dict[int, int] = field(default_factory=dict)  # node -> caps held
    resumed_by: Event | None = None
    suspended_at: float = 0.0
    resumed_at: float = 0.0


class AsyncGuestAgent:
    """A domain's agent over grpc.aio. Use ``async with``; ``start()`` follows the
    domain's Attach stream and runs one :class:`VcpuHandler` per vCPU."""

    def __init__(
        self,
        target: str,
        domain: str,
        *,
        principal: str | None = None,
        handler: Callable[[int], VcpuHandler] = lambda vcpu: VcpuHandler(),
        timeout: float = 10.0,
        tls: ClientTls | None = None,
        resume_entry: int | None = None,
    ) -> None:
        """``resume_entry``: where the domain resumes after a suspend it makes on a
        SUSPEND_REQUEST (default: where vCPU 0 last started, the kernel's entry)."""
        self.target = target
        self.tls = tls
        self.domain = domain
        self.metadata: tuple[tuple[str, str], ...] = ((DOMAIN_KEY, domain),)
        if principal is not None:
            self.metadata += ((PRINCIPAL_KEY, principal),)
        self.timeout = timeout
        self.events: list[Event] = []
        # The daemon's numbering of this domain's events, and the last one received:
        # said when attaching again, so that only what was not received comes again.
        self.event_stream: str | None = None
        self.last_seq = 0
        self._attached = False  # whether this agent ever asked for its events
        # What the domain holds through EEMI: node -> capabilities, and its wake sources.
        self.held: dict[int, int] = {}
        self.wake_nodes: set[int] = set()
        self._handler_factory = handler
        self._handlers: dict[int, VcpuHandler] = {}
        self._queues: dict[int, asyncio.Queue[Event]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GuestAsyncStub | None = None
        self._follow: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.error: BaseException | None = None
        self.handler_errors: list[tuple[Event, Exception]] = []
        self.resume_entry = resume_entry
        self.boot_entry: int | None = None  # vCPU 0's last START / RESUME entry point
        # The suspend a SUSPEND_REQUEST started, and what became of it.
        self.suspending: asyncio.Task[SuspendReport] | None = None

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncGuestAgent:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._channel is None:
            self._channel = channel(self.target, self.tls)
            self._stub = pb_grpc.GuestStub(self._channel)

    async def close(self) -> None:
        tasks = [t for t in (self._follow, *self._workers) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._follow, self._workers = None, []
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    # ---------------------------------------------------------------- calls

    async def call(
        self, call: Call[T], vcpu: int = 0, conduit: pb.Conduit.ValueType = pb.CONDUIT_SMC
    ) -> T:
        """Send one SMC from ``vcpu`` and decode its answer."""
        regs = await self.raw(call.function_id, *call.args, vcpu=vcpu, conduit=conduit)
        result = call.decode(regs)
        self._track(call)
        return result

    async def raw(
        self,
        function_id: int,
        *args: int,
        vcpu: int = 0,
        conduit: pb.Conduit.ValueType = pb.CONDUIT_SMC,
    ) -> Regs:
        await self.connect()
        assert self._stub is not None
        request = pb.SmcCall(vcpu=vcpu, function_id=function_id, args=args, conduit=conduit)
        try:
            reply = await self._stub.Call(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc(error) from None
        r = reply.regs
        return (r[0], r[1], r[2], r[3])

    def _track(self, call: Call[Any]) -> None:
        """Remember what the domain holds, so a suspend can put it back."""
        if call.function_id & 0xFFFF_0000 != PM_SIP_SVC:
            return
        api = call.function_id & 0xFFFF
        x1 = call.args[0] if call.args else 0
        node, second = x1 & 0xFFFF_FFFF, x1 >> 32
        if api in (PmApi.REQ_NODE, PmApi.SET_REQUIREMENT):
            self.held[node] = second
        elif api == PmApi.RELEASE_NODE:
            self.held.pop(node, None)
        elif api == PmApi.SET_WAKEUP_SOURCE:
            enable = call.args[1] & 0xFFFF_FFFF if len(call.args) > 1 else 0
            (self.wake_nodes.add if enable else self.wake_nodes.discard)(second)

    # --------------------------------------------------------------- events

    def start(self) -> asyncio.Task[None]:
        """Follow the domain's events in the background (re-attaching after a restart)."""
        if self._follow is None or self._follow.done():
            self._follow = asyncio.create_task(self._run())
        return self._follow

    async def _run(self) -> None:
        attempts = 0
        while True:
            try:
                await self.connect()
                assert self._stub is not None
                # A new agent's first Attach; an Attach again that never learnt the
                # stream (its first broke before the initial metadata): nothing
                # received, so nothing may be taken as received.
                last = (
                    f"{self.event_stream}/{self.last_seq}"
                    if self.event_stream is not None
                    else LAST_EVENT_NOTHING
                    if self._attached
                    else LAST_EVENT_NONE
                )
                self._attached = True
                metadata = (*self.metadata, (LAST_EVENT_KEY, last))
                stream = self._stub.Attach(pb.AttachRequest(), metadata=metadata)
                initial = await stream.initial_metadata()
                stream_id = metadata_value(initial, EVENT_STREAM_KEY)
                if stream_id is not None and stream_id != self.event_stream:
                    # Another numbering (a daemon that lost its state, or a domain
                    # made again under this name): its seq starts over.
                    self.event_stream, self.last_seq = stream_id, 0
                async for message in stream:
                    attempts = 0
                    await self._deliver(Event.from_proto(message))
                return
            except grpc.aio.AioRpcError as error:
                failure = from_rpc(error)
                if isinstance(failure, UnavailableError) and attempts < RECONNECT_ATTEMPTS:
                    # The daemon restarts: a fresh channel, then attach again.
                    attempts += 1
                    await self._reconnect()
                    continue
                self.error = failure
                async with self._changed:
                    self._changed.notify_all()
                if isinstance(failure, DomainGoneError):
                    return
                raise failure from None

    async def _reconnect(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
        await asyncio.sleep(RECONNECT_DELAY_S)

    async def _deliver(self, event: Event) -> None:
        if event.seq <= self.last_seq:
            return  # delivered before (an Attach that did not say what it had)
        self.last_seq = event.seq
        self.events.append(event)
        if event.vcpu == 0 and isinstance(event.kind, fx.Start | fx.Resume):
            self.boot_entry = event.kind.entry_point
        queue = self._queues.get(event.vcpu)
        if queue is None:
            queue = self._queues[event.vcpu] = asyncio.Queue()
            self._handlers[event.vcpu] = self._handler_factory(event.vcpu)
            self._workers.append(asyncio.create_task(self._work(event.vcpu, queue)))
        queue.put_nowait(event)
        async with self._changed:
            self._changed.notify_all()

    async def _work(self, vcpu: int, queue: asyncio.Queue[Event]) -> None:
        handler = self._handlers[vcpu]
        while True:
            event = await queue.get()
            try:
                await handler.handle(self, event)
            except Exception as error:
                # A handler's failure is the agent's bug, not the vCPU's: keep
                # it and go on with the next event.
                self.handler_errors.append((event, error))

    async def wait_for(
        self,
        predicate: Callable[[Event], bool],
        after: int = 0,
        within: float | None = None,
        since: int = 0,
    ) -> Event:
        """The first event with seq > ``after`` matching ``predicate``, among those
        received from position ``since`` of :attr:`events` on (waits for it)."""

        def found() -> Event | None:
            return next((e for e in self.events[since:] if e.seq > after and predicate(e)), None)

        async def wait() -> Event:
            async with self._changed:
                while (event := found()) is None:
                    if self.error is not None:
                        raise self.error
                    await self._changed.wait()
                return event

        self.start()
        return await asyncio.wait_for(wait(), within)

    # ------------------------------------------------------------- suspend

    async def vcpus(self) -> int:
        """How many vCPUs the domain has, found the PSCI way (AFFINITY_INFO)."""
        for vcpu in range(MAX_VCPUS):
            try:
                await self.call(psci.affinity_info(psci.mpidr(vcpu)))
            except PsciError as error:
                if error.code == PsciRet.INVALID_PARAMETERS:
                    return vcpu
                raise
        return MAX_VCPUS

    async def suspend_to_ram(
        self,
        entry_point: int,
        context_id: int = 0,
        secondary_entry: int | None = None,
        resume_timeout: float | None = None,
    ) -> SuspendReport:
        """Linux's ``echo mem > /sys/power/state``: suspend the devices the domain
        holds (wake devices keep WAKEUP), CPU_OFF every secondary from itself,
        SYSTEM_SUSPEND from the boot vCPU; after the RESUME, CPU_ON the
        secondaries again and give the devices back what they held."""
        report = SuspendReport()
        self.start()
        mark = self.last_seq
        for node, caps in sorted(self.held.items()):
            report.devices_suspended[node] = caps
            await self.call(
                eemi.set_requirement(node, CAP_WAKEUP if node in self.wake_nodes else 0)
            )
        count = await self.vcpus()
        for vcpu in range(1, count):
            if await self.call(psci.affinity_info(psci.mpidr(vcpu))) is AffinityInfo.ON:
                await self.call(psci.cpu_off(), vcpu=vcpu)
                report.secondaries_off.append(vcpu)
        report.suspended_at = time.monotonic()
        # The RESUME may overtake the call's own answer (another stream), so count
        # from before the call; only a RESUME at this suspend's entry point and
        # context ID ends the wait (not a RESUME of an earlier suspend).
        since = len(self.events)
        try:
            await self.call(psci.system_suspend(entry_point, context_id), vcpu=0)
        except PsciError:
            # Refused or rolled back: the domain runs on, so undo what we did.
            await self._thaw(report, secondary_entry or entry_point)
            raise
        wanted = fx.Resume(entry_point, context_id)
        report.resumed_by = await self.wait_for(
            lambda e: e.vcpu == 0 and e.kind == wanted, mark, resume_timeout, since
        )
        report.resumed_at = time.monotonic()
        await self._thaw(report, secondary_entry or entry_point)
        return report

    @property
    def suspend_in_progress(self) -> bool:
        return self.suspending is not None and not self.suspending.done()

    def suspend_on_request(self) -> asyncio.Task[SuspendReport] | None:
        """Answer a SUSPEND_REQUEST by suspending to RAM (in the background: the
        vCPU's other events go on being handled). None if one is already going,
        or if no resume entry point is known."""
        if self.suspend_in_progress:
            return None
        entry = self.resume_entry if self.resume_entry is not None else self.boot_entry
        if entry is None:
            return None
        self.suspending = asyncio.create_task(self.suspend_to_ram(entry))
        return self.suspending

    async def veto_suspend(self, reason: str) -> None:
        """Guest.SuspendVeto: this domain will not suspend now, because ``reason``."""
        await self.connect()
        assert self._stub is not None
        try:
            await self._stub.SuspendVeto(
                pb.SuspendVetoRequest(reason=reason), metadata=self.metadata, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc(error) from None

    async def _thaw(self, report: SuspendReport, secondary_entry: int) -> None:
        """Bring the secondaries back and give the devices what they held."""
        for vcpu in report.secondaries_off:
            await self.call(psci.cpu_on(psci.mpidr(vcpu), secondary_entry))
        for node, caps in report.devices_suspended.items():
            await self.call(eemi.set_requirement(node, caps))


class GuestAgent:
    """The blocking form of :class:`AsyncGuestAgent` (its own event loop on a thread)."""

    def __init__(self, target: str, domain: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.agent: AsyncGuestAgent = self._run(_make(target, domain, options))

    def _run(self, work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result()

    def __enter__(self) -> GuestAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, call: Call[T], vcpu: int = 0) -> T:
        return self._run(self.agent.call(call, vcpu))

    def raw(self, function_id: int, *args: int, vcpu: int = 0) -> Regs:
        return self._run(self.agent.call(raw(function_id, *args), vcpu))

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self.agent.start)

    @property
    def events(self) -> list[Event]:
        return list(self.agent.events)

    def wait_for(
        self, predicate: Callable[[Event], bool], after: int = 0, timeout: float | None = None
    ) -> Event:
        return self._run(self.agent.wait_for(predicate, after, timeout))

    def suspend_to_ram(
        self, entry_point: int, context_id: int = 0, **options: Any
    ) -> SuspendReport:
        return self._run(self.agent.suspend_to_ram(entry_point, context_id, **options))

    def close(self) -> None:
        self._run(self.agent.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


async def _make(target: str, domain: str, options: dict[str, Any]) -> AsyncGuestAgent:
    agent = AsyncGuestAgent(target, domain, **options)
    await agent.connect()
    return agent
