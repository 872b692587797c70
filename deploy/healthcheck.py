#!/usr/bin/env python3
"""Health probe for mediatord: grpc.health.v1 Check over the daemon's unix socket.

The container image installs it as /usr/local/bin/mediatord-healthcheck; the
Containerfile's HEALTHCHECK and the Kubernetes liveness/readiness probes run it.
It uses the unix socket (not the TLS listener) so that it needs no client
certificate: the health service is open on every listener.

    mediatord-healthcheck [TARGET] [SERVICE]

TARGET defaults to unix:/run/mediatord/mediatord.sock, SERVICE to "" (the whole
server; "mediator.v1.Guest" or "mediator.v1.Control" ask for one service).
Exit 0 when SERVING, 1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TARGET = "unix:/run/mediatord/mediatord.sock"
TIMEOUT_S = 3.0


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else DEFAULT_TARGET
    service = argv[2] if len(argv) > 2 else ""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            print(f"mediatord unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"mediatord unhealthy: {status}", file=sys.stderr)
        return 1
    print(f"mediatord {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
