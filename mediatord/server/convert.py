"""Core values to protobuf messages (the only place that knows both)."""

from __future__ import annotations

from typing import Final

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.core import effects as fx
from mediatord.core.mediator import IrqOutcome, Raised
from mediatord.core.model import Device, Domain, DomainState, HostState, System, VcpuPower

DOMAIN_STATE: Final = {
    DomainState.RUNNING: pb.DOMAIN_STATE_RUNNING,
    DomainState.SUSPENDED: pb.DOMAIN_STATE_SUSPENDED,
    DomainState.PAUSED: pb.DOMAIN_STATE_PAUSED,
    DomainState.SHUTDOWN: pb.DOMAIN_STATE_SHUTDOWN,
}
VCPU_POWER: Final = {
    VcpuPower.OFF: pb.VCPU_POWER_OFF,
    VcpuPower.ON: pb.VCPU_POWER_ON,
    VcpuPower.STANDBY: pb.VCPU_POWER_STANDBY,
    VcpuPower.POWERDOWN: pb.VCPU_POWER_POWERDOWN,
    VcpuPower.SUSPENDED: pb.VCPU_POWER_SUSPENDED,
}
HOST_STATE: Final = {
    HostState.ACTIVE: pb.HOST_STATE_ACTIVE,
    HostState.OFF: pb.HOST_STATE_OFF,
}
IRQ_OUTCOME: Final = {
    IrqOutcome.DELIVERED: pb.RaiseInterruptResponse.OUTCOME_DELIVERED,
    IrqOutcome.WOKE_VCPU: pb.RaiseInterruptResponse.OUTCOME_WOKE_VCPU,
    IrqOutcome.WOKE_DOMAIN: pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN,
    IrqOutcome.PENDING: pb.RaiseInterruptResponse.OUTCOME_PENDING,
    IrqOutcome.DROPPED: pb.RaiseInterruptResponse.OUTCOME_DROPPED,
}


def vcpu_event(event: fx.DomainEvent) -> pb.VcpuEvent:
    message = pb.VcpuEvent(seq=event.seq, vcpu=event.vcpu)
    kind = event.kind
    match kind:
        case fx.Start(entry_point, context_id):
            message.start.entry_point = entry_point
            message.start.context_id = context_id
        case fx.Resume(entry_point, context_id):
            message.resume.entry_point = entry_point
            message.resume.context_id = context_id
        case fx.Pause():
            message.pause.SetInParent()
        case fx.Unpause():
            message.unpause.SetInParent()
        case fx.Wake(irq):
            message.wake.irq = irq
        case fx.Shutdown(reason):
            message.shutdown.reason = reason.value  # type: ignore[assignment]
        case fx.SuspendRequest(deadline_ns):
            message.suspend_request.deadline_ns = deadline_ns
    return message


def domain_info(domain: Domain) -> pb.DomainInfo:
    return pb.DomainInfo(
        id=domain.id,
        name=domain.name,
        state=DOMAIN_STATE[domain.state],
        hardware_domain=domain.hardware_domain,
        ram_base=domain.ram_base,
        ram_size=domain.ram_size,
        aarch32=domain.aarch32,
        vcpus=[
            pb.VcpuInfo(
                index=v.index,
                mpidr=v.mpidr,
                power=VCPU_POWER[v.power],
                entry_point=v.entry_point,
                context_id=v.context_id,
            )
            for v in domain.vcpus
        ],
        devices=domain.devices,
        event_seq=domain.event_seq,
        pending_irqs=domain.pending_irqs,
    )


def device_info(device: Device, system: System) -> pb.DeviceInfo:
    owner = "" if device.owner is None else system.domains[device.owner].name
    return pb.DeviceInfo(
        name=device.name,
        node_id=device.node_id,
        irq=device.irq,
        mmio_base=device.mmio_base,
        mmio_size=device.mmio_size,
        wake_capable=device.wake_capable,
        wake_source=device.wake_source,
        owner=owner,
    )


def system_info(system: System) -> pb.SystemInfo:
    board = system.board
    return pb.SystemInfo(
        board=board.name,
        backend=board.backend,
        host_state=HOST_STATE[system.host_state],
        host_suspend_requested=system.host_suspend_requested,
        pcpus=board.pcpus,
        boot_pcpu=board.boot_pcpu,
        devices=[device_info(d, system) for d in system.devices.values()],
        domains=len(system.domains),
    )


def raised(result: Raised) -> pb.RaiseInterruptResponse:
    return pb.RaiseInterruptResponse(
        outcome=IRQ_OUTCOME[result.outcome],
        domain=result.domain,
        vcpu=result.vcpu,
        reason=result.reason,
    )
