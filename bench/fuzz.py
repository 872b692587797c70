"""Fuzz a real mediatord over gRPC: random SMC frames and Control requests from random
callers, checking that every answer is documented and the system stays consistent.

Prints one JSON object: frames, seconds, frames_per_second, status counts and errors
(which must be 0; the exit status is 1 otherwise). The server runs in this process, on
a unix socket, on its own event loop in a background thread; the fuzzer talks to it
with blocking gRPC stubs, as tests/integration/test_fuzz.py does.

This file is also the fuzzing harness of tests/integration/test_fuzz.py, which loads it:
an example is decoded from bytes (:func:`decode_example`), here random bytes, there
bytes drawn by Hypothesis, so both fuzz with the same distribution and the same rules.

- An example is one caller (metadata; sometimes one that is not allowed) sending a
  batch of 30-50 SmcCall frames through one CallStream (sometimes as a burst of unary
  Calls), plus up to three Control requests from random callers. Frames are biased
  toward what reaches the core: PSCI (0x84/0xC4) and SiP/EEMI (0x82/0xC2) function IDs,
  small arguments and RAM addresses, vCPU 0; but any 32-bit ID, 0..20 arguments of any
  64-bit value, any vCPU index and any conduit value occur.
- A CallStream ends at the first refused frame (the status is that frame's answer); the
  frames after it go out on a new stream, so every frame gets its own answer. A stream
  refused as a whole (UNAUTHENTICATED / PERMISSION_DENIED: the caller, not a frame)
  answers one frame; the rest of its batch is not sent, nor the rest of a batch whose
  frames were refused five times in a row (counted in frames_abandoned).
- Frames go through a stream one at a time (write, then read the answer), because a
  grpc.aio client whose write is in flight when the server ends the stream reports
  INTERNAL "Internal error from Core" instead of the server's status.
- A standby CPU_SUSPEND blocks until an interrupt: every CPU_SUSPEND frame goes as a
  unary Call with a 0.05 s deadline and may answer DEADLINE_EXCEEDED. Three in four
  that block are woken at once by the virtual timer (they answer SUCCESS); the vCPUs
  of the others are woken after the example.
- dom0's SYSTEM_OFF powers the host off for good. It stays in the fuzz: after an
  example that left the host OFF the server is restarted (counted in server_restarts).
- After every example: health SERVING, and the invariants of :meth:`Fuzzer.check`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.backends.zynqmp.platform import ZynqMP
from mediatord.board import default_board
from mediatord.core import suspend
from mediatord.core.eemi import PmApi
from mediatord.core.psci import PsciFn
from mediatord.server import app

RPC_TIMEOUT: Final = 5.0  # an RPC taking longer than this is a hang
SUSPEND_TIMEOUT: Final = 0.05  # how long a standby CPU_SUSPEND may block
BATCH_MIN: Final = 30
BATCH_MAX: Final = 50
# A batch whose frames keep being refused (its domain shut down, its vCPU went to
# sleep) costs a stream per frame and tells little more: after this many refusals in
# a row the rest of the batch is dropped (counted as abandoned, not as frames).
GIVE_UP_AFTER: Final = 5

DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
S = grpc.StatusCode
# What a guest call may answer besides a result (docs/psci.md "Conventions",
# docs/security.md): refused callers, calls the hardware could not have made, limits.
GUEST_CODES: Final = frozenset(
    {
        S.OK,
        S.INVALID_ARGUMENT,
        S.FAILED_PRECONDITION,
        S.UNAUTHENTICATED,
        S.PERMISSION_DENIED,
        S.RESOURCE_EXHAUSTED,
    }
)
SUSPEND_CODES: Final = GUEST_CODES | {S.DEADLINE_EXCEEDED}
CONTROL_CODES: Final = frozenset(
    {
        S.OK,
        S.INVALID_ARGUMENT,
        S.FAILED_PRECONDITION,
        S.NOT_FOUND,
        S.ALREADY_EXISTS,
        S.UNAUTHENTICATED,
        S.PERMISSION_DENIED,
    }
)

BOARD: Final = default_board()
U32: Final = 2**32 - 1
SYSTEM_RESET: Final = int(PsciFn.SYSTEM_RESET)
PSCI_VERSION: Final = int(PsciFn.PSCI_VERSION)
# What grpc.aio's client (not the server) reports when it loses a stream's status.
LOST_STATUS: Final = "Internal error from Core"
CPU_SUSPEND_IDS: Final = frozenset({int(PsciFn.CPU_SUSPEND), int(PsciFn.CPU_SUSPEND_64)})
PSCI_IDS: Final = (
    int(PsciFn.PSCI_VERSION),
    *sorted(int(f) for f in PsciFn if f != PsciFn.PSCI_VERSION),
    0x8000_0000,  # SMCCC_VERSION
    0x8000_0001,  # SMCCC_ARCH_FEATURES
)
EEMI_APIS: Final = tuple(int(a) for a in PmApi)
SPECIAL_REGS: Final = (0x1_0000, 0x100, 0x101, U32, 1 << 32, 1 << 63, 2**64 - 1)
VCPU_TABLE: Final = (0,) * 12 + (1, 1, 1, 2, 3)
DOMAIN_NAMES: Final = ("domu1", "dom0", "domu2")
NAMES: Final = (*DOMAIN_NAMES, "fuzz1", "fuzz2", "nosuch")
DEVICES: Final = tuple(d.name for d in BOARD.devices)
IRQS: Final = (*(d.irq for d in BOARD.devices), 27)  # device SPIs and the virtual timer
STEPS: Final = tuple(sorted({*suspend.STEP_NAMES, *ZynqMP.FAULTS}))

Metadata = tuple[tuple[str, str], ...]


def md(domain: str | None = None, principal: str | None = None) -> Metadata:
    pairs = [] if domain is None else [(DOMAIN_KEY, domain)]
    return tuple(pairs + ([] if principal is None else [(PRINCIPAL_KEY, principal)]))


# Mostly a domain acting for itself, so that most frames reach the core.
OWN: Final = (*(md(d) for d in DOMAIN_NAMES), *(md(d, f"domain/{d}") for d in DOMAIN_NAMES))
STRANGERS: Final = (
    md(),
    md("domu1", "operator/ops"),
    md("domu2", "domain/domu1"),
    md("dom0", "domain/domu2"),
    md("nosuch"),
    md("domu1", "bogus"),
    md("fuzz1"),  # exists only once a random CreateDomain made it
    md("fuzz2"),
)
GUEST_CALLERS: Final = OWN * 4 + STRANGERS
CONTROL_CALLERS: Final = (
    md(),
    md(),
    md(principal="operator/ops"),
    md(principal="operator/ops"),
    md("dom0"),
    md("domu1"),
    md(principal="x"),
)
CONTROL_METHODS: Final = (
    "RaiseInterrupt",
    "RaiseInterrupt",
    "CreateDomain",
    "DestroyDomain",
    "AssignDevice",
    "ReleaseDevice",
    "InjectFault",
    "GetSystem",
    "ListDomains",
)


# --------------------------------------------------------------------- decoding


class Cursor:
    """Reads biased choices from bytes; past the end every byte is 0 (the simplest
    choice), so any byte string decodes, and shorter ones decode to simpler examples."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def bits(self, nbytes: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(nbytes)), "big")

    def pick(self, table: Sequence[Any]) -> Any:
        return table[self.byte() % len(table)]

    def often(self, table: Sequence[Any], rare: Any) -> Any:
        """A table entry 7 times in 8, else ``rare()``."""
        return table[self.byte() % len(table)] if self.byte() < 0xE0 else rare()

    def text(self, longest: int) -> str:
        chars = []
        for _ in range(self.byte() % (longest + 1)):
            if self.byte() < 0x80:
                chars.append(chr(ord("a") + self.byte() % 26))
            else:
                point = self.bits(3) % 0x11_0000
                chars.append(chr(point - 0x800 if 0xD800 <= point <= 0xDFFF else point))
        return "".join(chars)

    def int32(self) -> int:
        return self.bits(4) - 2**31


def decode_function_id(c: Cursor) -> int:
    branch = c.byte() % 16
    if branch <= 4:
        return int(c.pick(PSCI_IDS))
    if branch == 5:
        return 0x8400_0000 | c.byte() & 0x1F
    if branch == 6:
        return 0xC400_0000 | c.byte() & 0x1F
    if branch <= 9:
        return 0x8200_0000 | int(c.pick(EEMI_APIS))
    if branch == 10:
        return 0xC200_0000 | int(c.pick(EEMI_APIS))
    if branch == 11:
        return 0x8200_0000 | c.bits(2)
    if branch == 12:
        return 0xC200_0000 | c.bits(2)
    if branch == 13:
        return 0x8000_0000 | c.byte() & 0x3
    return c.bits(4)


def decode_register(c: Cursor) -> int:
    branch = c.byte() % 8
    if branch <= 1:
        return c.byte()  # vCPU indexes, node IDs, flags
    if branch == 2:
        return 0x4000_0000 + c.bits(4) % 0x1000_0000  # in a domU's RAM
    if branch == 3:
        return int(c.pick(SPECIAL_REGS))
    if branch == 4:
        return c.bits(4)
    return c.bits(8)


def decode_frame(c: Cursor) -> pb.SmcCall:
    selector = c.byte()
    vcpu = VCPU_TABLE[selector % len(VCPU_TABLE)] if selector < 0xF0 else c.bits(4)
    function_id = decode_function_id(c)
    count = c.byte()
    nargs = count % 5 if count < 0xF0 else 5 + count % 16  # up to 20: 18+ are refused
    args = [decode_register(c) for _ in range(nargs)]
    conduit = c.byte()
    return pb.SmcCall(
        vcpu=vcpu,
        function_id=function_id,
        args=args,
        conduit=conduit % 2 if conduit < 0xF8 else c.int32(),
    )


def decode_control(c: Cursor) -> tuple[Metadata, str, Any]:
    caller = c.pick(CONTROL_CALLERS)
    method = c.pick(CONTROL_METHODS)

    def name() -> str:
        return str(c.often(NAMES, lambda: c.text(40)))

    def device() -> str:
        return str(c.often(DEVICES, lambda: c.text(12)))

    request: Any
    if method == "RaiseInterrupt":
        vcpu = c.byte()
        request = pb.RaiseInterruptRequest(
            irq=c.often(IRQS, lambda: c.bits(4)),
            domain=name(),
            vcpu=VCPU_TABLE[vcpu % len(VCPU_TABLE)] if vcpu < 0xF0 else c.bits(4),
        )
    elif method == "CreateDomain":
        request = pb.CreateDomainRequest(
            name=name(),
            vcpus=c.often((1, 2, 3, 4), lambda: c.bits(4)),
            ram_base=c.often((0x4000_0000,), lambda: c.bits(8)),
            ram_size=c.often((0x1000_0000, 0x10_0000), lambda: c.bits(8)),
            aarch32=bool(c.byte() & 1),
            devices=[device() for _ in range(c.byte() % 4)],
        )
    elif method == "DestroyDomain":
        request = pb.DestroyDomainRequest(name=name())
    elif method == "AssignDevice":
        request = pb.AssignDeviceRequest(domain=name(), device=device())
    elif method == "ReleaseDevice":
        request = pb.ReleaseDeviceRequest(domain=name(), device=device())
    elif method == "InjectFault":
        request = pb.InjectFaultRequest(
            step=str(c.often(STEPS, lambda: c.text(20))),
            count=c.often((0, 1, 2), lambda: c.bits(4)),
            error=c.often((0, -1, -2, -3, -5, -6, -9, -10), c.int32),
        )
    elif method == "GetSystem":
        request = pb.GetSystemRequest()
    else:
        request = pb.ListDomainsRequest()
    return caller, method, request


@dataclass(frozen=True)
class Example:
    caller: Metadata
    unary: bool  # a burst of unary Calls rather than one CallStream
    frames: list[pb.SmcCall]
    controls: list[tuple[Metadata, str, Any]]  # half before the frames, half after


def decode_example(data: bytes) -> Example:
    c = Cursor(data)
    caller = c.pick(GUEST_CALLERS)
    unary = c.byte() >= 0xD8  # about one example in six
    frames = [decode_frame(c) for _ in range(BATCH_MIN + c.byte() % (BATCH_MAX - BATCH_MIN + 1))]
    controls = [decode_control(c) for _ in range(c.byte() % 4)]
    return Example(caller, unary, frames, controls)


# ----------------------------------------------------------------------- server


class ThreadedServer:
    """mediatord on a unix socket, served by an event loop in a background thread. The
    fuzzer's aio client runs on the same loop (:meth:`run` hands it a coroutine): a
    blocking client would start two threads per stream, which costs more than the call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.restarts = -1
        self.server: app.Server | None = None
        self.channel: grpc.aio.Channel | None = None
        self.run(self.start())

    def run(self, coroutine: Any, timeout: float = 600.0) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def start(self) -> None:
        self.restarts += 1
        socket = self.directory / f"f{self.restarts}.sock"
        self.server = await app.start(BOARD, [app.Listener(unix=socket)])
        self.channel = grpc.aio.insecure_channel(self.server.addresses[0])
        self.guest = pb_grpc.GuestStub(self.channel)
        self.control = pb_grpc.ControlStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop(grace=0)
        self.server = self.channel = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def close(self) -> None:
        self.run(self.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(RPC_TIMEOUT)
        self.loop.close()


def quiet_logs() -> dict[str, Any]:
    """Errors only: the server logs every call and warns of every refusal, which at
    fuzzing rates costs more than the calls. Returns the previous setup."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    return saved


# ----------------------------------------------------------------------- fuzzer


@dataclass
class Fuzzer:
    """Sends examples to a server and records every answer and every broken rule."""

    server: ThreadedServer
    frames: int = 0  # frames that got their own answer
    controls: int = 0
    examples: int = 0
    suspends: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    host_states: Counter[str] = field(default_factory=Counter)
    revivals: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    refused: bool = False  # the current example's caller was refused: send no more
    suspended_for: int = 0  # examples in a row that left the host suspended
    refusals_in_a_row: int = 0
    abandoned: int = 0  # frames not sent: see GIVE_UP_AFTER
    lost_statuses: int = 0  # see _refused_caller

    def run(self, example: Example) -> None:
        """Send one example, check the invariants, revive what the fuzz broke for good."""
        self.server.run(self._run(example))

    def _answer(self, rpc: str, code: grpc.StatusCode, allowed: frozenset[grpc.StatusCode]) -> None:
        self.statuses[f"{rpc}:{code.name}"] += 1
        if code not in allowed:
            self.errors.append(f"{rpc} answered {code.name}, not a documented status")

    def _result(self, rpc: str, frame: pb.SmcCall, reply: pb.SmcResult) -> None:
        self.statuses[f"{rpc}:OK"] += 1
        if len(reply.regs) != 4:
            self.errors.append(f"{rpc} {frame} answered {len(reply.regs)} registers: {reply}")

    async def _stream(self, caller: Metadata, frames: list[pb.SmcCall]) -> None:
        """``frames`` through CallStream, one at a time (write, read its answer): a
        grpc.aio client that is still writing when the server ends the stream reads
        INTERNAL "Internal error from Core" instead of the server's status (grpc's
        client, whatever the server), and the status is what is checked here."""
        rest = frames
        while rest:
            answered = 0
            call = self.server.guest.CallStream(metadata=caller, timeout=RPC_TIMEOUT)
            try:
                for frame in rest:
                    await call.write(frame)
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        self.errors.append(f"CallStream ended without a status after {frame}")
                        return
                    self._result("CallStream", frame, reply)
                    answered += 1
                await call.done_writing()
                end = await call.read()
                if end is not grpc.aio.EOF:
                    self.errors.append(f"CallStream answered more than asked: {end}")
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code is S.INTERNAL and error.details() == LOST_STATUS and not answered:
                    code = await self._refused_caller(caller)
                self.frames += answered + 1
                self._answer("CallStream", code, GUEST_CODES - {S.OK})
                if code is S.DEADLINE_EXCEEDED or code not in GUEST_CODES:
                    frame = rest[answered] if answered < len(rest) else None
                    self.errors.append(f"  caller {caller}, frame {frame}: {error.details()}")
                if code in (S.UNAUTHENTICATED, S.PERMISSION_DENIED):
                    self.refused = True
                    return  # the caller was refused, not a frame: so would the rest be
                rest = rest[answered + 1 :]
                self.refusals_in_a_row = 1 if answered else self.refusals_in_a_row + 1
                if self.refusals_in_a_row >= GIVE_UP_AFTER:
                    self.abandoned += len(rest)
                    self.refused = True
                    return
            else:
                self.frames += answered
                self.refusals_in_a_row = 0
                return

    async def _refused_caller(self, caller: Metadata) -> grpc.StatusCode:
        """The status of a CallStream the server ended before its first frame, which
        the client lost: grpc.aio reports INTERNAL "Internal error from Core" when the
        server ends a stream while a write is in flight (client-side, rarely, only for
        a caller refused at the start). A unary Call with the same metadata is
        authorized the same way: its auth status is the stream's. Anything else leaves
        the INTERNAL unexplained (an error)."""
        self.lost_statuses += 1
        try:
            await self.server.guest.Call(
                pb.SmcCall(function_id=PSCI_VERSION), metadata=caller, timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (S.UNAUTHENTICATED, S.PERMISSION_DENIED):
                return error.code()
        return S.INTERNAL

    async def _unary(self, caller: Metadata, frame: pb.SmcCall) -> None:
        suspending = frame.function_id in CPU_SUSPEND_IDS
        self.suspends += suspending
        self.frames += 1
        call = self.server.guest.Call(
            frame, metadata=caller, timeout=SUSPEND_TIMEOUT if suspending else RPC_TIMEOUT
        )
        if suspending and self.suspends % 4:
            await self._wake_when_blocked(call, dict(caller).get(DOMAIN_KEY), frame.vcpu)
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            allowed = SUSPEND_CODES if suspending else GUEST_CODES
            self._answer("Call", error.code(), allowed)
            self.refused = error.code() in (S.UNAUTHENTICATED, S.PERMISSION_DENIED)
            if error.code() not in allowed:
                self.errors.append(f"  caller {caller}, frame {frame}: {error.details()}")
        else:
            self._result("Call", frame, reply)

    async def _wake_when_blocked(self, call: Any, domain: str | None, vcpu: int) -> None:
        """Three blocked CPU_SUSPENDs in four are woken by the virtual timer as soon as
        the engine holds them (they answer SUCCESS); the fourth waits out its deadline."""
        engine = self.server.server.engine if self.server.server else None
        if engine is None or domain is None:
            return
        for _ in range(50):
            if call.done():
                return
            if engine.inflight.get(domain):
                self.revivals["wake_blocked_call"] += 1
                await self._harness_control(
                    "RaiseInterrupt", pb.RaiseInterruptRequest(irq=27, domain=domain, vcpu=vcpu)
                )
                return
            await asyncio.sleep(0.0005)

    async def _control(self, caller: Metadata, method: str, request: Any) -> None:
        self.controls += 1
        try:
            await getattr(self.server.control, method)(
                request, metadata=caller, timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            self._answer(method, error.code(), CONTROL_CODES)
            if error.code() not in CONTROL_CODES:
                self.errors.append(f"  caller {caller}, {method}({request}): {error.details()}")
        else:
            self.statuses[f"{method}:OK"] += 1

    async def _run(self, example: Example) -> None:
        self.examples += 1
        self.refused = False
        self.refusals_in_a_row = 0
        half = len(example.controls) // 2
        for caller, method, request in example.controls[:half]:
            await self._control(caller, method, request)
        segment: list[pb.SmcCall] = []
        for frame in example.frames:
            if example.unary or frame.function_id in CPU_SUSPEND_IDS:
                if segment:
                    await self._stream(example.caller, segment)
                    segment = []
                await self._unary(example.caller, frame)
            else:
                segment.append(frame)
            if self.refused:
                break
        if segment and not self.refused:
            await self._stream(example.caller, segment)
        for caller, method, request in example.controls[half:]:
            await self._control(caller, method, request)
        await self._revive(*await self._check())

    async def _revive(self, host: int, domains: Sequence[pb.DomainInfo]) -> None:
        """Keep the fuzz reaching the core rather than answering FAILED_PRECONDITION:
        interrupts wake vCPUs left in CPU_SUSPEND, dom0's SYSTEM_RESET reboots domains
        that shut down or suspended, and a host powered off (or suspended for three
        examples in a row), or a board domain destroyed, means a new server."""
        states = {d.name: d for d in domains}
        self.suspended_for = self.suspended_for + 1 if host == pb.HOST_STATE_SUSPENDED else 0
        if (
            host == pb.HOST_STATE_OFF
            or self.suspended_for >= 3
            or any(n not in states for n in DOMAIN_NAMES)
        ):
            self.revivals["restart"] += 1
            self.suspended_for = 0
            await self.server.restart()
            await self._check()
            return
        if host != pb.HOST_STATE_ACTIVE:
            return  # a suspended host may wake on a random device interrupt
        for d in domains:
            for v in d.vcpus:
                if v.power in (pb.VCPU_POWER_STANDBY, pb.VCPU_POWER_POWERDOWN):
                    self.revivals["wake_vcpu"] += 1
                    await self._harness_control(
                        "RaiseInterrupt",
                        pb.RaiseInterruptRequest(irq=27, domain=d.name, vcpu=v.index),
                    )
        if all(
            d.state not in (pb.DOMAIN_STATE_SHUTDOWN, pb.DOMAIN_STATE_SUSPENDED) for d in domains
        ):
            return
        on = [v.index for v in states["dom0"].vcpus if v.power == pb.VCPU_POWER_ON]
        if not on:
            self.revivals["restart"] += 1
            await self.server.restart()
        else:
            self.revivals["dom0_system_reset"] += 1
            reply = await self.server.guest.Call(
                pb.SmcCall(vcpu=on[0], function_id=SYSTEM_RESET),
                metadata=md("dom0"),
                timeout=RPC_TIMEOUT,
            )
            if list(reply.regs) != [0, 0, 0, 0]:
                self.errors.append(f"dom0 SYSTEM_RESET answered {list(reply.regs)}")
        await self._check()

    async def _harness_control(self, method: str, request: Any) -> None:
        try:
            await getattr(self.server.control, method)(request, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() not in CONTROL_CODES:
                self.errors.append(f"{method}({request}) answered {error.code().name}")

    def check(self) -> tuple[int, Sequence[pb.DomainInfo]]:
        """The invariants (see :meth:`_check`), from outside the server's loop."""
        result: tuple[int, Sequence[pb.DomainInfo]] = self.server.run(self._check())
        return result

    async def _check(self) -> tuple[int, Sequence[pb.DomainInfo]]:
        """The invariants; returns the host state and the domains. A broken invariant
        is recorded in errors."""
        before = len(self.errors)
        problems = self.errors
        server = self.server
        health = await server.health.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT
        )
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            problems.append(f"health check: {health}")
        listed = await server.control.ListDomains(pb.ListDomainsRequest(), timeout=RPC_TIMEOUT)
        domains = listed.domains
        system = await server.control.GetSystem(pb.GetSystemRequest(), timeout=RPC_TIMEOUT)
        host = system.host_state
        self.host_states[pb.HostState.Name(host)] += 1
        if system.domains != len(domains):
            problems.append(f"GetSystem counts {system.domains} domains, ListDomains {domains}")
        if not len({d.name for d in domains}) == len({d.id for d in domains}) == len(domains):
            problems.append(f"domain names or ids repeat: {domains}")
        for d in domains:
            powers = [v.power for v in d.vcpus]
            if d.state not in (
                pb.DOMAIN_STATE_RUNNING,
                pb.DOMAIN_STATE_SUSPENDED,
                pb.DOMAIN_STATE_PAUSED,
                pb.DOMAIN_STATE_SHUTDOWN,
            ):
                problems.append(f"domain {d.name} in state {d.state}")
            if pb.VCPU_POWER_UNSPECIFIED in powers:
                problems.append(f"domain {d.name} has a vCPU of unspecified power: {d}")
            if d.state == pb.DOMAIN_STATE_RUNNING and set(powers) == {pb.VCPU_POWER_OFF}:
                problems.append(f"domain {d.name} is RUNNING with every vCPU OFF: {d}")
            if d.state == pb.DOMAIN_STATE_SHUTDOWN and set(powers) != {pb.VCPU_POWER_OFF}:
                problems.append(f"domain {d.name} is SHUTDOWN with a vCPU not OFF: {d}")
        states = {d.name: d.state for d in domains}
        if [d.name for d in domains if d.hardware_domain] != ["dom0"]:
            problems.append(f"the hardware domain is not dom0 alone: {domains}")
        dom0 = states.get("dom0")
        others = [state for n, state in states.items() if n != "dom0"]
        if host == pb.HOST_STATE_ACTIVE:
            if dom0 != pb.DOMAIN_STATE_RUNNING or pb.DOMAIN_STATE_PAUSED in others:
                problems.append(f"host ACTIVE with domains {_states(domains)}")
        elif host == pb.HOST_STATE_SUSPENDED:
            if dom0 != pb.DOMAIN_STATE_SUSPENDED or pb.DOMAIN_STATE_RUNNING in others:
                problems.append(f"host SUSPENDED with domains {_states(domains)}")
        elif host == pb.HOST_STATE_OFF:
            if set(states.values()) != {pb.DOMAIN_STATE_SHUTDOWN}:
                problems.append(f"host OFF with domains {_states(domains)}")
        else:
            problems.append(f"GetSystem shows the host {pb.HostState.Name(host)}")
        if len(problems) > before:
            problems.append(f"  after example {self.examples}")
        return host, domains

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "seconds": round(seconds, 2),
            "frames_per_second": round(self.frames / seconds) if seconds else 0,
            "examples": self.examples,
            "frames_abandoned": self.abandoned,
            "controls": self.controls,
            "cpu_suspend_frames": self.suspends,
            "statuses_lost_by_the_client": self.lost_statuses,
            "revivals": dict(self.revivals),
            "host_states_after_examples": dict(self.host_states),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": len(self.errors),
            "first_errors": self.errors[:20],
        }


def _states(domains: Sequence[pb.DomainInfo]) -> dict[str, str]:
    return {d.name: pb.DomainState.Name(d.state) for d in domains}


# ------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames to send")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    saved = quiet_logs()
    with tempfile.TemporaryDirectory(prefix="mtd-") as scratch:
        server = ThreadedServer(Path(scratch))
        fuzzer = Fuzzer(server)
        started = time.perf_counter()
        try:
            while fuzzer.frames < args.frames:
                data = rng.randbytes(rng.randint(400, 1600))
                try:
                    fuzzer.run(decode_example(data))
                except Exception as error:  # a timeout or a broken reply: an error, go on
                    fuzzer.errors.append(f"example {fuzzer.examples}: {error!r}")
                    if server.server is None:
                        server.run(server.start())
            seconds = time.perf_counter() - started
        finally:
            server.close()
            structlog.configure(**saved)
    print(json.dumps({"benchmark": "fuzz", "seed": args.seed, **fuzzer.summary(seconds)}))
    return 1 if fuzzer.errors else 0


if __name__ == "__main__":
    sys.exit(main())
