"""The production listener (docs/security.md): mTLS required, identity from the certificate.

Every certificate here is real, made with :mod:`mediatord.certs` in a temporary
directory, and every call goes through a real TLS connection to ``localhost`` (the
name the server certificate carries). A refused handshake reaches the client as
UNAVAILABLE before any RPC runs; an identity the matrix refuses is
UNAUTHENTICATED / PERMISSION_DENIED from inside the handler.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from mediator_client import AsyncGuestAgent, ClientTls, NotPermittedError, Operator, psci
from mediator_client.calls import channel as client_channel
from processes import stop_process

from mediatord import certs
from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.api.mediator.v1 import mediator_pb2_grpc as pb_grpc
from mediatord.board import default_board
from mediatord.server import app

TIMEOUT: Final = 5.0
POLLS: Final = 200
DOMAIN_KEY: Final = "x-mediator-domain"
PRINCIPAL_KEY: Final = "x-mediator-principal"
PSCI_VERSION: Final = 0x8400_0000
SYSTEM_OFF: Final = 0x8400_0008
VERSION_REGS: Final = [0x10001, 0, 0, 0]
MEDIATORD: Final = [sys.executable, "-m", "mediatord"]

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

Metadata = tuple[tuple[str, str], ...]


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    """The server's files on disk and every client identity a test connects with."""

    directory: Path
    tls: app.TlsConfig
    clients: dict[str, ClientTls]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = certs.Authority.create()
    foreign = certs.Authority.create("another CA")
    server = ca.issue_server()
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "server.pem").write_bytes(server.cert_pem)
    (directory / "server.key").write_bytes(server.key_pem)
    (directory / "server.key").chmod(0o600)

    def client(issued: certs.Issued, trust: bytes = ca.cert_pem) -> ClientTls:
        return ClientTls(trust, issued.cert_pem, issued.key_pem)

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    clients = {
        "dom0": client(ca.issue_principal("domain", "dom0")),
        "domu1": client(ca.issue_principal("domain", "domu1")),
        "domu2": client(ca.issue_principal("domain", "domu2")),
        "operator": client(ca.issue_principal("operator", "ops")),
        # The same name, signed by a CA the server does not trust (the client
        # trusts the right server CA, so only the server's check can fail).
        "foreign-domu1": client(foreign.issue_principal("domain", "domu1")),
        # Valid for one day, thirty days ago.
        "expired-domu1": client(
            ca.issue_principal("domain", "domu1", now=past, validity=datetime.timedelta(days=1))
        ),
        # No SAN at all: the bare CN names the domain.
        "cn-domu1": client(ca.issue("domu1")),
        # A SAN without a mediator:// URI: the CN in kind/name form.
        "cn-operator": client(ca.issue("operator/cn-ops", dns=("ops.example",))),
        # Identities the matrix calls unknown or malformed.
        "unknown-domain": client(ca.issue_principal("domain", "nosuch")),
        "bad-kind": client(ca.issue("admin/root", uris=("mediator://admin/root",))),
        "cn-no-name": client(ca.issue("domain/")),
    }
    return Pki(
        directory,
        app.TlsConfig(directory / "server.pem", directory / "server.key", directory / "ca.pem"),
        clients,
    )


# ----------------------------------------------------------------------- server


@dataclass
class TlsServer:
    server: app.Server
    target: str  # localhost:PORT: the name the server certificate carries
    pki: Pki

    def channel(self, identity: str | None) -> grpc.aio.Channel:
        """An mTLS channel as ``identity``; None: TLS without a client certificate."""
        if identity is None:
            credentials = grpc.ssl_channel_credentials(self.pki.clients["domu1"].ca)
            return grpc.aio.secure_channel(self.target, credentials)
        return client_channel(self.target, self.pki.clients[identity])

    @property
    def watchers(self) -> int:
        return len(self.server.engine.watchers)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[TlsServer]:
    server = await app.start(default_board(), [app.Listener(tcp="127.0.0.1:0", tls=pki.tls)])
    host, port = app.split_host_port(server.addresses[0])
    assert host == "127.0.0.1"
    try:
        yield TlsServer(server, f"localhost:{port}", pki)
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def open_channels() -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for opened in channels:
        await opened.close()


# ---------------------------------------------------------- statuses of the RPCs


async def unary_status(rpc: Awaitable[Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        reply = await rpc
    except grpc.aio.AioRpcError as error:
        return error.code(), None
    return OK, reply


async def stream_status(
    call: Any, served: Callable[[], bool] = lambda: False
) -> tuple[grpc.StatusCode, Any]:
    """OK with the first message, OK once ``served()`` says the handler follows the
    stream, or the status the stream failed with."""
    read = asyncio.ensure_future(call.read())
    try:
        for _ in range(POLLS):
            done, _ = await asyncio.wait({read}, timeout=TIMEOUT / POLLS * 4)
            if done:
                try:
                    message = read.result()
                except grpc.aio.AioRpcError as error:
                    return error.code(), None
                assert message is not grpc.aio.EOF, "the stream ended without a status"
                return OK, message
            if served():
                return OK, None
        raise AssertionError("the stream was neither served nor refused")
    finally:
        call.cancel()
        read.cancel()


async def guest_statuses(
    channel: grpc.aio.Channel, metadata: Metadata, vcpu: int = 0, function_id: int = PSCI_VERSION
) -> dict[str, grpc.StatusCode]:
    """Status of Call, CallStream (one frame) and Attach."""
    guest = pb_grpc.GuestStub(channel)
    frame = pb.SmcCall(vcpu=vcpu, function_id=function_id)
    call, _ = await unary_status(guest.Call(frame, metadata=metadata, timeout=TIMEOUT))
    stream = guest.CallStream(iter([frame]), metadata=metadata, timeout=TIMEOUT)
    stream_code, _ = await stream_status(stream)
    attach = guest.Attach(pb.AttachRequest(), metadata=metadata, timeout=TIMEOUT)
    attach_code, _ = await stream_status(attach)
    return {"Call": call, "CallStream": stream_code, "Attach": attach_code}


# A request per Control RPC that changes nothing, and its status once authorized.
CONTROL_PROBES: Final[dict[str, tuple[Callable[[Any, Metadata], Any], grpc.StatusCode]]] = {
    "CreateDomain": (
        lambda c, md: c.CreateDomain(
            pb.CreateDomainRequest(name="probe", vcpus=0), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "DestroyDomain": (
        lambda c, md: c.DestroyDomain(
            pb.DestroyDomainRequest(name="nosuch"), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "AssignDevice": (
        lambda c, md: c.AssignDevice(
            pb.AssignDeviceRequest(domain="nosuch", device="UART_0"), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "ReleaseDevice": (
        lambda c, md: c.ReleaseDevice(
            pb.ReleaseDeviceRequest(domain="nosuch", device="UART_0"), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "RaiseInterrupt": (
        lambda c, md: c.RaiseInterrupt(
            pb.RaiseInterruptRequest(irq=1), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.INVALID_ARGUMENT,  # IRQ 1 is not wired
    ),
    "GetSystem": (
        lambda c, md: c.GetSystem(pb.GetSystemRequest(), metadata=md, timeout=TIMEOUT),
        OK,
    ),
    "ListDomains": (
        lambda c, md: c.ListDomains(pb.ListDomainsRequest(), metadata=md, timeout=TIMEOUT),
        OK,
    ),
    "ExportState": (
        lambda c, md: c.ExportState(pb.ExportStateRequest(), metadata=md, timeout=TIMEOUT),
        OK,
    ),
    "RequestSystemSuspend": (
        lambda c, md: c.RequestSystemSuspend(
            pb.RequestSystemSuspendRequest(), metadata=md, timeout=TIMEOUT
        ),
        grpc.StatusCode.INVALID_ARGUMENT,  # a deadline of 0 ms
    ),
    "WatchEvents": (
        lambda c, md: c.WatchEvents(pb.WatchEventsRequest(), metadata=md, timeout=TIMEOUT),
        OK,
    ),
    "InjectFault": (
        lambda c, md: c.InjectFault(
            pb.InjectFaultRequest(step="save_gic", count=0), metadata=md, timeout=TIMEOUT
        ),
        OK,
    ),
}
# What a hardware domain may call: the reads, and the coordinated suspend it starts.
CONTROL_READS: Final = ("GetSystem", "ListDomains", "WatchEvents", "RequestSystemSuspend")


def test_control_probes_cover_the_control_service() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["Control"].methods}
    assert set(CONTROL_PROBES) == methods


async def control_statuses(
    served: TlsServer, channel: grpc.aio.Channel, metadata: Metadata = ()
) -> dict[str, grpc.StatusCode]:
    control = pb_grpc.ControlStub(channel)
    statuses = {}
    for method, (probe, _) in CONTROL_PROBES.items():
        if method == "WatchEvents":
            before = served.watchers
            code, _ = await stream_status(
                probe(control, metadata), lambda before=before: served.watchers > before
            )
        else:
            code, _ = await unary_status(probe(control, metadata))
        statuses[method] = code
    return statuses


def authorized(statuses: dict[str, grpc.StatusCode], methods: tuple[str, ...]) -> None:
    """Each method got the status its harmless probe gets once authorized."""
    assert {m: statuses[m] for m in methods} == {m: CONTROL_PROBES[m][1] for m in methods}


# ------------------------------------------------------------------- handshakes


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param(None, id="no-client-certificate"),
        pytest.param("foreign-domu1", id="foreign-ca"),
        pytest.param("expired-domu1", id="expired"),
    ],
)
async def test_handshake_refused(tls_server: TlsServer, open_channels, identity) -> None:
    channel = tls_server.channel(identity)
    open_channels.append(channel)
    before = await tls_server_domains(tls_server, open_channels)
    guest = pb_grpc.GuestStub(channel)
    control = pb_grpc.ControlStub(channel)
    # SYSTEM_OFF with the domain's own name: had it run, domu1 would be SHUTDOWN.
    call, _ = await unary_status(
        guest.Call(
            pb.SmcCall(function_id=SYSTEM_OFF), metadata=((DOMAIN_KEY, "domu1"),), timeout=TIMEOUT
        )
    )
    listed, _ = await unary_status(control.ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT))
    attach, _ = await stream_status(guest.Attach(pb.AttachRequest(), timeout=TIMEOUT))
    assert (call, listed, attach) == (UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    assert await tls_server_domains(tls_server, open_channels) == before


async def tls_server_domains(
    tls_server: TlsServer, open_channels: list[grpc.aio.Channel]
) -> pb.ListDomainsResponse:
    channel = tls_server.channel("operator")
    open_channels.append(channel)
    return await pb_grpc.ControlStub(channel).ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT)


async def test_plain_text_client_is_refused(tls_server: TlsServer) -> None:
    async with grpc.aio.insecure_channel(tls_server.target) as channel:
        code, _ = await unary_status(
            pb_grpc.ControlStub(channel).ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT)
        )
    assert code is UNAVAILABLE


# ----------------------------------------------------------------- guest identity


async def test_domain_certificate_acts_for_its_own_domain(
    tls_server: TlsServer, open_channels
) -> None:
    channel = tls_server.channel("domu1")
    open_channels.append(channel)
    guest = pb_grpc.GuestStub(channel)
    # No metadata at all: the certificate's domain is the target.
    reply = await guest.Call(pb.SmcCall(function_id=PSCI_VERSION), timeout=TIMEOUT)
    assert list(reply.regs) == VERSION_REGS
    stream = guest.CallStream(
        iter([pb.SmcCall(function_id=PSCI_VERSION, vcpu=0)] * 3), timeout=TIMEOUT
    )
    assert [list(r.regs) async for r in stream] == [VERSION_REGS] * 3
    code, event = await stream_status(guest.Attach(pb.AttachRequest(), timeout=TIMEOUT))
    assert code is OK
    assert event == pb.VcpuEvent(seq=1, vcpu=0, start=pb.Start(entry_point=0x4000_0000))
    # Naming its own domain explicitly is the same.
    reply = await guest.Call(
        pb.SmcCall(function_id=PSCI_VERSION), metadata=((DOMAIN_KEY, "domu1"),), timeout=TIMEOUT
    )
    assert list(reply.regs) == VERSION_REGS


async def test_guest_agent_library_over_tls(tls_server: TlsServer) -> None:
    tls = tls_server.pki.clients["domu2"]
    async with AsyncGuestAgent(tls_server.target, "domu2", tls=tls) as agent:
        assert str(await agent.call(psci.psci_version())) == "1.1"
    async with AsyncGuestAgent(tls_server.target, "domu1", tls=tls) as agent:
        with pytest.raises(NotPermittedError):
            await agent.call(psci.psci_version())


@pytest.mark.parametrize("vcpu", [0, 1])
async def test_domain_certificate_cannot_act_for_another_domain(
    tls_server: TlsServer, open_channels, vcpu: int
) -> None:
    channel = tls_server.channel("domu1")
    open_channels.append(channel)
    before = await tls_server_domains(tls_server, open_channels)
    # SYSTEM_OFF: a call that wrongly went through would shut domu2 down.
    statuses = await guest_statuses(channel, ((DOMAIN_KEY, "domu2"),), vcpu, SYSTEM_OFF)
    assert statuses == dict.fromkeys(("Call", "CallStream", "Attach"), PERMISSION_DENIED)
    # Stating the other domain as the principal changes nothing: metadata is not identity.
    statuses = await guest_statuses(
        channel, ((DOMAIN_KEY, "domu2"), (PRINCIPAL_KEY, "domain/domu2")), vcpu, SYSTEM_OFF
    )
    assert set(statuses.values()) == {PERMISSION_DENIED}
    assert await tls_server_domains(tls_server, open_channels) == before


async def test_domain_certificate_has_no_control(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("domu1")
    open_channels.append(channel)
    statuses = await control_statuses(tls_server, channel)
    assert statuses == dict.fromkeys(CONTROL_PROBES, PERMISSION_DENIED)
    async with Operator(tls_server.target, tls=tls_server.pki.clients["domu2"]) as operator:
        with pytest.raises(NotPermittedError):
            await operator.domains()


async def test_stated_principal_is_ignored_on_tls(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("domu1")
    open_channels.append(channel)
    stated = ((PRINCIPAL_KEY, "operator/x"),)
    # Still domu1: no Control ...
    statuses = await control_statuses(tls_server, channel, stated)
    assert statuses == dict.fromkeys(CONTROL_PROBES, PERMISSION_DENIED)
    # ... and its own guest calls, which an operator could not make.
    reply = await pb_grpc.GuestStub(channel).Call(
        pb.SmcCall(function_id=PSCI_VERSION), metadata=stated, timeout=TIMEOUT
    )
    assert list(reply.regs) == VERSION_REGS


# ------------------------------------------------------------ operator and dom0


async def test_operator_certificate(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("operator")
    open_channels.append(channel)
    authorized(await control_statuses(tls_server, channel), tuple(CONTROL_PROBES))
    for metadata in ((), ((DOMAIN_KEY, "domu1"),)):
        statuses = await guest_statuses(channel, metadata)
        assert set(statuses.values()) == {PERMISSION_DENIED}, metadata
    async with Operator(tls_server.target, tls=tls_server.pki.clients["operator"]) as operator:
        assert [d.name for d in await operator.domains()] == ["dom0", "domu1", "domu2"]


async def test_hardware_domain_certificate(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("dom0")
    open_channels.append(channel)
    statuses = await control_statuses(tls_server, channel)
    authorized(statuses, CONTROL_READS)
    writes = [m for m in CONTROL_PROBES if m not in CONTROL_READS]
    assert {m: statuses[m] for m in writes} == dict.fromkeys(writes, PERMISSION_DENIED)
    # Its own guest calls work; another domain's are refused.
    assert set((await guest_statuses(channel, ())).values()) == {OK}
    assert set((await guest_statuses(channel, ((DOMAIN_KEY, "domu1"),))).values()) == {
        PERMISSION_DENIED
    }


# ------------------------------------------------------------ identity fallbacks


async def test_common_name_fallback_names_the_domain(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("cn-domu1")
    open_channels.append(channel)
    reply = await pb_grpc.GuestStub(channel).Call(
        pb.SmcCall(function_id=PSCI_VERSION), timeout=TIMEOUT
    )
    assert list(reply.regs) == VERSION_REGS
    assert set((await guest_statuses(channel, ())).values()) == {OK}
    assert set((await guest_statuses(channel, ((DOMAIN_KEY, "domu2"),))).values()) == {
        PERMISSION_DENIED
    }
    assert set((await control_statuses(tls_server, channel)).values()) == {PERMISSION_DENIED}


async def test_common_name_fallback_in_kind_name_form(tls_server: TlsServer, open_channels) -> None:
    channel = tls_server.channel("cn-operator")
    open_channels.append(channel)
    authorized(await control_statuses(tls_server, channel), tuple(CONTROL_PROBES))
    assert set((await guest_statuses(channel, ((DOMAIN_KEY, "domu1"),))).values()) == {
        PERMISSION_DENIED
    }


@pytest.mark.parametrize("identity", ["unknown-domain", "bad-kind", "cn-no-name"])
async def test_certificate_without_a_usable_identity(
    tls_server: TlsServer, open_channels, identity: str
) -> None:
    channel = tls_server.channel(identity)
    open_channels.append(channel)
    assert set((await guest_statuses(channel, ())).values()) == {UNAUTHENTICATED}
    assert set((await guest_statuses(channel, ((DOMAIN_KEY, "domu1"),))).values()) == {
        UNAUTHENTICATED
    }
    statuses = await control_statuses(tls_server, channel)
    assert statuses == dict.fromkeys(CONTROL_PROBES, UNAUTHENTICATED)


# ------------------------------------------------------------- mediatord serve


class Daemon:
    """A ``mediatord serve`` process; its logs go to a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        with log.open("w") as errors:
            self.process = subprocess.Popen(
                [*MEDIATORD, "serve", *args],
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
            )

    def listening(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first stdout line matching ``pattern``."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        buffer = b""
        seen: list[str] = []
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    pytest.fail(f"no line matching {pattern!r} in {timeout}s; got {seen!r}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    pytest.fail(f"stdout closed before {pattern!r}; got {seen!r}")
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in (raw.decode() for raw in lines):
                    seen.append(line)
                    if match := re.fullmatch(pattern, line):
                        return match

    def stop(self) -> int:
        return stop_process(self.process)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def tls_args(pki: Pki) -> list[str]:
    return [
        "--tls-cert",
        str(pki.tls.cert),
        "--tls-key",
        str(pki.tls.key),
        "--client-ca",
        str(pki.tls.client_ca),
    ]


def test_serve_tls_on_all_addresses(pki: Pki, daemons: list[Daemon], tmp_path: Path) -> None:
    daemon = Daemon(["--listen", "0.0.0.0:0", *tls_args(pki)], tmp_path / "serve.log")
    daemons.append(daemon)
    port = int(daemon.listening(r"mediatord listening on 0\.0\.0\.0:(\d+)").group(1))
    assert port > 0
    tls = pki.clients["domu1"]
    credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        reply = pb_grpc.GuestStub(channel).Call(
            pb.SmcCall(function_id=PSCI_VERSION), timeout=TIMEOUT
        )
        assert list(reply.regs) == VERSION_REGS
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.ControlStub(channel).ListDomains(pb.ListDomainsRequest(), timeout=TIMEOUT)
        assert refused.value.code() is PERMISSION_DENIED
    # Without a client certificate the handshake fails.
    with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(tls.ca)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GuestStub(channel).Call(pb.SmcCall(function_id=PSCI_VERSION), timeout=TIMEOUT)
        assert refused.value.code() is UNAVAILABLE
    assert daemon.stop() == 0
    # A TLS listener is not a development listener: no metadata warning.
    assert "identity comes from metadata" not in (tmp_path / "serve.log").read_text()


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MEDIATORD, "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_serve_all_addresses_without_tls_exits_1() -> None:
    result = run_serve("--listen", "0.0.0.0:0")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0:0 without TLS" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(("--tls-cert",), id="cert-only"),
        pytest.param(("--tls-cert", "--tls-key"), id="cert-and-key"),
        pytest.param(("--client-ca",), id="ca-only"),
    ],
)
def test_serve_with_partial_tls_exits_1(pki: Pki, given: tuple[str, ...]) -> None:
    files = {
        "--tls-cert": pki.tls.cert,
        "--tls-key": pki.tls.key,
        "--client-ca": pki.tls.client_ca,
    }
    args = [part for option in given for part in (option, str(files[option]))]
    result = run_serve("--listen", "127.0.0.1:0", *args)
    assert result.returncode == 1
    assert "--tls-cert, --tls-key and --client-ca go together" in result.stderr
    assert result.stdout == ""
