"""Stateful property test of the host suspend and resume (design sections 5, 6 and 8).

``test_psci_stateful.py`` checks per-domain virtual PSCI and keeps dom0's
SYSTEM_SUSPEND out; this machine is about the host. One :class:`Mediator` is booted
on the default board with the emulated ZynqMP, and random steps drive it:

- guest PSCI calls from the vCPUs of dom0, domu1 and domu2: CPU_ON (valid and invalid
  targets and entry points), CPU_OFF, CPU_SUSPEND (standby and power-down),
  SYSTEM_SUSPEND (dom0's suspends the whole host) and PSCI_VERSION; rarely a domU's
  SYSTEM_OFF / SYSTEM_RESET (dom0's would end the run's interest, so they are left out);
- a guest's whole suspend (its other vCPUs off, then SYSTEM_SUSPEND), dom0's included;
- device interrupts (IRQs 53, 54, 80, 81, 89, 95, 97, 164) and the virtual timer (27)
  of any domain and vCPU, drawn more often while the host sleeps;
- a device's wake source switched on or off by its owner with EEMI
  PM_SET_WAKEUP_SOURCE (so only while the owner runs, never while the host sleeps);
- faults injected (count 1 or 2, the operation's usual error) into host steps
  (``core.suspend.FAULTABLE_STEPS``) and hardware operations (``platform.FAULTS``), three
  times in four into what a suspend does, else into what a resume or rollback does;
- time passing (0 to 20 s at a time, past the 10 s watchdog).

What is checked comes from the seed (``seed/xen-arm-suspend-to-ram-rfc-v2.txt``: the
Suspend Flow and Resume Flow lists, "Dom0 shall always be resumed whenever Xen
resumes", section 4.2), the design (sections 5, 6, 8: the step order, "nothing stays
half-suspended", only wake sources wake the SoC) and ``docs/host-suspend.md`` (the
error dom0 gets back), not from the code: see the invariants, and ``_host_suspend``
and ``_raise`` for what each suspend call and each interrupt must do.

A failing *undo* or *resume* step is a different matter: no step list can go back
to sleep half-way, and ``docs/host-suspend.md`` says such a step "is reported in its
HostStep event and the rest still run". So when a rollback or resume HostStep reports
an error, what that step restores (``RECOVERY``) is no longer required to be whole, for
the rest of the run; everything else still is, and nothing may be broken without
such a report. ``STRICT_RECOVERY = True`` turns that tolerance off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from boards import BOARDS, on_other_backends
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from seed import RESUME_FLOW, SUSPEND_FLOW

from mediatord.backends import create_platform
from mediatord.backends.base import PcpuState, SocState
from mediatord.core import suspend
from mediatord.core.clock import ManualClock
from mediatord.core.effects import (
    DomainEvent,
    Effect,
    HardwareStep,
    HostStep,
    Pause,
    Resume,
    Unpause,
    Wake,
)
from mediatord.core.mediator import (
    Blocked,
    IrqOutcome,
    Mediator,
    Raised,
    Refusal,
    Refused,
    Returned,
)
from mediatord.core.model import Domain, DomainState, HostState, VcpuPower

# --------------------------------------------------------------------- constants

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF

# PSCI return codes, as x0 (64-bit two's complement; design section 3).
SUCCESS = 0
INVALID_PARAMETERS = -2
DENIED = -3
ALREADY_ON = -4
INTERNAL_FAILURE = -6
INVALID_ADDRESS = -9

PSCI_VERSION = 0x8400_0000
PSCI_1_1 = 0x0001_0001
CPU_SUSPEND, CPU_SUSPEND_64 = 0x8400_0001, 0xC400_0001
CPU_OFF = 0x8400_0002
CPU_ON, CPU_ON_64 = 0x8400_0003, 0xC400_0003
SYSTEM_OFF = 0x8400_0008
SYSTEM_RESET = 0x8400_0009
SYSTEM_SUSPEND, SYSTEM_SUSPEND_64 = 0x8400_000E, 0xC400_000E
PSTATE_POWERDOWN = 1 << 16
SMC64 = 1 << 30
# EEMI PM_SET_WAKEUP_SOURCE (SiP, api 11): target node, source node, enable; two
# 32-bit arguments per register as Linux packs them (design section 7).
PM_SET_WAKEUP_SOURCE = 0xC200_000B
NODE_APU = 1
XST_PM_SUCCESS = 0

# The seed's "Suspend Flow" and "Resume Flow", in order (design section 6).
SUSPEND_ORDER = tuple(SUSPEND_FLOW)
# The steps that change something and so have an undo (saving a context does not,
# and nothing comes after the EL3 call).
UNDOABLE = frozenset(SUSPEND_ORDER[:7])
RESUME_ORDER = tuple(RESUME_FLOW)
# The hardware operation each suspend step performs (docs/host-suspend.md), and so
# which injected hardware fault makes which step fail.
SUSPEND_OPS = {
    "disable_watchdog": "wdt.disable",
    "disable_nonboot_pcpus": "el3.cpu_off",
    "mask_irqs": "cpu.irq_mask",
    "suspend_timer": "timer.suspend",
    "save_gic": "gic.save",
    "save_el2_context": "el2.save",
    "el3_system_suspend": "el3.system_suspend",
}
# What a rollback or resume step that reports a failure leaves not restored.
RECOVERY: dict[tuple[str, str], frozenset[str]] = {
    ("rollback", "move_to_boot_pcpu"): frozenset({"hyp_pcpu"}),
    ("rollback", "system_state_suspend"): frozenset({"state"}),
    ("rollback", "disable_watchdog"): frozenset({"watchdog"}),
    ("rollback", "pause_domains"): frozenset({"paused"}),
    ("rollback", "disable_nonboot_pcpus"): frozenset({"pcpus", "gic", "irqs"}),
    ("rollback", "mask_irqs"): frozenset({"irqs"}),
    ("rollback", "suspend_timer"): frozenset({"timer"}),
    ("resume", "restore_el2_context"): frozenset({"el2"}),
    ("resume", "system_state_resume"): frozenset(),
    ("resume", "restore_gic"): frozenset({"gic"}),
    ("resume", "resume_timer"): frozenset({"timer"}),
    ("resume", "unmask_irqs"): frozenset({"irqs"}),
    ("resume", "enable_nonboot_pcpus"): frozenset({"pcpus", "gic", "irqs"}),
    ("resume", "unpause_domains"): frozenset({"paused"}),
    ("resume", "enable_watchdog"): frozenset({"watchdog"}),
    ("resume", "system_state_active"): frozenset({"state"}),
    ("resume", "resume_hardware_domain"): frozenset({"dom0"}),
}
STRICT_RECOVERY = False

# Design section 9: the default board.
DOMAINS = ("dom0", "domu1", "domu2")
DOMUS = ("domu1", "domu2")
DEVICE_IRQ = {
    "UART_0": 53,
    "UART_1": 54,
    "SD_0": 80,
    "SD_1": 81,
    "ETH_0": 89,
    "ETH_3": 95,
    "USB_0": 97,
    "GPU": 164,
}
OWNER = {
    "UART_0": "dom0",
    "SD_0": "dom0",
    "ETH_3": "dom0",
    "GPU": "dom0",
    "UART_1": "domu1",
    "ETH_0": "domu1",
    "USB_0": "domu2",
    "SD_1": "domu2",
}
IRQ_DEVICE = {irq: name for name, irq in DEVICE_IRQ.items()}
NODE_ID = {  # EEMI node IDs (design section 9)
    "UART_0": 33,
    "UART_1": 34,
    "SD_0": 39,
    "SD_1": 40,
    "ETH_0": 29,
    "ETH_3": 32,
    "USB_0": 22,
    "GPU": 58,
}
VTIMER = 27
BOOT_PCPU = 0
PCPUS = 4

# Where the fault names act: before the host sleeps, or while it wakes up again.
RESUME_SIDE_OPS = (
    "el3.cpu_on",
    "cpu.irq_unmask",
    "gic.restore",
    "timer.resume",
    "wdt.enable",
    "el2.restore",
)
SUSPEND_SIDE = sorted({*SUSPEND_ORDER, *SUSPEND_OPS.values()})
# The resume steps' own bookkeeping cannot be made to fail (InjectFault refuses
# them: core.suspend.FAULTABLE_STEPS); the hardware operations of a resume can.
RESUME_SIDE = sorted(RESUME_SIDE_OPS)


T = TypeVar("T")


def reg(value: int) -> int:
    return value & MASK64


def mpidr(n: int) -> int:
    return ((n // 16) << 8) | (n % 16)


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """``choices`` drawn in proportion to their weights; the likeliest first."""
    indices = [i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(lambda i: choices[i][1])


u64 = st.integers(0, MASK64)
ctx_ids = st.one_of(st.sampled_from([0, 1, 0xC0FFEE, MASK32, MASK64]), u64)


@dataclass
class Steps:
    """The HostStep effects of one step, by phase."""

    suspend: list[HostStep] = field(default_factory=list)
    rollback: list[HostStep] = field(default_factory=list)
    resume: list[HostStep] = field(default_factory=list)
    recovery_failed: bool = False


@dataclass
class Sleep:
    """What the machine knows about the current host suspend."""

    vcpu: int  # dom0's vCPU that called SYSTEM_SUSPEND
    entry: int
    context_id: int
    armed: frozenset[int] | None  # the IRQs that wake the SoC (None: not predicted)
    paused: frozenset[str]  # domUs that were running, so were paused
    suspended: frozenset[str]  # domUs that had suspended themselves


def _unexpected(outcome: Raised, want: set[IrqOutcome]) -> str:
    wanted = " or ".join(sorted(w.value for w in want))
    return (
        f"IRQ outcome {outcome.outcome.value} ({outcome.reason or 'no reason'}) for "
        f"{outcome.domain or '-'} vCPU {outcome.vcpu}, woke_host={outcome.woke_host}; "
        f"expected {wanted}"
    )


def test_step_tables_follow_the_seed() -> None:
    """The code's step tables are the seed's two lists, and only the steps that
    change something have an undo."""
    assert tuple(s.name for s in suspend.SUSPEND_STEPS) == SUSPEND_ORDER
    assert tuple(s.name for s in suspend.RESUME_STEPS) == RESUME_ORDER
    assert {s.name for s in suspend.SUSPEND_STEPS if s.undo is not None} == UNDOABLE
    assert frozenset({*SUSPEND_ORDER, *RESUME_ORDER}) == suspend.STEP_NAMES


# ----------------------------------------------------------------------- machine


class HostSuspendMachine(RuleBasedStateMachine):
    backend = "zynqmp"  # the board it runs on (tests/boards.py)

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        board = BOARDS[self.backend]
        self.m, fx = Mediator.boot(board, create_platform(board, self.clock))
        platform = self.m.platform
        assert platform.boot_pcpu == BOOT_PCPU
        assert platform.pcpus == PCPUS
        # A resumed or rolled-back host has exactly these registers again.
        self.boot_gic = platform.gic_registers()
        self.boot_el2 = getattr(platform, "el2", None)
        self.last_seq: dict[int, int] = {}
        self.last_now = self.clock.now_ns()
        # Components a reported rollback/resume failure left broken (see RECOVERY).
        self.broken: set[str] = set()
        # Design section 9: every device starts as a wake source.
        self.wake = dict.fromkeys(DEVICE_IRQ, True)
        self.sleep: Sleep | None = None
        self._absorb(fx)
        assert set(self.last_seq) == {0, 1, 2}, self.last_seq

    # ------------------------------------------------------------- helpers

    def _domain(self, name: str) -> Domain:
        domain = self.m.system.domain(name)
        assert domain is not None, name
        return domain

    def _draw_domain(self, data: st.DataObject, dom0_weight: int = 1) -> str:
        return data.draw(
            weighted((dom0_weight, st.just("dom0")), (1, st.sampled_from(DOMUS))), label="domain"
        )

    def _draw_vcpu(self, data: st.DataObject, name: str) -> int:
        """Mostly a vCPU that can call (on), sometimes any."""
        vcpus = self._domain(name).vcpus
        on = [v.index for v in vcpus if v.power is VcpuPower.ON]
        if on and data.draw(st.integers(0, 4), label="pick") < 4:
            return data.draw(st.sampled_from(on), label="vcpu")
        return data.draw(st.integers(0, len(vcpus) - 1), label="vcpu")

    def _draw_entry(self, data: st.DataObject, name: str) -> int:
        d = self._domain(name)
        base, size = d.ram_base, d.ram_size
        return data.draw(
            weighted(
                (6, st.sampled_from([base, base + 0x8_0000, base + size - 4])),
                (1, st.sampled_from([base + 1, base + size, base - 4, 0, MASK64 - 3])),
            ),
            label="entry",
        )

    @staticmethod
    def _entry_ok(d: Domain, entry: int) -> bool:
        """Design section 3: in the domain's RAM and, for a 64-bit domain, bit 0 clear."""
        return d.ram_base <= entry < d.ram_base + d.ram_size and not entry & 1

    def _powers(self) -> dict[str, tuple[VcpuPower, ...]]:
        return {d.name: tuple(v.power for v in d.vcpus) for d in self.m.system.domains.values()}

    def _only_changed(self, allowed: set[str], before: dict[str, tuple[VcpuPower, ...]]) -> None:
        """A domain's vCPU power states change only by its own calls, by interrupts
        for it, or by dom0's host-wide actions (pause/unpause change none)."""
        after = self._powers()
        for name, powers in before.items():
            if name not in allowed:
                assert after[name] == powers, f"{name}'s vCPUs changed: {powers} -> {after[name]}"

    def _absorb(self, fx: tuple[Effect, ...] | list[Effect]) -> Steps:
        """Check the effects every step may return, and sort out the HostSteps."""
        steps = Steps()
        last_time = None
        for effect in fx:
            if isinstance(effect, DomainEvent):
                # Per-domain numbering: strictly increasing, no gaps.
                want = self.last_seq.get(effect.domain_id, 0) + 1
                assert effect.seq == want, f"{effect.domain}: seq {effect.seq}, expected {want}"
                self.last_seq[effect.domain_id] = effect.seq
                if isinstance(effect.kind, Wake) and effect.kind.irq != VTIMER:
                    owner = OWNER[IRQ_DEVICE[effect.kind.irq]]
                    assert effect.domain == owner, f"IRQ {effect.kind.irq} went to {effect}"
            elif isinstance(effect, HardwareStep):
                assert effect.name != "wdt.reset", "the watchdog reset the SoC during suspend"
                assert effect.start_ns <= effect.end_ns, effect
            elif isinstance(effect, HostStep):
                assert effect.start_ns <= effect.end_ns, effect
                if last_time is not None:
                    assert effect.start_ns >= last_time, "host steps overlap or go back in time"
                last_time = effect.end_ns
                if effect.injected:
                    assert effect.result != SUCCESS, effect
                if effect.phase == "suspend":
                    assert not steps.rollback, "a suspend step after the rollback began"
                    steps.suspend.append(effect)
                elif effect.phase == "rollback":
                    steps.rollback.append(effect)
                else:
                    assert effect.phase == "resume", effect
                    steps.resume.append(effect)
        self._check_order(steps)
        return steps

    def _check_order(self, steps: Steps) -> None:
        assert not (steps.resume and (steps.suspend or steps.rollback)), "suspend and resume mixed"
        names = [s.name for s in steps.suspend]
        if names:
            # Suspend: a prefix of the seed's list, each step only after the previous
            # one succeeded; after a failure the completed ones undone in reverse.
            assert tuple(names) == SUSPEND_ORDER[: len(names)], names
            assert all(s.result == SUCCESS for s in steps.suspend[:-1]), steps.suspend
            if steps.suspend[-1].result == SUCCESS:
                assert len(names) == len(SUSPEND_ORDER), f"suspend stopped early: {names}"
                assert not steps.rollback, steps.rollback
            else:
                undo = [n for n in reversed(names[:-1]) if n in UNDOABLE]
                assert [s.name for s in steps.rollback] == undo, (names, steps.rollback)
        else:
            assert not steps.rollback, steps.rollback
        if steps.resume:
            # Resume: always the whole mirror list (a failing step is reported, the rest run).
            assert tuple(s.name for s in steps.resume) == RESUME_ORDER, steps.resume
        for step in (*steps.rollback, *steps.resume):
            if step.result != SUCCESS:
                steps.recovery_failed = True
                if not STRICT_RECOVERY:
                    self.broken |= RECOVERY[(step.phase, step.name)]

    def _image(self) -> dict[str, object]:
        """The whole state, for "nothing changed" comparisons: the system (event
        numbers aside: a rollback's Pause/Unpause are counted) and the hardware."""
        system = self.m.snapshot()
        for d in system.domains.values():
            d.event_seq = 0
        if "state" in self.broken:
            system.host_state = HostState.ACTIVE  # whatever a failed state step left
        p = self.m.platform
        return {
            "hypervisor pCPU": system.hyp_pcpu,
            "system": system,
            "pCPUs": tuple(p.pcpu_state(c) for c in range(p.pcpus)),
            "SoC": p.soc_state(),
            "GIC": p.gic_registers(),
            "timer": p.timer_registers(),
            "watchdog": p.watchdog_enabled(),
            "EL2": getattr(p, "el2", None),
        }

    def _same(self, before: dict[str, object], what: str) -> None:
        after = self._image()
        for key, value in before.items():
            assert after[key] == value, f"{what} changed the {key}: {value} -> {after[key]}"

    def _call(
        self, name: str, vcpu: int, fid: int, args: list[int]
    ) -> tuple[Returned | Blocked | None, Steps]:
        """One guest call, with the checks every call gets. None when it was refused."""
        d = self._domain(name)
        can_call = d.state is DomainState.RUNNING and d.vcpus[vcpu].power is VcpuPower.ON
        host = self.m.system.host_state
        before = self._powers()
        snapshot = self.m.snapshot() if not can_call else None
        outcome = self.m.call(name, vcpu, fid, args)
        if not can_call:
            assert isinstance(outcome, Refused), outcome
            assert outcome.reason is Refusal.FAILED_PRECONDITION, outcome
            assert self.m.snapshot() == snapshot, "a refused call changed the system"
            return None, Steps()
        assert isinstance(outcome, Returned | Blocked), outcome
        steps = self._absorb(outcome.effects)
        self._only_changed({name}, before)
        if not (name == "dom0" and fid & ~SMC64 & MASK32 == SYSTEM_SUSPEND):
            # Only dom0's SYSTEM_SUSPEND touches the host (seed: "After an
            # unprivileged guest suspends, Xen will not suspend").
            assert not any(isinstance(e, HostStep) for e in outcome.effects), outcome
            assert self.m.system.host_state is host
            for e in outcome.effects:
                if isinstance(e, DomainEvent):
                    assert e.domain == name, f"{name}'s call made an event for {e.domain}"
        return outcome, steps

    # ------------------------------------------------------------ guest calls

    @rule(data=st.data())
    def guest_call(self, data: st.DataObject) -> None:
        """One PSCI call from a vCPU of dom0, domu1 or domu2 (one rule, so that the
        host's own rules are not crowded out)."""
        call = data.draw(
            weighted(
                (2, st.sampled_from(["cpu_on", "cpu_off", "cpu_suspend", "system_suspend"])),
                (1, st.sampled_from(["psci_version", "domu_off_or_reset"])),
            ),
            label="call",
        )
        getattr(self, f"_{call}")(data)

    def _cpu_on(self, data: st.DataObject) -> None:
        name = self._draw_domain(data)
        vcpu = self._draw_vcpu(data, name)
        n = len(self._domain(name).vcpus)
        target = data.draw(
            weighted(
                (4, st.sampled_from([mpidr(i) for i in range(n)])),
                (1, st.sampled_from([mpidr(n), 0x10, 0xFF, 0x100, 1 << 32])),
            ),
            label="target",
        )
        fid = data.draw(st.sampled_from([CPU_ON_64, CPU_ON]), label="fid")
        args = [target, self._draw_entry(data, name), data.draw(ctx_ids, label="ctx")]
        outcome, _ = self._call(name, vcpu, fid, args)
        if outcome is not None:
            assert isinstance(outcome, Returned), outcome
            allowed = {SUCCESS, INVALID_PARAMETERS, INVALID_ADDRESS, ALREADY_ON}
            assert outcome.regs[0] in {reg(x) for x in allowed}, outcome

    def _cpu_off(self, data: st.DataObject) -> None:
        name = self._draw_domain(data)
        outcome, _ = self._call(name, self._draw_vcpu(data, name), CPU_OFF, [])
        if outcome is not None:
            assert isinstance(outcome, Returned), outcome
            assert outcome.regs[0] in {SUCCESS, reg(DENIED)}, outcome

    def _cpu_suspend(self, data: st.DataObject) -> None:
        name = self._draw_domain(data)
        vcpu = self._draw_vcpu(data, name)
        power_state = data.draw(st.sampled_from([0, PSTATE_POWERDOWN]), label="power_state")
        args = [power_state, self._draw_entry(data, name), data.draw(ctx_ids, label="ctx")]
        outcome, _ = self._call(name, vcpu, CPU_SUSPEND_64, args)
        if outcome is not None and power_state == 0:
            assert isinstance(outcome, Blocked), outcome

    def _psci_version(self, data: st.DataObject) -> None:
        name = self._draw_domain(data)
        outcome, _ = self._call(name, self._draw_vcpu(data, name), PSCI_VERSION, [])
        if outcome is not None:
            assert isinstance(outcome, Returned), outcome
            assert outcome.regs[0] == PSCI_1_1, outcome

    def _domu_off_or_reset(self, data: st.DataObject) -> None:
        """A domU's SYSTEM_OFF / SYSTEM_RESET ends or restarts only that domain. Rare
        (a third of these draws): it undoes most of what the domain was doing."""
        if data.draw(st.integers(0, 2), label="roll"):
            return
        name = data.draw(st.sampled_from(DOMUS), label="domain")
        fid = data.draw(st.sampled_from([SYSTEM_RESET, SYSTEM_OFF]), label="fid")
        self._call(name, self._draw_vcpu(data, name), fid, [])

    def _system_suspend(self, data: st.DataObject) -> None:
        name = self._draw_domain(data, dom0_weight=3)
        vcpu = self._draw_vcpu(data, name)
        fid = data.draw(st.sampled_from([SYSTEM_SUSPEND_64, SYSTEM_SUSPEND]), label="fid")
        entry = self._draw_entry(data, name)
        self._suspend_call(name, vcpu, fid, entry, data.draw(ctx_ids, label="context_id"))

    @rule(data=st.data())
    def guest_suspends(self, data: st.DataObject) -> None:
        """A guest's own suspend (seed, "Suspending Guests"): its other vCPUs go
        offline with CPU_OFF, then the last one calls SYSTEM_SUSPEND. dom0's ends in
        the host suspend. (vCPUs in CPU_SUSPEND cannot call: the suspend is DENIED.)"""
        name = self._draw_domain(data, dom0_weight=2)
        d = self._domain(name)
        on = [v.index for v in d.vcpus if v.power is VcpuPower.ON]
        if d.state is not DomainState.RUNNING or not on:
            return
        last = data.draw(st.sampled_from(on), label="last vcpu")
        for vcpu in on:
            if vcpu != last:
                outcome, _ = self._call(name, vcpu, CPU_OFF, [])
                assert isinstance(outcome, Returned), outcome
                assert outcome.regs[0] == SUCCESS, outcome
        base, size = d.ram_base, d.ram_size
        entry = data.draw(st.sampled_from([base, base + 0x8_0000, base + size - 4]), label="entry")
        context_id = data.draw(ctx_ids, label="context_id")
        self._suspend_call(name, last, SYSTEM_SUSPEND_64, entry, context_id)

    def _suspend_call(self, name: str, vcpu: int, fid: int, entry: int, context_id: int) -> None:
        if name == "dom0":
            self._host_suspend(vcpu, fid, entry, context_id)
            return
        d = self._domain(name)
        others_off = all(v.power is VcpuPower.OFF for v in d.vcpus if v.index != vcpu)
        outcome, _ = self._call(name, vcpu, fid, [entry, context_id])
        if outcome is not None:
            assert isinstance(outcome, Returned), outcome
            ok = others_off and self._entry_ok(d, entry & (MASK64 if fid & SMC64 else MASK32))
            assert (outcome.regs[0] == SUCCESS) == ok, outcome
            if ok:
                assert d.state is DomainState.SUSPENDED

    def _host_suspend(self, vcpu: int, fid: int, entry: int, context_id: int) -> None:
        """dom0's SYSTEM_SUSPEND (design section 6)."""
        system, platform = self.m.system, self.m.platform
        d0 = self._domain("dom0")
        if fid == SYSTEM_SUSPEND:  # SMC32: only the low halves count
            entry, context_id = entry & MASK32, context_id & MASK32
        can_call = d0.state is DomainState.RUNNING and d0.vcpus[vcpu].power is VcpuPower.ON
        others_off = all(v.power is VcpuPower.OFF for v in d0.vcpus if v.index != vcpu)
        entry_ok = self._entry_ok(d0, entry)
        failing_step, error = self._first_fault()
        image = self._image()
        previous = (d0.vcpus[vcpu].entry_point, d0.vcpus[vcpu].context_id)
        domus = {n: self._domain(n).state for n in DOMUS}
        started = self.clock.now_ns()

        outcome, steps = self._call("dom0", vcpu, fid, [entry, context_id])
        if outcome is None:
            assert not can_call
            return
        assert isinstance(outcome, Returned), outcome
        x0 = outcome.regs[0]
        assert x0 in {SUCCESS, reg(DENIED), reg(INVALID_ADDRESS), reg(INTERNAL_FAILURE)}, x0
        for e in outcome.effects:
            if isinstance(e, DomainEvent) and e.domain != "dom0":
                # A host suspend only pauses (and, on a rollback, unpauses) domUs.
                assert isinstance(e.kind, Pause | Unpause), e
                assert domus[e.domain] is DomainState.RUNNING, e

        # The PSCI checks come first and touch nothing (design section 5).
        if not others_off or not entry_ok:
            assert x0 == reg(DENIED if not others_off else INVALID_ADDRESS), outcome
            assert not steps.suspend, "the host began to suspend after a refused call"
            self._same(image, "a refused SYSTEM_SUSPEND")
            return

        # An injected fault in a step (or in the hardware operation it performs) fails
        # that step, and the call returns DENIED or INTERNAL_FAILURE; otherwise it works.
        if failing_step is None:
            assert x0 == SUCCESS, (x0, steps.suspend)
        else:
            assert x0 == reg(DENIED if error == DENIED else INTERNAL_FAILURE), (x0, error)
            assert steps.suspend[-1].name == failing_step, (failing_step, steps.suspend)

        event("dom0 SYSTEM_SUSPEND: " + ("host suspended" if x0 == SUCCESS else "rolled back"))
        if steps.recovery_failed:
            event("a rollback step failed")
        if x0 == SUCCESS:
            assert system.host_state is HostState.SUSPENDED
            assert system.last_suspend_ns == (started, self.clock.now_ns())
            assert d0.vcpus[vcpu].power is VcpuPower.SUSPENDED
            for n, state in domus.items():
                # Running domUs are paused; suspended (or shut down) ones stay so.
                want = DomainState.PAUSED if state is DomainState.RUNNING else state
                assert self._domain(n).state is want, (n, state, self._domain(n).state)
            # Design section 6 / section 8: what wakes the SoC is fixed now, the wake
            # sources whose interrupt the GIC has enabled, and the virtual timer.
            armed = None
            if "gic" not in self.broken:
                armed = frozenset(
                    {VTIMER} | {DEVICE_IRQ[dev] for dev, on in self.wake.items() if on}
                )
            self.sleep = Sleep(
                vcpu,
                entry,
                context_id,
                armed,
                paused=frozenset(n for n, s in domus.items() if s is DomainState.RUNNING),
                suspended=frozenset(n for n, s in domus.items() if s is DomainState.SUSPENDED),
            )
            return

        # A failed host suspend: nothing stays half-suspended, dom0 runs again with
        # its vCPU on and its previous entry point, the rest is as it was.
        if "state" not in self.broken:
            assert system.host_state is HostState.ACTIVE, system.host_state
        assert d0.state is DomainState.RUNNING
        assert d0.vcpus[vcpu].power is VcpuPower.ON
        assert (d0.vcpus[vcpu].entry_point, d0.vcpus[vcpu].context_id) == previous
        assert platform.soc_state() is SocState.ACTIVE
        if not steps.recovery_failed:
            self._same(image, "a rolled-back host suspend")

    def _first_fault(self) -> tuple[str | None, int]:
        """The first suspend step an armed fault will make fail, and its error."""
        platform = self.m.platform
        armed = platform.faults.armed
        nonboot_on = any(
            platform.pcpu_state(c) is PcpuState.ON for c in range(PCPUS) if c != BOOT_PCPU
        )
        for step in SUSPEND_ORDER:
            if step in armed:
                return step, armed[step][1]
            op = SUSPEND_OPS.get(step)
            if op is None or op not in armed:
                continue
            if op == "wdt.disable" and not platform.watchdog_enabled():
                continue  # a watchdog that is off is not disabled again
            if op == "el3.cpu_off" and not nonboot_on:
                continue
            return step, armed[op][1]
        return None, 0

    # ------------------------------------------------------------ interrupts

    @rule(data=st.data())
    def raise_interrupt(self, data: st.DataObject) -> None:
        self._raise(data)

    @precondition(lambda self: self.sleep is not None)
    @rule(data=st.data())
    def interrupt_while_asleep(self, data: st.DataObject) -> None:
        """The same, drawn more often while the host sleeps (a wake, or not, is what
        the host's rules are about), and often from a device that is no wake source."""
        quiet = sorted(DEVICE_IRQ[dev] for dev, on in self.wake.items() if not on)
        self._raise(data, quiet)

    def _raise(self, data: st.DataObject, quiet: list[int] | None = None) -> None:
        irq = data.draw(
            weighted(
                (3 if quiet else 0, st.sampled_from(quiet or [0])),
                (3, st.sampled_from(sorted(IRQ_DEVICE))),
                (1, st.just(VTIMER)),
            ),
            label="irq",
        )
        if irq == VTIMER:
            name = data.draw(st.sampled_from(DOMAINS), label="domain")
            vcpu = data.draw(st.integers(0, len(self._domain(name).vcpus) - 1), label="vcpu")
        else:
            name, vcpu = OWNER[IRQ_DEVICE[irq]], 0
        system = self.m.system
        d = self._domain(name)
        host_was = system.host_state
        state_was = d.state
        target_was = d.vcpus[vcpu].power if irq == VTIMER else None
        wake_source = irq == VTIMER or self.wake[IRQ_DEVICE[irq]]
        before = self._powers()
        snapshot = self.m.snapshot()
        raised = self.clock.now_ns()

        outcome = self.m.raise_interrupt(irq, "" if irq != VTIMER else name, vcpu)
        assert isinstance(outcome, Raised), outcome
        # The watchdog is off while the host sleeps, so no wake finds a reset SoC.
        assert outcome.outcome is not IrqOutcome.HOST_RESET, outcome
        steps = self._absorb(outcome.effects)
        # Besides the interrupt's own domain, only domains that took an interrupt of
        # theirs (one latched while the host slept) and dom0 (resumed) may change.
        took = {
            e.domain
            for e in outcome.effects
            if isinstance(e, DomainEvent) and isinstance(e.kind, Wake)
        }
        self._only_changed({name} | took | ({"dom0"} if outcome.woke_host else set()), before)

        sleep = self.sleep
        if sleep is None:
            assert not outcome.woke_host, outcome
            assert not steps.resume, "an awake host ran its resume steps"
            assert system.host_state is host_was
            if not self.broken:
                want = self._delivery(state_was, target_was, wake_source)
                assert outcome.outcome in want, _unexpected(outcome, want)
            return

        assert host_was is HostState.SUSPENDED, host_was
        if sleep.armed is not None:
            # Only interrupts enabled as wake sources wake the SoC (design section 6).
            assert outcome.woke_host == (irq in sleep.armed), (irq, sorted(sleep.armed), outcome)
        if not outcome.woke_host:
            event(f"IRQ on a suspended host: {outcome.outcome.value}")
            # Latched for a later wake, or lost with a device the PMU powered off
            # for the suspend (no wake source, nobody requires it).
            assert outcome.outcome in {IrqOutcome.PENDING, IrqOutcome.DROPPED}, outcome
            assert not steps.resume, steps.resume
            assert system.host_state is HostState.SUSPENDED
            assert not any(isinstance(e, DomainEvent) for e in outcome.effects), outcome
            assert self.m.snapshot() == snapshot, "an interrupt that did not wake changed things"
            return

        event("host woken" + (" (a resume step failed)" if steps.recovery_failed else ""))
        event(f"host woken by IRQ {irq}")
        # The host resumed: the whole mirror list ran, then dom0 resumed at its entry
        # point with its context ID, before any domU resumes (seed 4.2, "Resuming Xen").
        self.sleep = None
        assert steps.resume, "the SoC woke but the host did not run its resume steps"
        assert system.last_resume_ns == (raised, self.clock.now_ns())
        assert system.last_suspend_ns is not None
        assert system.last_resume_ns[0] >= system.last_suspend_ns[1]
        d0 = self._domain("dom0")
        if "dom0" not in self.broken:
            assert d0.state is DomainState.RUNNING, d0.state
            assert d0.vcpus[sleep.vcpu].power is VcpuPower.ON
            resumes = [
                (i, e)
                for i, e in enumerate(outcome.effects)
                if isinstance(e, DomainEvent) and isinstance(e.kind, Resume)
            ]
            dom0 = [i for i, e in resumes if e.domain == "dom0"]
            assert dom0, "the host resumed without resuming dom0"
            first = resumes[0][1]
            assert first.domain == "dom0", f"{first.domain} resumed before dom0"
            assert first.vcpu == sleep.vcpu
            assert first.kind == Resume(sleep.entry, sleep.context_id), first
        if "paused" not in self.broken:
            for n in sleep.paused:
                assert self._domain(n).state is DomainState.RUNNING, (n, "still paused")
        if not self.broken:
            # A suspended domU stays suspended until its own wake interrupt.
            for n in sleep.suspended - {name}:
                assert self._domain(n).state is DomainState.SUSPENDED, (n, "woke up")
            if state_was is DomainState.SHUTDOWN or target_was is VcpuPower.OFF:
                want = {IrqOutcome.DROPPED}
            elif name != "dom0" and state_was is DomainState.SUSPENDED:
                want = {IrqOutcome.WOKE_DOMAIN}
            else:  # dom0 (resumed), or a domU that was paused (unpaused now)
                want = {IrqOutcome.DELIVERED, IrqOutcome.WOKE_VCPU}
            assert outcome.outcome in want, _unexpected(outcome, want)
            if outcome.outcome is IrqOutcome.WOKE_DOMAIN:
                assert d.state is DomainState.RUNNING

    @staticmethod
    def _delivery(
        state: DomainState, target: VcpuPower | None, wake_source: bool
    ) -> set[IrqOutcome]:
        """Design sections 5, 6 and seed 4.1: what an awake host does with an interrupt."""
        if state is DomainState.SHUTDOWN or target is VcpuPower.OFF:
            return {IrqOutcome.DROPPED}
        if state is DomainState.SUSPENDED:
            return {IrqOutcome.WOKE_DOMAIN if wake_source else IrqOutcome.PENDING}
        if state is DomainState.PAUSED:
            return {IrqOutcome.PENDING}
        return {IrqOutcome.DELIVERED, IrqOutcome.WOKE_VCPU}

    # --------------------------------------------------- wake sources, faults, time

    @rule(data=st.data(), device=st.sampled_from(sorted(DEVICE_IRQ)), on=st.booleans())
    def set_wake_source(self, data: st.DataObject, device: str, on: bool) -> None:
        """The owner switches one of its devices' wake source with EEMI
        PM_SET_WAKEUP_SOURCE (design sections 6, 7, docs/host-suspend.md "Wake
        sources"). A guest has to run to ask, so never while the host sleeps. The
        generic board has no power firmware: NOT_SUPPORTED, and nothing changes."""
        owner = OWNER[device]
        args = [NODE_APU | NODE_ID[device] << 32, int(on)]
        outcome, _ = self._call(owner, self._draw_vcpu(data, owner), PM_SET_WAKEUP_SOURCE, args)
        if outcome is None:
            return
        assert isinstance(outcome, Returned), outcome
        if self.m.platform.firmware is None:
            assert outcome.regs == (MASK64, 0, 0, 0), outcome
            return
        assert outcome.regs[0] & MASK32 == XST_PM_SUCCESS, outcome
        assert self.sleep is None
        self.wake[device] = on

    @rule(
        name=weighted((3, st.sampled_from(SUSPEND_SIDE)), (1, st.sampled_from(RESUME_SIDE))),
        count=st.integers(1, 2),
    )
    def inject_fault(self, name: str, count: int) -> None:
        assert name in suspend.FAULTABLE_STEPS or name in self.m.platform.FAULTS, name
        assert self.m.inject_fault(name, count, 0) is None

    @rule(ns=st.one_of(st.integers(0, 20_000_000_000), st.sampled_from([10_000_000_001])))
    def advance_clock(self, ns: int) -> None:
        self.clock.advance(ns)

    # ------------------------------------------------------------ invariants

    @invariant()
    def host_settled(self) -> None:
        """Between steps the host is ACTIVE or SUSPENDED, as the last suspend call and
        wake left it: SUSPENDING and RESUMING exist only inside one call. (A failed
        system_state_* step may leave any state, but a suspended host says so.)"""
        state = self.m.system.host_state
        if self.sleep is not None:
            assert state is HostState.SUSPENDED, state
        elif "state" not in self.broken:
            assert state is HostState.ACTIVE, state

    @invariant()
    def awake_host_is_whole(self) -> None:
        """A booted, resumed or rolled-back host is the same, register for register."""
        system, platform = self.m.system, self.m.platform
        if self.sleep is not None:
            return
        broken = self.broken
        if "pcpus" not in broken:
            states = [platform.pcpu_state(c) for c in range(PCPUS)]
            assert states == [PcpuState.ON] * PCPUS, states
        assert platform.soc_state() is SocState.ACTIVE
        if "watchdog" not in broken:
            assert platform.watchdog_enabled(), "the host runs without its watchdog"
        if "paused" not in broken:
            paused = [d.name for d in system.domains.values() if d.state is DomainState.PAUSED]
            assert not paused, f"{paused} still paused on an awake host"
        if "dom0" not in broken:
            assert self._domain("dom0").state is DomainState.RUNNING
        if "hyp_pcpu" not in broken:
            assert system.hyp_pcpu == BOOT_PCPU, f"hypervisor left on pCPU {system.hyp_pcpu}"
        assert system.host_suspend is None, system.host_suspend
        if "gic" not in broken:
            assert platform.gic_registers() == self.boot_gic, "GIC registers differ from boot"
        if "timer" not in broken:
            assert platform.timer_registers()[0] == 1, platform.timer_registers()
        if "el2" not in broken:
            assert getattr(platform, "el2", None) == self.boot_el2, "EL2 context lost"

    @invariant()
    def sleeping_host_is_asleep(self) -> None:
        system, platform = self.m.system, self.m.platform
        if self.sleep is None:
            return
        assert system.host_state is HostState.SUSPENDED, system.host_state
        assert system.host_suspend is not None
        d0 = self._domain("dom0")
        assert d0.state is DomainState.SUSPENDED, d0.state
        for name in DOMUS:
            state = self._domain(name).state
            assert state is not DomainState.RUNNING, f"{name} runs on a suspended host"
        states = [platform.pcpu_state(c) for c in range(PCPUS)]
        want = [PcpuState.OFF] * PCPUS
        want[BOOT_PCPU] = PcpuState.SUSPENDED
        assert states == want, states
        assert not platform.watchdog_enabled(), "the watchdog runs through the suspend"
        assert platform.soc_state() is SocState.SUSPENDED

    @invariant()
    def domain_shapes(self) -> None:
        for d in self.m.system.domains.values():
            powers = [v.power for v in d.vcpus]
            if d.state is DomainState.SUSPENDED:
                assert powers.count(VcpuPower.SUSPENDED) == 1, (d.name, powers)
                assert all(p in (VcpuPower.OFF, VcpuPower.SUSPENDED) for p in powers), powers
            else:
                assert VcpuPower.SUSPENDED not in powers, (d.name, d.state, powers)

    @invariant()
    def events_numbered(self) -> None:
        """Every event a domain numbered was handed out (per-domain seq, no gaps)."""
        for d in self.m.system.domains.values():
            assert d.event_seq == self.last_seq.get(d.id, 0), (d.name, d.event_seq)

    @invariant()
    def time_moves_forward(self) -> None:
        now = self.clock.now_ns()
        assert now >= self.last_now
        self.last_now = now
        for span in (self.m.system.last_suspend_ns, self.m.system.last_resume_ns):
            if span is not None:
                assert 0 <= span[0] <= span[1] <= now, span


TestHostSuspend = HostSuspendMachine.TestCase
TestHostSuspend.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


# The same machine on the other boards: the platform protocol is the only seam.
TestHostSuspendGeneric, TestHostSuspendImx8 = on_other_backends(HostSuspendMachine, 150)
