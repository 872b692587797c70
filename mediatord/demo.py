"""`mediatord demo`: boot the default board and drive a scripted guest session.

Three guests talk to a real server over gRPC exactly as guest agents would: raw
SMC function IDs and registers in, SMCCC results and vCPU events out. What each
call does and why is printed as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, TextIO

import grpc

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.core.config import BoardConfig, DomainConfig
from mediatord.core.model import VTIMER_PPI
from mediatord.core.psci import AffinityInfo, PsciFn, PsciRet
from mediatord.core.smccc import to_signed
from mediatord.server import app
from mediatord.server.auth import DOMAIN_KEY

EVENT_TIMEOUT_SECONDS: Final = 5.0
RESULT_NAMES: Final = {int(r): r.name for r in PsciRet}


def describe_event(event: pb.VcpuEvent) -> str:
    kind = event.WhichOneof("kind")
    detail = ""
    if kind == "start":
        detail = f" at {event.start.entry_point:#x}, x0 = {event.start.context_id:#x}"
    elif kind == "resume":
        detail = f" at {event.resume.entry_point:#x}, x0 = {event.resume.context_id:#x}"
    elif kind == "wake":
        detail = f" by IRQ {event.wake.irq}"
    elif kind == "shutdown":
        detail = f" ({pb.Shutdown.Reason.Name(event.shutdown.reason)})"
    return f"event #{event.seq}: {(kind or '?').upper()} vCPU {event.vcpu}{detail}"


class Guest:
    """One domain's side of the demo: raw calls plus its Attach stream."""

    def __init__(self, channel: grpc.aio.Channel, name: str, out: Callable[[str], None]) -> None:
        self.name = name
        self.stub = pb_grpc.GuestStub(channel)
        self.metadata = ((DOMAIN_KEY, name),)
        self.events: asyncio.Queue[pb.VcpuEvent] = asyncio.Queue()
        self.out = out
        self._task: asyncio.Task[None] | None = None

    async def attach(self) -> None:
        stream = self.stub.Attach(pb.AttachRequest(), metadata=self.metadata)

        async def pump() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                async for event in stream:
                    await self.events.put(event)

        self._task = asyncio.create_task(pump())

    async def expect(self, count: int) -> None:
        for _ in range(count):
            event = await asyncio.wait_for(self.events.get(), EVENT_TIMEOUT_SECONDS)
            self.out(f"      {self.name:<6} {describe_event(event)}")

    async def call(self, vcpu: int, fid: int, *args: int, why: str = "") -> int:
        name = PsciFn(fid).name if fid in PsciFn._value2member_map_ else f"{fid:#010x}"
        shown = ", ".join(f"{a:#x}" for a in args)
        reply = await self.stub.Call(
            pb.SmcCall(vcpu=vcpu, function_id=fid, args=args), metadata=self.metadata
        )
        x0 = to_signed(reply.regs[0])
        meaning = RESULT_NAMES.get(x0, "") if x0 < 0 or fid != PsciFn.PSCI_VERSION else ""
        if fid == PsciFn.PSCI_VERSION:
            meaning = f"PSCI {x0 >> 16}.{x0 & 0xFFFF}"
        elif fid in (PsciFn.AFFINITY_INFO, PsciFn.AFFINITY_INFO_64) and x0 >= 0:
            meaning = AffinityInfo(x0).name
        elif x0 == 0:
            meaning = "SUCCESS"
        self.out(
            f"  {self.name:<6} vCPU {vcpu}  {name}({shown}) -> x0 = {reply.regs[0]:#x}"
            f" {meaning}{'   # ' + why if why else ''}"
        )
        return x0

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _entry(domain: DomainConfig, offset: int) -> int:
    """An entry point ``offset`` into the domain's RAM (kept inside small RAMs)."""
    return domain.ram_base + min(offset, domain.ram_size - 0x1000)


def _wake_request(board: BoardConfig, domain: DomainConfig) -> tuple[pb.RaiseInterruptRequest, str]:
    """The domain's first device interrupt, or its vCPU 0 virtual timer when it has none."""
    irqs = {d.name: d.irq for d in board.devices}
    if domain.devices:
        device = domain.devices[0]
        return pb.RaiseInterruptRequest(irq=irqs[device]), f"{domain.name}'s {device}"
    request = pb.RaiseInterruptRequest(irq=VTIMER_PPI, domain=domain.name, vcpu=0)
    return request, f"{domain.name}'s virtual timer"


async def _raise(
    control: pb_grpc.ControlAsyncStub,
    request: pb.RaiseInterruptRequest,
    what: str,
    out: Callable[[str], None],
) -> None:
    raised = await control.RaiseInterrupt(request)
    outcome = pb.RaiseInterruptResponse.Outcome.Name(raised.outcome).removeprefix("OUTCOME_")
    out(f"  operator RaiseInterrupt({request.irq}, {what}) -> {outcome} ({raised.domain})")


async def run_script(target: str, board: BoardConfig, out: Callable[[str], None]) -> None:
    """The guest session itself, against a server at ``target`` running ``board``."""
    configs = sorted(board.domains, key=lambda d: d.id)
    hardware, domus = configs[0], configs[1:]
    # The domU that suspends: one with a secondary vCPU if there is one.
    sleeper = next((d for d in domus if d.vcpus > 1), domus[0] if domus else None)
    async with grpc.aio.insecure_channel(target) as channel:
        control = pb_grpc.ControlStub(channel)
        guests = {d.name: Guest(channel, d.name, out) for d in configs}
        for guest in guests.values():
            await guest.attach()

        out("\n1. Each domain booted with vCPU 0 on at its RAM base (Attach replays it):")
        for guest in guests.values():
            await guest.expect(1)

        if sleeper is not None:
            domu = guests[sleeper.name]
            resume_at = _entry(sleeper, 0x9_0000)
            out(f"\n2. {domu.name} discovers PSCI and brings its second vCPU up:")
            await domu.call(0, PsciFn.PSCI_VERSION)
            await domu.call(0, PsciFn.PSCI_FEATURES, PsciFn.SYSTEM_SUSPEND_64)
            if sleeper.vcpus > 1:
                start = _entry(sleeper, 0x8_0000)
                await domu.call(0, PsciFn.CPU_ON_64, 0x1, start, 0x1111, why="MPIDR 0x1 = vCPU 1")
                await domu.expect(1)
                await domu.call(0, PsciFn.AFFINITY_INFO_64, 0x1, 0)
                await domu.call(0, PsciFn.CPU_ON_64, 0x1, start, 0, why="it is already on")

            out(f"\n3. {domu.name} suspends to RAM the way Linux does (seed: Suspending Guests):")
            if sleeper.vcpus > 1:
                await domu.call(
                    0, PsciFn.SYSTEM_SUSPEND_64, resume_at, 0x2222, why="vCPU 1 is still on"
                )
                await domu.call(1, PsciFn.CPU_OFF, why="hotplug the secondary out")
            await domu.call(
                0, PsciFn.SYSTEM_SUSPEND_64, resume_at, 0x2222, why=f"{domu.name} sleeps"
            )
            listing = await control.ListDomains(pb.ListDomainsRequest())
            states = ", ".join(
                f"{d.name}={pb.DomainState.Name(d.state).removeprefix('DOMAIN_STATE_').lower()}"
                for d in listing.domains
            )
            out(f"  operator ListDomains: {states}")

            request, what = _wake_request(board, sleeper)
            out(f"\n4. {what} fires: a wake source, so {domu.name} resumes at its entry point:")
            await _raise(control, request, what, out)
            await domu.expect(2)

            other = guests[(domus[1] if len(domus) > 1 else sleeper).name]
            out("\n5. Bad calls get exact PSCI / SMCCC errors and change nothing:")
            await other.call(0, PsciFn.CPU_ON_64, 0x100, 0x4000_0000, 0, why="no vCPU 16")
            await other.call(0, PsciFn.CPU_ON_64, 0x1, 0x1, 0, why="entry outside RAM")
            await other.call(0, 0xC200_0001, why="a SiP call nobody implements here")
            try:
                await other.call(1, PsciFn.PSCI_VERSION)
            except grpc.aio.AioRpcError as error:
                out(
                    f"  {other.name:<6} vCPU 1  PSCI_VERSION() -> "
                    f"gRPC {error.code().name}: {error.details()}"
                )

        dom0 = guests[hardware.name]
        out(f"\n6. {dom0.name}, the hardware domain, suspends: the request to suspend the host:")
        await dom0.call(0, PsciFn.SYSTEM_SUSPEND_64, _entry(hardware, 0x10_0000), 0x3333)
        system = await control.GetSystem(pb.GetSystemRequest())
        out(f"  operator GetSystem: host_suspend_requested = {system.host_suspend_requested}")
        request, what = _wake_request(board, hardware)
        await _raise(control, request, what, out)
        await dom0.expect(2)
        for guest in guests.values():
            await guest.close()


async def run(
    board: BoardConfig, listener: app.Listener | None, serve_forever: bool, out: TextIO
) -> None:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="mediatord-demo-") as scratch:
        listener = listener or app.Listener(unix=Path(scratch) / "mediatord.sock")
        server = await app.start(board, [listener])
        address = server.addresses[0]
        say(
            f"mediatord demo: board {board.name} ({board.backend}, {board.pcpus} pCPUs), "
            f"{len(board.domains)} domains; listening on {address}"
        )
        try:
            await run_script(address, board, say)
            say("\ndemo finished: every call above went over gRPC to the running daemon.")
            if serve_forever:
                say(f"still serving on {address}; Ctrl-C stops it.")
                await app.serve_until_signalled(server)
        finally:
            await server.stop(grace=0.5)
