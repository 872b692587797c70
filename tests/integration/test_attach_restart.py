"""Attach acknowledgements across daemon restarts (docs/architecture.md, "Attach: a
mailbox per domain"; docs/journal.md, "Delivery after a restart"): what a stream
wrote is journalled, the event numbering keeps its name only while it is the same
numbering, and a journal from before numberings were named gets one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from mediator_client.agent import AsyncGuestAgent

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.board import default_board
from mediatord.server import app, recovery

VTIMER: Final = 27


async def _start(sock: Path, state: Path) -> app.Server:
    return await app.start(default_board(), [app.Listener(unix=sock)], state_dir=state)


async def _wake(sock: Path) -> None:
    async with grpc.aio.insecure_channel(f"unix:{sock}") as channel:
        await pb_grpc.ControlStub(channel).RaiseInterrupt(
            pb.RaiseInterruptRequest(irq=VTIMER, domain="domu1", vcpu=0), timeout=5
        )


async def test_a_new_agent_after_a_restart_gets_only_what_no_stream_wrote(
    socket_dir: Path, tmp_path: Path
) -> None:
    state, sock = tmp_path / "state", socket_dir / "a.sock"
    server = await _start(sock, state)
    first = AsyncGuestAgent(f"unix:{sock}", "domu1", timeout=5)
    try:
        await _wake(sock)
        await _wake(sock)
        await first.wait_for(lambda e: e.seq == 3, within=5)
    finally:
        await first.close()
        await server.stop(grace=0)

    server = await _start(sock, state)
    second = AsyncGuestAgent(f"unix:{sock}", "domu1", timeout=5)
    try:
        box = server.engine.mailboxes[1]
        assert (box.handed_seq, box.backlog()) == (3, 0)  # the gauge: nothing waits
        await _wake(sock)
        await second.wait_for(lambda e: e.seq == 4, within=5)
        assert [e.seq for e in second.events] == [4]
    finally:
        await second.close()
        await server.stop(grace=0)


@pytest.mark.parametrize("older_journal", [False, True])
async def test_the_event_stream_keeps_its_name_across_restarts(
    socket_dir: Path, tmp_path: Path, older_journal: bool
) -> None:
    """Also for a journal written before numberings were named: it is given a name
    once, not a new one at every start."""
    state, sock = tmp_path / "state", socket_dir / "b.sock"
    await (await _start(sock, state)).stop(grace=0)
    if older_journal:
        db = sqlite3.connect(state / recovery.JOURNAL_FILE)
        db.execute("DELETE FROM meta WHERE key = 'history'")
        db.commit()
        db.close()
    server = await _start(sock, state)
    agent = AsyncGuestAgent(f"unix:{sock}", "domu1", timeout=5)
    try:
        await _wake(sock)
        await agent.wait_for(lambda e: e.seq == 2, within=5)
        stream = agent.event_stream
        await server.stop(grace=0)
        server = await _start(sock, state)
        await _wake(sock)
        await agent.wait_for(lambda e: e.seq == 3, within=10)
        assert agent.event_stream == stream
        assert [e.seq for e in agent.events] == [1, 2, 3]
    finally:
        await agent.close()
        await server.stop(grace=0)


async def test_records_lost_to_damage_start_another_event_stream(
    mediator: Any, tmp_path: Path
) -> None:
    """After a quarantine the numbering goes back (the records after the damage are
    gone): the same STREAM/SEQ would name events the agent never saw."""
    events = mediator.attach("domu1", last_event="none")
    stream_id = await events.stream_id()
    for _ in range(3):
        await mediator.raise_irq(VTIMER, "domu1", 0)
    assert [(await events.next()).seq for _ in range(4)] == [1, 2, 3, 4]
    events.cancel()
    image = tmp_path / "image"
    image.mkdir()
    for path in mediator.server.recovered.state_dir.iterdir():
        if path.name.startswith(recovery.JOURNAL_FILE) and not path.name.endswith("-shm"):
            shutil.copyfile(path, image / path.name)
    db = sqlite3.connect(image / recovery.JOURNAL_FILE)
    wakes = db.execute(
        "SELECT seq FROM records WHERE kind = 'raise_interrupt' ORDER BY seq"
    ).fetchall()
    db.execute("UPDATE records SET body = CAST(body || ' ' AS BLOB) WHERE seq = ?", wakes[1])
    db.commit()
    db.close()
    server = await _start(tmp_path / "q.sock", image)
    try:
        assert server.recovered is not None
        assert server.recovered.quarantined > 0
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            control = pb_grpc.ControlStub(channel)
            for _ in range(2):  # seqs 3 and 4 again, other events
                await control.RaiseInterrupt(
                    pb.RaiseInterruptRequest(irq=VTIMER, domain="domu1"), timeout=5
                )
            # A new agent there: what the surviving journal says earlier readers
            # were handed is theirs; the new 3 and 4 are not.
            handed = server.engine.mailboxes[1].handed_seq
            assert handed <= 2
            said = (("x-mediator-domain", "domu1"), ("x-mediator-last-event", f"{stream_id}/4"))
            attach = pb_grpc.GuestStub(channel).Attach(pb.AttachRequest(), metadata=said, timeout=5)
            assert dict(await attach.initial_metadata())["x-mediator-event-stream"] != stream_id
            expected = list(range(handed + 1, 5))
            assert [(await attach.read()).seq for _ in expected] == expected
            attach.cancel()
    finally:
        await server.stop(grace=0)
