"""Diagnostic for the tail latency of Guest.Call: garbage-collector pauses in the server.

Runs a server in this process with ``gc.callbacks`` timing every collection, while a
client process (bench/clients.py) makes sequential Guest.Call for a few seconds:
either mediatord itself (mediatord.server.app.start, default board, unix socket) or
the bare echo of bench/echo_server.py. Prints one JSON object: calls, collections per
generation, their total and longest pause, the live objects the collector tracks,
and the call latency percentiles seen by the client.

    python bench/gc_probe.py [--server mediatord|echo] [--seconds 5]

Not part of `make bench`; bench/RESULTS.md quotes it where the tail is discussed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from mediatord import logs
from mediatord.board import default_board
from mediatord.server import app

HERE = Path(__file__).resolve().parent


class Pauses:
    def __init__(self) -> None:
        self.started = 0
        self.by_generation: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter_ns()
        else:
            self.by_generation[info["generation"]].append(time.perf_counter_ns() - self.started)


async def serve(kind: str, sock: Path) -> Any:
    if kind == "mediatord":
        return await app.start(default_board(), [app.Listener(unix=sock)])
    sys.path.insert(0, str(HERE))
    import echo_server

    server = grpc.aio.server(options=echo_server.OPTIONS)
    echo_server.register(server)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    return server


async def main(kind: str, seconds: float) -> dict[str, Any]:
    logs.configure("warning", "json")
    with tempfile.TemporaryDirectory(prefix="gcprobe-", dir="/tmp") as tmp:
        sock = Path(tmp) / "s.sock"
        server = await serve(kind, sock)
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "clients.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdin is not None
        assert client.stdout is not None

        async def ask(command: dict[str, Any]) -> dict[str, Any]:
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(json.dumps(command).encode() + b"\n")
            await client.stdin.drain()
            line = await asyncio.wait_for(client.stdout.readline(), seconds + 60)
            answer: dict[str, Any] = json.loads(line)
            if "error" in answer:
                raise RuntimeError(answer["error"])
            return answer

        pauses = Pauses()
        try:
            await asyncio.wait_for(client.stdout.readline(), 30)  # ready
            await ask(
                {
                    "op": "connect",
                    "name": "s",
                    "address": f"unix:{sock}",
                    "domain": "domu1",
                    "kind": "mediatord" if kind == "mediatord" else "echo",
                }
            )
            gc.callbacks.append(pauses)
            run = await ask(
                {"op": "unary", "name": "s", "seconds": seconds, "max_calls": int(seconds * 1e5)}
            )
            gc.callbacks.remove(pauses)
            client.stdin.write(b'{"op": "quit"}\n')
            await client.stdin.drain()
            await asyncio.wait_for(client.wait(), 10)
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
            await server.stop(0)
    collections = {
        str(g): {
            "count": len(p),
            "per_1000_calls": len(p) / run["count"] * 1000,
            "total_ms": sum(p) / 1e6,
            "max_us": max(p, default=0) / 1e3,
        }
        for g, p in pauses.by_generation.items()
    }
    return {
        "server": kind,
        "calls": run["count"],
        "rate": run["rate"],
        "client_p50_us": run["p50_us"],
        "client_p99_us": run["p99_us"],
        "gc_tracked_objects": len(gc.get_objects()),
        "gc_thresholds": gc.get_threshold(),
        "collections": collections,
        "gc_ms_per_1000_calls": sum(c["total_ms"] for c in collections.values())
        / run["count"]
        * 1000,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", choices=("mediatord", "echo"), default="mediatord")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.server, min(args.seconds, 60.0))), indent=1))
