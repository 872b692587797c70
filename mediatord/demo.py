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
from mediatord.core.clock import ManualClock
from mediatord.core.config import BoardConfig, DomainConfig
from mediatord.core.eemi import (
    CAP_ACCESS,
    CAP_WAKEUP,
    NODE_APU,
    NODE_NAMES,
    PM_SIP_SVC,
    PmApi,
    PmStatus,
)
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

    async def eemi(self, api: PmApi, *args: int, why: str = "") -> int:
        """An EEMI call packed as Linux's zynqmp_pm_invoke_fn packs it."""
        padded = (*args, 0, 0, 0, 0)[:4]
        regs = [padded[1] << 32 | padded[0], padded[3] << 32 | padded[2]]
        reply = await self.stub.Call(
            pb.SmcCall(vcpu=0, function_id=PM_SIP_SVC | api, args=regs), metadata=self.metadata
        )
        status = reply.regs[0] & 0xFFFF_FFFF
        # The node argument (first, or second for SET_WAKEUP_SOURCE) by its name.
        node_at = 1 if api == PmApi.SET_WAKEUP_SOURCE else 0
        shown = ", ".join(
            _node_arg(a) if i in (0, node_at) else f"{a:#x}" for i, a in enumerate(args)
        )
        meaning = PmStatus(status).name if status in PmStatus._value2member_map_ else ""
        self.out(
            f"  {self.name:<6} vCPU 0  PM_{api.name}({shown}) -> status {status} {meaning}"
            f"{'   # ' + why if why else ''}"
        )
        return status

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _node_arg(value: int) -> str:
    return f"NODE_{NODE_NAMES[value]}" if value in NODE_NAMES else f"{value:#x}"


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
    host = ", woke the host" if raised.woke_host else ""
    out(f"  operator RaiseInterrupt({request.irq}, {what}) -> {outcome} ({raised.domain}{host})")


class Steps:
    """Collects the host and hardware steps from a WatchEvents stream."""

    def __init__(self, control: pb_grpc.ControlAsyncStub) -> None:
        self.events: asyncio.Queue[pb.SystemEvent] = asyncio.Queue()
        self._stream = control.WatchEvents(pb.WatchEventsRequest())
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in self._stream:
                await self.events.put(event)

    async def until(self, host_step: str) -> list[pb.SystemEvent]:
        """Every event up to and including the host step named ``host_step``."""
        seen: list[pb.SystemEvent] = []
        while True:
            event = await asyncio.wait_for(self.events.get(), EVENT_TIMEOUT_SECONDS)
            seen.append(event)
            if event.WhichOneof("kind") == "host_step" and event.host_step.name == host_step:
                return seen

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def print_steps(events: list[pb.SystemEvent], out: Callable[[str], None]) -> None:
    """The host steps as a timeline: offset from the first, duration, and the
    hardware operations each one made."""
    hardware: list[str] = []
    origin: int | None = None
    for event in events:
        kind = event.WhichOneof("kind")
        if kind == "hardware_step":
            op = event.hardware_step
            origin = op.start_ns if origin is None else origin
            hardware.append(f"{op.name} {op.detail}".strip())
            if op.name == "soc.wake":
                # The PMU powers the SoC up before the hypervisor runs a step.
                took = (op.end_ns - op.start_ns) / 1000
                out(f"    {0:9.1f} us  {'(PMU: SoC power-up)':<24} {took:8.1f} us  ok  {op.detail}")
                hardware = []
        elif kind == "host_step":
            step = event.host_step
            origin = step.start_ns if origin is None else origin
            at = (step.start_ns - origin) / 1000
            took = (step.end_ns - step.start_ns) / 1000
            status = "ok" if step.result == 0 else f"failed {step.result}"
            done = "; ".join(hardware)
            out(f"    {at:9.1f} us  {step.name:<24} {took:8.1f} us  {status}  {done}".rstrip())
            hardware = []


async def run_script(
    target: str, board: BoardConfig, clock: ManualClock, out: Callable[[str], None]
) -> None:
    """The guest session itself, against a server at ``target`` running ``board``."""
    configs = sorted(board.domains, key=lambda d: d.id)
    hardware, domus = configs[0], configs[1:]
    # The domU that suspends: one with a secondary vCPU if there is one.
    sleeper = next((d for d in domus if d.vcpus > 1), domus[0] if domus else None)
    async with grpc.aio.insecure_channel(target) as channel:
        control = pb_grpc.ControlStub(channel)
        steps = Steps(control)
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

            other = guests[(domus[1] if len(domus) > 1 else sleeper).name]
            out("\n3. Bad calls get exact PSCI / SMCCC errors and change nothing:")
            await other.call(0, PsciFn.CPU_ON_64, 0x100, 0x4000_0000, 0, why="no vCPU 16")
            await other.call(0, PsciFn.CPU_ON_64, 0x1, 0x1, 0, why="entry outside RAM")
            await other.call(0, 0xC500_0001, why="a hypervisor service nobody offers")
            try:
                await other.call(1, PsciFn.PSCI_VERSION)
            except grpc.aio.AioRpcError as error:
                out(
                    f"  {other.name:<6} vCPU 1  PSCI_VERSION() -> "
                    f"gRPC {error.code().name}: {error.details()}"
                )

            out(f"\n4. {domu.name} suspends to RAM the way Linux does (seed: Suspending Guests):")
            nodes = {d.name: d.node_id for d in board.devices}
            if sleeper.devices:
                # Its drivers hold their devices through EEMI; the mediator lets a
                # domain touch only nodes it owns.
                wake_node = nodes[sleeper.devices[0]]
                caps = CAP_ACCESS | CAP_WAKEUP
                await domu.eemi(PmApi.REQ_NODE, wake_node, caps, 100, 1, why="wake device")
                foreign = next(
                    (nodes[n] for d in domus if d is not sleeper for n in d.devices), None
                )
                if foreign is not None:
                    await domu.eemi(
                        PmApi.REQ_NODE, foreign, CAP_ACCESS, 100, 1, why="not its device"
                    )
                await domu.eemi(PmApi.SET_WAKEUP_SOURCE, NODE_APU, wake_node, 1)
                for extra in sleeper.devices[1:]:
                    await domu.eemi(PmApi.REQ_NODE, nodes[extra], CAP_ACCESS, 100, 1)
                    await domu.eemi(PmApi.RELEASE_NODE, nodes[extra], why="suspend it: powers off")
            if sleeper.vcpus > 1:
                await domu.call(
                    0, PsciFn.SYSTEM_SUSPEND_64, resume_at, 0x2222, why="vCPU 1 is still on"
                )
                await domu.call(1, PsciFn.CPU_OFF, why="hotplug the secondary out")
            await domu.call(
                0, PsciFn.SYSTEM_SUSPEND_64, resume_at, 0x2222, why=f"{domu.name} sleeps"
            )
            await _list(control, out)

        dom0 = guests[hardware.name]
        out(
            f"\n5. {dom0.name}, the hardware domain, suspends: that suspends the host. Running "
            "domUs are paused,\n   the other pCPUs go off, and GIC, timer and EL2 state are "
            "saved before EL3 powers the SoC down:"
        )
        await dom0.call(0, PsciFn.SYSTEM_SUSPEND_64, _entry(hardware, 0x10_0000), 0x3333)
        print_steps(await steps.until("el3_system_suspend"), out)
        for guest in guests.values():
            if guest.name not in (dom0.name, sleeper.name if sleeper else ""):
                await guest.expect(1)
        system = await control.GetSystem(pb.GetSystemRequest())
        pcpus = ", ".join(
            pb.PcpuState.Name(p.state).removeprefix("PCPU_STATE_").lower()
            for p in system.pcpu_states
        )
        out(f"  operator GetSystem: host {pb.HostState.Name(system.host_state)}, pCPUs [{pcpus}]")
        await _list(control, out)

        out("\n6. Five seconds pass on the virtual clock while the board sleeps.")
        clock.advance(5_000_000_000)
        waker = sleeper or hardware
        request, what = _wake_request(board, waker)
        scenario = "seed 4.2" if sleeper else "seed 4.3"
        out(
            f"\n7. {what} fires ({scenario}): it wakes the SoC, the hypervisor resumes in "
            f"mirror order,\n   {dom0.name} runs first, then {waker.name} resumes:"
        )
        await _raise(control, request, what, out)
        print_steps(await steps.until("resume_hardware_domain"), out)
        await dom0.expect(1)
        for guest in guests.values():
            if guest.name != dom0.name:
                await guest.expect(2 if guest.name == waker.name else 1)
        system = await control.GetSystem(pb.GetSystemRequest())
        entry = system.last_suspend.end_ns - system.last_suspend.start_ns
        asleep = system.last_resume.start_ns - system.last_suspend.end_ns
        back = system.last_resume.end_ns - system.last_resume.start_ns
        out(
            f"  timeline: suspend entry {entry / 1e6:.3f} ms, suspended {asleep / 1e9:.3f} s, "
            f"resume {back / 1e6:.3f} ms (modelled hardware latencies, virtual clock)"
        )
        await _list(control, out)
        await steps.close()
        for guest in guests.values():
            await guest.close()


async def _list(control: pb_grpc.ControlAsyncStub, out: Callable[[str], None]) -> None:
    listing = await control.ListDomains(pb.ListDomainsRequest())
    states = ", ".join(
        f"{d.name}={pb.DomainState.Name(d.state).removeprefix('DOMAIN_STATE_').lower()}"
        for d in listing.domains
    )
    out(f"  operator ListDomains: {states}")


async def run(
    board: BoardConfig, listener: app.Listener | None, serve_forever: bool, out: TextIO
) -> None:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="mediatord-demo-") as scratch:
        listener = listener or app.Listener(unix=Path(scratch) / "mediatord.sock")
        # The demo's clock is virtual: time moves by the modelled hardware
        # latencies and when the script says so, so the timeline is readable.
        clock = ManualClock(start_ns=1_000_000_000)
        server = await app.start(board, [listener], clock)
        address = server.addresses[0]
        say(
            f"mediatord demo: board {board.name} ({board.backend}, {board.pcpus} pCPUs), "
            f"{len(board.domains)} domains; listening on {address}"
        )
        try:
            await run_script(address, board, clock, say)
            say("\ndemo finished: every call above went over gRPC to the running daemon.")
            if serve_forever:
                say(f"still serving on {address}; Ctrl-C stops it.")
                await app.serve_until_signalled(server)
        finally:
            await server.stop(grace=0.5)
