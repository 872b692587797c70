"""`mediatord demo`: the seed's whole story, told by three guest agents.

A daemon starts on the default board; three agents (mediator_client) stand in for
the guest kernels of dom0, domu1 and domu2 and talk to it over gRPC exactly as
any agent would: raw SMC function IDs and registers in, SMCCC results and vCPU
events out. Every call, result and event is printed as it happens.
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

from mediator_client import (
    AsyncGuestAgent,
    MediatorError,
    Operator,
    VcpuHandler,
    eemi,
    psci,
    timeline,
)
from mediator_client.calls import Call, raw

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core import effects as fx
from mediatord.core.clock import ManualClock
from mediatord.core.config import BACKEND_NODES, BACKEND_RESOURCES, BoardConfig, DomainConfig
from mediatord.core.eemi import CAP_ACCESS, CAP_WAKEUP, NODES
from mediatord.core.model import VTIMER_PPI
from mediatord.server import app

T = TypeVar("T")
WAIT_S: Final = 10.0
Say = Callable[[str], None]

INTRO = """\
What you are looking at: one board ({board}), a hypervisor (this daemon) and
{domains} virtual machines ("domains"): {hardware}, which manages the board, and the
guests. Each domain has virtual CPUs (vCPUs) and devices. Guests switch their vCPUs
{firmware} with firmware calls; the daemon answers them as the hypervisor and
firmware would, and refuses what a guest may not do. Suspend-to-RAM goes in
order: the guests suspend themselves, then {hardware} suspends, which suspends the
whole board; a device interrupt later wakes everything in mirror order."""
BOARD_KINDS: Final = {
    "zynqmp": "a Xilinx ZynqMP",
    "generic": "a generic Arm board, QEMU virt-like, with a GICv3",
    "imx8": "an NXP i.MX8QM, its SCU firmware owning resources by partition,",
}


def intro(board: BoardConfig) -> str:
    hardware = min(board.domains, key=lambda d: d.id).name
    if board.backend in BACKEND_NODES:
        firmware = "and devices on and off (PSCI for CPUs, EEMI for devices)"
    elif board.backend in BACKEND_RESOURCES:
        firmware = "and devices on and off (PSCI for CPUs, the SCU firmware for devices)"
    else:
        firmware = "on and off (PSCI; this board has no power firmware for devices)"
    text = INTRO.format(
        board=f"{BOARD_KINDS.get(board.backend, board.backend)} with {board.pcpus} CPUs",
        domains=len(board.domains),
        hardware=hardware,
        firmware=firmware,
    )
    return textwrap.fill(" ".join(text.split()), width=84)


class Narrator(VcpuHandler):
    """Prints what happens to one vCPU."""

    def __init__(self, domain: str, say: Say) -> None:
        self.domain = domain
        self.say = say

    async def handle(self, agent: AsyncGuestAgent, event: Any) -> None:
        self.say(f"      {self.domain:<6} event {event}")


async def show(
    agent: AsyncGuestAgent, call: Call[T], say: Say, vcpu: int = 0, why: str = ""
) -> T | None:
    """Make ``call`` and print it with its result (or the error the mediator gave)."""
    note = f"   # {why}" if why else ""
    try:
        result = await agent.call(call, vcpu)
    except MediatorError as error:
        say(f"  {agent.domain:<6} vCPU {vcpu}  {call} -> {error}{note}")
        return None
    say(f"  {agent.domain:<6} vCPU {vcpu}  {call} -> {_answer(result)}{note}")
    return result


def _answer(result: object) -> str:
    if result is None:
        return "SUCCESS"
    if isinstance(result, Enum):
        return result.name
    if isinstance(result, tuple):
        return "x0..x3 = " + ", ".join(f"{r:#x}" for r in result)
    return str(result)


def _narrator(domain: str, say: Say) -> Callable[[int], VcpuHandler]:
    return lambda vcpu: Narrator(domain, say)


def _entry(domain: DomainConfig, offset: int) -> int:
    """An entry point ``offset`` into the domain's RAM (kept inside small RAMs)."""
    return domain.ram_base + min(offset, domain.ram_size - 0x1000)


async def _states(op: Operator, say: Say) -> None:
    domains = await op.domains()
    states = ", ".join(
        f"{d.name}={pb.DomainState.Name(d.state).removeprefix('DOMAIN_STATE_').lower()}"
        for d in domains
    )
    system = await op.system()
    host = pb.HostState.Name(system.host_state).removeprefix("HOST_STATE_").lower()
    say(f"  operator: host {host}; {states}")


async def _until(op: Operator, check: Callable[[pb.SystemInfo, list[pb.DomainInfo]], bool]) -> None:
    """Poll the daemon (bounded) until ``check`` holds: each poll is a real round trip."""
    for _ in range(1000):
        if check(await op.system(), await op.domains()):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("the daemon did not reach the expected state")


async def run_script(target: str, board: BoardConfig, clock: ManualClock, say: Say) -> None:
    """The story itself, against a server at ``target`` running ``board``."""
    configs = sorted(board.domains, key=lambda d: d.id)
    hardware, domus = configs[0], configs[1:]
    # The guest that shows everything: one with a second vCPU and a device.
    star = next((d for d in domus if d.vcpus > 1 and d.devices), domus[0] if domus else None)
    agents = {
        d.name: AsyncGuestAgent(target, d.name, handler=_narrator(d.name, say)) for d in configs
    }
    async with Operator(target) as op:
        for agent in agents.values():
            await agent.connect()
            agent.start()
        say("\n1. Every domain boots with vCPU 0 running at the start of its RAM:")
        for agent in agents.values():
            await agent.wait_for(lambda e: isinstance(e.kind, fx.Start), within=WAIT_S)

        if star is not None:
            guest = agents[star.name]
            say(f"\n2. {guest.domain} asks the firmware what it offers and starts its 2nd vCPU:")
            await show(guest, psci.psci_version(), say)
            await show(
                guest,
                psci.cpu_on(psci.mpidr(1), _entry(star, 0x8_0000), 0x1111),
                say,
                why="vCPU 1 starts at that address with x0 = 0x1111",
            )
            await guest.wait_for(lambda e: e.vcpu == 1, within=WAIT_S)
            await show(guest, psci.affinity_info(psci.mpidr(1)), say)
            await show(
                guest,
                psci.cpu_on(psci.mpidr(1), _entry(star, 0x8_0000)),
                say,
                why="it is already on",
            )

            if board.backend in BACKEND_NODES:
                await _devices(guest, star, domus, say)
            elif board.backend in BACKEND_RESOURCES:
                await _resources(guest, star, domus, board, say)
            else:
                say(f"\n3. {guest.domain} looks for power firmware for its devices: this board has")
                say("   none, so every SiP call (EEMI's PM_GET_API_VERSION here) is NOT_SUPPORTED:")
                await show(guest, raw(0xC200_0001), say, why="no power firmware on this board")
            await show(guest, raw(0xC500_0001), say, why="a service nobody offers: NOT_SUPPORTED")

            say("\n4. The guests suspend to RAM the way Linux does: devices down, secondary")
            say("   vCPUs off, then SYSTEM_SUSPEND from vCPU 0 (they stay asleep until woken):")
        sleepers = {
            d.name: asyncio.create_task(agents[d.name].suspend_to_ram(_entry(d, 0x9_0000), 0x2222))
            for d in domus
        }
        await _until(
            op,
            lambda s, ds: all(d.state != pb.DOMAIN_STATE_RUNNING for d in ds if d.name in sleepers),
        )
        await _states(op, say)

        dom0 = agents[hardware.name]
        say(f"\n5. {dom0.domain} suspends too: that suspends the board. The hypervisor takes")
        say("   the other CPUs offline, saves the interrupt controller, timer and its own")
        say("   state, and asks the firmware to power the chip down (durations are modelled):")
        host = asyncio.create_task(dom0.suspend_to_ram(_entry(hardware, 0x10_0000), 0x3333))
        await _until(op, lambda s, ds: s.host_state == pb.HOST_STATE_SUSPENDED)
        system = await op.system()
        say(timeline.text(timeline.steps(list(system.last_suspend_steps))))
        await _states(op, say)

        say("\n6. Five seconds pass on the daemon's virtual clock while the board sleeps.")
        clock.advance(5_000_000_000)
        waker = star or hardware
        irq, what = _wake_line(board, waker)
        say(f"\n7. {what} fires. It wakes the board, the hypervisor resumes in mirror order,")
        say(f"   {dom0.domain} runs first, then {waker.name} wakes (seed scenario 4.2):")
        raised = await op.raise_irq(irq, waker.name if irq == VTIMER_PPI else "", 0)
        outcome = pb.RaiseInterruptResponse.Outcome.Name(raised.outcome).removeprefix("OUTCOME_")
        say(
            f"  operator: interrupt {irq} -> {outcome} for {raised.domain}"
            f"{' (it woke the board first)' if raised.woke_host else ''}"
        )
        await asyncio.wait_for(host, WAIT_S)
        if waker.name in sleepers:
            report = await asyncio.wait_for(sleepers[waker.name], WAIT_S)
            say(
                f"  {waker.name} resumed and brought back vCPUs {report.secondaries_off} "
                f"and its devices {sorted(report.devices_suspended)}"
            )
        await _states(op, say)

        system = await op.system()
        say("\n8. The whole suspend and resume, step by step (from GetSystem):")
        say(timeline.text(timeline.of_system(system)))
        entry = system.last_suspend.end_ns - system.last_suspend.start_ns
        back = system.last_resume.end_ns - system.last_resume.start_ns
        say(
            f"  suspend took {entry / 1e6:.3f} ms, resume {back / 1e6:.3f} ms; the other "
            "guest stays asleep until its own device wakes it."
        )
        for task in sleepers.values():
            task.cancel()
        for agent in agents.values():
            await agent.close()


async def _devices(
    guest: AsyncGuestAgent, star: DomainConfig, domus: list[DomainConfig], say: Say
) -> None:
    """Step 3 on a board with EEMI power firmware: the guest powers its own devices
    and is refused another guest's."""
    say(f"\n3. {guest.domain} powers its devices through EEMI; it may only touch its own:")
    wake = NODES[star.devices[0]]
    await show(
        guest,
        eemi.request_node(wake, CAP_ACCESS | CAP_WAKEUP),
        say,
        why=f"{star.devices[0]}, may wake the guest",
    )
    await show(guest, eemi.set_wakeup_source(wake), say)
    foreign = next((NODES[n] for d in domus if d is not star for n in d.devices), None)
    if foreign is not None:
        await show(guest, eemi.request_node(foreign), say, why="another guest's device")
    for extra in star.devices[1:]:
        await show(guest, eemi.request_node(NODES[extra]), say)
        await show(
            guest,
            eemi.release_node(NODES[extra]),
            say,
            why=f"{extra} is not needed: it powers off",
        )


async def _resources(
    guest: AsyncGuestAgent,
    star: DomainConfig,
    domus: list[DomainConfig],
    board: BoardConfig,
    say: Say,
) -> None:
    """Step 3 on an i.MX8: the guest sets its own resource's power mode through the
    SCFW (sc_pm_set_resource_power_mode) and is refused another partition's."""
    say(f"\n3. {guest.domain} powers its devices through the SCU firmware (SCFW); its")
    say("   partition holds its own resources only:")
    resource = {d.name: d.node_id for d in board.devices}
    own = resource[star.devices[0]]
    set_mode = 0xC200_1203  # sc_pm_set_resource_power_mode (PM service 2, function 3)
    await show(guest, raw(set_mode, own, 2), say, why=f"{star.devices[0]} to LP: x0 = SC_ERR_NONE")
    await show(guest, raw(set_mode, own, 3), say, why="and back ON")
    foreign = next((resource[n] for d in domus if d is not star for n in d.devices), None)
    if foreign is not None:
        await show(
            guest, raw(set_mode, foreign, 0), say, why="another guest's: x0 = SC_ERR_NOACCESS (4)"
        )


def _wake_line(board: BoardConfig, domain: DomainConfig) -> tuple[int, str]:
    irqs = {d.name: d.irq for d in board.devices}
    if domain.devices:
        return irqs[domain.devices[0]], f"{domain.name}'s {domain.devices[0]} interrupt"
    return VTIMER_PPI, f"{domain.name}'s timer"


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
        say(intro(board))
        say(
            f"\nmediatord demo: board {board.name} ({board.backend}, {board.pcpus} pCPUs), "
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
