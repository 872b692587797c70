"""Build and run the gRPC server: listeners, services, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from mediatord import logs
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.backends import create_platform
from mediatord.core.clock import Clock
from mediatord.core.config import BoardConfig
from mediatord.core.mediator import Mediator
from mediatord.server import recovery
from mediatord.server.clock import EmulatedClock
from mediatord.server.engine import Engine
from mediatord.server.gate import Gate
from mediatord.server.journaling import SNAPSHOT_EVERY, GroupCommit, JournalWriteError
from mediatord.server.metrics import Metrics, StateCollector
from mediatord.server.recovery import Recovered
from mediatord.server.services import ControlService, GuestService

DEFAULT_LISTEN: Final = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN: Final = "127.0.0.1:9477"
SERVICES: Final = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())
# An SmcCall is at most ~200 bytes; nothing legitimate comes near this.
MAX_MESSAGE_BYTES: Final = 1 << 20
SHUTDOWN_GRACE_SECONDS: Final = 2.0

log = logs.get("mediatord.server")


class ListenError(Exception):
    """A listener that must not or cannot be opened."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The production listener's credentials: the server's certificate and key, and
    the CA whose client certificates are accepted (mTLS, required)."""

    cert: Path
    key: Path
    client_ca: Path

    def credentials(self) -> grpc.ServerCredentials:
        try:
            cert, key, ca = (p.read_bytes() for p in (self.cert, self.key, self.client_ca))
        except OSError as exc:
            raise ListenError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )


@dataclass(frozen=True, slots=True)
class Listener:
    """Loopback TCP (``host:port``) or a unix socket path: a development listener
    taking identity from metadata; or, with ``tls``, a TCP listener on any address
    that takes identity from the client certificate."""

    tcp: str | None = None
    unix: Path | None = None
    tls: TlsConfig | None = None

    @property
    def secure(self) -> bool:
        """Bound with TLS: what :func:`_bind` does (a unix socket never is)."""
        return self.unix is None and self.tls is not None

    def describe(self, port: int | None = None) -> str:
        if self.unix is not None:
            return f"unix:{self.unix}"
        assert self.tcp is not None
        host, _ = split_host_port(self.tcp)
        return join_host_port(host, port)


def join_host_port(host: str, port: int | None) -> str:
    """The inverse of :func:`split_host_port`: brackets around an IPv6 host."""
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


def split_host_port(address: str) -> tuple[str, int]:
    """``127.0.0.1:50051`` / ``[::1]:50051`` / ``localhost:0`` into host and port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ListenError(f"{address!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ListenError(f"{address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ListenError(f"{address!r}: port must be 0..65535")
    return host, port


def require_loopback(address: str) -> None:
    """The development listener trusts metadata for identity, so loopback only."""
    host, _ = split_host_port(address)
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ListenError(f"{host!r} is not an IP address or 'localhost'") from None
    if not loopback:
        raise ListenError(
            f"refusing to listen on {address} without TLS: the development listener takes "
            "identity from metadata, so it only binds loopback (127.0.0.0/8, ::1) or a unix "
            "socket (--unix PATH)"
        )


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket file; refuse if a live server or another file is there."""
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise ListenError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ListenError(f"{path} is in use by a running server")


@dataclass
class Server:
    """A running mediatord: the gRPC server and the engine it serves."""

    engine: Engine
    grpc_server: grpc.aio.Server
    health: health.aio.HealthServicer
    addresses: list[str] = field(default_factory=list)
    metrics_http: WSGIServer | None = None
    metrics_address: str = ""
    # What start recovered from the state directory (None: no journal).
    recovered: Recovered | None = None
    # Holds the state directory's lock until stop.
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # Set when the journal failed: the daemon stops and exits non-zero.
    failure: str | None = None
    # The one stop (a signal, a test and a journal failure may all ask for it).
    stopping: asyncio.Task[None] | None = None

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        await asyncio.shield(self._begin_stop(grace))

    def _begin_stop(self, grace: float) -> asyncio.Task[None]:
        if self.stopping is None:
            self.stopping = asyncio.get_running_loop().create_task(self._stop(grace))
        return self.stopping

    async def _stop(self, grace: float) -> None:
        try:
            await self.health.enter_graceful_shutdown()
            self.engine.shut_down()
            await self.grpc_server.stop(grace)
            if self.metrics_http is not None:
                self.metrics_http.shutdown()
                self.metrics_http.server_close()
            if self.engine.journal is not None:
                # Last: every answered change is already durable; this writes the
                # delivery marks, the clock and a snapshot so that the next start
                # is quick.
                try:
                    await self.engine.journal.close(snapshot=self.failure is None)
                except JournalWriteError as error:
                    self.failure = self.failure or str(error)
        finally:
            self.resources.close()
        log.info("stopped")

    def fail(self, error: BaseException) -> None:
        """The journal cannot be written: stop serving (a restart recovers what
        was durable, which is everything that was answered)."""
        if self.failure is None:
            self.failure = f"the journal could not be written: {error}"
            self._begin_stop(SHUTDOWN_GRACE_SECONDS)


async def start(
    board: BoardConfig,
    listeners: list[Listener],
    clock: Clock | None = None,
    metrics_listen: str | None = None,
    *,
    state_dir: Path | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
) -> Server:
    """Boot the board's domains, or recover them from the journal in ``state_dir``
    (None: keep no state), and serve them on every listener (and /metrics on
    ``metrics_listen``, loopback unless the operator says otherwise).
    Raises ListenError, or JournalError when the state cannot be recovered."""
    if not listeners:
        raise ListenError("no listener given")
    clock = clock or EmulatedClock()
    metrics = Metrics()
    resources = contextlib.ExitStack()
    recovered = None
    if state_dir is None:
        mediator, boot_effects = Mediator.boot(board, create_platform(board, clock))
        engine = Engine(mediator, boot_effects, metrics)
    else:
        with resources.pop_all() as held:
            held.enter_context(recovery.locked(state_dir))
            recovered = recovery.recover(state_dir, board, clock)
            resources = held.pop_all()
        recovery.continue_clock(recovered.journal, clock)
        _report(recovered, state_dir, metrics)
        engine = Engine(
            recovered.mediator,
            metrics=metrics,
            mailboxes=recovered.mailboxes,
            history=recovered.history,
            handed=recovered.handed,
        )
    try:
        return await _serve(
            board,
            listeners,
            engine,
            metrics_listen=metrics_listen,
            recovered=recovered,
            resources=resources,
            snapshot_every=snapshot_every,
        )
    except BaseException:
        if recovered is not None:
            recovered.journal.close()
        resources.close()
        raise


async def _serve(
    board: BoardConfig,
    listeners: list[Listener],
    engine: Engine,
    *,
    metrics_listen: str | None,
    recovered: Recovered | None,
    resources: contextlib.ExitStack,
    snapshot_every: int,
) -> Server:
    metrics = engine.metrics
    metrics.registry.register(StateCollector(engine))
    grpc_server = grpc.aio.server(
        # One layer: grpc_server_* metrics around identity and authorization. The
        # auth context (the client certificate) matters only on TLS listeners.
        interceptors=[
            Gate(metrics, engine.hardware_domain, tls=any(lst.secure for lst in listeners))
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GuestServicer_to_server(GuestService(engine), grpc_server)
    pb_grpc.add_ControlServicer_to_server(ControlService(engine), grpc_server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server
    )

    server = Server(engine, grpc_server, health_servicer, recovered=recovered, resources=resources)
    if recovered is not None:
        engine.use_journal(
            GroupCommit(
                recovered.journal,
                metrics,
                snapshot=engine.snapshot,
                marks=engine.delivery_marks,
                on_durable=engine.durable,
                on_failure=server.fail,
                snapshot_seq=recovered.snapshot_seq,
                snapshot_every=snapshot_every,
                about=recovered.about(),
                meta=lambda: recovery.clock_meta(engine.clock),
            )
        )
    # A request that was open when the daemon stopped keeps its deadline.
    engine.arm_suspend_deadline()
    for listener in listeners:
        server.addresses.append(_bind(grpc_server, listener))
    if metrics_listen is not None:
        host, port = split_host_port(metrics_listen)
        try:
            http, _ = start_http_server(port, host, registry=metrics.registry)
        except OSError as exc:
            raise ListenError(
                f"cannot serve metrics on {metrics_listen}: {exc.strerror}; "
                "use --metrics-listen HOST:PORT elsewhere, or --metrics-listen off"
            ) from None
        server.metrics_http = http
        bound = http.server_address[1]
        server.metrics_address = join_host_port(host, bound)
        log.info("metrics", address=f"http://{server.metrics_address}/metrics")
    await grpc_server.start()
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    for listener, address in zip(listeners, server.addresses, strict=True):
        secure = listener.secure
        log.info(
            "listening",
            address=address,
            tls=secure,
            board=board.name,
            domains=len(board.domains),
        )
        if not secure:
            log.warning(
                "development listener: identity comes from metadata and Control RPCs are "
                "open to every local caller; it binds loopback or a 0600 unix socket only",
                address=address,
            )
    return server


def _report(recovered: Recovered, state_dir: Path, metrics: Metrics) -> None:
    for damage in recovered.damage:
        metrics.journal_damage.labels(damage.where).inc()
        log.error(
            "journal damage",
            where=damage.where,
            offset=damage.offset,
            lost=damage.lost,
            reason=damage.reason,
            quarantined=recovered.quarantined or None,
        )
    log.info(
        "state recovered" if not recovered.fresh else "new state",
        state_dir=str(state_dir),
        snapshot_seq=recovered.snapshot_seq,
        replayed=recovered.replayed,
        seconds=round(recovered.seconds, 4),
    )


def _bind(grpc_server: grpc.aio.Server, listener: Listener) -> str:
    if listener.unix is not None:
        path = listener.unix
        _claim_socket_path(path)
        # The socket is the credential on this listener: create it 0600 with no
        # window in which another user could connect.
        old_umask = os.umask(0o177)
        try:
            port = grpc_server.add_insecure_port(f"unix:{path}")
        finally:
            os.umask(old_umask)
        if not port:
            raise ListenError(f"cannot listen on unix:{path}")
        path.chmod(0o600)
        return listener.describe()
    assert listener.tcp is not None
    try:
        if listener.tls is not None:
            port = grpc_server.add_secure_port(listener.tcp, listener.tls.credentials())
        else:
            require_loopback(listener.tcp)
            port = grpc_server.add_insecure_port(listener.tcp)
    except RuntimeError as exc:
        raise ListenError(f"cannot listen on {listener.tcp}: {exc}") from None
    return listener.describe(port)


async def serve_until_signalled(server: Server) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    waiter = asyncio.ensure_future(server.grpc_server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if server.stopping is None and not waiter.done():
        log.info("shutting down")
    await server.stop()  # or wait for the stop a journal failure began
    waiter.cancel()
