"""Fixtures for the integration tests: a real in-process server and a real channel.

Every test talks to ``mediatord.server.app`` over gRPC exactly as a guest agent or
an operator would. Nothing here sleeps: stream reads are awaited with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import pytest

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.config import BoardConfig
from mediatord.server import app

# How long a test waits for one stream message or one RPC before it fails.
TIMEOUT: Final = 5.0
# How many round trips a test waits for the server to start serving a stream.
POLLS: Final = 200
DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
LAST_EVENT_KEY: Final = "x-mediator-last-event"
EVENT_STREAM_KEY: Final = "x-mediator-event-stream"

Metadata = tuple[tuple[str, str], ...]


def identity(domain: str | None = None, principal: str | None = None) -> Metadata:
    """Call metadata naming the domain acted for and, optionally, the caller."""
    pairs: list[tuple[str, str]] = []
    if domain is not None:
        pairs.append((DOMAIN_KEY, domain))
    if principal is not None:
        pairs.append((PRINCIPAL_KEY, principal))
    return tuple(pairs)


class _Stream:
    """A server stream the tests read one message at a time, each with a timeout."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def stream_id(self) -> str:
        """The x-mediator-event-stream the server answered with."""
        metadata = await asyncio.wait_for(self.call.initial_metadata(), TIMEOUT)
        values = [v for k, v in metadata if k == EVENT_STREAM_KEY]
        assert len(values) == 1, metadata
        return str(values[0])

    async def error(self) -> grpc.aio.AioRpcError:
        """Read until the stream fails (skipping nothing: any message is a test failure)."""
        try:
            event = await asyncio.wait_for(self.call.read(), TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return error
        raise AssertionError(f"expected the stream to fail, got {event!r}")

    def cancel(self) -> None:
        self.call.cancel()


class Attached(_Stream):
    """One open Attach stream, read one event at a time with a timeout."""

    async def next(self) -> pb.VcpuEvent:
        event = await asyncio.wait_for(self.call.read(), TIMEOUT)
        assert event is not grpc.aio.EOF, "the Attach stream ended without a status error"
        assert isinstance(event, pb.VcpuEvent)
        return event


class Watching(_Stream):
    """One open Control.WatchEvents stream, read one event at a time with a timeout."""

    async def next(self) -> pb.SystemEvent:
        event = await asyncio.wait_for(self.call.read(), TIMEOUT)
        assert event is not grpc.aio.EOF, "the WatchEvents stream ended without a status error"
        assert isinstance(event, pb.SystemEvent)
        return event

    async def until(self, last: Callable[[pb.SystemEvent], bool]) -> list[pb.SystemEvent]:
        """Every event up to and including the first one ``last`` accepts."""
        events = [await self.next()]
        while not last(events[-1]):
            events.append(await self.next())
        return events


@dataclass
class Mediator:
    """A started server, a channel to it and the stubs a test needs."""

    server: app.Server
    channel: grpc.aio.Channel
    target: str
    guest: pb_grpc.GuestStub
    control: pb_grpc.ControlStub

    # Helpers reachable through the fixture (test modules do not import conftest).
    identity = staticmethod(identity)
    timeout: float = TIMEOUT
    # The server's clock when it was started with one the test moves (manual_mediator).
    clock: ManualClock | None = None

    @staticmethod
    async def refusal(rpc: Awaitable[Any]) -> grpc.aio.AioRpcError:
        """Await a unary RPC that must fail; return its error."""
        try:
            reply = await rpc
        except grpc.aio.AioRpcError as error:
            return error
        raise AssertionError(f"expected a gRPC error, got {reply!r}")

    async def call(self, domain: str, fid: int, *args: int, vcpu: int = 0) -> list[int]:
        """One Guest.Call from ``vcpu`` of ``domain``; returns x0..x3."""
        reply = await self.guest.Call(
            pb.SmcCall(vcpu=vcpu, function_id=fid, args=args),
            metadata=identity(domain),
            timeout=TIMEOUT,
        )
        return list(reply.regs)

    async def call_stream(
        self, metadata: Metadata, requests: Iterable[pb.SmcCall]
    ) -> list[list[int]]:
        """Guest.CallStream: all requests pipelined, every result read in order."""
        stream = self.guest.CallStream(metadata=metadata, timeout=TIMEOUT)
        for request in requests:
            await stream.write(request)
        await stream.done_writing()
        results = []
        while (reply := await asyncio.wait_for(stream.read(), TIMEOUT)) is not grpc.aio.EOF:
            assert isinstance(reply, pb.SmcResult)
            results.append(list(reply.regs))
        return results

    async def call_stream_refusal(self, metadata: Metadata) -> grpc.aio.AioRpcError:
        """Guest.CallStream with one PSCI_VERSION call that must fail; return its error."""
        stream = self.guest.CallStream(
            iter([pb.SmcCall(function_id=0x8400_0000)]), metadata=metadata, timeout=TIMEOUT
        )
        try:
            replies = [reply async for reply in stream]
        except grpc.aio.AioRpcError as error:
            return error
        raise AssertionError(f"expected a gRPC error, got {replies!r}")

    def attach(
        self, domain: str | None, principal: str | None = None, last_event: str | None = None
    ) -> Attached:
        """Guest.Attach; ``last_event``: x-mediator-last-event (STREAM/SEQ)."""
        metadata = identity(domain, principal)
        if last_event is not None:
            metadata += ((LAST_EVENT_KEY, last_event),)
        return Attached(
            self.guest.Attach(pb.AttachRequest(), metadata=metadata, timeout=TIMEOUT * 4)
        )

    async def domains(self) -> pb.ListDomainsResponse:
        return await self.control.ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT)

    async def domain(self, name: str) -> pb.DomainInfo:
        for info in (await self.domains()).domains:
            if info.name == name:
                return info
        raise AssertionError(f"no domain {name!r} in ListDomains")

    async def system(self) -> pb.SystemInfo:
        """GetSystem without the fields that move with time (the clock and the
        system counter) or keep history (the last suspend/resume steps), so that
        responses compare equal when state does."""
        system = await self.control.GetSystem(pb.GetSystemRequest(), timeout=TIMEOUT)
        system.ClearField("now_ns")
        system.ClearField("counter")
        system.ClearField("last_suspend_steps")
        system.ClearField("last_resume_steps")
        return system

    async def raise_irq(
        self, irq: int, domain: str = "", vcpu: int = 0
    ) -> pb.RaiseInterruptResponse:
        return await self.control.RaiseInterrupt(
            pb.RaiseInterruptRequest(irq=irq, domain=domain, vcpu=vcpu), timeout=TIMEOUT
        )

    async def watch(
        self, domain: str | None = None, principal: str | None = None, *, served: bool = True
    ) -> Watching:
        """Open Control.WatchEvents. With ``served`` (the caller may watch), return only
        once the server follows the stream, so that no later change can be missed: a
        stream only sees what happens after its handler started."""
        engine = self.server.engine
        before = len(engine.watchers)
        stream = Watching(
            self.control.WatchEvents(
                pb.WatchEventsRequest(), metadata=identity(domain, principal), timeout=TIMEOUT * 4
            )
        )
        if served:
            for _ in range(POLLS):
                if len(engine.watchers) > before:
                    break
                await self.control.GetSystem(pb.GetSystemRequest(), timeout=TIMEOUT)
            else:
                stream.cancel()
                raise AssertionError("the server never started following WatchEvents")
        return stream


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path is limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="mtd-") as scratch:
        yield Path(scratch)


@pytest.fixture(params=["unix"])
def transport(request: pytest.FixtureRequest) -> str:
    """Which development listener the server gets; modules override with parametrize."""
    kind = request.param
    assert kind in ("unix", "tcp")
    return str(kind)


@contextlib.asynccontextmanager
async def serve(
    transport: str,
    socket_dir: Path,
    clock: ManualClock | None = None,
    state_dir: Path | None = None,
    board: BoardConfig | None = None,
) -> AsyncIterator[Mediator]:
    """A server booted with ``board`` (default: the default board), on a unix socket
    or loopback TCP, journalling in ``state_dir`` (default: a fresh one, as the
    daemon always does)."""
    listener = (
        app.Listener(unix=socket_dir / "m.sock")
        if transport == "unix"
        else app.Listener(tcp="127.0.0.1:0")
    )
    server = await app.start(
        board or default_board(),
        [listener],
        clock=clock,
        state_dir=state_dir or socket_dir / "state",
    )
    target = server.addresses[0]
    if transport == "unix":
        assert target == f"unix:{socket_dir / 'm.sock'}"
        # The socket is the credential on this listener (design section 4).
        assert stat.S_IMODE((socket_dir / "m.sock").stat().st_mode) == 0o600
    else:
        host, port = app.split_host_port(target)
        assert host == "127.0.0.1"
        assert port > 0
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Mediator(
            server=server,
            channel=channel,
            target=target,
            guest=pb_grpc.GuestStub(channel),
            control=pb_grpc.ControlStub(channel),
            clock=clock,
        )
    finally:
        await channel.close()
        await server.stop(grace=0)


@pytest.fixture
def board() -> BoardConfig:
    """The board the servers boot; the backend-parametrized modules override it."""
    return default_board()


@pytest.fixture
async def mediator(transport: str, socket_dir: Path, board: BoardConfig) -> AsyncIterator[Mediator]:
    """A server booted with ``board``, on a unix socket or loopback TCP."""
    async with serve(transport, socket_dir, board=board) as served:
        yield served


@pytest.fixture
async def manual_mediator(
    transport: str, socket_dir: Path, board: BoardConfig
) -> AsyncIterator[Mediator]:
    """The same server on a :class:`ManualClock` (``.clock``): time moves only when the
    test advances it or the emulated hardware models a latency, so durations are exact."""
    async with serve(transport, socket_dir, ManualClock(), board=board) as served:
        assert served.clock is not None
        yield served
