"""The journal in the running daemon: what a restart recovers, what it refuses, and
how damage is reported (issue 9). The SIGKILL crash test is test_crash.py.

A "crash image" is a copy of the state directory's files taken while the server
runs: exactly what a kill at that moment leaves on disk, since every answered
change is already durable.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.board import default_board, parse_board
from mediatord.core.clock import ManualClock
from mediatord.journal import Journal, JournalError, NewerSchemaError
from mediatord.server import app, recovery

RAM = {"dom0": 0x4000_0000, "domu1": 0x4000_0000, "domu2": 0x4000_0000}
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
AFFINITY_INFO_64 = 0xC400_0004
SYSTEM_SUSPEND_64 = 0xC400_000E
PM_REQ_NODE = 0xC200_000D
PM_RELEASE_NODE = 0xC200_000E
UART_0_IRQ = 53
VTIMER = 27
NODES = {"domu1": 34, "domu2": 40}  # UART_1, SD_1: a node each domU owns


def journal_files(state: Path) -> list[Path]:
    return [p for p in state.iterdir() if p.name.startswith(recovery.JOURNAL_FILE)]


def crash_image(state: Path, into: Path) -> Path:
    """The state directory as a kill right now would leave it (no -shm: rebuilt)."""
    into.mkdir()
    for path in journal_files(state):
        if not path.name.endswith("-shm"):
            shutil.copyfile(path, into / path.name)
    return into


async def serve(socket_dir: Path, state: Path, **options: Any) -> app.Server:
    listener = app.Listener(unix=socket_dir / f"m{random.randrange(10**6)}.sock")
    return await app.start(default_board(), [listener], state_dir=state, **options)


def states_of(server: app.Server) -> tuple[int, Any]:
    """The journal's position and the whole state (core and emulated hardware)."""
    engine = server.engine
    assert engine.journal is not None
    return engine.journal.appended, engine.mediator.save_state()


class Client:
    """What the workload needs of the conftest ``mediator`` fixture, for a server
    a test started itself."""

    timeout = 5.0

    def __init__(self, server: app.Server, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.guest = pb_grpc.GuestStub(channel)
        self.control = pb_grpc.ControlStub(channel)

    async def call(self, domain: str, fid: int, *args: int, vcpu: int = 0) -> list[int]:
        reply = await self.guest.Call(
            pb.SmcCall(vcpu=vcpu, function_id=fid, args=args),
            metadata=(("x-mediator-domain", domain),),
            timeout=self.timeout,
        )
        return list(reply.regs)

    async def raise_irq(
        self, irq: int, domain: str = "", vcpu: int = 0
    ) -> pb.RaiseInterruptResponse:
        return await self.control.RaiseInterrupt(
            pb.RaiseInterruptRequest(irq=irq, domain=domain, vcpu=vcpu), timeout=self.timeout
        )


async def workload(mediator: Any, rng: random.Random, ops: int) -> dict[int, Any]:
    """Random guest calls (from vCPUs that can call) and Control operations; the
    whole state after each journal position."""
    seen = {}
    refused: list[grpc.StatusCode] = []
    system = mediator.server.engine.mediator.system
    for _ in range(ops):
        domain = rng.choice(["dom0", "domu1", "domu2"])
        on = [v.index for v in system.domain(domain).vcpus if v.power.value == "on"]
        vcpu = rng.choice(on) if on else 0
        choice = rng.random()
        try:
            if not on or choice < 0.1:
                # The virtual timer of vCPU 0 wakes a suspended domain (and the host).
                await mediator.raise_irq(VTIMER, domain, 0)
            elif choice < 0.35:
                target = rng.randrange(1, 3)
                await mediator.call(domain, CPU_ON_64, target, RAM[domain] + 0x1000, vcpu=vcpu)
            elif choice < 0.45 and len(on) > 1:
                await mediator.call(domain, CPU_OFF, vcpu=rng.choice(on[1:]))
            elif choice < 0.55:
                await mediator.call(domain, AFFINITY_INFO_64, rng.randrange(0, 3), 0, vcpu=vcpu)
            elif choice < 0.7 and domain in NODES:
                # EEMI packs two 32-bit words per register: node | caps, QoS | ack.
                fid = rng.choice([PM_REQ_NODE, PM_RELEASE_NODE])
                await mediator.call(domain, fid, NODES[domain] | 1 << 32, 100 | 1 << 32, vcpu=vcpu)
            elif choice < 0.85:
                device = rng.choice(["USB_0", "SD_1", "GPU"])
                if rng.random() < 0.5:
                    await mediator.control.AssignDevice(
                        pb.AssignDeviceRequest(domain=domain, device=device),
                        timeout=mediator.timeout,
                    )
                else:
                    await mediator.control.ReleaseDevice(
                        pb.ReleaseDeviceRequest(domain=domain, device=device),
                        timeout=mediator.timeout,
                    )
            elif domain != "dom0" and on == [0]:
                await mediator.call(domain, SYSTEM_SUSPEND_64, RAM[domain] + 0x2000, 0xC0)
        except grpc.aio.AioRpcError as error:
            # A refusal changes nothing; any other error fails the test below.
            refused.append(error.code())
        position, state = states_of(mediator.server)
        seen[position] = state
    assert set(refused) <= {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
    return seen


async def test_a_crash_image_recovers_the_exact_state_and_queued_events(
    mediator: Any, tmp_path: Path
) -> None:
    rng = random.Random(9)
    await workload(mediator, rng, 120)
    # Suspend the host too: the image holds a suspended SoC, its saved GIC and timer.
    system = mediator.server.engine.mediator.system
    for name in ("dom0", "domu1", "domu2"):
        if system.domain(name).state.value == "suspended":
            await mediator.raise_irq(VTIMER, name, 0)
    for name in ("domu2", "domu1", "dom0"):
        for vcpu in system.domain(name).vcpus[1:]:
            if vcpu.power.value == "on":
                await mediator.call(name, CPU_OFF, vcpu=vcpu.index)
        await mediator.call(name, SYSTEM_SUSPEND_64, RAM[name] + 0x2000, 0xC1)
    assert (await mediator.system()).host_state == pb.HOST_STATE_SUSPENDED
    engine = mediator.server.engine
    image = crash_image(mediator.server.recovered.state_dir, tmp_path / "image")
    recovered = recovery.recover(image, default_board(), ManualClock())
    try:
        assert recovered.replayed > 60
        assert recovered.damage == []
        assert recovered.mediator.save_state() == engine.mediator.save_state()
        assert {i: (n, list(e)) for i, (n, e) in recovered.mailboxes.items()} == {
            i: (n, list(e)) for i, (n, e) in engine.queued().items()
        }
        # And the recovered host resumes from the recovered hardware as the original.
        woken = recovered.mediator.raise_interrupt(UART_0_IRQ)
        assert recovered.mediator.system.host_state.value == "active", woken
    finally:
        recovered.journal.close()


async def test_a_restart_delivers_the_events_no_agent_received(
    socket_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = await serve(socket_dir, state)
    target = server.addresses[0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GuestStub(channel)
        md = (("x-mediator-domain", "domu1"),)
        # domu1's boot START (seq 1) goes to its Attach; CPU_ON's START (seq 2) nobody reads.
        attach = stub.Attach(pb.AttachRequest(), metadata=md, timeout=5)
        first = await attach.read()
        assert (first.seq, first.WhichOneof("kind")) == (1, "start")
        await stub.Call(
            pb.SmcCall(vcpu=0, function_id=CPU_ON_64, args=[1, RAM["domu1"] + 0x1000, 7]),
            metadata=md,
            timeout=5,
        )
        second = await attach.read()
        assert (second.seq, second.start.context_id) == (2, 7)
        attach.cancel()
        await stub.Call(
            pb.SmcCall(vcpu=1, function_id=CPU_OFF), metadata=md, timeout=5
        )  # no event: CPU_OFF of itself returns nothing to the agent
    await server.stop(grace=0)

    server = await serve(socket_dir, state)
    try:
        assert server.recovered is not None
        assert not server.recovered.fresh
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = pb_grpc.GuestStub(channel)
            await stub.Call(
                pb.SmcCall(vcpu=0, function_id=CPU_ON_64, args=[1, RAM["domu1"] + 0x1000, 8]),
                metadata=md,
                timeout=5,
            )
            attach = stub.Attach(pb.AttachRequest(), metadata=md, timeout=5)
            event = await attach.read()
            # Events the agent had are not sent again (at most the last one, at
            # least once); numbering continues where it stopped.
            assert event.seq >= 2
            while event.seq < 3:
                event = await attach.read()
            assert (event.seq, event.start.context_id) == (3, 8)
            attach.cancel()
    finally:
        await server.stop(grace=0)


async def test_an_event_in_flight_at_a_restart_comes_again_to_an_acknowledging_agent(
    socket_dir: Path, tmp_path: Path
) -> None:
    """The event numbering (x-mediator-event-stream) is the journal's, so it survives
    the restart; an agent saying the last event it has gets exactly what it lacks."""
    state = tmp_path / "state"
    md = (("x-mediator-domain", "domu1"),)
    server = await serve(socket_dir, state)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pb_grpc.GuestStub(channel)
        attach = stub.Attach(
            pb.AttachRequest(), metadata=(*md, ("x-mediator-last-event", "none")), timeout=5
        )
        stream_id = dict(await attach.initial_metadata())["x-mediator-event-stream"]
        assert (await attach.read()).seq == 1
        await stub.Call(
            pb.SmcCall(vcpu=0, function_id=CPU_ON_64, args=[1, RAM["domu1"] + 0x1000, 7]),
            metadata=md,
            timeout=5,
        )
        box = server.engine.mailboxes[1]
        control = pb_grpc.ControlStub(channel)
        for _ in range(200):  # round trips until the START (seq 2) is written to the stream
            if box.waiting() == 0:
                break
            await control.GetSystem(pb.GetSystemRequest(), timeout=5)
        assert box.waiting() == 0
        attach.cancel()  # never read: in flight
    await server.stop(grace=0)

    server = await serve(socket_dir, state)
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = pb_grpc.GuestStub(channel)
            said = (*md, ("x-mediator-last-event", f"{stream_id}/1"))
            attach = stub.Attach(pb.AttachRequest(), metadata=said, timeout=5)
            assert dict(await attach.initial_metadata())["x-mediator-event-stream"] == stream_id
            event = await attach.read()
            assert (event.seq, event.start.context_id) == (2, 7)
            attach.cancel()
    finally:
        await server.stop(grace=0)

    # Without its journal the daemon numbers afresh: another stream, and the agent
    # that names the old one is a new agent there (every queued event, from seq 1).
    listener = app.Listener(unix=socket_dir / "fresh.sock")
    server = await app.start(default_board(), [listener], state_dir=None)
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = pb_grpc.GuestStub(channel)
            attach = stub.Attach(pb.AttachRequest(), metadata=said, timeout=5)
            assert dict(await attach.initial_metadata())["x-mediator-event-stream"] != stream_id
            assert (await attach.read()).seq == 1
            attach.cancel()
    finally:
        await server.stop(grace=0)


async def test_snapshots_bound_the_replay(socket_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = await serve(socket_dir, state, snapshot_every=10)
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            await workload(Client(server, channel), random.Random(3), 80)
            image = crash_image(state, tmp_path / "image")
            journal = Journal.open(image / recovery.JOURNAL_FILE)
            loaded = journal.load()
            journal.close()
            assert loaded.snapshot_seq > 0
            assert len(loaded.records) < 10 + 5  # a batch may run past the mark
            recovered = recovery.recover(image, default_board(), ManualClock())
            recovered.journal.close()
            assert recovered.mediator.save_state() == server.engine.mediator.save_state()
    finally:
        await server.stop(grace=0)


async def test_a_torn_wal_is_reported_and_the_valid_prefix_kept(
    mediator: Any, tmp_path: Path
) -> None:
    states = await workload(mediator, random.Random(5), 60)
    image = crash_image(mediator.server.recovered.state_dir, tmp_path / "image")
    wal = image / f"{recovery.JOURNAL_FILE}-wal"
    size = wal.stat().st_size
    rng = random.Random(11)
    cut = rng.randrange(size // 3, size - 1)
    with wal.open("r+b") as f:
        f.truncate(cut)
    # Offline first: check-state reports the damage and exits 1, changing nothing.
    before = {p.name: p.read_bytes() for p in journal_files(image)}
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mediatord", "check-state", str(image), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1, check.stderr
    doc = json.loads(check.stdout)
    (damage,) = doc["journal"]["recovered"]["damage"]
    assert damage["where"] == "wal"
    assert damage["offset"] + damage["lost"] == cut
    assert {p.name: p.read_bytes() for p in journal_files(image)} == before

    # The daemon starts from the valid prefix: the state it had at that record,
    # and says so in its log, its metrics and ExportState.
    server = await app.start(
        default_board(), [app.Listener(unix=tmp_path / "t.sock")], state_dir=image
    )
    try:
        seq, state = states_of(server)
        assert seq < max(states)
        assert state == states[seq]
        exposition = generate_latest(server.engine.metrics.registry).decode()
        assert 'mediatord_journal_damage_total{where="wal"} 1.0' in exposition
        assert server.engine.journal is not None
        status = server.engine.journal.status()
        assert status["recovered"]["damage"][0]["where"] == "wal"  # type: ignore[index]
    finally:
        await server.stop(grace=0)
    kept = list(image.glob(f"{recovery.JOURNAL_FILE}-wal.damaged-*"))
    assert len(kept) == 1, "the torn WAL is kept as evidence"


async def test_a_record_failing_its_checksum_is_quarantined(mediator: Any, tmp_path: Path) -> None:
    states = await workload(mediator, random.Random(6), 40)
    image = crash_image(mediator.server.recovered.state_dir, tmp_path / "image")
    db = sqlite3.connect(image / recovery.JOURNAL_FILE)
    victim = sorted(states)[len(states) // 2]
    db.execute("UPDATE records SET body = CAST(body || ' ' AS BLOB) WHERE seq = ?", (victim,))
    db.commit()
    db.close()
    server = await app.start(
        default_board(), [app.Listener(unix=tmp_path / "q.sock")], state_dir=image
    )
    try:
        seq, state = states_of(server)
        assert seq == victim - 1
        assert state == states[seq] if seq in states else True
        assert server.recovered is not None
        assert server.recovered.quarantined == max(states) - victim + 1
        (damage,) = server.recovered.damage
        assert (damage.where, damage.offset) == ("records", victim)
        assert damage.reason == f"record {victim} fails its checksum"
    finally:
        await server.stop(grace=0)


async def test_another_board_is_refused(socket_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    await (await serve(socket_dir, state)).stop(grace=0)
    text = (Path(recovery.__file__).parents[1] / "boards" / "zcu102.toml").read_text()
    other = parse_board(text.replace("vcpus = 2", "vcpus = 3", 1), "other.toml")
    with pytest.raises(JournalError, match="was written for board 'zcu102'") as caught:
        await app.start(other, [app.Listener(unix=socket_dir / "o.sock")], state_dir=state)
    assert "move the state directory aside" in str(caught.value)


async def test_one_daemon_per_state_directory(socket_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = await serve(socket_dir, state)
    try:
        with pytest.raises(JournalError, match=r"in use by another mediatord \(pid \d+\)"):
            await serve(socket_dir, state)
    finally:
        await first.stop(grace=0)
    await (await serve(socket_dir, state)).stop(grace=0)  # free again


async def test_a_newer_schema_is_refused(socket_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    await (await serve(socket_dir, state)).stop(grace=0)
    db = sqlite3.connect(state / recovery.JOURNAL_FILE)
    db.execute("PRAGMA user_version = 7")
    db.commit()
    db.close()
    with pytest.raises(NewerSchemaError, match="schema version 7 is newer than this") as caught:
        await serve(socket_dir, state)
    assert "run the mediatord that wrote it" in str(caught.value)


async def test_a_failed_write_refuses_changes_and_stops_the_daemon(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    server = await serve(socket_dir, state)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pb_grpc.GuestStub(channel)
        md = (("x-mediator-domain", "domu1"),)
        before = server.engine.mediator.save_state()

        def full(self: Journal, batch: object, meta: object = None) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Journal, "append", full)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Call(
                pb.SmcCall(vcpu=0, function_id=CPU_ON_64, args=[1, RAM["domu1"] + 0x1000, 0]),
                metadata=md,
                timeout=5,
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "No space left on device" in (caught.value.details() or "")
        assert server.failure is not None
        assert server.stopping is not None
        await server.stopping
    monkeypatch.undo()
    # The unanswered CPU_ON never reached the disk, so it never happened.
    server = await serve(socket_dir, state)
    try:
        assert server.engine.mediator.save_state() == before
    finally:
        await server.stop(grace=0)


async def test_nothing_is_delivered_before_it_is_durable(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU_ON has run (the core's state changed) when its record is written;
    its START event must not have reached domu1's mailbox (an Attach) by then."""
    server = await serve(socket_dir, tmp_path / "state")
    mailbox = server.engine.mailboxes[1]
    seen_at_write: list[list[int]] = []
    append = Journal.append

    def watched(self: Journal, batch: Any, meta: Any = None) -> int:
        seen_at_write.append([e.seq for e in mailbox.events])
        return append(self, batch, meta)

    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            client = Client(server, channel)
            monkeypatch.setattr(Journal, "append", watched)
            assert await client.call("domu1", CPU_ON_64, 1, RAM["domu1"], 5) == [0, 0, 0, 0]
            assert seen_at_write == [[1]]  # only the boot START: not CPU_ON's
            assert [e.seq for e in mailbox.events] == [1, 2]
            assert server.engine.mediator.system.domain("domu1").vcpus[1].power.value == "on"
    finally:
        await server.stop(grace=0)


class Gate:
    """Holds Journal.append on the journal thread until the test opens it: the
    records stay queued, not yet durable, while the loop serves on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()
        append = Journal.append

        def gated(journal: Journal, batch: Any, meta: Any = None) -> int:
            self.entered.set()
            assert self.open.wait(10)
            return append(journal, batch, meta)

        monkeypatch.setattr(Journal, "append", gated)

    async def writing(self) -> None:
        """Until a batch is in the journal thread (bounded polls of a thread event)."""
        for _ in range(1000):
            if self.entered.is_set():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("no batch was written")


async def test_reads_refusals_and_attach_wait_for_what_they_could_show(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(socket_dir, tmp_path / "state")
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            client = Client(server, channel)
            gate = Gate(monkeypatch)
            request = pb.CreateDomainRequest(
                name="domu9", vcpus=1, ram_base=0x4000_0000, ram_size=0x100_0000
            )
            create = asyncio.ensure_future(client.control.CreateDomain(request, timeout=10))
            await gate.writing()
            # The create ran but is not durable: a second create's ALREADY_EXISTS,
            # and a read, would both tell of it; they wait. Attach sees only
            # durable domains (no KeyError for a mailbox not made yet).
            again = asyncio.ensure_future(client.control.CreateDomain(request, timeout=10))
            listed = asyncio.ensure_future(client.control.ListDomains(pb.ListDomainsRequest()))
            attach = client.guest.Attach(
                pb.AttachRequest(), metadata=(("x-mediator-domain", "domu9"),), timeout=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await attach.read()
            assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
            done, _ = await asyncio.wait({create, again, listed}, timeout=0.3)
            assert done == set()
            gate.open.set()
            assert (await create).name == "domu9"
            with pytest.raises(grpc.aio.AioRpcError) as exists:
                await again
            assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "domu9" in [d.name for d in (await listed).domains]
    finally:
        await server.stop(grace=0)


async def test_a_read_shows_nothing_made_while_it_waited(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(socket_dir, tmp_path / "state")
    engine = server.engine
    try:
        gate = Gate(monkeypatch)
        first = asyncio.ensure_future(engine.call("dom0", 0, CPU_ON_64, [1, RAM["dom0"], 0]))
        await gate.writing()

        def powers() -> list[str]:
            return [v.power.value for v in engine.mediator.system.domains[0].vcpus]

        read = asyncio.ensure_future(engine.view(powers))
        await asyncio.sleep(0)  # the read is built, and waits for the first CPU_ON
        second = asyncio.ensure_future(engine.call("dom0", 0, CPU_ON_64, [2, RAM["dom0"], 0]))
        await asyncio.sleep(0)
        assert powers()[2] == "on"  # ran, not durable
        gate.open.set()
        # Built before the second CPU_ON ran, answered once the first was durable.
        assert (await read)[:3] == ["on", "on", "off"]
        await asyncio.gather(first, second)
    finally:
        await server.stop(grace=0)


async def test_a_failed_snapshot_keeps_the_batch(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    server = await serve(socket_dir, state, snapshot_every=1)

    def full(journal: Journal, seq: int, body: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Journal, "snapshot", full)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        assert await Client(server, channel).call("domu1", CPU_ON_64, 1, RAM["domu1"], 0) == [
            0,
            0,
            0,
            0,
        ]
    assert server.failure is None
    await server.stop(grace=0)
    monkeypatch.undo()
    server = await serve(socket_dir, state)
    try:
        assert server.engine.mediator.system.domain("domu1").vcpus[1].power.value == "on"
    finally:
        await server.stop(grace=0)


async def test_time_does_not_go_backwards_across_a_restart(
    socket_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = await serve(socket_dir, state)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        before = (await Client(server, channel).control.GetSystem(pb.GetSystemRequest())).now_ns
    await server.stop(grace=0)
    server = await serve(socket_dir, state)
    try:
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            control = Client(server, channel).control
            after = (await control.GetSystem(pb.GetSystemRequest())).now_ns
        assert after >= before
    finally:
        await server.stop(grace=0)


async def test_a_write_failure_while_stopping_is_a_failure_not_a_crash(
    socket_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(socket_dir, tmp_path / "state")
    gate = Gate(monkeypatch)

    def failing(journal: Journal, batch: Any, meta: Any = None) -> int:
        gate.entered.set()
        assert gate.open.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Journal, "append", failing)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call = asyncio.ensure_future(
            Client(server, channel).call("domu1", CPU_ON_64, 1, RAM["domu1"], 0)
        )
        await gate.writing()
        stopping = asyncio.ensure_future(server.stop(grace=0.2))
        gate.open.set()
        await stopping  # no exception: the failure is recorded
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    assert server.failure is not None
    assert "Input/output error" in server.failure
