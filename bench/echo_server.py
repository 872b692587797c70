"""The transport limit: a bare grpc.aio server with the Guest service's message shapes.

It serves ``/mediator.v1.Guest/Call`` (unary) and ``/mediator.v1.Guest/CallStream``
(bidi) through a generic handler (and as registered methods, as the generated
add_GuestServicer_to_server registers them) with the mediator_pb2 serializers, so a
client uses the very same stub, messages and metadata as against mediatord: an
SmcCall in, an SmcResult with four registers out. No interceptors, no auth, no
metrics, no core: what remains is the cost of grpc.aio and protobuf.

    python bench/echo_server.py --unix PATH --listen 127.0.0.1:0

prints ``echo listening on ADDRESS`` per listener, then serves until SIGTERM/SIGINT.

Two diagnostic variants sit between the bare echo and the daemon:
``--interceptors passthrough`` puts two interceptors that return the handler as it
is in front (the cost of grpc.aio's interceptor chain alone), and
``--interceptors mediatord`` puts mediatord's own layer in front (its Gate:
metrics, identity and authorization, as mediatord/server/app.py installs it on a
server without TLS listeners; logs at warning).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.server.app import MAX_MESSAGE_BYTES

SERVICE = "mediator.v1.Guest"
# The server options of mediatord (mediatord/server/app.py, start()), so that only
# the work behind the handlers differs.
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def _reply(request: pb.SmcCall) -> pb.SmcResult:
    # x0 echoes the function ID; x1..x3 are zero, as in most PSCI answers.
    return pb.SmcResult(regs=(request.function_id, 0, 0, 0))


async def call(request: pb.SmcCall, context: Any) -> pb.SmcResult:
    return _reply(request)


async def call_stream(requests: AsyncIterator[pb.SmcCall], context: Any) -> AsyncIterator[Any]:
    async for request in requests:
        yield _reply(request)


HANDLERS = {
    "Call": grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=pb.SmcCall.FromString,
        response_serializer=pb.SmcResult.SerializeToString,
    ),
    "CallStream": grpc.stream_stream_rpc_method_handler(
        call_stream,
        request_deserializer=pb.SmcCall.FromString,
        response_serializer=pb.SmcResult.SerializeToString,
    ),
}


def register(server: grpc.aio.Server) -> None:
    """As the generated add_GuestServicer_to_server does: a generic handler, and the
    same handlers as registered methods."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    server.add_registered_method_handlers(SERVICE, HANDLERS)


class PassThrough(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return await continuation(handler_call_details)


def mediatord_interceptors() -> list[grpc.aio.ServerInterceptor]:
    from mediatord import logs
    from mediatord.server.gate import Gate
    from mediatord.server.metrics import Metrics

    logs.configure("warning", "json")
    # The board's domains as the daemon's Engine.hardware_domain answers for them.
    known = {"dom0": True, "domu1": False, "domu2": False}
    return [Gate(Metrics(), known.get, tls=False)]


INTERCEPTORS = {
    "none": list,
    "passthrough": lambda: [PassThrough(), PassThrough()],
    "mediatord": mediatord_interceptors,
}


async def serve(unix: list[str], listen: list[str], interceptors: str) -> None:
    server = grpc.aio.server(options=OPTIONS, interceptors=INTERCEPTORS[interceptors]() or None)
    register(server)
    addresses = []
    for path in unix:
        if not server.add_insecure_port(f"unix:{path}"):
            raise SystemExit(f"echo: cannot listen on unix:{path}")
        addresses.append(f"unix:{path}")
    for address in listen:
        host, _, _ = address.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise SystemExit(f"echo: loopback only, not {address}")
        port = server.add_insecure_port(address)
        addresses.append(f"{host}:{port}")
    await server.start()
    for address in addresses:
        print(f"echo listening on {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--unix", action="append", default=[], metavar="PATH")
    parser.add_argument("--listen", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--interceptors", choices=tuple(INTERCEPTORS), default="none")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.unix, args.listen, args.interceptors))


if __name__ == "__main__":
    main()
