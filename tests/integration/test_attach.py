"""Attach acknowledgements (docs/architecture.md, "Attach: a mailbox per domain").

The daemon names its numbering of a domain's events in the initial metadata
(``x-mediator-event-stream``). An agent attaching again with
``x-mediator-last-event: STREAM/SEQ`` gets every later event exactly once, including
those that were in the transport when its previous stream broke.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from mediator_client.agent import AsyncGuestAgent

from mediatord.api.mediator.v1 import mediator_pb2 as pb

VTIMER: Final = 27
POLLS: Final = 200
WAKES: Final = 100


async def _handed_over(mediator: Any, domain_id: int) -> None:
    """Wait (in round trips) until the server handed every queued event to the stream."""
    box = mediator.server.engine.mailboxes[domain_id]
    for _ in range(POLLS):
        if box.waiting() == 0:
            return
        await mediator.control.GetSystem(pb.GetSystemRequest(), timeout=mediator.timeout)
    raise AssertionError(f"{box.waiting()} events never left the mailbox")


async def test_events_in_flight_when_a_stream_breaks_come_again_exactly_once(mediator: Any) -> None:
    events = mediator.attach("domu1", last_event="none")
    stream_id = await events.stream_id()
    # domu1 has id 1; the part before is the daemon's (journal's) history.
    assert stream_id.endswith(".1")
    assert len(stream_id) > 2
    boot = await events.next()
    assert (boot.seq, boot.WhichOneof("kind")) == (1, "start")
    for _ in range(WAKES):
        await mediator.raise_irq(VTIMER, "domu1", 0)
    # All 100 WAKEs are now written to the transport, and the agent read none of them.
    await _handed_over(mediator, 1)
    events.cancel()

    again = mediator.attach("domu1", last_event=f"{stream_id}/1")
    assert await again.stream_id() == stream_id
    seqs = [(await again.next()).seq for _ in range(WAKES)]
    assert seqs == list(range(2, WAKES + 2))
    await mediator.raise_irq(VTIMER, "domu1", 0)
    assert (await again.next()).seq == WAKES + 2  # no repeat before it
    again.cancel()


async def test_an_attach_that_says_nothing_takes_each_event_as_it_is_written(
    mediator: Any,
) -> None:
    events = mediator.attach("domu1")
    assert (await events.next()).seq == 1
    await mediator.raise_irq(VTIMER, "domu1", 0)
    assert (await events.next()).seq == 2
    await _handed_over(mediator, 1)
    events.cancel()
    await mediator.raise_irq(VTIMER, "domu1", 0)
    # 1 is acknowledged; 2, still being written when the stream ended, may come again.
    again = mediator.attach("domu1")
    first = (await again.next()).seq
    assert first in (2, 3)
    if first == 2:
        assert (await again.next()).seq == 3
    again.cancel()


async def test_another_event_stream_acknowledges_nothing(mediator: Any) -> None:
    """An agent whose numbering is not the daemon's (it restarted without its journal,
    or the domain was made again) gets every event not acknowledged, from seq 1."""
    await mediator.raise_irq(VTIMER, "domu1", 0)
    events = mediator.attach("domu1", last_event="0123456789abcdef.1/2")
    assert [(await events.next()).seq for _ in range(2)] == [1, 2]
    events.cancel()


@pytest.mark.parametrize(
    "value",
    ["7", "/7", "h.1/", "h.1/-1", "h.1/0x10", f"h.1/{2**64}", "h.1/" + "9" * 5000],
)
async def test_a_malformed_last_event_is_invalid_argument(mediator: Any, value: str) -> None:
    error = await mediator.attach("domu1", last_event=value).error()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    shown = value if len(value) <= 64 else value[:64] + "..."
    assert error.details() == (
        "x-mediator-last-event must be STREAM/SEQ (the x-mediator-event-stream of an "
        "earlier Attach and the seq of the last event received from it), '0' (nothing "
        f"received, not even the stream) or 'none' (a new agent), not {shown!r}"
    )
    # Nothing was taken: the boot START is still there for a proper Attach.
    events = mediator.attach("domu1")
    assert (await events.next()).seq == 1
    events.cancel()


async def test_a_last_event_beyond_the_domains_newest_is_invalid_argument(mediator: Any) -> None:
    events = mediator.attach("domu1", last_event="none")
    stream_id = await events.stream_id()
    events.cancel()
    error = await mediator.attach("domu1", last_event=f"{stream_id}/2").error()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        error.details() == f"last event 2 of stream {stream_id} is beyond domu1's newest event (1)"
    )


class _BreakingProxy:
    """A unix-socket proxy that loses, on its first connection, every HTTP/2 frame
    the server sends on a stream other than 0 (an Attach's headers and events),
    until that connection is cut; later connections pass everything."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.connections = 0
        self._first: list[asyncio.StreamWriter] = []

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        server_r, server_w = await asyncio.open_unix_connection(self.upstream)
        if first:
            self._first = [client_w, server_w]

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while True:
                try:
                    head = await server_r.readexactly(9)
                    body = await server_r.readexactly(int.from_bytes(head[:3], "big"))
                except asyncio.IncompleteReadError:
                    return
                if first and int.from_bytes(head[5:9], "big") & 0x7FFF_FFFF:
                    continue  # lost in the transport
                client_w.write(head + body)
                await client_w.drain()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        for writer in (client_w, server_w):
            writer.close()

    def cut_first(self) -> None:
        for writer in self._first:
            writer.transport.abort()


async def test_an_agent_whose_first_attach_broke_unseen_loses_nothing(
    mediator: Any, socket_dir: Path
) -> None:
    """The first Attach wrote the boot START and broke before the agent saw even the
    initial metadata: the agent attaches again saying it has nothing (``0``), not
    as a new agent (``none``, which would take the START as its predecessor's)."""
    proxy = _BreakingProxy(mediator.target.removeprefix("unix:"))
    path = socket_dir / "proxy.sock"
    relay = await asyncio.start_unix_server(proxy.handle, path=str(path))
    agent = AsyncGuestAgent(f"unix:{path}", "domu1", timeout=5)
    try:
        agent.start()
        await _handed_over(mediator, 1)  # the START went to the first stream
        assert mediator.server.engine.mailboxes[1].handed_seq == 1
        assert agent.event_stream is None
        proxy.cut_first()
        await agent.wait_for(lambda e: e.seq == 1, within=10)
        await mediator.raise_irq(VTIMER, "domu1", 0)
        await agent.wait_for(lambda e: e.seq == 2, within=5)
        assert [e.seq for e in agent.events] == [1, 2]
        assert proxy.connections == 2
    finally:
        await agent.close()
        relay.close()
