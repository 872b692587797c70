"""Host suspend and resume as data: the seed's section 3 step lists.

Each step is ``(name, do, undo)``. :func:`run_suspend` walks the suspend list
forward; when a step fails it walks the steps already done backward through
their ``undo`` and returns the error, so nothing is left half-suspended.
:func:`run_resume` walks the mirror list after a wake interrupt. Reading the
two tables is reading the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mediatord.core.effects import Effect, HostStep
from mediatord.core.model import DomainState, HostState, HostSuspend
from mediatord.core.psci import PsciRet

if TYPE_CHECKING:
    from mediatord.core.mediator import Mediator

# Plain ints, as the hardware operations return them.
SUCCESS: Final = int(PsciRet.SUCCESS)
INTERNAL_FAILURE: Final = int(PsciRet.INTERNAL_FAILURE)
# Where EL3 resumes the hypervisor (Xen's hyp_resume) and starts secondary pCPUs.
HYP_RESUME_ENTRY: Final = 0x0020_1000
HYP_SECONDARY_ENTRY: Final = 0x0020_0000


StepFn = Callable[["Mediator", HostSuspend, list[Effect]], int]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    do: StepFn
    undo: StepFn | None = None


# ------------------------------------------------------------- suspend steps


def move_to_boot_pcpu(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.system.hyp_pcpu = m.platform.boot_pcpu
    return SUCCESS


def move_back(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.system.hyp_pcpu = h.caller_pcpu
    return SUCCESS


def state_suspend(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.set_host_state(HostState.SUSPENDING, fx)
    return SUCCESS


def state_active(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.set_host_state(HostState.ACTIVE, fx)
    return SUCCESS


def disable_watchdog(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    h.watchdog_was_on = m.platform.watchdog_enabled()
    return m.platform.watchdog_disable() if h.watchdog_was_on else SUCCESS


def enable_watchdog(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.watchdog_enable() if h.watchdog_was_on else SUCCESS


def pause_domains(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    # Suspended domUs stay suspended; running ones are paused (seed: "a guest
    # which doesn't have power management support cannot prevent the physical
    # system from suspending").
    for domain in m.domus():
        if domain.state is DomainState.RUNNING:
            m.pause_domain(domain, fx)
            h.paused.append(domain.id)
    return SUCCESS


def unpause_domains(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    for domain_id in h.paused:
        domain = m.system.domains.get(domain_id)
        if domain is not None and domain.state is DomainState.PAUSED:
            m.unpause_domain(domain, fx)
    h.paused.clear()
    return SUCCESS


def disable_nonboot_pcpus(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    for pcpu in m.nonboot_pcpus_on():
        result = m.platform.cpu_off(pcpu)
        m.collect(fx)
        if result != SUCCESS:
            # The step is not done, so the runner will not undo it: bring back
            # the pCPUs this step already turned off before failing.
            enable_nonboot_pcpus(m, h, fx)
            return result
        h.pcpus_off.append(pcpu)
    return SUCCESS


def enable_nonboot_pcpus(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    worst = SUCCESS
    for pcpu in h.pcpus_off:
        result = m.bring_up_pcpu(pcpu)
        m.collect(fx)
        worst = worst or result
    h.pcpus_off.clear()
    return worst


def mask_irqs(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.irq_mask(m.system.hyp_pcpu)


def unmask_irqs(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.irq_unmask(m.system.hyp_pcpu)


def suspend_timer(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    result, h.timer_context = m.platform.timer_suspend()
    return result


def resume_timer(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.timer_resume(h.timer_context)


def save_gic(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    result, h.gic_context = m.platform.gic_save()
    return result


def restore_gic(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.gic_restore(h.gic_context)


def save_el2_context(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    result, h.el2_context = m.platform.el2_save()
    return result


def restore_el2_context(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    return m.platform.el2_restore(h.el2_context)


def el3_system_suspend(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    result = m.platform.system_suspend(m.system.hyp_pcpu, HYP_RESUME_ENTRY)
    m.collect(fx)
    if result == SUCCESS:
        m.set_host_state(HostState.SUSPENDED, fx)
    return result


def state_resume(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.set_host_state(HostState.RESUMING, fx)
    return SUCCESS


def resume_hardware_domain(m: Mediator, h: HostSuspend, fx: list[Effect]) -> int:
    m.resume_hardware_domain(fx)
    return SUCCESS


# Seed section 3, "Suspend Flow", in order.
SUSPEND_STEPS: Final = (
    Step("move_to_boot_pcpu", move_to_boot_pcpu, move_back),
    Step("system_state_suspend", state_suspend, state_active),
    Step("disable_watchdog", disable_watchdog, enable_watchdog),
    Step("pause_domains", pause_domains, unpause_domains),
    Step("disable_nonboot_pcpus", disable_nonboot_pcpus, enable_nonboot_pcpus),
    Step("mask_irqs", mask_irqs, unmask_irqs),
    Step("suspend_timer", suspend_timer, resume_timer),
    Step("save_gic", save_gic),
    Step("save_el2_context", save_el2_context),
    Step("el3_system_suspend", el3_system_suspend),
)

# Seed section 3, "Resume Flow": the mirror image.
RESUME_STEPS: Final = (
    Step("restore_el2_context", restore_el2_context),
    Step("system_state_resume", state_resume),
    Step("restore_gic", restore_gic),
    Step("resume_timer", resume_timer),
    Step("unmask_irqs", unmask_irqs),
    Step("enable_nonboot_pcpus", enable_nonboot_pcpus),
    Step("unpause_domains", unpause_domains),
    Step("enable_watchdog", enable_watchdog),
    Step("system_state_active", state_active),
    Step("resume_hardware_domain", resume_hardware_domain),
)

STEP_NAMES: Final = frozenset(s.name for s in (*SUSPEND_STEPS, *RESUME_STEPS))
# The steps InjectFault may fail: the suspend steps (each has a rollback path).
# The resume steps' own bookkeeping (state changes, unpausing, resuming dom0)
# cannot fail short of a hypervisor bug; the hardware operations a resume makes
# (el3.cpu_on, timer.resume, ...) can, and are injected as such.
FAULTABLE_STEPS: Final = frozenset(s.name for s in SUSPEND_STEPS)


def _run_step(m: Mediator, phase: str, step: Step, h: HostSuspend, fx: list[Effect]) -> int:
    fn = step.undo if phase == "rollback" else step.do
    assert fn is not None
    start = m.clock.now_ns()
    injected = m.platform.faults.take(step.name)
    result = fn(m, h, fx) if injected is None else injected
    m.collect(fx)
    fx.append(HostStep(phase, step.name, start, m.clock.now_ns(), result, injected is not None))
    return result


def run_suspend(
    m: Mediator, h: HostSuspend, fx: list[Effect], steps: tuple[Step, ...] = SUSPEND_STEPS
) -> int:
    """Walk the suspend steps; on a failure undo the done ones in reverse."""
    done: list[Step] = []
    for step in steps:
        result = _run_step(m, "suspend", step, h, fx)
        if result != SUCCESS:
            for undone in reversed(done):
                if undone.undo is not None:
                    _run_step(m, "rollback", undone, h, fx)
            return result
        done.append(step)
    return SUCCESS


def run_resume(
    m: Mediator, h: HostSuspend, fx: list[Effect], steps: tuple[Step, ...] = RESUME_STEPS
) -> int:
    """Walk the resume steps. There is no going back to sleep half-way: a failing
    step is reported (its HostStep carries the error) and the rest still run."""
    worst = SUCCESS
    for step in steps:
        result = _run_step(m, "resume", step, h, fx)
        worst = worst or result
    return worst
