"""A call is data: the raw SMC it sends and how to read the registers it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core import effects as fx

T = TypeVar("T")
Regs = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One SMC: ``function_id`` and x1.., and ``decode`` for x0..x3."""

    name: str
    function_id: int
    args: tuple[int, ...]
    decode: Callable[[Regs], T]
    # The arguments as a person reads them (spec names, unpacked); empty: the registers.
    detail: str = ""

    def __str__(self) -> str:
        shown = self.detail or ", ".join(f"{a:#x}" for a in self.args)
        return f"{self.name}({shown})"


def raw(function_id: int, *args: int) -> Call[Regs]:
    """Any SMC, registers back as they are."""
    return Call(f"{function_id:#010x}", function_id, args, lambda regs: regs)


@dataclass(frozen=True, slots=True)
class Event:
    """A VcpuEvent of the agent's domain: ``kind`` is one of the core's event kinds."""

    seq: int
    vcpu: int
    kind: fx.EventKind

    @classmethod
    def from_proto(cls, event: pb.VcpuEvent) -> Event:
        which = event.WhichOneof("kind")
        kind: fx.EventKind
        if which == "start":
            kind = fx.Start(event.start.entry_point, event.start.context_id)
        elif which == "resume":
            kind = fx.Resume(event.resume.entry_point, event.resume.context_id)
        elif which == "pause":
            kind = fx.Pause()
        elif which == "unpause":
            kind = fx.Unpause()
        elif which == "wake":
            kind = fx.Wake(event.wake.irq)
        elif which == "shutdown":
            kind = fx.Shutdown(fx.ShutdownReason(event.shutdown.reason))
        else:
            kind = fx.SuspendRequest(event.suspend_request.deadline_ns)
        return cls(event.seq, event.vcpu, kind)

    def __str__(self) -> str:
        kind = self.kind
        detail = ""
        match kind:
            case fx.Start(entry, ctx) | fx.Resume(entry, ctx):
                detail = f" entry={entry:#x} context_id={ctx:#x}"
            case fx.Wake(irq):
                detail = f" irq={irq}"
            case fx.Shutdown(reason):
                detail = f" reason={reason.name}"
            case fx.SuspendRequest(deadline):
                detail = f" deadline_ns={deadline}"
        return f"#{self.seq} vcpu={self.vcpu} {type(kind).__name__.upper()}{detail}"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """A client certificate for the daemon's TLS listener, and the CA to trust."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_dir(cls, directory: Path, identity: str) -> ClientTls:
        """Files as ``mediatorctl certs init`` writes them: ``ca.pem`` and
        ``<identity>.pem`` / ``.key``, identity being ``domain-<name>`` or
        ``operator-<name>``."""
        return cls(
            (directory / "ca.pem").read_bytes(),
            (directory / f"{identity}.pem").read_bytes(),
            (directory / f"{identity}.key").read_bytes(),
        )


def channel(target: str, tls: ClientTls | None) -> grpc.aio.Channel:
    """An aio channel to ``target``: plain for a development listener, mTLS otherwise."""
    if tls is None:
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
    return grpc.aio.secure_channel(target, credentials)
