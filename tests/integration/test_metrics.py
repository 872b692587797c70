"""/metrics and the JSON logs of a real server, after the seed's suspend-to-RAM scenario.

The server runs in-process on a ManualClock (so durations are exact) with its metrics
endpoint on a free loopback port; guest agents and the operator (mediator_client) drive
the seed scenario, three EEMI denials and one host suspend that fails and rolls back.
The scrape is parsed with prometheus_client's own parser and its counters, histogram
counts and sums are compared with exact values. The log test runs ``mediatord serve
--log-format json`` as a subprocess and reads its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from mediator_client import AsyncGuestAgent, EemiError, Operator, PsciError, eemi, psci, timeline
from mediator_client.eemi import PmNode
from polling import POLLS, in_state, until
from processes import stop_process
from prometheus_client.parser import text_string_to_metric_families

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.board import default_board
from mediatord.core import suspend
from mediatord.core.clock import ManualClock
from mediatord.core.psci import PsciRet
from mediatord.server import app

WITHIN: Final = 5.0  # seconds an event or a state change may take
SECOND: Final = 1_000_000_000
UART_1_IRQ: Final = 54
DOMU1_RESUME: Final = (0x4009_0000, 0x11)
DOMU2_RESUME: Final = (0x4009_0000, 0x22)
DOM0_RESUME: Final = (0x4010_0000, 0x33)
FAILING_STEP: Final = "save_gic"
DENIALS: Final = 3
SUSPEND_NAMES: Final = [s.name for s in suspend.SUSPEND_STEPS]
RESUME_NAMES: Final = [s.name for s in suspend.RESUME_STEPS]
ROOT: Final = Path(__file__).resolve().parents[2]
MEDIATORD: Final = Path(sys.executable).with_name("mediatord")

Labels = frozenset[tuple[str, str]]


@dataclass
class Scrape:
    """A parsed /metrics: (sample name, labels) -> value."""

    text: str
    values: dict[tuple[str, Labels], float]

    def get(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.values, f"no sample {name}{labels} in /metrics"
        return self.values[key]

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= ls)


def parse(text: str) -> Scrape:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name, frozenset(sample.labels.items())] = sample.value
    return Scrape(text, values)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=WITHIN) as reply:
        body: bytes = reply.read()
        assert reply.headers.get_content_type() == "text/plain"
    return body.decode()


async def scrape(server: app.Server) -> Scrape:
    assert server.metrics_address
    return parse(await asyncio.to_thread(fetch, f"http://{server.metrics_address}/metrics"))


async def host_in(op: Operator, state: pb.HostState.ValueType) -> bool:
    return (await op.system()).host_state == state


async def finish(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def promtool() -> str | None:
    """promtool from PATH, or the copy `make check-deploy` keeps in .cache/."""
    found = shutil.which("promtool")
    cached = ROOT / ".cache" / "promtool" / "promtool"
    return found or (str(cached) if os.access(cached, os.X_OK) else None)


@contextlib.asynccontextmanager
async def metrics_server(socket_dir: Path, clock: ManualClock) -> AsyncIterator[app.Server]:
    server = await app.start(
        default_board(),
        [app.Listener(unix=socket_dir / "m.sock")],
        clock=clock,
        metrics_listen="127.0.0.1:0",
    )
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def seed_scenario(target: str, op: Operator, clock: ManualClock | None = None) -> None:
    """Seed 4.2: domu1 (waking on UART_1) and domu2 suspend, dom0 suspends the host,
    five seconds pass (on a manual clock), domu1's UART interrupt wakes the board."""
    async with (
        AsyncGuestAgent(target, "dom0") as dom0,
        AsyncGuestAgent(target, "domu1") as u1,
        AsyncGuestAgent(target, "domu2") as u2,
    ):
        caps = eemi.CAP_ACCESS | eemi.CAP_WAKEUP
        await u1.call(eemi.request_node(PmNode.NODE_UART_1, caps))
        await u1.call(eemi.set_wakeup_source(PmNode.NODE_UART_1))
        s1 = asyncio.create_task(u1.suspend_to_ram(*DOMU1_RESUME, resume_timeout=10))
        s2 = asyncio.create_task(u2.suspend_to_ram(*DOMU2_RESUME, resume_timeout=10))
        try:
            await until(lambda: in_state(op, "domu1", pb.DOMAIN_STATE_SUSPENDED), "domu1 asleep")
            await until(lambda: in_state(op, "domu2", pb.DOMAIN_STATE_SUSPENDED), "domu2 asleep")
            s0 = asyncio.create_task(dom0.suspend_to_ram(*DOM0_RESUME, resume_timeout=10))
            try:
                await until(lambda: host_in(op, pb.HOST_STATE_SUSPENDED), "the host suspended")
                if clock is not None:
                    clock.advance(5 * SECOND)
                woke = await op.raise_irq(UART_1_IRQ)
                assert woke.woke_host is True
                assert woke.domain == "domu1"
                await asyncio.wait_for(s0, WITHIN)
            finally:
                await finish(s0)
            await asyncio.wait_for(s1, WITHIN)
        finally:
            await finish(s1)
            await finish(s2)


# ------------------------------------------------------------ 1. exact values


async def test_metrics_count_the_seed_scenario_exactly(socket_dir: Path) -> None:
    clock = ManualClock()
    async with metrics_server(socket_dir, clock) as server:
        target = server.addresses[0]
        before = await scrape(server)
        assert before.get("mediatord_host_state", state="active") == 1
        assert before.get("mediatord_domains", state="running") == 3
        assert before.total("mediatord_psci_calls_total") == 0

        async with Operator(target) as op:
            # Three EEMI denials: domu2's USB_0 is not domu1's to request.
            async with AsyncGuestAgent(target, "domu1") as u1:
                for _ in range(DENIALS):
                    with pytest.raises(EemiError):
                        await u1.call(eemi.request_node(PmNode.NODE_USB_0))
            # One host suspend that fails at save_gic and rolls back.
            await op.inject_fault(FAILING_STEP)
            async with AsyncGuestAgent(target, "dom0") as dom0:
                with pytest.raises(PsciError) as failed:
                    await dom0.suspend_to_ram(*DOM0_RESUME)
            assert failed.value.code == PsciRet.INTERNAL_FAILURE
            assert await host_in(op, pb.HOST_STATE_ACTIVE)

            await seed_scenario(target, op, clock)
            system = await op.system()
        after = await scrape(server)

    # PSCI: three SYSTEM_SUSPENDs went through (domu1, domu2, dom0), one failed.
    psci_calls = "mediatord_psci_calls_total"
    assert after.get(psci_calls, function="SYSTEM_SUSPEND_64", result="SUCCESS") == 3
    assert after.get(psci_calls, function="SYSTEM_SUSPEND_64", result="INTERNAL_FAILURE") == 1
    # domu1 has one secondary, never started: no CPU_OFF was needed.
    assert after.total(psci_calls, function="CPU_OFF") == 0

    # EEMI: the denials by API, verdict and firmware status; domu1's own UART allowed.
    eemi_calls = "mediatord_eemi_calls_total"
    assert after.get(eemi_calls, api="REQ_NODE", verdict="deny", status="NO_ACCESS") == DENIALS
    assert after.get(eemi_calls, api="REQ_NODE", verdict="allow", status="SUCCESS") == 1
    assert after.total(eemi_calls, verdict="deny") == DENIALS

    # Host suspends and resumes.
    assert after.get("mediatord_host_suspends_total", result="success") == 1
    assert after.get("mediatord_host_suspends_total", result="failure") == 1
    assert after.get("mediatord_host_resumes_total") == 1
    assert after.get("mediatord_backend_faults_total", step=FAILING_STEP) == 1
    assert after.total("mediatord_backend_faults_total") == 1

    # Step histograms: the failed attempt ran the suspend steps up to save_gic and rolled
    # back the done ones that have an undo; the second attempt ran every step.
    failing_at = SUSPEND_NAMES.index(FAILING_STEP)
    undone = {s.name for s in suspend.SUSPEND_STEPS[:failing_at] if s.undo is not None}
    step_count = "mediatord_host_step_duration_seconds_count"
    for index, name in enumerate(SUSPEND_NAMES):
        expected = 2 if index <= failing_at else 1
        assert after.get(step_count, phase="suspend", step=name) == expected, name
    for name in SUSPEND_NAMES:
        expected = 1 if name in undone else 0
        assert after.total(step_count, phase="rollback", step=name) == expected, name
    for name in RESUME_NAMES:
        assert after.get(step_count, phase="resume", step=name) == 1, name
    assert after.get(step_count, phase="suspend", step="save_gic") == 2

    # On the manual clock the durations are exactly the modelled ones: each resume step's
    # sum is its duration in GetSystem's timeline, and the whole suspend and resume too.
    rows = timeline.of_system(system)
    step_sum = "mediatord_host_step_duration_seconds_sum"
    for row in rows:
        if row.phase == "resume":
            assert after.get(step_sum, phase="resume", step=row.name) == pytest.approx(
                row.duration_ns / 1e9, abs=1e-12
            )
    suspend_rows = [r for r in rows if r.phase == "suspend"]
    resume_rows = [r for r in rows if r.phase in ("hardware", "resume")]
    assert after.get("mediatord_host_suspend_duration_seconds_count") == 1
    assert after.get("mediatord_host_suspend_duration_seconds_sum") == pytest.approx(
        (suspend_rows[-1].end_ns - suspend_rows[0].start_ns) / 1e9, abs=1e-12
    )
    assert after.get("mediatord_host_resume_duration_seconds_count") == 1
    assert after.get("mediatord_host_resume_duration_seconds_sum") == pytest.approx(
        (resume_rows[-1].end_ns - resume_rows[0].start_ns) / 1e9, abs=1e-12
    )
    # The modelled latencies (docs/host-suspend.md): milliseconds, not the 5 s asleep.
    assert 0.001 < after.get("mediatord_host_suspend_duration_seconds_sum") < 0.1
    assert 0.001 < after.get("mediatord_host_resume_duration_seconds_sum") < 0.1
    assert after.get("mediatord_host_resume_duration_seconds_bucket", le="0.01") == 1

    # Wake-ups: domu1's UART woke the host and domu1.
    assert after.get("mediatord_wakeups_total", source="UART_1", target="host") == 1
    assert after.get("mediatord_wakeups_total", source="UART_1", target="domain") == 1
    assert after.total("mediatord_wakeups_total") == 2

    # gRPC: every Guest.Call completed OK (PSCI and EEMI errors are results, not RPC
    # errors) and each is counted exactly once as a PSCI or an EEMI call.
    call = {"grpc_service": "mediator.v1.Guest", "grpc_method": "Call", "grpc_type": "unary"}
    started = after.get("grpc_server_started_total", **call)
    assert after.get("grpc_server_handled_total", grpc_code="OK", **call) == started
    assert after.total("grpc_server_handled_total", **call) == started
    assert started == after.total(psci_calls) + after.total(eemi_calls)
    assert started >= DENIALS + 1 + 3 + 2  # at least the calls named above
    assert after.get("grpc_server_handling_seconds_count", **call) == started
    raised = {"grpc_service": "mediator.v1.Control", "grpc_method": "RaiseInterrupt"}
    assert after.get("grpc_server_handled_total", grpc_code="OK", grpc_type="unary", **raised) == 1
    assert after.total("mediatord_auth_denials_total") == 0

    # State gauges at the end: everyone back but domu2, still asleep (nothing woke it).
    assert after.get("mediatord_host_state", state="active") == 1
    assert after.total("mediatord_host_state") == 1
    assert after.get("mediatord_domains", state="running") == 2
    assert after.get("mediatord_domains", state="suspended") == 1
    assert after.get("mediatord_inflight_calls") == 0
    assert after.get("mediatord_event_watchers") == 0

    tool = promtool()
    if tool is not None:
        lint = await asyncio.to_thread(
            subprocess.run,
            [tool, "check", "metrics"],
            input=after.text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_promtool_accepts_the_exposition(socket_dir: Path) -> None:
    """promtool's lint of a fresh daemon's /metrics (the scenario's scrape is linted in the
    test above); a skip, not a pass, when promtool is not there."""
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not on PATH nor in .cache/ (make check-deploy fetches it)")
    async with metrics_server(socket_dir, ManualClock()) as server:
        text = (await scrape(server)).text
    lint = await asyncio.to_thread(
        subprocess.run,
        [tool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_an_auth_refusal_is_counted(socket_dir: Path) -> None:
    async with metrics_server(socket_dir, ManualClock()) as server:
        target = server.addresses[0]
        async with AsyncGuestAgent(target, "domu2", principal="domain/domu1") as impostor:
            with contextlib.suppress(Exception):
                await impostor.call(psci.psci_version())
        after = await scrape(server)
    denied = {"grpc_method": "Call", "grpc_code": "PERMISSION_DENIED"}
    assert after.get("mediatord_auth_denials_total", **denied) == 1
    call = {"grpc_service": "mediator.v1.Guest", "grpc_type": "unary"}
    assert after.get("grpc_server_handled_total", **call, **denied) == 1
    # A refused caller's call never reached the mediator.
    assert after.total("mediatord_psci_calls_total") == 0


async def test_a_stream_the_client_closes_is_counted_as_cancelled(socket_dir: Path) -> None:
    async with metrics_server(socket_dir, ManualClock()) as server:
        target = server.addresses[0]
        async with AsyncGuestAgent(target, "domu1") as agent:
            agent.start()
            await agent.wait_for(lambda e: e.vcpu == 0, within=WITHIN)
        attach = {"grpc_service": "mediator.v1.Guest", "grpc_method": "Attach"}
        for _ in range(POLLS):
            after = await scrape(server)
            if after.total("grpc_server_handled_total", **attach):
                break
        assert after.total("grpc_server_handled_total", **attach) == 1
        assert after.get(
            "grpc_server_handled_total", grpc_type="server_stream", grpc_code="CANCELLED", **attach
        )


# ------------------------------------------------------------ 2. JSON logs


@contextlib.contextmanager
def daemon(socket: Path, log: Path) -> Any:
    """``mediatord serve --log-format json`` as a subprocess; stderr to ``log``."""
    command = [
        str(MEDIATORD),
        "serve",
        "--unix",
        str(socket),
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline(), process.stdout.readline()]
            assert lines[0].startswith(f"mediatord listening on unix:{socket}"), lines
            assert re.match(r"mediatord metrics on http://127\.0\.0\.1:\d+/metrics", lines[1])
            yield process
        finally:
            stop_process(process, timeout=15)


async def test_json_logs_show_the_host_steps_and_the_rpc_context(socket_dir: Path) -> None:
    socket = socket_dir / "d.sock"
    log = socket_dir / "stderr.log"
    with daemon(socket, log) as process:
        target = f"unix:{socket}"
        async with Operator(target) as op:
            await seed_scenario_real_clock(target, op)
        async with grpc.aio.insecure_channel(target) as channel:  # no identity: refused
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GuestStub(channel).Call(pb.SmcCall(function_id=0x8400_0000))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records, "no log lines"
    for record in records:
        assert {"event", "level", "timestamp"} <= record.keys(), record

    steps = [r for r in records if r["event"] == "host step"]
    expected = [("suspend", n) for n in SUSPEND_NAMES] + [("resume", n) for n in RESUME_NAMES]
    assert [(r["phase"], r["step"]) for r in steps] == expected
    for record in steps:
        assert record["result"] == 0, record
        assert isinstance(record["duration_ns"], int), record
        assert record["duration_ns"] >= 0, record
        assert record["level"] == "info"
    # The modelled EL3 SYSTEM_SUSPEND latency (3 ms) shows in its step.
    el3 = next(r for r in steps if r["step"] == "el3_system_suspend")
    assert el3["duration_ns"] >= 3_000_000

    # The suspend ran inside dom0's Guest.Call, the resume inside the operator's
    # RaiseInterrupt: every line carries its RPC's request_id, rpc and principal.
    suspend_lines = steps[: len(SUSPEND_NAMES)]
    resume_lines = steps[len(SUSPEND_NAMES) :]
    assert {r["rpc"] for r in suspend_lines} == {"/mediator.v1.Guest/Call"}
    assert {r["principal"] for r in suspend_lines} == {"domain/dom0"}
    assert {r["rpc"] for r in resume_lines} == {"/mediator.v1.Control/RaiseInterrupt"}
    assert {r["principal"] for r in resume_lines} == {"local/anonymous"}
    assert len({r["request_id"] for r in suspend_lines}) == 1
    assert len({r["request_id"] for r in resume_lines}) == 1
    assert suspend_lines[0]["request_id"] < resume_lines[0]["request_id"]

    # Every line logged inside an admitted Guest.Call carries the calling domain as principal.
    guest_lines = [
        r for r in records if r.get("rpc") == "/mediator.v1.Guest/Call" and r["event"] != "refused"
    ]
    assert guest_lines
    for record in guest_lines:
        assert isinstance(record["request_id"], int), record
        assert record["principal"].startswith("domain/"), record
    # domu1's EEMI denial is logged with its verdict, inside domu1's call.
    denials = [r for r in records if r["event"] == "eemi call" and r["verdict"] == "deny"]
    assert [(r["domain"], r["api"], r["principal"]) for r in denials] == [
        ("domu1", "REQ_NODE", "domain/domu1")
    ]
    # The refusal's own line carries its RPC's context too.
    refused = [r for r in records if r["event"] == "refused" and r["code"] == "UNAUTHENTICATED"]
    assert [(r["rpc"], r["principal"]) for r in refused] == [
        ("/mediator.v1.Guest/Call", "local/anonymous")
    ]
    assert isinstance(refused[0]["request_id"], int)
    # One request_id per RPC: ids of different RPCs never collide.
    by_id: dict[int, set[str]] = {}
    for record in records:
        if "request_id" in record:
            by_id.setdefault(record["request_id"], set()).add(record["rpc"])
    assert all(len(rpcs) == 1 for rpcs in by_id.values()), by_id
    events = {r["event"] for r in records}
    assert {"listening", "metrics", "host state", "domain state", "interrupt"} <= events
    assert records[-1]["event"] == "stopped"


async def seed_scenario_real_clock(target: str, op: Operator) -> None:
    """The seed scenario against the daemon's own (emulated) clock, with one denial."""
    async with AsyncGuestAgent(target, "domu1") as u1:
        with pytest.raises(EemiError):
            await u1.call(eemi.request_node(PmNode.NODE_USB_0))
    await seed_scenario(target, op)
