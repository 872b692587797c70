"""Core values to protobuf messages (the only place that knows both)."""

from __future__ import annotations

from typing import Final

from mediatord.api.mediator.v1 import mediator_pb2 as pb
from mediatord.backends.base import PcpuState
from mediatord.core import effects as fx
from mediatord.core.mediator import IrqOutcome, Mediator, Raised
from mediatord.core.model import Device, Domain, DomainState, HostState, SuspendPolicy, VcpuPower

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
    HostState.SUSPENDING: pb.HOST_STATE_SUSPENDING,
    HostState.SUSPENDED: pb.HOST_STATE_SUSPENDED,
    HostState.RESUMING: pb.HOST_STATE_RESUMING,
    HostState.OFF: pb.HOST_STATE_OFF,
}
PCPU_STATE: Final = {
    PcpuState.OFF: pb.PCPU_STATE_OFF,
    PcpuState.ON: pb.PCPU_STATE_ON,
    PcpuState.SUSPENDED: pb.PCPU_STATE_SUSPENDED,
}
IRQ_OUTCOME: Final = {
    IrqOutcome.DELIVERED: pb.RaiseInterruptResponse.OUTCOME_DELIVERED,
    IrqOutcome.WOKE_VCPU: pb.RaiseInterruptResponse.OUTCOME_WOKE_VCPU,
    IrqOutcome.WOKE_DOMAIN: pb.RaiseInterruptResponse.OUTCOME_WOKE_DOMAIN,
    IrqOutcome.PENDING: pb.RaiseInterruptResponse.OUTCOME_PENDING,
    IrqOutcome.DROPPED: pb.RaiseInterruptResponse.OUTCOME_DROPPED,
    IrqOutcome.HOST_RESET: pb.RaiseInterruptResponse.OUTCOME_HOST_RESET,
}


SUSPEND_POLICY: Final = {
    SuspendPolicy.WAIT_ALL: pb.SUSPEND_POLICY_WAIT_ALL,
    SuspendPolicy.PAUSE_STRAGGLERS: pb.SUSPEND_POLICY_PAUSE_STRAGGLERS,
    SuspendPolicy.FORCE: pb.SUSPEND_POLICY_FORCE,
}
SUSPEND_POLICY_OF: Final = {v: k for k, v in SUSPEND_POLICY.items()}
COORDINATION_OUTCOME: Final = {
    fx.CoordinationOutcome.READY: pb.RequestSystemSuspendResponse.OUTCOME_READY,
    fx.CoordinationOutcome.VETOED: pb.RequestSystemSuspendResponse.OUTCOME_VETOED,
    fx.CoordinationOutcome.DEADLINE: pb.RequestSystemSuspendResponse.OUTCOME_DEADLINE,
    fx.CoordinationOutcome.HOST_OFF: pb.RequestSystemSuspendResponse.OUTCOME_HOST_OFF,
}


def suspend_coordinated(effect: fx.SuspendCoordinated) -> pb.RequestSystemSuspendResponse:
    return pb.RequestSystemSuspendResponse(
        outcome=COORDINATION_OUTCOME[effect.outcome],
        suspended=effect.suspended,
        stragglers=effect.stragglers,
        vetoed_by=effect.vetoed_by,
        reason=effect.reason,
        request=effect.request,
    )


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


def device_info(device: Device, mediator: Mediator) -> pb.DeviceInfo:
    system = mediator.system
    owner = "" if device.owner is None else system.domains[device.owner].name
    firmware = mediator.platform.firmware
    powered = mediator.device_powered(device)
    users = {} if firmware is None else firmware.node_usage(device.node_id)
    return pb.DeviceInfo(
        name=device.name,
        node_id=device.node_id,
        irq=device.irq,
        mmio_base=device.mmio_base,
        mmio_size=device.mmio_size,
        wake_capable=device.wake_capable,
        wake_source=device.wake_source,
        owner=owner,
        powered=powered,
        requirements={
            system.domains[master].name if master in system.domains else str(master): caps
            for master, caps in users.items()
        },
    )


def _timing(span: tuple[int, int] | None) -> pb.Timing | None:
    return None if span is None else pb.Timing(start_ns=span[0], end_ns=span[1])


def system_info(mediator: Mediator) -> pb.SystemInfo:
    system = mediator.system
    platform = mediator.platform
    board = system.board
    return pb.SystemInfo(
        board=board.name,
        backend=board.backend,
        host_state=HOST_STATE[system.host_state],
        pcpus=board.pcpus,
        boot_pcpu=board.boot_pcpu,
        devices=[device_info(d, mediator) for d in system.devices.values()],
        domains=len(system.domains),
        pcpu_states=[
            pb.PcpuInfo(index=p, mpidr=p, state=PCPU_STATE[platform.pcpu_state(p)])
            for p in range(platform.pcpus)
        ],
        counter=platform.counter(),
        watchdog_enabled=platform.watchdog_enabled(),
        last_suspend=_timing(system.last_suspend_ns),
        last_resume=_timing(system.last_resume_ns),
        now_ns=mediator.clock.now_ns(),
        last_suspend_steps=_history(mediator.last_suspend_steps),
        last_resume_steps=_history(mediator.last_resume_steps),
    )


def _history(steps: tuple[fx.HostStep | fx.HardwareStep, ...]) -> list[pb.SystemEvent]:
    events = (system_event(s) for s in steps)
    return [e for e in events if e is not None]


def system_event(effect: fx.Effect) -> pb.SystemEvent | None:
    """The WatchEvents form of an effect (None for effects that are not state changes)."""
    match effect:
        case fx.DomainEvent():
            return pb.SystemEvent(
                vcpu_event=pb.DomainVcpuEvent(domain=effect.domain, event=vcpu_event(effect))
            )
        case fx.VcpuPowerChanged():
            return pb.SystemEvent(
                vcpu_power=pb.VcpuPowerChange(
                    domain=effect.domain, vcpu=effect.vcpu, power=VCPU_POWER[effect.power]
                )
            )
        case fx.DomainStateChanged():
            return pb.SystemEvent(
                domain_state=pb.DomainStateChange(
                    domain=effect.domain, state=DOMAIN_STATE[effect.state]
                )
            )
        case fx.HostStateChanged():
            return pb.SystemEvent(host_state=HOST_STATE[effect.state])
        case fx.HostStep():
            return pb.SystemEvent(
                host_step=pb.HostStepEvent(
                    phase=effect.phase,
                    name=effect.name,
                    start_ns=effect.start_ns,
                    end_ns=effect.end_ns,
                    result=effect.result,
                    injected=effect.injected,
                )
            )
        case fx.HardwareStep():
            return pb.SystemEvent(
                hardware_step=pb.HardwareStepEvent(
                    name=effect.name,
                    detail=effect.detail,
                    start_ns=effect.start_ns,
                    end_ns=effect.end_ns,
                    result=effect.result,
                )
            )
        case fx.FirmwareCall():
            return pb.SystemEvent(
                firmware_call=pb.FirmwareCallEvent(
                    domain=effect.domain,
                    api=effect.api,
                    verdict=effect.verdict,
                    status=effect.status,
                )
            )
        case fx.DeviceAssigned():
            return pb.SystemEvent(
                device_owner=pb.DeviceOwnerChange(
                    domain=effect.domain, device=effect.device, assigned=effect.assigned
                )
            )
        case fx.SuspendCoordinated():
            return pb.SystemEvent(
                suspend_coordination=pb.SuspendCoordination(
                    policy=SUSPEND_POLICY[effect.policy], result=suspend_coordinated(effect)
                )
            )
        case fx.DomainCreated():
            return pb.SystemEvent(domain_created=effect.domain)
        case fx.DomainDestroyed():
            return pb.SystemEvent(domain_destroyed=effect.domain)
    return None


def raised(result: Raised) -> pb.RaiseInterruptResponse:
    return pb.RaiseInterruptResponse(
        outcome=IRQ_OUTCOME[result.outcome],
        domain=result.domain,
        vcpu=result.vcpu,
        reason=result.reason,
        woke_host=result.woke_host,
    )
