"""The client side of the gRPC benchmarks: one worker process, driven by bench/run.py.

It reads one JSON command per line on stdin and answers one JSON line on stdout, so
the driver decides the order and timing of every measurement (interleaving the bare
echo and mediatord run by run) while keeping gRPC out of its own process. All
clients are grpc.aio, as the guest agent library (clients/mediator_client) is.

Commands (``op``): ``connect`` (a channel by name, warmed up and checked),
``unary`` (sequential Call), ``stream`` (CallStream, bounded window),
``create_domains`` (Control.CreateDomain), ``agents_prepare`` / ``agents_run`` /
``agents_close`` (one sequential agent per domain), ``quit``. Every loop stops at
its call limit or its deadline, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import deque
from typing import Any

import grpc

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc

PSCI_VERSION = 0x8400_0000
AFFINITY_INFO_64 = 0xC400_0004
# The two calls every loop alternates: PSCI_VERSION, then AFFINITY_INFO of vCPU 0.
REQUESTS = (
    pb.SmcCall(vcpu=0, function_id=PSCI_VERSION),
    pb.SmcCall(vcpu=0, function_id=AFFINITY_INFO_64, args=(0, 0)),
)
CPU_OFF = 0x8400_0002
CPU_ON_64 = 0xC400_0003
# (g): two calls that change state, so that each is journalled: vCPU 0 powers
# vCPU 1 on, then vCPU 1 powers itself off.
CHANGING = (
    pb.SmcCall(vcpu=0, function_id=CPU_ON_64, args=(1, 0x4000_1000, 0)),
    pb.SmcCall(vcpu=1, function_id=CPU_OFF),
)
# The requests of each kind of target, and what it answers (mediatord: PSCI 1.1,
# vCPU 0 is ON; CPU_ON and CPU_OFF succeed; the echo: the function ID back).
REQUESTS_OF = {"mediatord": REQUESTS, "echo": REQUESTS, "changing": CHANGING}
EXPECTED = {
    "mediatord": ([0x1_0001, 0, 0, 0], [0, 0, 0, 0]),
    "echo": ([PSCI_VERSION, 0, 0, 0], [AFFINITY_INFO_64, 0, 0, 0]),
    "changing": ([0, 0, 0, 0], [0, 0, 0, 0]),
}
DOMAIN_KEY = "x-mediator-domain"
RPC_TIMEOUT = 10.0
WARMUP_CALLS = 50


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return 0
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summary(latencies_ns: list[int], count: int, seconds: float, cpu: float) -> dict[str, Any]:
    ordered = sorted(latencies_ns)
    return {
        "count": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "p50_us": percentile(ordered, 0.50) / 1000,
        "p99_us": percentile(ordered, 0.99) / 1000,
        "client_cpu_s": cpu,
        # Every latency, so that the driver can pool the runs of a figure.
        "latencies_us": [round(x / 1000) for x in latencies_ns],
    }


class Target:
    """One channel, to the echo server or mediatord, as one domain."""

    def __init__(self, address: str, domain: str, kind: str, own_connection: bool = False) -> None:
        # Channels of one process to one address share a connection unless told
        # not to; each agent gets its own, as agents in their own processes do.
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = pb_grpc.GuestStub(self.channel)
        self.metadata = ((DOMAIN_KEY, domain),)
        self.kind = kind
        self.requests = REQUESTS_OF[kind]

    async def warm_up(self, calls: int = WARMUP_CALLS) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), RPC_TIMEOUT)
        for n in range(calls):
            reply = await self.stub.Call(
                self.requests[n & 1], metadata=self.metadata, timeout=RPC_TIMEOUT
            )
            expected = EXPECTED[self.kind][n & 1]
            if list(reply.regs) != expected:
                raise RuntimeError(f"unexpected answer {list(reply.regs)}, wanted {expected}")


async def unary(target: Target, seconds: float, max_calls: int) -> dict[str, Any]:
    """Sequential Guest.Call: one call in flight, alternating the two requests."""
    call, metadata, requests = target.stub.Call, target.metadata, target.requests
    latencies: list[int] = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    start = clock()
    deadline = start + int(seconds * 1e9)
    count = 0
    now = start
    # Whole pairs only: the changing pair (CPU_ON, CPU_OFF) must leave vCPU 1 off.
    while (count < max_calls and now < deadline) or count & 1:
        began = now
        await call(requests[count & 1], metadata=metadata, timeout=RPC_TIMEOUT)
        now = clock()
        latencies.append(now - began)
        count += 1
    return summary(latencies, count, (now - start) / 1e9, time.process_time() - cpu0)


async def stream(target: Target, window: int, seconds: float, max_msgs: int) -> dict[str, Any]:
    """Guest.CallStream pipelined with at most ``window`` requests unanswered."""
    rpc = target.stub.CallStream(metadata=target.metadata, timeout=seconds + RPC_TIMEOUT)
    credits = asyncio.Semaphore(window)
    sent: deque[int] = deque()
    clock = time.perf_counter_ns
    cpu0 = time.process_time()
    start = clock()
    deadline = start + int(seconds * 1e9)

    async def writer() -> int:
        count = 0
        while count < max_msgs and clock() < deadline:
            await credits.acquire()
            sent.append(clock())
            await rpc.write(target.requests[count & 1])
            count += 1
        await rpc.done_writing()
        return count

    writing = asyncio.create_task(writer())
    latencies: list[int] = []
    last = start
    try:
        while True:
            reply = await rpc.read()
            if reply is grpc.aio.EOF:
                break
            last = clock()
            latencies.append(last - sent.popleft())
            credits.release()
        written = await writing
    finally:
        writing.cancel()
    if written != len(latencies):
        raise RuntimeError(f"CallStream: {written} sent, {len(latencies)} answered")
    return summary(latencies, len(latencies), (last - start) / 1e9, time.process_time() - cpu0)


class Agents:
    """One sequential agent per domain, each on its own channel (as real agents are)."""

    def __init__(self, address: str, domains: list[str]) -> None:
        self.targets = {d: Target(address, d, "mediatord", own_connection=True) for d in domains}

    async def prepare(self) -> None:
        await asyncio.gather(*(t.warm_up(10) for t in self.targets.values()))

    async def run(self, start_at: float, seconds: float, max_calls: int) -> dict[str, Any]:
        latencies: list[int] = []
        end_at = start_at + seconds
        cpu0 = time.process_time()

        async def agent(target: Target) -> tuple[int, float]:
            call, metadata = target.stub.Call, target.metadata
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            count = 0
            now = time.monotonic()
            while count < max_calls and now < end_at:
                began = time.perf_counter_ns()
                await call(target.requests[count & 1], metadata=metadata, timeout=RPC_TIMEOUT)
                latencies.append(time.perf_counter_ns() - began)
                count += 1
                now = time.monotonic()
            return count, now - start_at

        done = await asyncio.gather(*(agent(t) for t in self.targets.values()))
        ordered = sorted(latencies)
        return {
            "counts": {d: n for d, (n, _) in zip(self.targets, done, strict=True)},
            "elapsed": {d: s for d, (_, s) in zip(self.targets, done, strict=True)},
            "p50_us": percentile(ordered, 0.50) / 1000,
            "p99_us": percentile(ordered, 0.99) / 1000,
            "latencies_us": [round(x / 1000) for x in latencies],
            "client_cpu_s": time.process_time() - cpu0,
        }

    async def close(self) -> None:
        for target in self.targets.values():
            await target.channel.close()


async def create_domains(address: str, names: list[str], ram_base: int, ram_size: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        control = pb_grpc.ControlStub(channel)
        for name in names:
            request = pb.CreateDomainRequest(
                name=name, vcpus=1, ram_base=ram_base, ram_size=ram_size
            )
            await control.CreateDomain(request, timeout=RPC_TIMEOUT)


async def handle(command: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    targets: dict[str, Target] = state.setdefault("targets", {})
    if op == "connect":
        target = Target(command["address"], command["domain"], command["kind"])
        await target.warm_up()
        targets[command["name"]] = target
        return {}
    if op == "unary":
        return await unary(targets[command["name"]], command["seconds"], command["max_calls"])
    if op == "stream":
        return await stream(
            targets[command["name"]], command["window"], command["seconds"], command["max_msgs"]
        )
    if op == "create_domains":
        await create_domains(
            command["address"], command["names"], command["ram_base"], command["ram_size"]
        )
        return {}
    if op == "agents_prepare":
        state["agents"] = Agents(command["address"], command["domains"])
        await state["agents"].prepare()
        return {}
    if op == "agents_run":
        agents: Agents = state["agents"]
        return await agents.run(command["start_at"], command["seconds"], command["max_calls"])
    if op == "agents_close":
        await state.pop("agents").close()
        return {}
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {}
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            answer = await handle(command, state)
        except (grpc.aio.AioRpcError, RuntimeError, TimeoutError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
    for target in state.get("targets", {}).values():
        await target.channel.close()


if __name__ == "__main__":
    asyncio.run(main())
