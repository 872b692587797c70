"""Hypothesis against a real server: random SMC frames and Control requests from random
callers, and nothing but documented answers.

The harness is bench/fuzz.py (loaded from its file below), so that this test and the
benchmark fuzz with the same rules; see its docstring for them. In short: one server
for the module, on a unix socket, on an event loop in a background thread, its aio
client on the same loop. Each Hypothesis example is a byte string the harness decodes
into one caller (sometimes one that may not call) sending a batch of 30-50 SmcCall
frames through CallStream (sometimes as a burst of unary Calls) and up to three Control
requests from random callers. The frames are biased toward PSCI (0x84/0xC4) and SiP
(0x82/0xC2) IDs, small arguments, RAM addresses and vCPU 0, and include any 32-bit ID,
0..20 arguments, huge vCPU indexes and invalid conduits.

Every answer must be a SmcResult of four registers or a status the docs name for that
RPC: never UNKNOWN or INTERNAL, and no RPC may outlive its deadline (5 s) except a
standby CPU_SUSPEND, sent with a 0.05 s deadline, which may answer DEADLINE_EXCEEDED.
(CallStream frames go one at a time, write then read: grpc.aio's client reports
INTERNAL "Internal error from Core" instead of the server's status when a stream ends
while one of its writes is in flight. The one such race left, a caller refused at the
start of the stream, is resolved by asking again with a unary Call; see the harness.)
After every example: health SERVING; every domain RUNNING/SUSPENDED/PAUSED/SHUTDOWN; a
RUNNING domain has a vCPU that is not OFF, a SHUTDOWN one none; the host ACTIVE with
dom0 RUNNING and nothing PAUSED, SUSPENDED with dom0 SUSPENDED and nothing RUNNING, or
OFF with everything SHUTDOWN.

dom0's SYSTEM_OFF (powering the host off for good) stays in the fuzz: the harness
restarts the server after an example that left the host OFF, rather than filtering the
call out; a domU that shut down or suspended is rebooted with dom0's SYSTEM_RESET, so
later examples still reach the core.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import structlog
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mediatord.api.mediator.v1 import mediator_pb2 as pb

HARNESS_FILE: Final = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
# At least this many frames, each with its own answer, in one run (about 20 s here).
FRAMES_TARGET: Final = 20_000
EXAMPLES_PER_ROUND: Final = 200
MAX_ROUNDS: Final = 8


def load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("mediatord_bench_fuzz", HARNESS_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = load_harness()


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[Any]:
    saved = harness.quiet_logs()
    with tempfile.TemporaryDirectory(prefix="mtd-") as scratch:
        server = harness.ThreadedServer(Path(scratch))
        try:
            yield harness.Fuzzer(server)
        finally:
            server.close()
            structlog.configure(**saved)


def test_empty_input_decodes_to_the_simplest_example() -> None:
    example = harness.decode_example(b"")
    assert example.caller == (("x-mediator-domain", "domu1"),)
    assert not example.unary
    assert example.frames == [pb.SmcCall(function_id=0x8400_0000)] * harness.BATCH_MIN
    assert example.controls == []


def test_a_fresh_server_satisfies_the_invariants(fuzzer) -> None:
    host, domains = fuzzer.check()
    assert host == pb.HOST_STATE_ACTIVE
    assert [d.name for d in domains] == ["dom0", "domu1", "domu2"]
    assert fuzzer.errors == []


def test_fuzz_frames_and_control(fuzzer, record_property) -> None:
    started = time.monotonic()
    first_frames, first_examples = fuzzer.frames, fuzzer.examples

    # Examples act on one live server whose state they change, so a failing example
    # does not replay as it first ran: no shrinking, no database. The failure message
    # carries the caller, the frame or request and the server's answer.
    @settings(
        max_examples=EXAMPLES_PER_ROUND,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.binary(min_size=400, max_size=1600))
    def example(data: bytes) -> None:
        seen = len(fuzzer.errors)
        fuzzer.run(harness.decode_example(data))
        new = fuzzer.errors[seen:]
        assert not new, "\n".join(new)

    rounds = 0
    while fuzzer.frames - first_frames < FRAMES_TARGET and rounds < MAX_ROUNDS:
        example()
        rounds += 1
    seconds = time.monotonic() - started
    summary = fuzzer.summary(seconds)
    summary["frames"] -= first_frames
    summary["examples"] -= first_examples
    summary["frames_per_second"] = round(summary["frames"] / seconds)
    print(f"fuzz: {summary}")
    for key in ("frames", "examples", "seconds", "frames_per_second", "errors"):
        record_property(f"fuzz_{key}", summary[key])
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["frames"] >= FRAMES_TARGET, summary
    # The fuzz reached the core: results, refusals of every kind, hosts that stopped.
    statuses = summary["statuses"]
    results = statuses.get("CallStream:OK", 0) + statuses.get("Call:OK", 0)
    assert results > summary["frames"] // 3, summary
    for seen in ("CallStream:INVALID_ARGUMENT", "CallStream:FAILED_PRECONDITION"):
        assert statuses.get(seen), (seen, summary)
    # And the server is still there.
    host, _ = fuzzer.check()
    assert host in (pb.HOST_STATE_ACTIVE, pb.HOST_STATE_SUSPENDED, pb.HOST_STATE_OFF)
    assert fuzzer.errors == []
