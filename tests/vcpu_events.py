"""The VcpuEvents and SystemEvent kinds the integration tests expect, built by name."""

from __future__ import annotations

from mediatord.api.mediator.v1 import mediator_pb2 as pb


def start(seq: int, vcpu: int, entry: int, context: int = 0) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=vcpu, start=pb.Start(entry_point=entry, context_id=context))


def resume(seq: int, vcpu: int, entry: int, context: int) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=vcpu, resume=pb.Resume(entry_point=entry, context_id=context))


def wake(seq: int, vcpu: int, irq: int) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=vcpu, wake=pb.Wake(irq=irq))


def pause(seq: int) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=0, pause=pb.Pause())


def unpause(seq: int) -> pb.VcpuEvent:
    return pb.VcpuEvent(seq=seq, vcpu=0, unpause=pb.Unpause())


def kind(event: pb.SystemEvent) -> str | None:
    return event.WhichOneof("kind")
