"""The crash test of issue 9: a real ``mediatord serve`` is SIGKILLed again and again
under concurrent random calls, on one state directory, and every restart must bring
back exactly what was acknowledged.

Each cycle starts the daemon through ``tests/crash_server.py`` on the same state
directory (a snapshot every 25 records, so that kills also land around snapshots
and compaction); the agents of dom0, domu1 and domu2 (random PSCI/EEMI calls, their
own virtual timers, and sometimes a host suspend driven by dom0) and an operator
(devices assigned and released, device interrupts, domains created and destroyed)
run concurrently until the daemon dies, killed in one of four ways:

- external: SIGKILL from the test after a random delay;
- append: the daemon kills itself right after its N-th journal append (the records
  are durable, their RPCs not yet answered);
- suspend: the daemon kills itself at the N-th run of a hardware operation of the
  host suspend (``gic.save``, ``el3.cpu_off``, ...) in dom0's SYSTEM_SUSPEND;
- resume: the same for an operation of the resume (``soc.wake``, ``gic.restore``,
  ...) in the RaiseInterrupt that wakes the host once dom0's SYSTEM_SUSPEND was
  answered; in half of them the operator first raises enough (dropped) interrupts
  on the sleeping host for the daemon to snapshot it, so that recovery starts from
  a snapshot of a suspended host.

After each kill, on a copy of the state directory:

(a) every record that became durable since the last restart was seen by the
    launcher's tap (``MEDIATORD_TEST_TAP``: the journal compacts what a snapshot
    covers, so the journal alone cannot show them), and is one the clients sent:
    every acknowledged state-changing call (found by a tag in x4, which no call
    reads) and Control operation is there with the answer its client got, in an
    order that agrees with real time (an operation answered before another was
    sent is journalled before it); an unanswered one may be there at most once per
    sequential client (it was durable, so it is whole); a refused one is not;
(b) restarted normally, the daemon's ExportState equals the offline
    ``recovery.check`` document of the copy (``now_ns`` and ``counter`` aside);
    that document also equals the state the whole durable history builds when it
    is replayed from boot without any snapshot;
(c) the recovered state keeps the invariants (device ownership, vCPU power against
    domain and host state, pCPUs and watchdog against the host), reflects every
    acknowledged device and domain change, holds every event an agent received as
    that very event, and after a mid-suspend kill has the host ACTIVE as before the
    SYSTEM_SUSPEND, after a mid-resume kill SUSPENDED, to be woken at the next start
    by dom0's UART_0 (dom0 must then get its RESUME);
(d) each agent's Attach never gives a sequence number twice unless it is the same
    event again (at-least-once), and at the end every event of dom0, domu1 and
    domu2 has reached its agent.

The seed is printed and attached to every failure; MEDIATORD_CRASH_SEED=N repeats a
run's choices (the interleaving still depends on timing).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import random
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import grpc
from google.protobuf import json_format

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core import effects as fx
from mediatord.core import records, statecodec
from mediatord.core.clock import ManualClock
from mediatord.core.config import DomainConfig
from mediatord.core.mediator import Mediator
from mediatord.journal import Journal
from mediatord.server import convert, export, recovery
from mediatord.server.engine import MAILBOX_LIMIT
from mediatord.server.journaling import Mailboxes, fold_mailboxes

BOARD: Final = default_board()
LAUNCHER: Final = Path(__file__).resolve().parents[1] / "crash_server.py"
KILL_ENV: Final = "MEDIATORD_TEST_KILL"
TAP_ENV: Final = "MEDIATORD_TEST_TAP"
JOURNAL: Final = recovery.JOURNAL_FILE
SEED_ENV: Final = "MEDIATORD_CRASH_SEED"

# Kills of each kind; the issue asks for at least 50, of which 10 mid host suspend
# and 10 mid resume.
KILLS: Final = {"suspend": 11, "resume": 11, "append": 6, "external": 24}
SNAPSHOT_EVERY: Final = 25

RPC_TIMEOUT: Final = 5.0
START_TIMEOUT: Final = 10.0
# The longest a cycle's workload may run before its kill must have happened.
CYCLE_TIMEOUT: Final = 8.0
# A standby CPU_SUSPEND waits this long for its vCPU's timer.
STANDBY_TIMEOUT: Final = 2.0
ATTACH_TIMEOUT: Final = 60.0
# How long an agent with nothing to do waits for an event before it looks again.
IDLE: Final = 0.05
EVENT_TIMEOUT: Final = 5.0
# Rounds of CPU_OFF / timer interrupts dom0 gets to bring its other vCPUs down.
DRIVE_ROUNDS: Final = 8
# Most steps a client takes in a cycle (far more than fit before any kill).
STEPS: Final = 100_000

PSCI_VERSION: Final = 0x8400_0000
CPU_SUSPEND_64: Final = 0xC400_0001
CPU_OFF: Final = 0x8400_0002
CPU_ON_64: Final = 0xC400_0003
AFFINITY_INFO_64: Final = 0xC400_0004
SYSTEM_RESET: Final = 0x8400_0009
SYSTEM_SUSPEND_64: Final = 0xC400_000E
PM_REQ_NODE: Final = 0xC200_000D
PM_RELEASE_NODE: Final = 0xC200_000E
POWERDOWN: Final = 0x1_0000
VTIMER: Final = 27
# x4 of every guest call: a unique tag. No PSCI or EEMI call reads it, and the
# journal keeps it with the call's arguments, so a record names its RPC.
TAG_ARG: Final = 3

# The hardware operations of one host suspend and of one resume (not run by
# anything else in the cycles that kill at them), and how often each runs.
SUSPEND_OPS: Final = {
    "wdt.disable": 1,
    "el3.cpu_off": 3,
    "cpu.irq_mask": 1,
    "timer.suspend": 1,
    "gic.save": 1,
    "el2.save": 1,
    "el3.system_suspend": 1,
}
RESUME_OPS: Final = {
    "soc.wake": 1,
    "el2.restore": 1,
    "gic.restore": 1,
    "timer.resume": 1,
    "cpu.irq_unmask": 4,
    "el3.cpu_on": 3,
    "wdt.enable": 1,
}

GUESTS: Final = ("dom0", "domu1", "domu2")
DOMAIN_CONFIG: Final = {d.name: d for d in BOARD.domains}
DEVICE_IRQ: Final = {d.name: d.irq for d in BOARD.devices}
# A device each domU owns at boot and asks the firmware for (EEMI REQUEST_NODE).
OWN_NODE: Final = {"domu1": 34, "domu2": 40}  # UART_1, SD_1
# dom0's UART: the operator never takes it away, so it always wakes the host.
WAKE_DEVICE: Final = "UART_0"
OUTCOME_NAME: Final = {code: outcome.value for outcome, code in convert.IRQ_OUTCOME.items()}

# Errors after which the operation may or may not have happened (the daemon died).
IN_DOUBT: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
EXPECTED_CODES: Final = IN_DOUBT | {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
}
_CONFIG: Final = statecodec.Decoder((DomainConfig,))

ON, OFF = pb.VCPU_POWER_ON, pb.VCPU_POWER_OFF
STANDBY, SUSPENDED = pb.VCPU_POWER_STANDBY, pb.VCPU_POWER_SUSPENDED
ASLEEP: Final = frozenset({pb.VCPU_POWER_STANDBY, pb.VCPU_POWER_POWERDOWN, SUSPENDED})


class ServerGoneError(Exception):
    """The daemon died under an RPC: the client's cycle is over."""


# ------------------------------------------------------------------ operations


@dataclass(eq=False)
class Op:
    """One operation a client sent, and what became of it."""

    client: str
    cycle: int
    kind: str  # the journal record kind it makes, if it changes anything
    key: tuple[Any, ...]  # the record's fields after now_ns, without the answer
    sent: float = field(default_factory=time.monotonic)
    done: float | None = None
    code: grpc.StatusCode | None = None
    answer: Any = None  # x0, the interrupt's outcome, the new domain's id
    regs: tuple[int, ...] = ()

    @property
    def acked(self) -> bool:
        return self.done is not None and self.code is None

    @property
    def in_doubt(self) -> bool:
        return self.done is None or self.code in IN_DOUBT

    def __repr__(self) -> str:
        status = "answered" if self.acked else "in flight" if self.done is None else self.code
        return f"<{self.client} {self.kind}{self.key} {status} answer={self.answer!r}>"


class Book:
    """Every operation every client sent, with the tags of the guest calls."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.tags: dict[int, Op] = {}
        self.cycle = 0
        self.codes: Counter[grpc.StatusCode] = Counter()
        self._tags = itertools.count(1)

    def new(self, client: str, kind: str, key: tuple[Any, ...]) -> Op:
        op = Op(client, self.cycle, kind, key)
        self.ops.append(op)
        if kind == records.CALL:
            self.tags[key[3][TAG_ARG]] = op
        return op

    def tag(self) -> int:
        return next(self._tags)


def record_key(kind: str, body: str) -> tuple[tuple[Any, ...], Any]:
    """A journal record as (what was asked, what was answered), in Op terms."""
    _, *fields = json.loads(body)
    if kind == records.CALL:
        domain, vcpu, fid, args, x0 = fields
        return (domain, vcpu, fid, tuple(args)), x0
    if kind == records.RAISE_INTERRUPT:
        irq, domain, vcpu, outcome = fields
        return (irq, domain, vcpu), outcome
    if kind == records.CREATE_DOMAIN:
        config, domain_id = fields
        decoded = _CONFIG.decode(config)
        assert isinstance(decoded, DomainConfig)
        return (decoded.name, tuple(decoded.devices)), domain_id
    assert kind in (records.ASSIGN_DEVICE, records.RELEASE_DEVICE, records.DESTROY_DOMAIN), kind
    return tuple(fields), None


# --------------------------------------------------------------------- clients


class Client:
    """A sequential client of the daemon that books what it sends."""

    def __init__(self, name: str, book: Book, rng: random.Random) -> None:
        self.name = name
        self.book = book
        self.rng = rng

    def bind(self, channel: grpc.aio.Channel) -> None:
        self.guest = pb_grpc.GuestStub(channel)
        self.control = pb_grpc.ControlStub(channel)

    async def _send(self, op: Op, rpc: Callable[[], Any]) -> Any:
        """Run ``rpc`` (which starts the RPC) for ``op``; its reply, or None if refused."""
        try:
            reply = await rpc()
        except grpc.aio.AioRpcError as error:
            op.done = time.monotonic()
            op.code = error.code()
            self.book.codes[op.code] += 1
            if op.code == grpc.StatusCode.UNAVAILABLE:
                raise ServerGoneError from None
            return None
        op.done = time.monotonic()
        return reply

    async def raise_irq(
        self, irq: int, domain: str = "", vcpu: int = 0
    ) -> pb.RaiseInterruptResponse | None:
        op = self.book.new(self.name, records.RAISE_INTERRUPT, (irq, domain, vcpu))
        request = pb.RaiseInterruptRequest(irq=irq, domain=domain, vcpu=vcpu)
        reply: pb.RaiseInterruptResponse | None = await self._send(
            op, lambda: self.control.RaiseInterrupt(request, timeout=RPC_TIMEOUT)
        )
        if reply is not None:
            op.answer = OUTCOME_NAME[reply.outcome]
        return reply

    async def domains(self) -> dict[str, pb.DomainInfo]:
        try:
            listing = await self.control.ListDomains(pb.ListDomainsRequest(), timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise ServerGoneError from None
            raise
        return {d.name: d for d in listing.domains}


class Agent(Client):
    """The guest agent of one domain: random calls from its vCPUs, its virtual timer
    (a Control RaiseInterrupt of IRQ 27 on itself: no one else raises it), and its
    Attach stream."""

    def __init__(self, name: str, book: Book, rng: random.Random) -> None:
        super().__init__(name, book, rng)
        config = DOMAIN_CONFIG[name]
        self.vcpus = config.vcpus
        self.ram = config.ram_base
        self.metadata = (("x-mediator-domain", name),)
        self.state: pb.DomainState.ValueType = pb.DOMAIN_STATE_RUNNING
        self.power: list[pb.VcpuPower.ValueType] = [OFF] * self.vcpus
        # Every event the agent ever received, by seq; and how many it received.
        self.seen: dict[int, pb.VcpuEvent] = {}
        self.received = 0
        self.arrived = asyncio.Condition()
        self.stale = False  # a refusal said its view of its vCPUs is wrong
        self.background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------- events

    async def follow(self) -> None:
        """Read the Attach stream until the daemon dies (check d)."""
        stream = self.guest.Attach(
            pb.AttachRequest(), metadata=self.metadata, timeout=ATTACH_TIMEOUT
        )
        last = 0
        try:
            async for event in stream:
                assert event.seq > last, f"{self.name}: seq {event.seq} after {last} in a stream"
                last = event.seq
                known = self.seen.get(event.seq)
                assert known is None or known == event, (
                    f"{self.name} received seq {event.seq} as {event} after {known}: "
                    "an event number was reused, so an event it had was lost"
                )
                self.seen[event.seq] = event
                self.received += 1
                async with self.arrived:
                    self.arrived.notify_all()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise

    async def until(self, ready: Callable[[], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds), self.arrived:
            await self.arrived.wait_for(ready)

    async def idle(self) -> None:
        """Nothing to do: wait for an event (a bounded while), then look again."""
        count = self.received
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: self.received > count, IDLE)
        await self.refresh()

    # -------------------------------------------------------------- calls

    async def call(
        self, vcpu: int, fid: int, *args: int, deadline: float = RPC_TIMEOUT
    ) -> tuple[int, ...] | None:
        full = (*(*args, 0, 0, 0)[:3], self.book.tag())
        op = self.book.new(self.name, records.CALL, (self.name, vcpu, fid, full))
        request = pb.SmcCall(vcpu=vcpu, function_id=fid, args=full)
        reply = await self._send(
            op, lambda: self.guest.Call(request, metadata=self.metadata, timeout=deadline)
        )
        if reply is None:
            # Refused: the domain or vCPU is not as the agent thought.
            self.stale = True
            return None
        op.regs = tuple(reply.regs)
        op.answer = op.regs[0]
        return op.regs

    async def timer(self, vcpu: int) -> None:
        await self.raise_irq(VTIMER, self.name, vcpu)
        await self.refresh()

    async def refresh(self) -> None:
        info = (await self.domains())[self.name]
        self.state = info.state
        self.power = [v.power for v in info.vcpus]

    def standby(self, vcpu: int) -> None:
        """CPU_SUSPEND standby blocks until the vCPU's timer: the agent goes on."""

        async def wait() -> None:
            with contextlib.suppress(ServerGoneError):
                await self.call(vcpu, CPU_SUSPEND_64, 0, 0, 0, deadline=STANDBY_TIMEOUT)

        self.power[vcpu] = STANDBY
        task = asyncio.create_task(wait())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def stop(self) -> list[asyncio.Task[None]]:
        for task in self.background:
            task.cancel()
        return list(self.background)

    # ----------------------------------------------------------- workload

    async def run(self, plan: Plan, cycle: Cycle) -> None:
        rng = self.rng
        drive_at = plan.drive_after if self.name == "dom0" else None
        try:
            await self.refresh()
            for steps in range(STEPS):
                if drive_at is not None and steps >= drive_at:
                    if await self.suspend_host():
                        cycle.suspended.set()
                        drive_at = None
                    else:
                        drive_at = steps + rng.randrange(2, 6)
                    continue
                # dom0 raises its timer only while it runs, so never to wake the host.
                await self.step(plan, self.name == "dom0" or cycle.may_raise(plan))
                if self.stale or steps % 8 == 7:
                    # A refusal, or events it does not follow, changed what it knows.
                    self.stale = False
                    await self.refresh()
        except ServerGoneError:
            return

    async def step(self, plan: Plan, may_raise: bool) -> None:
        rng = self.rng
        power = self.power
        if self.state != pb.DOMAIN_STATE_RUNNING:
            # Paused by the host suspend, or suspended: a domU's own timer wakes it
            # (and the host, if it sleeps); dom0 waits for the operator's UART_0.
            asleep = [v for v, p in enumerate(power) if p in ASLEEP]
            wakes = self.name != "dom0" and self.state == pb.DOMAIN_STATE_SUSPENDED
            if wakes and asleep and may_raise and rng.random() < 0.3:
                await self.timer(rng.choice(asleep))
                return
            await self.idle()
            return
        on = [v for v, p in enumerate(power) if p == ON]
        off = [v for v, p in enumerate(power) if p == OFF]
        asleep = [v for v, p in enumerate(power) if p in ASLEEP]
        if not on:
            await (self.timer(rng.choice(asleep)) if asleep and may_raise else self.idle())
            return
        vcpu = rng.choice(on)
        entry = self.ram + 0x1000 * rng.randrange(1, 256)
        context = rng.randrange(1 << 16)
        r = rng.random()
        if r < 0.18 and off:
            target = rng.choice(off)
            regs = await self.call(vcpu, CPU_ON_64, target, entry, context)
            if regs is not None and regs[0] == 0:
                power[target] = ON
        elif r < 0.33 and len(on) + len(asleep) > 1:
            regs = await self.call(vcpu, CPU_OFF)
            if regs is not None and regs[0] == 0:
                power[vcpu] = OFF
        elif r < 0.42:
            regs = await self.call(vcpu, CPU_SUSPEND_64, POWERDOWN, entry, context)
            if regs is not None and regs[0] == 0:
                power[vcpu] = pb.VCPU_POWER_POWERDOWN
        elif r < 0.48:
            self.standby(vcpu)
        elif r < 0.6 and asleep and may_raise:
            await self.timer(rng.choice(asleep))
        elif r < 0.7:
            fid = rng.choice([PSCI_VERSION, AFFINITY_INFO_64])
            await self.call(vcpu, fid, rng.randrange(self.vcpus), 0)
        elif r < 0.78 and self.name in OWN_NODE:
            fid = rng.choice([PM_REQ_NODE, PM_RELEASE_NODE])
            await self.call(vcpu, fid, OWN_NODE[self.name], 1, 100)
        elif r < 0.8:
            # An entry point outside the domain's RAM: refused by PSCI, still journalled.
            await self.call(vcpu, CPU_ON_64, rng.randrange(self.vcpus), 0x10, context)
        elif r < 0.97 and self.name != "dom0" and on == [vcpu] and not asleep:
            regs = await self.call(vcpu, SYSTEM_SUSPEND_64, entry, context)
            if regs is not None and regs[0] == 0:
                self.state, power[vcpu] = pb.DOMAIN_STATE_SUSPENDED, SUSPENDED
        elif r >= 0.985 and (self.name != "dom0" or plan.dom0_reset):
            # dom0's reboots the host and every domain; a domU's only itself.
            await self.call(vcpu, SYSTEM_RESET)
            await self.refresh()
        else:
            await self.call(vcpu, PSCI_VERSION)

    async def suspend_host(self) -> bool:
        """dom0 suspends the host (docs/host-suspend.md): its other vCPUs go off
        (woken first by their timers if they sleep), then SYSTEM_SUSPEND from vCPU 0."""
        entry = self.ram + 0x30_0000
        context = self.rng.randrange(1, 1 << 16)
        for _ in range(DRIVE_ROUNDS):
            await self.refresh()
            if self.state != pb.DOMAIN_STATE_RUNNING:
                return False
            if self.power[0] != ON:
                await self.timer(0)
                continue
            busy = [v for v in range(1, self.vcpus) if self.power[v] != OFF]
            if not busy:
                regs = await self.call(0, SYSTEM_SUSPEND_64, entry, context)
                if regs is None or regs[0] != 0:
                    return False
                self.state, self.power[0] = pb.DOMAIN_STATE_SUSPENDED, SUSPENDED
                return True
            for v in busy:
                if self.power[v] == ON:
                    await self.call(v, CPU_OFF)
                else:
                    await self.raise_irq(VTIMER, self.name, v)
        return False


class Operator(Client):
    """The operator: device interrupts, devices assigned and released, domains
    created and destroyed; it keeps what the acknowledged changes make of device
    ownership and the set of domains (check c)."""

    def __init__(self, book: Book, rng: random.Random) -> None:
        super().__init__("operator", book, rng)
        self.owner: dict[str, str | None] = {d.name: None for d in BOARD.devices}
        for domain in BOARD.domains:
            for device in domain.devices:
                self.owner[device] = domain.name
        self.names = set(GUESTS)
        self._created = itertools.count(1)

    def expect(self, op: Op) -> None:
        """The change ``op`` made (it was acknowledged, or found durable)."""
        if op.kind == records.ASSIGN_DEVICE:
            domain, device = op.key
            self.owner[device] = domain
        elif op.kind == records.RELEASE_DEVICE:
            self.owner[op.key[1]] = None
        elif op.kind == records.CREATE_DOMAIN:
            name, devices = op.key
            self.names.add(name)
            for device in devices:
                self.owner[device] = name
        elif op.kind == records.DESTROY_DOMAIN:
            self.names.discard(op.key[0])
            for device, owner in self.owner.items():
                if owner == op.key[0]:
                    self.owner[device] = None

    def free(self) -> list[str]:
        return sorted(d for d, owner in self.owner.items() if owner is None)

    async def run(self, plan: Plan, cycle: Cycle) -> None:
        try:
            if plan.linger:
                await self.free_one()
            for _ in range(STEPS):
                if plan.wake and cycle.suspended.is_set() and not cycle.waking.is_set():
                    await self.wake(plan, cycle)
                    continue
                await self.step(cycle.may_raise(plan), keep_free=plan.linger > 0)
        except ServerGoneError:
            return

    async def free_one(self) -> None:
        """Release a device (the first its domain lets go of), unless one is free."""
        owned = [d for d, owner in self.owner.items() if owner and d != WAKE_DEVICE]
        for device in self.rng.sample(owned, len(owned)):
            if self.free():
                return
            await self.device(False, self.owner[device] or "", device)

    async def wake(self, plan: Plan, cycle: Cycle) -> None:
        """Wake the suspended host with UART_0, after ``plan.linger`` interrupts of a
        free device while it sleeps: dropped, but journalled, they make the daemon
        take a snapshot of the sleeping host before the kill."""
        free = self.free()
        for _ in range(plan.linger if free else 0):
            await self.raise_irq(DEVICE_IRQ[free[0]])
        cycle.lingered = bool(plan.linger and free)
        cycle.waking.set()
        await self.raise_irq(DEVICE_IRQ[WAKE_DEVICE])

    async def step(self, may_raise: bool, keep_free: bool) -> None:
        rng = self.rng
        extras = sorted(self.names - set(GUESTS))
        free = [] if keep_free else self.free()
        owned = sorted(d for d, owner in self.owner.items() if owner and d != WAKE_DEVICE)
        r = rng.random()
        if r < 0.3 and may_raise:
            await self.raise_irq(DEVICE_IRQ[rng.choice(sorted(DEVICE_IRQ))])
        elif r < 0.55 and owned:
            device = rng.choice(owned)
            await self.device(False, self.owner[device] or "", device)
        elif r < 0.8 and free:
            await self.device(True, rng.choice(sorted(self.names)), rng.choice(free))
        elif r < 0.9 and len(extras) < 2:
            await self.create(f"x{next(self._created)}", free[:1] if rng.random() < 0.5 else [])
        elif r >= 0.9 and extras:
            await self.destroy(rng.choice(extras))
        else:
            await self.domains()  # a look around; every step awaits the daemon

    async def device(self, assign: bool, domain: str, device: str) -> None:
        kind = records.ASSIGN_DEVICE if assign else records.RELEASE_DEVICE
        op = self.book.new(self.name, kind, (domain, device))
        rpc: Callable[[], Any] = (
            functools.partial(
                self.control.AssignDevice,
                pb.AssignDeviceRequest(domain=domain, device=device),
                timeout=RPC_TIMEOUT,
            )
            if assign
            else functools.partial(
                self.control.ReleaseDevice,
                pb.ReleaseDeviceRequest(domain=domain, device=device),
                timeout=RPC_TIMEOUT,
            )
        )
        if await self._send(op, rpc) is not None:
            self.expect(op)

    async def create(self, name: str, devices: list[str]) -> None:
        op = self.book.new(self.name, records.CREATE_DOMAIN, (name, tuple(devices)))
        request = pb.CreateDomainRequest(
            name=name,
            vcpus=self.rng.randint(1, 2),
            ram_base=0x4000_0000,
            ram_size=0x1000_0000,
            devices=devices,
        )
        reply = await self._send(
            op, lambda: self.control.CreateDomain(request, timeout=RPC_TIMEOUT)
        )
        if reply is not None:
            op.answer = reply.id
            self.expect(op)

    async def destroy(self, name: str) -> None:
        op = self.book.new(self.name, records.DESTROY_DOMAIN, (name,))
        request = pb.DestroyDomainRequest(name=name)
        reply = await self._send(
            op, lambda: self.control.DestroyDomain(request, timeout=RPC_TIMEOUT)
        )
        if reply is not None:
            self.expect(op)


# ------------------------------------------------------------- the daemon


@dataclass
class Plan:
    kind: str  # "suspend", "resume", "append" or "external"
    kill: str | None = None  # MEDIATORD_TEST_KILL
    delay: float | None = None  # the external kill's delay
    drive_after: int | None = None  # dom0's random steps before it suspends the host
    wake: bool = False  # the operator wakes the host as soon as dom0 suspended it
    dom0_reset: bool = False  # dom0 may reset the host (it runs resume operations)
    # Nobody but dom0 raises an interrupt until the operator wakes the host, so
    # that the resume the kill interrupts is that of a durable suspend. (Raised
    # between the suspend and its answer, an interrupt resumes a host whose
    # suspend is not durable yet, and a kill then takes back both.)
    hold_irqs: bool = False
    # Interrupts the operator raises on the sleeping host before it wakes it.
    linger: int = 0


@dataclass
class Cycle:
    """What the clients of one cycle tell each other."""

    suspended: asyncio.Event = field(default_factory=asyncio.Event)  # dom0's was answered
    waking: asyncio.Event = field(default_factory=asyncio.Event)  # the operator wakes it
    lingered: bool = False  # the host slept through the operator's linger

    def may_raise(self, plan: Plan) -> bool:
        return not plan.hold_irqs or self.waking.is_set()


def open_log(path: Path) -> IO[bytes]:
    """The daemon's stderr file (not opened in a coroutine: it blocks, if briefly)."""
    return path.open("wb")


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    log: Path
    killed: bool = False

    @classmethod
    async def start(cls, socket: Path, state: Path, log: Path, env: dict[str, str]) -> Daemon:
        with open_log(log) as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(LAUNCHER),
                "serve",
                "--unix",
                str(socket),
                "--state-dir",
                str(state),
                "--snapshot-every",
                str(SNAPSHOT_EVERY),
                "--metrics-listen",
                "off",
                "--log-format",
                "json",
                "--log-level",
                "warning",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                env=env,
            )
        daemon = cls(process, log)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b"(nothing)"
        if line != f"mediatord listening on unix:{socket}\n".encode():
            await daemon.reap()
            raise AssertionError(f"the daemon did not start: {line!r}\n{daemon.tail()}")
        return daemon

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def kill_after(self, delay: float) -> None:
        await asyncio.sleep(delay)  # a random kill point is the point of the test
        if self.process.returncode is None:
            self.killed = True
            self.process.kill()

    async def reap(self) -> int:
        if self.process.returncode is None:
            self.process.kill()
        code = await asyncio.wait_for(self.process.wait(), START_TIMEOUT)
        assert self.process.stdout is not None
        await asyncio.wait_for(self.process.stdout.read(), START_TIMEOUT)
        return code


# ------------------------------------------------------------------ checking


class Reference:
    """The state the durable history builds when replayed from boot, record after
    record, without the snapshots the daemon takes; and every VcpuEvent it made."""

    def __init__(self, boot_ns: int) -> None:
        self.clock = ManualClock(boot_ns)
        self.mediator, boot = Mediator.boot(BOARD, create_platform(BOARD, self.clock))
        self.mailboxes: Mailboxes = {}
        self.events: dict[str, dict[int, pb.VcpuEvent]] = defaultdict(dict)
        self._effects(boot)

    def apply(self, kind: str, body: str) -> None:
        if kind == records.DELIVERED:
            for domain_id, seq, _ in records.delivered_marks(body.encode()):
                if domain_id in self.mailboxes:
                    events = self.mailboxes[domain_id][1]
                    while events and events[0].seq <= seq:
                        events.popleft()
            return
        self._effects(records.replay(self.mediator, self.clock, kind, body.encode()))

    def _effects(self, effects: Iterable[fx.Effect]) -> None:
        effects = list(effects)
        fold_mailboxes(self.mailboxes, effects, MAILBOX_LIMIT)
        for effect in effects:
            # dom0, domu1 and domu2 are never destroyed: one domain per name.
            if isinstance(effect, fx.DomainEvent) and effect.domain in GUESTS:
                self.events[effect.domain][effect.seq] = convert.vcpu_event(effect)

    def document(self) -> dict[str, Any]:
        return export.document(self.mediator, self.mailboxes, None)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The state document without what moves with time alone, and the journal's position."""
    system = {k: v for k, v in doc["system"].items() if k not in ("now_ns", "counter")}
    return {k: v for k, v in doc.items() if k != "journal"} | {"system": system}


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from differences(a.get(key), b.get(key), f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r:.300} != {b!r:.300}"


def same_state(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    found = list(differences(comparable(a), comparable(b)))
    assert not found, f"{what}:\n" + "\n".join(found[:20])


def parse(doc: dict[str, Any]) -> tuple[pb.SystemInfo, dict[str, pb.DomainInfo]]:
    system = json_format.ParseDict(doc["system"], pb.SystemInfo())
    domains = [json_format.ParseDict(d, pb.DomainInfo()) for d in doc["domains"]]
    return system, {d.name: d for d in domains}


def check_invariants(system: pb.SystemInfo, domains: dict[str, pb.DomainInfo]) -> None:
    """What any state the daemon acknowledged must satisfy (the core's rules, as the
    property tests state them)."""
    host = system.host_state
    assert host in (pb.HOST_STATE_ACTIVE, pb.HOST_STATE_SUSPENDED), pb.HostState.Name(host)
    assert system.domains == len(domains)
    # Each device has at most one owner, and is in its owner's list (and only there).
    owned = sorted((dev.name, dev.owner) for dev in system.devices if dev.owner)
    listed = sorted((device, d.name) for d in domains.values() for device in d.devices)
    assert owned == listed, (owned, listed)
    for d in domains.values():
        powers = [v.power for v in d.vcpus]
        shape = (d.name, pb.DomainState.Name(d.state), [pb.VcpuPower.Name(p) for p in powers])
        if d.state == pb.DOMAIN_STATE_RUNNING:
            assert any(p != OFF for p in powers), shape
            assert SUSPENDED not in powers, shape
        elif d.state == pb.DOMAIN_STATE_SUSPENDED:
            assert powers.count(SUSPENDED) == 1, shape
            assert all(p in (OFF, SUSPENDED) for p in powers), shape
        elif d.state == pb.DOMAIN_STATE_PAUSED:
            # Only a host suspend pauses a domain, and only until the resume.
            assert host == pb.HOST_STATE_SUSPENDED, shape
            assert SUSPENDED not in powers, shape
        else:
            assert d.state == pb.DOMAIN_STATE_SHUTDOWN, shape
            assert all(p == OFF for p in powers), shape
    states = {d.state for d in domains.values()}
    pcpus = [p.state for p in system.pcpu_states]
    if host == pb.HOST_STATE_ACTIVE:
        assert domains["dom0"].state == pb.DOMAIN_STATE_RUNNING
        assert pb.DOMAIN_STATE_PAUSED not in states
        assert pcpus == [pb.PCPU_STATE_ON] * BOARD.pcpus, pcpus
        assert system.watchdog_enabled
    else:
        assert domains["dom0"].state == pb.DOMAIN_STATE_SUSPENDED
        assert pb.DOMAIN_STATE_RUNNING not in states
        assert pcpus == [pb.PCPU_STATE_SUSPENDED] + [pb.PCPU_STATE_OFF] * (BOARD.pcpus - 1)
        assert not system.watchdog_enabled


def read_tap(path: Path) -> list[tuple[int, str, str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(e["seq"], e["kind"], e["body"]) for e in map(json.loads, lines)]


def crash_image(state: Path, into: Path) -> Path:
    """The state directory as the kill left it (no -shm: SQLite rebuilds it)."""
    into.mkdir()
    for name in (JOURNAL, f"{JOURNAL}-wal"):
        if (state / name).exists():
            shutil.copyfile(state / name, into / name)
    return into


# --------------------------------------------------------------------- the test


class Crash:
    """The test across its cycles: the clients and what they were answered, the
    durable history, and the crash image the next start must serve."""

    def __init__(self, seed: int, tmp: Path, socket: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.tmp = tmp
        self.socket = socket
        self.state = tmp / "state"
        self.book = Book()
        self.agents = {n: Agent(n, self.book, random.Random(self.rng.random())) for n in GUESTS}
        self.operator = Operator(self.book, random.Random(self.rng.random()))
        # The check document of the last crash image, and the journal's end there.
        self.expected: dict[str, Any] | None = None
        self.last_seq = 0
        # Every record that was ever durable, by seq: (kind, body).
        self.history: dict[int, tuple[str, str]] = {}
        self.reference: Reference | None = None
        self.asleep = False  # the host is suspended in the last crash image
        # (entry point, context id) of dom0's last successful SYSTEM_SUSPEND.
        self.slept_at: tuple[int, ...] = ()
        self.kills: Counter[str] = Counter()
        self.asleep_snapshots = 0  # crash images whose snapshot is of a sleeping host

    def plan(self, kind: str) -> Plan:
        rng = self.rng
        if kind == "suspend":
            op = rng.choice(sorted(SUSPEND_OPS))
            n = rng.randint(1, SUSPEND_OPS[op])
            return Plan(kind, kill=f"step:{op}:{n}", drive_after=rng.randrange(6))
        if kind == "resume":
            op = rng.choice(sorted(RESUME_OPS))
            # A host asleep at the start is woken first: that resume runs them too.
            n = rng.randint(1, RESUME_OPS[op]) + (RESUME_OPS[op] if self.asleep else 0)
            start = rng.randrange(6)
            # Half of them also have the daemon snapshot the sleeping host first.
            linger = rng.choice([0, SNAPSHOT_EVERY + 1 + rng.randrange(8)])
            kill = f"step:{op}:{n}"
            return Plan(kind, kill, drive_after=start, wake=True, hold_irqs=True, linger=linger)
        drive = rng.randrange(30) if rng.random() < 0.4 else None
        wake = rng.random() < 0.5
        if kind == "append":
            # Not in the wake of a sleeping host at the start (its first append).
            kill = f"append:{rng.randint(1, 12) + int(self.asleep)}"
            return Plan(kind, kill=kill, drive_after=drive, wake=wake, dom0_reset=True)
        delay = rng.uniform(0.02, 0.4)
        return Plan(kind, delay=delay, drive_after=drive, wake=wake, dom0_reset=True)

    async def start(self, index: int, plan: Plan | None) -> Daemon:
        self.book.cycle = index
        env = dict(os.environ)
        env[TAP_ENV] = str(self.tap(index))
        env.pop(KILL_ENV, None)
        if plan is not None and plan.kill:
            env[KILL_ENV] = plan.kill
        return await Daemon.start(self.socket, self.state, self.tmp / f"serve-{index}.log", env)

    def tap(self, index: int) -> Path:
        return self.tmp / f"tap-{index}.jsonl"

    async def restarted(self, channel: grpc.aio.Channel) -> None:
        """(b) The restarted daemon serves the state of the crash image."""
        for client in (*self.agents.values(), self.operator):
            client.bind(channel)
        if self.expected is None:
            return
        control = pb_grpc.ControlStub(channel)
        reply = await control.ExportState(pb.ExportStateRequest(), timeout=RPC_TIMEOUT)
        served = json.loads(reply.json)
        same_state(served, self.expected, "ExportState after the restart != check of the image")
        assert served["journal"]["seq"] == self.last_seq

    async def wake_host(self) -> None:
        """The host slept at the kill: dom0's UART_0 must resume it, dom0 first."""
        assert self.expected is not None
        _, domains = parse(self.expected)
        dom0 = domains["dom0"]
        sleeper = next(v for v in dom0.vcpus if v.power == SUSPENDED)
        try:
            reply = await self.operator.raise_irq(DEVICE_IRQ[WAKE_DEVICE])
        except ServerGoneError:
            raise AssertionError("the daemon died waking the host") from None
        assert reply is not None, f"the wake failed: {self.book.ops[-1]}"
        assert reply.woke_host, reply
        assert (reply.domain, reply.outcome) == (
            "dom0",
            pb.RaiseInterruptResponse.OUTCOME_DELIVERED,
        )
        agent = self.agents["dom0"]
        seq = dom0.event_seq + 1
        await agent.until(lambda: seq in agent.seen, EVENT_TIMEOUT)
        resumed = pb.Resume(entry_point=sleeper.entry_point, context_id=sleeper.context_id)
        assert agent.seen[seq] == pb.VcpuEvent(seq=seq, vcpu=sleeper.index, resume=resumed)
        assert (await agent.domains())["dom0"].state == pb.DOMAIN_STATE_RUNNING
        system = await agent.control.GetSystem(pb.GetSystemRequest(), timeout=RPC_TIMEOUT)
        assert system.host_state == pb.HOST_STATE_ACTIVE

    async def cycle(self, index: int, plan: Plan) -> None:
        daemon = await self.start(index, plan)
        cycle = Cycle()
        try:
            async with grpc.aio.insecure_channel(f"unix:{self.socket}") as channel:
                await self.restarted(channel)
                followers = [asyncio.create_task(a.follow()) for a in self.agents.values()]
                tasks = list(followers)
                try:
                    if self.asleep:
                        await self.wake_host()
                    tasks += [asyncio.create_task(a.run(plan, cycle)) for a in self.agents.values()]
                    tasks.append(asyncio.create_task(self.operator.run(plan, cycle)))
                    if plan.delay is not None:
                        tasks.append(asyncio.create_task(daemon.kill_after(plan.delay)))
                    try:
                        await asyncio.wait_for(daemon.process.wait(), CYCLE_TIMEOUT)
                    except TimeoutError:
                        raise AssertionError(
                            f"{plan} did not kill the daemon in {CYCLE_TIMEOUT} s"
                        ) from None
                finally:
                    for agent in self.agents.values():
                        tasks += agent.stop()
                    for task in tasks:
                        task.cancel()
                    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, Exception):
                        raise outcome
        finally:
            code = await daemon.reap()
        assert code == -signal.SIGKILL, f"the daemon exited {code}\n{daemon.tail()}"
        # Only the test (external) or the launcher's hook (the others) sends SIGKILL.
        assert daemon.killed == (plan.delay is not None), f"{plan}: SIGKILLed by another"
        self.kills[plan.kind] += 1
        self.verify(index, plan, cycle)

    def verify(self, index: int, plan: Plan, cycle: Cycle) -> None:
        image = crash_image(self.state, self.tmp / f"image-{index}")
        # Opening a journal recovers its WAL: read a copy, keep the image as it was.
        journal = Journal.open(crash_image(image, self.tmp / f"journal-{index}") / JOURNAL)
        try:
            loaded = journal.load()
            last = journal.last_seq
            boot_ns = int(journal.meta("boot_ns") or 0)
        finally:
            journal.close()

        # (a) Nothing durable was lost, every durable record went through the tap,
        # and the records are what the clients were answered.
        assert last >= self.last_seq, f"records {last + 1}..{self.last_seq} were durable, now gone"
        new = [e for e in read_tap(self.tap(index)) if e[0] <= last]
        assert [e[0] for e in new] == list(range(self.last_seq + 1, last + 1))
        for seq, kind, body in new:
            self.history[seq] = (kind, body)
            if kind == records.CALL:
                (domain, _, fid, args), x0 = record_key(kind, body)
                if (domain, fid, x0) == ("dom0", SYSTEM_SUSPEND_64, 0):
                    self.slept_at = args[:2]
        for record in loaded.records:
            assert self.history.get(record.seq) == (record.kind, record.body.decode()), record
        journalled = self.check_ops(index, new)

        doc, _ = recovery.check(image, BOARD)
        assert doc["journal"]["seq"] == last
        # A kill may leave an unfinished WAL write (reported, dropped); never a
        # damaged record.
        damage = doc["journal"]["recovered"]["damage"]
        assert all(d["where"] == "wal" for d in damage), damage

        # The image (a snapshot and the records after it) is the whole history.
        if self.reference is None:
            self.reference = Reference(boot_ns)
        for _, kind, body in new:
            self.reference.apply(kind, body)
        same_state(self.reference.document(), doc, "the history replayed from boot != the image")

        # (c) The recovered state.
        system, domains = parse(doc)
        check_invariants(system, domains)
        owners = {device.name: device.owner or None for device in system.devices}
        assert owners == self.operator.owner, (
            "ownership is not what the answered operations made it"
        )
        assert set(domains) == self.operator.names
        for name, agent in self.agents.items():
            numbered = domains[name].event_seq
            assert numbered >= max(agent.seen, default=0), (
                f"{name}'s agent received events up to {max(agent.seen)}, "
                f"the recovered {name} numbered {numbered}"
            )
            made = self.reference.events[name]
            for seq, event in agent.seen.items():
                assert made.get(seq) == event, (
                    f"{name} received {event}, the state has {made.get(seq)}"
                )
        ops = [op for op in self.book.ops if op.cycle == index]
        host = system.host_state
        if plan.kind == "suspend":
            calls = [
                op
                for op in ops
                if op.kind == records.CALL and op.key[::2] == ("dom0", SYSTEM_SUSPEND_64)
            ]
            assert calls, "dom0 never called SYSTEM_SUSPEND"
            assert calls[-1].in_doubt, calls[-1]
            assert calls[-1] not in journalled, calls[-1]
            assert host == pb.HOST_STATE_ACTIVE, "a half-done host suspend survived the kill"
            assert domains["dom0"].vcpus[0].power == ON
        if plan.kind == "resume":
            raised = [op for op in ops if op.kind == records.RAISE_INTERRUPT and op.in_doubt]
            assert any(op not in journalled for op in raised), raised
            suspends = [
                op
                for op in ops
                if op.kind == records.CALL and op.key[::2] == ("dom0", SYSTEM_SUSPEND_64)
            ]
            assert [op.answer for op in suspends if op.acked][-1:] == [0], suspends
            assert host == pb.HOST_STATE_SUSPENDED, "a half-done resume survived the kill"
            if cycle.lingered:
                # The image's snapshot is of the sleeping host: recovery started from it.
                assert loaded.snapshot_seq > journalled[suspends[-1]][0], loaded.snapshot_seq
                self.asleep_snapshots += 1
        if host == pb.HOST_STATE_SUSPENDED:
            # dom0 sleeps where its last journalled SYSTEM_SUSPEND said.
            sleeper = next(v for v in domains["dom0"].vcpus if v.power == SUSPENDED)
            assert (sleeper.entry_point, sleeper.context_id) == self.slept_at
        self.asleep = host == pb.HOST_STATE_SUSPENDED
        self.expected, self.last_seq = doc, last

    def check_ops(self, index: int, new: list[tuple[int, str, str]]) -> dict[Op, tuple[int, Any]]:
        """(a) The cycle's durable records against what the clients sent: which
        operation each is (and its answer), by tag or in client order."""
        journalled: dict[Op, tuple[int, Any]] = {}  # op: its record's seq and answer
        in_order: dict[str, list[tuple[int, str, tuple[Any, ...], Any]]] = defaultdict(list)
        for seq, kind, body in new:
            if kind == records.DELIVERED:
                continue
            key, answer = record_key(kind, body)
            if kind != records.CALL:
                # A VTIMER is raised by its own domain's agent, all else by the operator.
                client = (
                    key[1] if kind == records.RAISE_INTERRUPT and key[0] == VTIMER else "operator"
                )
                in_order[client].append((seq, kind, key, answer))
                continue
            args = key[3]
            op = self.book.tags.get(args[TAG_ARG]) if len(args) > TAG_ARG else None
            assert op is not None, f"record {seq} is a call nobody sent: {key}"
            assert (op.cycle, op.key) == (index, key), (seq, key, op)
            assert op not in journalled, f"{op} is journalled twice"
            journalled[op] = (seq, answer)
            if op.acked:
                woken = answer is None and op.key[2] == CPU_SUSPEND_64 and op.regs == (0, 0, 0, 0)
                assert answer == op.answer or woken, f"record {seq} holds x0 {answer}: {op}"
            elif not op.in_doubt:
                # Refused calls are not journalled, but a blocked call is, when it
                # blocks; the answer it got later may be its abort.
                assert answer is None, op
                assert op.code == grpc.StatusCode.FAILED_PRECONDITION, op
        ops = [op for op in self.book.ops if op.cycle == index]
        for op in ops:
            if op.kind == records.CALL and op.acked:
                changes = records.changes_state(op.key[2])
                assert (op in journalled) == changes, (
                    f"answered {op} is not in the journal"
                    if changes
                    else f"{op} changes nothing, yet it was journalled"
                )
        for client in (*GUESTS, "operator"):
            sequence = [op for op in ops if op.client == client and op.kind != records.CALL]
            pending = in_order.pop(client, [])
            for op in sequence:
                head = pending[0] if pending else None
                fits = head is not None and (head[1], head[2]) == (op.kind, op.key)
                if op.acked:
                    assert fits, f"answered {op} is not in the journal (next there: {head})"
                    assert head is not None
                    assert head[3] == op.answer, (head, op)
                elif op.in_doubt and fits:
                    assert head is not None
                    if client == "operator":
                        self.operator.expect(op)  # durable, so it happened
                else:
                    continue
                journalled[op] = (head[0], head[3])
                pending.pop(0)
            assert not pending, f"{client}: journalled but never sent: {pending}"
            # A sequential client has one operation in flight; a blocked call does
            # not hold it up.
            extra = [
                op
                for op in journalled
                if op.client == client and op.in_doubt and journalled[op][1] is not None
            ]
            assert len(extra) <= 1, extra
        assert not in_order, f"records of no client: {in_order}"
        # Real time: an operation answered before another was sent comes first.
        ordered = sorted(journalled, key=lambda op: journalled[op][0])
        for i, later in enumerate(ordered):
            for earlier in ordered[:i]:
                assert not (later.done is not None and later.acked and later.done < earlier.sent), (
                    f"{later} was answered before {earlier} was sent, yet journalled after it"
                )
        return journalled

    async def finish(self, index: int) -> None:
        """A last start without a kill: (b), the host woken if it sleeps, then every
        event of the three guests must reach its agent (d), and a clean stop."""
        daemon = await self.start(index, None)
        try:
            async with grpc.aio.insecure_channel(f"unix:{self.socket}") as channel:
                await self.restarted(channel)
                followers = [asyncio.create_task(a.follow()) for a in self.agents.values()]
                try:
                    if self.asleep:
                        await self.wake_host()
                    domains = await self.operator.domains()
                    for name, agent in self.agents.items():
                        last = domains[name].event_seq

                        def caught_up(agent: Agent = agent, last: int = last) -> bool:
                            return max(agent.seen, default=0) >= last

                        await agent.until(caught_up, EVENT_TIMEOUT)
                        missing = set(range(1, last + 1)) - set(agent.seen)
                        assert not missing, f"{name} never received events {sorted(missing)}"
                finally:
                    for task in followers:
                        task.cancel()
                    await asyncio.gather(*followers, return_exceptions=True)
            daemon.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.process.wait(), START_TIMEOUT) == 0
        finally:
            await daemon.reap()


async def test_sigkill_at_random_points_keeps_every_acknowledged_change(
    tmp_path: Path, socket_dir: Path
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.randrange(1 << 32))
    print(f"crash test seed {seed} ({SEED_ENV}={seed} repeats its choices)")
    kinds = [kind for kind, count in KILLS.items() for _ in range(count)]
    crash = Crash(seed, tmp_path, socket_dir / "m.sock")
    crash.rng.shuffle(kinds)
    started = time.monotonic()
    index, plan = 0, None
    try:
        for index, kind in enumerate(kinds):
            plan = crash.plan(kind)
            await crash.cycle(index, plan)
        index, plan = len(kinds), None
        await crash.finish(index)
    except Exception as failure:  # a JournalError of recovery.check too
        failure.add_note(f"crash test seed {seed}, cycle {index} {plan}, files in {tmp_path}")
        raise
    print(
        f"{sum(crash.kills.values())} kills {dict(crash.kills)} "
        f"({crash.asleep_snapshots} recovered from a snapshot of the sleeping host) in "
        f"{time.monotonic() - started:.1f} s; {crash.last_seq} records; "
        f"RPC errors {dict(crash.book.codes)}"
    )
    assert set(crash.book.codes) <= EXPECTED_CODES, crash.book.codes
