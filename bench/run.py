"""mediatord benchmark suite: `make bench` (full) and `make bench-short` (CI, seconds).

Sections, each figure the median of repeated runs with min and max:
  (a) the limit: a bare grpc.aio echo (bench/echo_server.py, same messages), unary
      sequential and bidi with a window of 32, on a unix socket and loopback TCP;
  (b) Guest.Call sequential against a real `mediatord serve` subprocess (domu1,
      vCPU 0, PSCI_VERSION and AFFINITY_INFO alternately): throughput, p50, p99;
  (c) Guest.CallStream pipelined with at most 32 calls in flight;
  (d) 1, 8 and 64 concurrent agents (one domain and one channel each, dom1..domN
      made by Control.CreateDomain) from a few client processes: total throughput
      and fairness (min/max per-domain throughput, Jain's index);
  (e) core-only dispatch (bench/core_dispatch.py's loop, no gRPC): calls/s;
  (f) host suspend + resume with 10, 100, 1000 domains (bench/host_suspend.py):
      process CPU time;
  (g) journal on vs off: Guest.Call sequential with two state-changing calls
      (domu1: vCPU 0 CPU_ON of vCPU 1, vCPU 1 CPU_OFF; each journalled, one fsync
      each) and with (b)'s read-only pair, against mediatord with --state-dir and
      with --no-journal, interleaved; the store's append cost by batch size; and
      the start-up replay of a journal of 10^5 real records (bench/journal_store.py).
Then the ratios of this run and the targets, each met / not met with its numbers.
It reports; it never fails on a target (exit 0 unless the benchmark itself broke).

For the "what limits it" question every gRPC figure also carries the server's CPU
time per call (utime + stime from /proc), and p50/p99/p99.9 pooled over all calls of
its runs; two diagnostic servers sit between the echo and the daemon (the echo behind
two pass-through interceptors, and behind mediatord's own interceptor, its Gate); in full
mode py-spy samples mediatord and the echo under sequential Guest.Call (top functions
by self time, and time per layer of the daemon).

The echo server and mediatord run side by side and the client process
(bench/clients.py) alternates between them run by run, so a ratio compares runs
made under the same machine load. Traffic goes to unix sockets and 127.0.0.1 only;
every subprocess is killed on the way out.

    python bench/run.py [--short] [--json FILE|-] [--profile-svg FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import core_dispatch
import host_suspend
import journal_store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
WINDOW = 32
AGENT_DOMAINS = (1, 8, 64)
AGENT_WORKERS = 4
HOST_DOMAINS = (10, 100, 1000)
TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_RATE = 250  # py-spy samples per second

# Targets (issue 10).
TARGET_CALL_VS_ECHO = 0.8
TARGET_P99_VS_ECHO = 1.5
TARGET_STREAM_VS_BIDI = 0.8
TARGET_CORE_CALLS = 200_000
TARGET_HOST_GROWTH = 10.0
TARGET_HOST_1000_MS = 50.0
TARGET_JOURNAL_ON_VS_OFF = 0.5
TARGET_REPLAY_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    rounds: int  # runs per figure
    cell_seconds: float  # one gRPC run
    agent_seconds: float
    core_calls: int
    engine_calls: int
    host_cycles: int
    profile_seconds: float
    journal_batches: int
    replay_records: int


FULL = Mode("full", 10, 1.0, 1.5, 300_000, 100_000, 20, 4.0, 200, 100_000)
SHORT = Mode("short", 3, 0.25, 0.3, 30_000, 10_000, 3, 0.0, 20, 12_000)
MAX_RATE = 100_000  # no run makes more than seconds * MAX_RATE calls


class BenchError(Exception):
    pass


# ----------------------------------------------------------------- processes


class Process:
    """A subprocess speaking lines on stdout (and JSON lines on stdin, for workers)."""

    running: list[Process] = []  # noqa: RUF012 - the one registry of live children

    def __init__(self, name: str, argv: list[str], logdir: Path, stdin: bool = False) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with self.log.open("w") as errors:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        Process.running.append(self)
        self.pid = self.popen.pid
        self._buffer = b""

    def readline(self, timeout: float) -> str:
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer in {timeout:.0f} s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise BenchError(f"{self.name} exited ({self.popen.poll()}){self._tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def send(self, command: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command).encode() + b"\n")
        self.popen.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.readline(timeout))
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(command)
        return self.receive(timeout)

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text().strip().splitlines()[-5:]
            if text:
                return "; its log ends: " + " | ".join(text)
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(3)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(3)
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self in Process.running:
            Process.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for process in reversed(list(cls.running)):
            process.stop()


def listening(process: Process, pattern: str, count: int) -> list[str]:
    """The addresses a server prints, in order (``... listening on ADDRESS``)."""
    found: list[str] = []
    while len(found) < count:
        match = re.search(pattern, process.readline(30))
        if match:
            found.append(match.group(1))
    return found


def start_echo(
    tmp: Path, name: str = "echo", interceptors: str = "none"
) -> tuple[Process, dict[str, str]]:
    sock = tmp / f"{name}.sock"
    argv = [PYTHON, str(HERE / "echo_server.py"), "--unix", str(sock), "--listen", "127.0.0.1:0"]
    process = Process(name, [*argv, "--interceptors", interceptors], tmp)
    unix, tcp = listening(process, r"echo listening on (\S+)", 2)
    return process, {"unix": unix, "tcp": tcp}


def start_mediatord(
    tmp: Path, name: str = "mediatord", journal: bool = True
) -> tuple[Process, dict[str, str]]:
    sock = tmp / f"{name}.sock"
    argv = [PYTHON, "-m", "mediatord", "serve", "--unix", str(sock), "--listen", "127.0.0.1:0"]
    state = ["--state-dir", str(tmp / f"{name}-state")] if journal else ["--no-journal"]
    process = Process(
        name, [*argv, *state, "--metrics-listen", "off", "--log-level", "warning"], tmp
    )
    addresses = listening(process, r"mediatord listening on (\S+)", 2)
    unix = next(a for a in addresses if a.startswith("unix:"))
    tcp = next(a for a in addresses if not a.startswith("unix:"))
    return process, {"unix": unix, "tcp": tcp}


def start_worker(tmp: Path, name: str) -> Process:
    process = Process(name, [PYTHON, str(HERE / "clients.py")], tmp, stdin=True)
    process.receive(30)  # {"ready": true}
    return process


# --------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def jain(values: Sequence[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def percentile(ordered: Sequence[int], q: float) -> float:
    if not ordered:
        return 0.0
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return float(ordered[index])


# --------------------------------------------------- (a) (b) (c): the pairs


CELLS = (
    # (key, server, op, transport)
    ("a.unary.unix", "echo", "unary", "unix"),
    # Diagnostics (unix only): the echo behind two pass-through interceptors, and
    # behind mediatord's own layer (its Gate).
    ("y.unary.unix", "echo_pass", "unary", "unix"),
    ("x.unary.unix", "echo_icpt", "unary", "unix"),
    ("b.call.unix", "mediatord", "unary", "unix"),
    ("a.unary.tcp", "echo", "unary", "tcp"),
    ("b.call.tcp", "mediatord", "unary", "tcp"),
    ("a.bidi.unix", "echo", "stream", "unix"),
    ("c.stream.unix", "mediatord", "stream", "unix"),
    ("a.bidi.tcp", "echo", "stream", "tcp"),
    ("c.stream.tcp", "mediatord", "stream", "tcp"),
)


def run_cell(
    worker: Process, server: Process, *, server_name: str, op: str, transport: str, seconds: float
) -> dict[str, Any]:
    command: dict[str, Any] = {"op": op, "name": f"{server_name}.{transport}", "seconds": seconds}
    if op == "unary":
        command["max_calls"] = int(seconds * MAX_RATE)
    else:
        command |= {"window": WINDOW, "max_msgs": int(seconds * MAX_RATE)}
    cpu = server.cpu_seconds()
    result = worker.request(command, seconds + 30)
    spent = server.cpu_seconds() - cpu
    result["server_cpu"] = spent / result["seconds"]
    result["server_us_per_call"] = spent / max(1, result["count"]) * 1e6
    result["client_cpu"] = result.pop("client_cpu_s") / result["seconds"]
    return result


def transport_pairs(
    mode: Mode,
    worker: Process,
    servers: dict[str, Process],
    log: Callable[[str], None],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]:
    """Every cell, ``mode.rounds`` times, interleaved: the runs of each cell, and the
    percentiles of all its calls pooled over its runs."""
    cells = tuple(c for c in CELLS if c[1] in servers)
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in cells}
    latencies: dict[str, list[int]] = {key: [] for key, *_ in cells}
    for round_ in range(mode.rounds):
        # Alternate the order round by round so that drift in the machine's load
        # does not favour one side.
        order = cells if round_ % 2 == 0 else tuple(reversed(cells))
        for key, server, op, transport in order:
            result = run_cell(
                worker,
                servers[server],
                server_name=server,
                op=op,
                transport=transport,
                seconds=mode.cell_seconds,
            )
            latencies[key] += result.pop("latencies_us")
            runs[key].append(result)
        log(f"  round {round_ + 1}/{mode.rounds} done")
    pooled = {}
    for key, values in latencies.items():
        values.sort()
        pooled[key] = {
            "calls": len(values),
            "p50_us": percentile(values, 0.50),
            "p99_us": percentile(values, 0.99),
            "p999_us": percentile(values, 0.999),
        }
    return runs, pooled


def cell_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "rate": spread([r["rate"] for r in runs]),
        "p50_us": spread([r["p50_us"] for r in runs]),
        "p99_us": spread([r["p99_us"] for r in runs]),
        "server_cpu": spread([r["server_cpu"] for r in runs]),
        "server_us_per_call": spread([r["server_us_per_call"] for r in runs]),
        "client_cpu": spread([r["client_cpu"] for r in runs]),
        "calls": sum(r["count"] for r in runs),
    }


def paired(
    runs: dict[str, list[dict[str, Any]]], over: str, under: str, field: str
) -> dict[str, Any]:
    """Ratio of two cells, run by run (both measured in the same round), and of medians."""
    per_round = [a[field] / b[field] for a, b in zip(runs[over], runs[under], strict=True)]
    medians = statistics.median(r[field] for r in runs[over]) / statistics.median(
        r[field] for r in runs[under]
    )
    return {"of": over, "to": under, "field": field, **spread(per_round), "of_medians": medians}


# ----------------------------------------------------------- (g): journal

JOURNAL_CELLS = (
    # (key, target name in the worker, server)
    ("g.on.changing", "jon_changing", "mediatord"),
    ("g.off.changing", "joff_changing", "nojournal"),
    ("g.on.reads", "mediatord", "mediatord"),
    ("g.off.reads", "joff_reads", "nojournal"),
)


def journal(
    mode: Mode,
    tmp: Path,
    worker: Process,
    mediatord: tuple[Process, dict[str, str]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Journal on (the deployed mediatord) vs off (a --no-journal one), interleaved."""
    nojournal = start_mediatord(tmp, "nojournal", journal=False)
    servers = {"mediatord": mediatord, "nojournal": nojournal}
    try:
        for _, name, server in JOURNAL_CELLS:
            if name == "mediatord":
                continue  # (b)'s target, connected already
            kind = "changing" if name.endswith("changing") else "mediatord"
            address = servers[server][1]["unix"]
            worker.request(
                {"op": "connect", "name": f"{name}.unix", "address": address, "domain": "domu1",
                 "kind": kind},
                30,
            )  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in JOURNAL_CELLS}
        for round_ in range(mode.rounds):
            order = JOURNAL_CELLS if round_ % 2 == 0 else tuple(reversed(JOURNAL_CELLS))
            for key, name, server in order:
                result = run_cell(
                    worker,
                    servers[server][0],
                    server_name=name,
                    op="unary",
                    transport="unix",
                    seconds=mode.cell_seconds,
                )
                result.pop("latencies_us")
                runs[key].append(result)
        log(f"  {mode.rounds} rounds done")
    finally:
        nojournal[0].stop()
    with tempfile.TemporaryDirectory(prefix="mbench-journal-", dir=tmp) as scratch:
        directory = Path(scratch)
        log("  the store: append by batch size, and the replay of a real journal")
        store = [journal_store.append_cost(directory, b, mode.journal_batches) for b in (1, 32)]
        replay = journal_store.replay_cost(directory, mode.replay_records, mode.rounds)
    return {
        "available": True,
        "cells": {key: cell_summary(r) for key, r in runs.items()},
        "ratios": {
            "on_vs_off_throughput.changing": paired(
                runs, "g.on.changing", "g.off.changing", "rate"
            ),
            "on_vs_off_throughput.reads": paired(runs, "g.on.reads", "g.off.reads", "rate"),
            "on_vs_off_server_cpu_per_call.changing": paired(
                runs, "g.on.changing", "g.off.changing", "server_us_per_call"
            ),
        },
        "append": store,
        "replay": replay,
    }


# ----------------------------------------------------------- (d): agents


def agents(
    mode: Mode,
    tmp: Path,
    mediatord: Process,
    address: str,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    setup = start_worker(tmp, "setup")
    names = [f"dom{n}" for n in range(1, max(AGENT_DOMAINS) + 1)]
    setup.request(
        {
            "op": "create_domains",
            "address": address,
            "names": names,
            "ram_base": 0x4000_0000,
            "ram_size": 16 << 20,
        },
        60,
    )
    setup.stop()
    workers = [start_worker(tmp, f"agents-{i}") for i in range(AGENT_WORKERS)]
    results = []
    for count in AGENT_DOMAINS:
        used = workers[: min(count, AGENT_WORKERS)]
        share = {w: names[i : count : len(used)] for i, w in enumerate(used)}
        for worker, domains in share.items():
            worker.send({"op": "agents_prepare", "address": address, "domains": domains})
        for worker in used:
            worker.receive(60)
        runs = []
        for _ in range(mode.rounds):
            start_at = time.monotonic() + 0.2
            command = {
                "op": "agents_run",
                "start_at": start_at,
                "seconds": mode.agent_seconds,
                "max_calls": int(mode.agent_seconds * MAX_RATE),
            }
            cpu = mediatord.cpu_seconds()
            clients_cpu = 0.0
            for worker in used:
                worker.send(command)
            counts: dict[str, int] = {}
            elapsed: dict[str, float] = {}
            latencies: list[int] = []
            for worker in used:
                answer = worker.receive(mode.agent_seconds + 60)
                counts |= answer["counts"]
                elapsed |= answer["elapsed"]
                latencies += answer["latencies_us"]
                clients_cpu += answer["client_cpu_s"]
            wall = max(elapsed.values())
            spent = mediatord.cpu_seconds() - cpu
            server_cpu = spent / (wall + 0.2)
            per_domain = [counts[d] / elapsed[d] for d in counts]
            latencies.sort()
            runs.append(
                {
                    "rate": sum(counts.values()) / wall,
                    "p50_us": percentile(latencies, 0.50),
                    "p99_us": percentile(latencies, 0.99),
                    "min_max": min(per_domain) / max(per_domain),
                    "jain": jain(per_domain),
                    "per_domain_rate": spread(per_domain),
                    "server_cpu": server_cpu,
                    "server_us_per_call": spent / max(1, sum(counts.values())) * 1e6,
                    "client_cpu": clients_cpu / wall,
                }
            )
        for worker in used:
            worker.request({"op": "agents_close"}, 30)
        results.append(
            {
                "domains": count,
                "client_processes": len(used),
                "runs": len(runs),
                **{
                    k: spread([r[k] for r in runs])
                    for k in (
                        "rate",
                        "p50_us",
                        "p99_us",
                        "min_max",
                        "jain",
                        "server_cpu",
                        "server_us_per_call",
                    )
                },
                "client_cpu": spread([r["client_cpu"] for r in runs]),
                "per_domain_rate_last_run": runs[-1]["per_domain_rate"],
            }
        )
        log(f"  {count} domain(s) done")
    for worker in workers:
        worker.stop()
    return results


# ------------------------------------------------------------- profiling


def shorten(frame: str) -> str:
    """``fn (/…/site-packages/grpc/aio/_server.py:12)`` -> ``fn (grpc/aio/_server.py)``."""
    match = re.fullmatch(r"(.*) \((.*?)(?::\d+)?\)", frame)
    if not match:
        return frame
    function, path = match.groups()
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.rpartition(marker)[2]
    return f"{function} ({path})"


LAYERS = (
    # (name, regular expression a frame of the layer matches)
    ("mediatord core (Mediator.call)", r"mediatord/core/"),
    ("Engine.call", r"mediatord/server/engine\.py"),
    ("GuestService (services.py)", r"mediatord/server/services\.py"),
    ("Gate: metrics, identity, authorization (gate.py)", r"mediatord/server/gate\.py"),
    ("authorization policy (auth.py)", r"mediatord/server/auth\.py"),
    ("metrics (metrics.py)", r"mediatord/server/metrics\.py"),
    ("handler wrapping (wrapping.py)", r"mediatord/server/wrapping\.py"),
    ("structlog", r"/structlog/"),
    ("prometheus_client", r"/prometheus_client/"),
    ("echo handlers (bench/echo_server.py)", r"^(call|call_stream) \(.*bench/echo_server\.py"),
    ("grpc Python (grpc/aio, grpc/__init__)", r"/grpc/(aio/|__init__\.py)"),
)


def read_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self time by function and inclusive time by layer, from py-spy's raw output."""
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        own[shorten(frames[-1])] += count
        for name, pattern in LAYERS:
            if any(re.search(pattern, f) for f in frames):
                layers[name] += count
    return {
        "samples": total,
        "self": [{"function": f, "share": n / total} for f, n in own.most_common(top) if total],
        "inclusive_layers": [
            {"layer": name, "share": layers[name] / total}
            for name, _ in LAYERS
            if total and layers[name]
        ],
    }


def profile(
    mode: Mode,
    tmp: Path,
    *,
    worker: Process,
    server: Process,
    target: str,
    svg: Path | None,
) -> dict[str, Any]:
    """py-spy on ``server`` while ``worker`` runs sequential Calls on ``target``."""
    spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
    if spy is None:
        return {"available": False, "reason": "py-spy is not installed (pip install py-spy)"}
    seconds = mode.profile_seconds
    outputs: list[tuple[str, Path]] = [("raw", tmp / f"{target}.raw.txt")]
    if svg is not None:
        outputs.append(("flamegraph", svg))
    result: dict[str, Any] = {"available": True, "tool": "py-spy", "seconds": seconds}
    for fmt, out in outputs:
        spy_process = Process(
            f"py-spy-{fmt}",
            [
                *(spy, "record", "--pid", str(server.pid), "--duration", str(int(seconds))),
                *("--rate", str(PROFILE_RATE), "--gil", "--format", fmt, "--full-filenames"),
                *("--output", str(out)),
            ],
            tmp,
        )
        time.sleep(0.3)  # attached
        run = worker.request(
            {"op": "unary", "name": target, "seconds": seconds + 1.0, "max_calls": 10**6}, 60
        )
        try:
            spy_process.popen.wait(30)
        finally:
            spy_process.stop()
        if fmt == "raw":
            if not out.exists():
                return {"available": False, "reason": f"py-spy failed: {spy_process._tail()}"}
            result |= read_profile(out)
            result["gil_share"] = result["samples"] / (seconds * PROFILE_RATE)
            result["rate_while_profiled"] = run["rate"]
            # GIL-holding time per call: samples / rate over the calls made meanwhile.
            calls = max(1.0, run["rate"] * seconds)
            scale = result["samples"] / PROFILE_RATE / calls * 1e6
            result["gil_us_per_call"] = scale
            for item in (*result["self"], *result["inclusive_layers"]):
                item["us_per_call"] = item["share"] * scale
        else:
            result["svg"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    return result


# ------------------------------------------------------- (e) (f): in-process


def core(mode: Mode) -> dict[str, Any]:
    from mediatord import logs

    logs.configure("warning", "json")  # as the server runs in the benchmarks
    mix = [core_dispatch.one_run(mode.core_calls) for _ in range(mode.rounds)]
    pair = [core_dispatch.pair_run(mode.core_calls) for _ in range(mode.rounds)]
    engine = [core_dispatch.engine_run(mode.engine_calls) for _ in range(mode.rounds)]
    return {
        "mix": {"calls_per_run": mode.core_calls, "rate": spread(mix)},
        "guest_pair": {"calls_per_run": mode.core_calls, "rate": spread(pair)},
        "engine_pair": {"calls_per_run": mode.engine_calls, "rate": spread(engine)},
    }


def host(mode: Mode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setup in ("suspended", "running"):
        rows = [host_suspend.measure(n, mode.host_cycles, setup) for n in HOST_DOMAINS]
        by = {r["domains"]: r["cpu_ms"]["median"] for r in rows}
        out[setup] = {
            "rows": rows,
            "growth_1000_over_100": by[1000] / by[100],
            "marginal_us_per_domain": (by[1000] - by[100]) / 900 * 1e3,
        }
    return out


# ----------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    import google.protobuf
    import grpc

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *args],
                check=False,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        # Uncommitted changes to the daemon measured (read-only git query).
        "uncommitted": git("status", "--porcelain", "--", "mediatord").splitlines(),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "load_average_at_start": os.getloadavg(),
        "kernel": platform.release(),
    }


def num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def rng(stat: dict[str, float], digits: int = 0, scale: float = 1.0) -> str:
    m, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    return f"{num(m, digits)} [{num(lo, digits)}-{num(hi, digits)}]"


def _at_least(target: str, r: dict[str, float], bound: float) -> dict[str, Any]:
    """A throughput ratio target: met when the median run reaches ``bound``."""
    return {
        "target": target,
        "value": r["median"],
        "met": r["median"] >= bound,
        "numbers": f"{r['median']:.2f}x (runs {r['min']:.2f}-{r['max']:.2f})",
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    ratios = report["ratios"]
    for transport in ("unix", "tcp"):
        out.append(
            _at_least(
                f"Guest.Call throughput >= {TARGET_CALL_VS_ECHO}x bare unary echo ({transport})",
                ratios[f"call_vs_echo_throughput.{transport}"],
                TARGET_CALL_VS_ECHO,
            )
        )
    cells = report["grpc"]["cells"]
    for transport in ("unix", "tcp"):
        r = ratios[f"call_vs_echo_p99.{transport}"]
        value = report["pooled_p99_ratios"][transport]["call_vs_echo"]
        call, echo = cells[f"b.call.{transport}"], cells[f"a.unary.{transport}"]
        out.append(
            {
                "target": f"Guest.Call p99 <= {TARGET_P99_VS_ECHO}x bare unary echo p99 "
                f"({transport})",
                "value": value,
                "met": value <= TARGET_P99_VS_ECHO,
                "numbers": f"{value:.2f}x, p99 of all calls pooled over the runs: "
                f"{call['pooled']['p99_us']:,.0f} vs {echo['pooled']['p99_us']:,.0f} us "
                f"(run by run: {r['median']:.2f}x, {r['min']:.2f}-{r['max']:.2f})",
            }
        )
    for transport in ("unix", "tcp"):
        out.append(
            _at_least(
                f"Guest.CallStream >= {TARGET_STREAM_VS_BIDI}x bare bidi, window {WINDOW} "
                f"({transport})",
                ratios[f"stream_vs_bidi_throughput.{transport}"],
                TARGET_STREAM_VS_BIDI,
            )
        )
    rate = report["core"]["mix"]["rate"]
    out.append(
        {
            "target": f"core dispatch >= {TARGET_CORE_CALLS:,} calls/s",
            "value": rate["median"],
            "met": rate["median"] >= TARGET_CORE_CALLS,
            "numbers": f"{rng(rate)} calls/s",
        }
    )
    suspended = report["host"]["suspended"]
    growth = suspended["growth_1000_over_100"]
    out.append(
        {
            "target": f"host suspend+resume linear: 1000 domains within {TARGET_HOST_GROWTH:g}x "
            "of 100",
            "value": growth,
            "met": growth <= TARGET_HOST_GROWTH,
            "numbers": f"{growth:.2f}x",
        }
    )
    ms = suspended["rows"][-1]["cpu_ms"]
    out.append(
        {
            "target": f"host suspend+resume with 1000 domains < {TARGET_HOST_1000_MS:g} ms "
            "core CPU",
            "value": ms["median"],
            "met": ms["median"] < TARGET_HOST_1000_MS,
            "numbers": f"{rng(ms, 2)} ms",
        }
    )
    j = report["journal"]
    r = j["ratios"]["on_vs_off_throughput.changing"]
    reads = j["ratios"]["on_vs_off_throughput.reads"]
    out.append(
        {
            "target": f"journal on >= {TARGET_JOURNAL_ON_VS_OFF}x journal off, unary "
            "state-changing calls (unix)",
            "value": r["median"],
            "met": r["median"] >= TARGET_JOURNAL_ON_VS_OFF,
            "numbers": f"{r['median']:.2f}x (runs {r['min']:.2f}-{r['max']:.2f}); read-only "
            f"calls {reads['median']:.2f}x",
        }
    )
    replay = j["replay"]
    seconds = replay["no_snapshot"]["seconds"]
    out.append(
        {
            "target": f"replay of a {replay['records']:,}-record journal < "
            f"{TARGET_REPLAY_SECONDS:g} s (the issue's size: 100,000, full mode)",
            "value": seconds,
            "met": seconds < TARGET_REPLAY_SECONDS,
            "numbers": f"{seconds:.3f} s without a snapshot, "
            f"{replay['snapshot_every_10000']['seconds']:.3f} s with one",
        }
    )
    return out


def table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m = report["machine"]
    add(
        f"mediatord benchmarks ({report['mode']} mode, {report['date']}): each figure is "
        f"median [min-max] of {report['rounds']} runs"
    )
    add(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}, grpcio "
        f"{m['grpcio']}, protobuf {m['protobuf']}, load average at start "
        f"{m['load_average_at_start'][0]:.2f}, at end "
        f"{m.get('load_average_at_end', (0.0,))[0]:.2f}"
    )
    add("")
    head = (
        f"{'':4} {'scenario':46} {'transport':9} {'throughput /s':>24} {'p50 us':>20} "
        f"{'p99 us':>22} {'srv CPU us/call':>16}"
    )
    add(head)
    add("-" * len(head))
    cells = report["grpc"]["cells"]
    labels = {
        "a.unary": "(a)  bare echo, unary, sequential",
        "y.unary": "     echo + 2 pass-through interceptors, unary",
        "x.unary": "     echo + mediatord's gate, unary",
        "b.call": "(b)  Guest.Call, sequential",
        "a.bidi": f"(a)  bare echo, bidi, window {WINDOW}",
        "c.stream": f"(c)  Guest.CallStream, window {WINDOW}",
    }
    for key in ("a.unary", "y.unary", "x.unary", "b.call", "a.bidi", "c.stream"):
        for transport in ("unix", "tcp"):
            c = cells.get(f"{key}.{transport}")
            if c is None:
                continue
            label = labels[key]
            add(
                f"{label[:4]} {label[5:]:46} {transport:9} {rng(c['rate']):>24} "
                f"{rng(c['p50_us']):>20} {rng(c['p99_us']):>22} "
                f"{c['server_us_per_call']['median']:>16.0f}"
            )
    for row in report["agents"]:
        add(
            f"(d)  {row['domains']:>2} agents / domains, {row['client_processes']} client proc."
            f"{'':15} {'unix':9} {rng(row['rate']):>24} {rng(row['p50_us']):>20} "
            f"{rng(row['p99_us']):>22} {row['server_us_per_call']['median']:>16.0f}"
        )
        add(
            f"{'':4} {'   fairness: min/max per-domain ' + rng(row['min_max'], 2):60}"
            f" Jain {rng(row['jain'], 3)}; CPU cores used: server "
            f"{row['server_cpu']['median']:.2f}, clients {row['client_cpu']['median']:.2f}"
        )
    core = report["core"]
    for key, label in (
        ("mix", "(e)  core dispatch, core_dispatch.py mix"),
        ("guest_pair", "     core dispatch, (b)'s two calls"),
        ("engine_pair", "     core + Engine.call, (b)'s two calls"),
    ):
        rate = core[key]["rate"]
        add(
            f"{label[:4]} {label[5:]:46} {'none':9} {rng(rate):>24}   "
            f"({1e6 / rate['median']:.2f} us/call)"
        )
    for setup, text in (
        ("suspended", "domUs suspended"),
        ("running", "domUs running, paused by host"),
    ):
        data = report["host"][setup]
        for row in data["rows"]:
            label = f"host suspend+resume, {row['domains']:>4} domUs, {text}"
            add(
                f"{'(f)' if setup == 'suspended' else '':4} {label:56} CPU "
                f"{rng(row['cpu_ms'], 3)} ms, {row['per_domain_us']:.2f} us/domain"
            )
        add(
            f"{'':4} {'':56} 1000/100: {data['growth_1000_over_100']:.2f}x, marginal "
            f"{data['marginal_us_per_domain']:.2f} us/domain"
        )
    j = report["journal"]
    for key, label in (
        ("g.on.changing", "(g)  Guest.Call CPU_ON/CPU_OFF, journal on"),
        ("g.off.changing", "     Guest.Call CPU_ON/CPU_OFF, journal off"),
        ("g.on.reads", "     Guest.Call (b)'s reads, journal on"),
        ("g.off.reads", "     Guest.Call (b)'s reads, journal off"),
    ):
        c = j["cells"][key]
        add(
            f"{label[:4]} {label[5:]:46} {'unix':9} {rng(c['rate']):>24} "
            f"{rng(c['p50_us']):>20} {rng(c['p99_us']):>22} "
            f"{c['server_us_per_call']['median']:>16.0f}"
        )
    for row in j["append"]:
        add(
            f"{'':4} {'journal append, batch of ' + str(row['batch']):56} "
            f"{row['per_batch_ms']:.3f} ms per batch (one fsync), {row['records_per_s']:,} "
            "records/s"
        )
    r = j["replay"]
    for key, text in (("no_snapshot", "no snapshot"), ("snapshot_every_10000", "snapshot")):
        label = f"start-up replay of {r[key]['replayed']:,} records ({text})"
        add(
            f"{'':4} {label:56} {r[key]['seconds']:.3f} s (max {r[key]['seconds_max']:.3f}) "
            f"of a {r['records']:,}-record journal"
        )
    add("")
    add("ratios (run by run in the same rounds; median [min-max], and ratio of medians):")
    for key, r in (report["ratios"] | {f"journal.{k}": v for k, v in j["ratios"].items()}).items():
        add(
            f"  {key:56} {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]  "
            f"(of medians {r['of_medians']:.2f})"
        )
    add("pooled p99 (every call of the 'runs' of a figure) and its ratios:")
    for key, c in cells.items():
        p = c["pooled"]
        add(
            f"  {key:16} {p['calls']:>8,} calls  p50 {p['p50_us']:>8,.0f} us  p99 "
            f"{p['p99_us']:>8,.0f} us  p99.9 {p['p999_us']:>8,.0f} us"
        )
    for transport, r in report["pooled_p99_ratios"].items():
        add(
            f"  {transport}: Guest.Call / echo p99 {r['call_vs_echo']:.2f}x, CallStream / bidi "
            f"p99 {r['stream_vs_bidi']:.2f}x"
        )
    add("")
    add("targets:")
    for t in report["targets"]:
        add(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['numbers']}")
    prof = report.get("profile")
    if prof:
        add("")
        for name, data in prof.items():
            if not data.get("available"):
                add(f"profile of {name}: not taken ({data.get('reason', 'skipped')})")
                continue
            add(
                f"profile of {name} under sequential Guest.Call (py-spy --gil: "
                f"{data['samples']} samples holding the GIL, {data['gil_share'] * 100:.0f}% "
                f"of the time; {data['rate_while_profiled']:.0f} calls/s while sampled):"
            )
            add(
                f"  GIL held {data['gil_us_per_call']:.0f} us per call; top functions by self time:"
            )
            for item in data["self"][:10]:
                add(
                    f"    {item['share'] * 100:5.1f}% {item['us_per_call']:6.1f} us/call  "
                    f"{item['function']}"
                )
            if data["inclusive_layers"]:
                add("  inclusive time by layer (layers nest: a call runs inside all of them):")
                for item in data["inclusive_layers"]:
                    add(
                        f"    {item['share'] * 100:5.1f}% {item['us_per_call']:6.1f} us/call  "
                        f"{item['layer']}"
                    )
    return "\n".join(lines)


# -------------------------------------------------------------------- main


@contextlib.contextmanager
def terminated_on_signal() -> Iterator[None]:
    """SIGTERM/SIGINT end the run through the finally blocks (children killed)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(mode: Mode, svg: Path | None, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {
        "mode": mode.name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rounds": mode.rounds,
        "machine": machine(),
        "settings": {
            "cell_seconds": mode.cell_seconds,
            "agent_seconds": mode.agent_seconds,
            "window": WINDOW,
            "agent_client_processes": AGENT_WORKERS,
            "calls": "PSCI_VERSION (0x84000000) and AFFINITY_INFO_64 (0xC4000004, vCPU 0) "
            "alternately, from domu1 vCPU 0 (metadata x-mediator-domain)",
            "client": "grpc.aio (bench/clients.py), one process",
        },
    }
    with tempfile.TemporaryDirectory(prefix="mbench-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        try:
            log("(a)-(c): starting the echo server and mediatord")
            echo, echo_at = start_echo(tmp)
            mediatord, mediatord_at = start_mediatord(tmp)
            servers = {"echo": echo, "mediatord": mediatord}
            addresses = {"echo": echo_at, "mediatord": mediatord_at}
            for name, interceptors in (("echo_pass", "passthrough"), ("echo_icpt", "mediatord")):
                try:
                    servers[name], at = start_echo(tmp, name, interceptors)
                    addresses[name] = {"unix": at["unix"]}
                except BenchError as error:  # a diagnostic only: the run goes on without it
                    log(f"the echo with {interceptors} interceptors did not start: {error}")
            worker = start_worker(tmp, "client")
            for name, at in addresses.items():
                kind = "mediatord" if name == "mediatord" else "echo"
                for transport, address in at.items():
                    worker.request(
                        {
                            "op": "connect",
                            "name": f"{name}.{transport}",
                            "address": address,
                            "domain": "domu1",
                            "kind": kind,
                        },
                        30,
                    )
            runs, pooled = transport_pairs(mode, worker, servers, log)
            report["grpc"] = {
                "addresses": addresses,
                "cells": {
                    key: cell_summary(r) | {"pooled": pooled[key]} for key, r in runs.items()
                },
                "runs": runs,
            }
            # p99 over every call of every run of a cell (runs interleaved with the
            # echo's): far more tail samples than one run's p99.
            report["pooled_p99_ratios"] = {
                transport: {
                    "call_vs_echo": pooled[f"b.call.{transport}"]["p99_us"]
                    / pooled[f"a.unary.{transport}"]["p99_us"],
                    "stream_vs_bidi": pooled[f"c.stream.{transport}"]["p99_us"]
                    / pooled[f"a.bidi.{transport}"]["p99_us"],
                }
                for transport in ("unix", "tcp")
            }
            ratios = {}
            for transport in ("unix", "tcp"):
                ratios[f"call_vs_echo_throughput.{transport}"] = paired(
                    runs, f"b.call.{transport}", f"a.unary.{transport}", "rate"
                )
                ratios[f"call_vs_echo_p99.{transport}"] = paired(
                    runs, f"b.call.{transport}", f"a.unary.{transport}", "p99_us"
                )
                ratios[f"stream_vs_bidi_throughput.{transport}"] = paired(
                    runs, f"c.stream.{transport}", f"a.bidi.{transport}", "rate"
                )
                ratios[f"call_vs_echo_server_cpu_per_call.{transport}"] = paired(
                    runs, f"b.call.{transport}", f"a.unary.{transport}", "server_us_per_call"
                )
                ratios[f"stream_vs_bidi_server_cpu_per_call.{transport}"] = paired(
                    runs, f"c.stream.{transport}", f"a.bidi.{transport}", "server_us_per_call"
                )
            for key, name in (("y", "passthrough"), ("x", "mediatord_interceptors")):
                if f"{key}.unary.unix" in runs:
                    ratios[f"echo_{name}_vs_echo_throughput.unix"] = paired(
                        runs, f"{key}.unary.unix", "a.unary.unix", "rate"
                    )
                    ratios[f"echo_{name}_vs_echo_server_cpu_per_call.unix"] = paired(
                        runs, f"{key}.unary.unix", "a.unary.unix", "server_us_per_call"
                    )
            report["ratios"] = ratios
            if mode.profile_seconds:
                log("profiling the servers under sequential Guest.Call (py-spy)")
                report["profile"] = {
                    "mediatord": profile(
                        mode, tmp, worker=worker, server=mediatord, target="mediatord.unix", svg=svg
                    ),
                    "echo": profile(
                        mode, tmp, worker=worker, server=echo, target="echo.unix", svg=None
                    ),
                }
            log("(g): journal on vs off")
            report["journal"] = journal(mode, tmp, worker, (mediatord, mediatord_at), log)
            worker.stop()
            echo.stop()
            for name in ("echo_pass", "echo_icpt"):
                if name in servers:
                    servers[name].stop()
            log("(d): concurrent agents")
            report["agents"] = agents(mode, tmp, mediatord, mediatord_at["unix"], log)
            mediatord.stop()
        finally:
            Process.stop_all()
    log("(e): core dispatch")
    report["core"] = core(mode)
    log("(f): host suspend + resume")
    report["host"] = host(mode)
    report["targets"] = targets(report)
    report["seconds"] = time.monotonic() - started
    report["machine"]["load_average_at_end"] = os.getloadavg()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="CI mode: a few seconds in total")
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write the full results as JSON to FILE ('-': stdout, and the table to stderr)",
    )
    parser.add_argument(
        "--profile-svg",
        metavar="FILE",
        type=Path,
        help="full mode: also write py-spy's flame graph of mediatord to FILE",
    )
    parser.add_argument("--rounds", type=int, help="runs per figure (default: by mode)")
    parser.add_argument("--seconds", type=float, help="seconds per gRPC run (default: by mode)")
    args = parser.parse_args()
    mode = SHORT if args.short else FULL
    if args.rounds:
        mode = dataclasses.replace(mode, rounds=max(1, min(args.rounds, 50)))
    if args.seconds:
        seconds = max(0.1, min(args.seconds, 10.0))
        mode = dataclasses.replace(mode, cell_seconds=seconds, agent_seconds=seconds)
    out: TextIO = sys.stderr if args.json == "-" else sys.stdout

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        with terminated_on_signal():
            report = run(mode, args.profile_svg.resolve() if args.profile_svg else None, log)
    except KeyboardInterrupt as interrupt:
        log(f"bench: interrupted ({interrupt}); every subprocess was stopped")
        return 130
    except BenchError as error:
        log(f"bench: the benchmark itself failed: {error}")
        return 1
    print(table(report), file=out, flush=True)
    print(f"\n({report['seconds']:.1f} s)", file=out)
    if args.json == "-":
        json.dump(report, sys.stdout, indent=1)
        print()
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
