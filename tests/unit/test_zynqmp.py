"""The emulated ZynqMP on its own, driven directly without the mediator.

What is checked is the hardware contract of design.md section 8: TF-A's EL3
PSCI rules for the four A53 cores, a GICv2 register file that is lost when the
SoC powers down (and survives a save/restore bit for bit), the GIC delivery
rule, a system counter that keeps counting while the timer state is lost, a
watchdog that resets a SoC left suspended too long, the PMU wake logic, fault
injection and the modelled latencies. Expected values are literals, never the
module's own constants.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mediatord.backends.base import BackendStep, IrqFate, IrqResult, IrqRoute, PcpuState, SocState
from mediatord.backends.zynqmp import ZynqMP
from mediatord.backends.zynqmp.gic import GicV2
from mediatord.backends.zynqmp.platform import LATENCY_NS
from mediatord.core.clock import ManualClock

# PSCI return values (DEN0022 section 5.2.2)
SUCCESS = 0
ALREADY_ON = -4
DENIED = -3
INTERNAL_FAILURE = -6
INVALID_ADDRESS = -9

HYP_RESUME = 0x0020_1000
HYP_SECONDARY = 0x0020_0000
SPI = -1  # the pCPU field of a pending SPI

ON = PcpuState.ON
OFF = PcpuState.OFF
SUSPENDED = PcpuState.SUSPENDED

# GIC-400 reset values (ARM IHI 0048B, GIC-400 TRM table 3-2)
DIST_WORDS = 1 + 6 + 192 + 192 + 12  # CTLR, ISENABLER0..5, IPRIORITY, ITARGETS, ICFGR0..11
CPU_WORDS = 4 + 32 + 1  # CTLR, PMR, BPR, ISENABLER0, banked IPRIORITY 0..31, ICFGR1


def platform() -> tuple[ZynqMP, ManualClock]:
    clock = ManualClock()
    return ZynqMP(4, 0, clock), clock


def programmed(*wake: int) -> tuple[ZynqMP, ManualClock]:
    """What a hypervisor does at boot: distributor on, UART_1 (54), ETH_0 (89) and
    USB_0 (97) routed to the boot pCPU, every pCPU up with its interface, timer
    armed; ``wake`` become wake sources. Recorded steps and elapsed time are cleared."""
    p, clock = platform()
    p.gic_init()
    for irq in (54, 89, 97):
        p.gic_route(IrqRoute(irq, 0))
    p.gic_cpu_init(0)
    for pcpu in (1, 2, 3):
        assert p.cpu_on(pcpu, HYP_SECONDARY) == SUCCESS
        p.gic_cpu_init(pcpu)
        assert p.irq_unmask(pcpu) == SUCCESS
    p.timer_init(1_000_000)
    for irq in wake:
        p.set_wake_source(irq, True)
    p.drain_steps()
    return p, clock


def suspended(*wake: int) -> tuple[ZynqMP, ManualClock]:
    """``programmed`` with the secondaries off again and the SoC suspended."""
    p, clock = programmed(*wake)
    for pcpu in (1, 2, 3):
        assert p.cpu_off(pcpu) == SUCCESS
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    p.drain_steps()
    return p, clock


# ------------------------------------------------------------------ EL3 PSCI


def test_cold_boot_runs_only_the_boot_pcpu() -> None:
    p, clock = platform()
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.soc is SocState.ACTIVE
    assert p.watchdog_on is False
    assert clock.now_ns() == 0


def test_cpu_off_of_the_only_pcpu_on_is_denied() -> None:
    p, _ = platform()
    assert p.cpu_off(0) == DENIED
    assert p.pcpu == [ON, OFF, OFF, OFF]


def test_cpu_off_of_the_last_pcpu_on_is_denied_whichever_it_is() -> None:
    p, _ = platform()
    assert p.cpu_on(2, HYP_SECONDARY) == SUCCESS
    assert p.cpu_off(0) == SUCCESS
    assert p.pcpu == [OFF, OFF, ON, OFF]
    assert p.cpu_off(2) == DENIED
    assert p.pcpu == [OFF, OFF, ON, OFF]


def test_cpu_on_of_a_pcpu_that_is_on_is_already_on() -> None:
    p, _ = platform()
    assert p.cpu_on(0, HYP_SECONDARY) == ALREADY_ON
    assert p.cpu_on(1, HYP_SECONDARY) == SUCCESS
    assert p.cpu_on(1, HYP_SECONDARY) == ALREADY_ON


def test_system_suspend_from_a_nonboot_pcpu_is_denied() -> None:
    p, _ = platform()
    assert p.cpu_on(1, HYP_SECONDARY) == SUCCESS
    assert p.cpu_off(0) == SUCCESS
    # pCPU 1 is the only core on, so only "not the boot core" can refuse it.
    assert p.system_suspend(1, HYP_RESUME) == DENIED
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [OFF, ON, OFF, OFF]


@pytest.mark.parametrize("other", [1, 2, 3])
def test_system_suspend_with_another_pcpu_on_is_denied(other: int) -> None:
    p, _ = platform()
    assert p.cpu_on(other, HYP_SECONDARY) == SUCCESS
    registers = p.gic_registers()
    assert p.system_suspend(0, HYP_RESUME) == DENIED
    # The cores are checked before the entry point (TF-A psci_system_suspend).
    assert p.system_suspend(0, 0) == DENIED
    assert p.soc is SocState.ACTIVE
    assert p.pcpu[0] is ON
    assert p.pcpu[other] is ON
    assert p.gic_registers() == registers


@pytest.mark.parametrize("entry", [0, 0x0020_1001, 0x0020_1002, 0x0020_1003])
def test_system_suspend_with_a_bad_entry_point_is_invalid_address(entry: int) -> None:
    p, _ = programmed()
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    registers = p.gic_registers()
    assert p.system_suspend(0, entry) == INVALID_ADDRESS
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.gic_registers() == registers
    # The timer was armed at 750 300 ns (3 x CPU_ON + 3 x unmask): counter 75 030.
    assert p.timer_registers() == (1, 175_030)


def test_system_suspend_from_the_boot_pcpu_alone_suspends_the_soc() -> None:
    p, _ = platform()
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.soc is SocState.SUSPENDED
    assert p.soc_state() is SocState.SUSPENDED
    assert p.pcpu == [SUSPENDED, OFF, OFF, OFF]
    assert p.pcpu_state(0) is SUSPENDED
    assert p.resume_entry == 0x0020_1000


def test_system_suspend_loses_the_boot_pcpus_el2_context() -> None:
    p, _ = platform()
    installed = p.el2
    assert installed != (0, 0, 0, 0, 0, 0)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.el2 == (0, 0, 0, 0, 0, 0)


def test_el2_save_and_restore_round_trip() -> None:
    p, _ = platform()
    installed = p.el2
    result, context = p.el2_save()
    assert result == SUCCESS
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.el2_restore(context) == SUCCESS
    assert p.el2 == installed


# ----------------------------------------------------------------------- GIC


def test_a_fresh_gic_has_the_gic400_reset_values() -> None:
    registers = GicV2(4).registers()
    assert len(registers) == DIST_WORDS + 4 * CPU_WORDS
    dist, cpus = registers[:DIST_WORDS], registers[DIST_WORDS:]
    assert dist[0] == 0  # GICD_CTLR
    assert dist[1:7] == (0,) * 6  # ISENABLER
    assert dist[7:391] == (0,) * 384  # IPRIORITYR, ITARGETSR
    assert dist[391:] == (0xAAAA_AAAA, 0x5554_0000, *(0x5555_5555,) * 10)  # ICFGR
    for cpu in range(4):
        banked = cpus[cpu * CPU_WORDS : (cpu + 1) * CPU_WORDS]
        # GICC_CTLR 0, GICC_PMR 0, GICC_BPR 2, ISENABLER0 0, priorities 0, ICFGR1
        assert banked == (0, 0, 2, 0, *(0,) * 32, 0x5554_0000)


def test_the_gic_register_file_returns_to_reset_values_after_system_suspend() -> None:
    p, _ = programmed(54)
    for pcpu in (1, 2, 3):
        assert p.cpu_off(pcpu) == SUCCESS
    assert p.gic_registers() != GicV2(4).registers()
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.gic_registers() == GicV2(4).registers()


def program(gic: GicV2) -> None:
    """Every kind of register the hypervisor writes, with distinct values."""
    gic.enable_distributor()
    gic.route_spi(54, 0, 0xA0, True)
    gic.route_spi(97, 2, 0x80, False)  # edge-triggered, to pCPU 2
    gic.route_spi(164, 3, 0x10, True)
    gic.route_spi(191, 1, 0xF8, False)
    gic.disable_spi(164)  # configured but disabled
    gic.init_cpu(0, (25, 26, 27), 0xA0, 0xF0)
    gic.init_cpu(2, (27,), 0x90, 0xE0)


def test_gic_route_writes_the_registers_of_the_spi() -> None:
    gic = GicV2(4)
    program(gic)
    assert gic.dist.ctlr == 1
    assert gic.dist.isenabler[1] == 1 << 22  # INTID 54
    assert gic.dist.isenabler[3] == 1 << 1  # INTID 97
    assert gic.dist.isenabler[5] == 1 << 31  # INTID 191; 164 (bit 4) disabled again
    assert gic.dist.ipriority[164] == 0x10
    assert gic.dist.icfgr[11] == 0xD555_5555  # INTID 191 edge
    assert gic.dist.ipriority[97] == 0x80
    assert gic.dist.itargets[97] == 0b0100
    assert gic.dist.icfgr[6] == 0x5555_5555 | 0b10 << 2  # INTID 97 edge
    assert gic.dist.icfgr[3] == 0x5555_5555  # INTID 54 level
    assert gic.cpus[2].isenabler0 == 1 << 27
    assert gic.cpus[1].isenabler0 == 0


def test_gic_save_and_restore_round_trip_bit_identically() -> None:
    gic = GicV2(4)
    program(gic)
    before = gic.registers()
    contexts = {cpu: gic.save(cpu) for cpu in range(4)}
    gic.reset()
    assert gic.registers() == GicV2(4).registers()
    for cpu, context in contexts.items():
        gic.restore(cpu, context)
    assert gic.registers() == before
    for cpu, context in contexts.items():
        assert gic.save(cpu) == context


def test_gic_restore_into_another_gic_gives_the_same_register_file() -> None:
    source = GicV2(4)
    source.enable_distributor()
    source.route_spi(54, 0, 0xA0, True)
    source.route_spi(97, 0, 0x80, False)
    source.init_cpu(0, (25, 26, 27), 0xA0, 0xF0)
    target = GicV2(4)
    target.restore(0, source.save(0))
    assert target.registers() == source.registers()


def test_gic_save_restore_through_the_platform_after_a_power_down() -> None:
    p, _ = programmed(54)
    result, context = p.gic_save()
    assert result == SUCCESS
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    before = p.gic_registers()
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)
    assert p.gic_restore(context) == SUCCESS
    # Only the distributor and the boot CPU's interface are saved; cores 1..3
    # were off and re-initialise their own interfaces when they come back.
    for pcpu in (1, 2, 3):
        p.cpu_on(pcpu, HYP_SECONDARY)
        p.gic_cpu_init(pcpu)
    assert p.gic_registers() == before


def test_gic_restore_of_garbage_is_internal_failure() -> None:
    p, _ = programmed()
    registers = p.gic_registers()
    assert p.gic_restore(None) == INTERNAL_FAILURE
    assert p.gic_registers() == registers


# ------------------------------------------------------------- delivery rule


def ready() -> ZynqMP:
    """SPI 54 would be taken on pCPU 0 right now."""
    p, _ = platform()
    p.gic_init()
    p.gic_route(IrqRoute(54, 0))
    p.gic_cpu_init(0)
    return p


def test_an_spi_is_taken_when_everything_allows_it() -> None:
    p = ready()
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.TAKEN, 0)
    assert p.pending == set()
    assert p.take_pending() == []


def test_spi_pending_while_the_distributor_is_disabled() -> None:
    p, _ = platform()
    p.gic_route(IrqRoute(54, 0))
    p.gic_cpu_init(0)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 0, "GIC distributor disabled")
    assert p.pending == {(54, SPI)}
    assert p.take_pending() == []
    p.gic_init()
    assert p.take_pending() == [(54, 0)]
    assert p.pending == set()
    assert p.take_pending() == []


def test_spi_pending_while_disabled_in_the_gic() -> None:
    p = ready()
    p.gic_unroute(54)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 0, "IRQ 54 disabled in the GIC")
    assert p.take_pending() == []
    p.gic_route(IrqRoute(54, 0))
    assert p.take_pending() == [(54, 0)]


def test_spi_without_a_target_is_pending() -> None:
    p, _ = platform()
    p.gic_init()
    p.gic_cpu_init(0)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 0, "IRQ 54 has no target pCPU")
    assert p.take_pending() == []
    p.gic_route(IrqRoute(54, 0))
    assert p.take_pending() == [(54, 0)]


def test_spi_targeted_at_a_pcpu_that_is_not_ready_waits_for_it() -> None:
    p = ready()
    p.gic_route(IrqRoute(54, 1))
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 1, "pCPU 1 is off")
    assert p.cpu_on(1, HYP_SECONDARY) == SUCCESS
    assert p.take_pending() == []
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 1, "pCPU 1 GIC CPU interface disabled")
    p.gic_cpu_init(1)
    assert p.take_pending() == []
    # A core starts with DAIF masked.
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 1, "IRQs masked on pCPU 1")
    assert p.irq_unmask(1) == SUCCESS
    assert p.take_pending() == [(54, 1)]
    assert p.pending == set()


@pytest.mark.parametrize(("priority", "taken"), [(0xF0, False), (0xFF, False), (0xEF, True)])
def test_spi_is_taken_only_with_a_priority_below_the_pmr(priority: int, taken: bool) -> None:
    p = ready()
    p.gic_route(IrqRoute(54, 0, priority=priority))
    result = p.raise_irq(54, 0)
    if taken:
        assert result == IrqResult(IrqFate.TAKEN, 0)
        return
    assert result == IrqResult(IrqFate.PENDING, 0, "IRQ 54 priority masked by pCPU 0's GICC_PMR")
    assert p.take_pending() == []
    p.gic_route(IrqRoute(54, 0, priority=0xEF))
    assert p.take_pending() == [(54, 0)]


def test_spi_pending_while_irqs_are_masked_on_the_target() -> None:
    p = ready()
    assert p.irq_mask(0) == SUCCESS
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.PENDING, 0, "IRQs masked on pCPU 0")
    assert p.take_pending() == []
    assert p.irq_unmask(0) == SUCCESS
    assert p.take_pending() == [(54, 0)]


def test_ppis_are_banked_per_pcpu() -> None:
    p = ready()
    assert p.cpu_on(1, HYP_SECONDARY) == SUCCESS
    assert p.irq_unmask(1) == SUCCESS
    # PPI 27 is enabled in pCPU 0's banked registers only.
    assert p.raise_irq(27, 1) == IrqResult(IrqFate.PENDING, 1, "IRQ 27 disabled in the GIC")
    assert p.raise_irq(27, 0) == IrqResult(IrqFate.TAKEN, 0)
    assert p.pending == {(27, 1)}
    p.gic_cpu_init(1)
    assert p.take_pending() == [(27, 1)]


def test_take_pending_delivers_in_intid_order() -> None:
    p, _ = programmed()
    assert p.irq_mask(0) == SUCCESS
    for irq in (97, 54, 89):
        assert p.raise_irq(irq, 0).fate is IrqFate.PENDING
    assert p.irq_unmask(0) == SUCCESS
    assert p.take_pending() == [(54, 0), (89, 0), (97, 0)]


def test_pending_ppis_of_a_pcpu_are_lost_when_it_powers_off() -> None:
    p, _ = programmed()
    assert p.irq_mask(2) == SUCCESS
    assert p.raise_irq(27, 2).fate is IrqFate.PENDING
    assert p.irq_mask(0) == SUCCESS
    assert p.raise_irq(54, 0).fate is IrqFate.PENDING
    assert p.cpu_off(2) == SUCCESS
    assert p.pending == {(54, SPI)}


# ------------------------------------------------------ counter and timer


def test_the_system_counter_runs_at_100_mhz() -> None:
    p, clock = platform()
    assert p.counter() == 0
    clock.advance(123_456_789)
    assert p.counter() == 12_345_678


def test_timer_init_programs_the_compare_value_one_period_ahead() -> None:
    p, clock = platform()
    clock.advance(123_456_789)
    p.timer_init(1_000_000)
    assert p.timer_registers() == (1, 12_445_678)


def test_the_counter_keeps_counting_through_suspend_but_the_timer_is_lost() -> None:
    p, clock = platform()
    clock.advance(123_456_789)
    p.timer_init(1_000_000)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS  # 3 ms
    assert clock.now_ns() == 126_456_789
    assert p.timer_registers() == (0, 0)
    assert p.counter() == 12_645_678
    clock.advance(5_000_000_000)
    assert p.counter() == 512_645_678
    assert p.counter() == clock.now_ns() // 10


def test_timer_suspend_and_resume_round_trip() -> None:
    p, clock = platform()
    clock.advance(1_000)
    p.timer_init(1_000_000)
    assert p.timer_registers() == (1, 100_100)
    result, context = p.timer_suspend()
    assert result == SUCCESS
    assert context == (1, 100_100)
    assert p.timer_registers() == (0, 100_100)
    assert p.timer_resume(context) == SUCCESS
    assert p.timer_registers() == (1, 100_100)
    assert p.timer_resume(None) == INTERNAL_FAILURE


# ------------------------------------------------------------------ watchdog


def watchdog_left_on() -> tuple[ZynqMP, ManualClock]:
    p, clock = programmed(54)
    assert p.watchdog_enable() == SUCCESS
    for pcpu in (1, 2, 3):
        assert p.cpu_off(pcpu) == SUCCESS
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    p.drain_steps()
    return p, clock


@pytest.mark.parametrize("asleep_ns", [10_000_000_001, 11_000_000_000, 3_600_000_000_000])
def test_a_watchdog_left_enabled_through_suspend_resets_the_soc(asleep_ns: int) -> None:
    p, clock = watchdog_left_on()
    suspended_at = clock.now_ns()
    clock.advance(asleep_ns)
    assert p.raise_irq(54, 0) == IrqResult(
        IrqFate.SOC_RESET, 0, "the watchdog expired during suspend"
    )
    expired = suspended_at + 10_000_000_000
    assert p.drain_steps() == [
        BackendStep("wdt.reset", "watchdog expired during suspend", expired, expired, 0)
    ]
    # A cold reset: the boot core alone, every register at reset, no watchdog.
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.watchdog_on is False
    assert p.gic_registers() == GicV2(4).registers()
    assert p.timer_registers() == (0, 0)
    assert p.pending == set()
    assert p.latched == []


@pytest.mark.parametrize("asleep_ns", [0, 5_000_000_000, 9_999_999_999])
def test_a_watchdog_left_enabled_does_not_fire_before_its_timeout(asleep_ns: int) -> None:
    p, clock = watchdog_left_on()
    clock.advance(asleep_ns)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert [s.name for s in p.drain_steps()] == ["soc.wake"]
    # Still enabled (the hypervisor services it again once it runs).
    assert p.watchdog_on is True


def test_a_disabled_watchdog_never_resets_a_suspended_soc() -> None:
    p, clock = programmed(54)
    assert p.watchdog_enable() == SUCCESS
    assert p.watchdog_disable() == SUCCESS
    assert p.watchdog_enabled() is False
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    clock.advance(3_600_000_000_000)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)


# ---------------------------------------------------------------- wake logic


def test_only_wake_sources_enabled_in_the_gic_are_armed() -> None:
    p, _ = programmed(54, 97, 164)
    p.gic_unroute(97)  # a wake source, but disabled in the GIC
    # 89 is enabled in the GIC but not a wake source; 164 is never routed.
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.armed == frozenset({54})


def test_wake_sources_follow_set_wake_source() -> None:
    p, _ = programmed(54, 89)
    p.set_wake_source(54, False)
    assert p.wake_sources == {89}
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.armed == frozenset({89})


def test_the_boot_pcpus_enabled_ppis_can_be_armed() -> None:
    p, _ = programmed(27)
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.armed == frozenset({27})


@pytest.mark.parametrize("irq", [89, 97])
def test_an_unarmed_interrupt_stays_latched_and_is_pending_after_a_later_wake(irq: int) -> None:
    p, clock = programmed(54, 97)
    p.gic_unroute(97)
    result, context = p.gic_save()
    assert result == SUCCESS
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.raise_irq(irq, 0) == IrqResult(
        IrqFate.PENDING, 0, f"IRQ {irq} is not an armed wake source of the SoC"
    )
    assert p.soc is SocState.SUSPENDED
    assert p.pcpu == [SUSPENDED, OFF, OFF, OFF]
    assert p.latched == [irq]
    clock.advance(1_000_000_000)
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.latched == []
    assert p.pending == {(irq, SPI), (54, SPI)}
    # The GIC is at reset and the core masked: nothing is taken yet.
    assert p.take_pending() == []
    assert p.gic_restore(context) == SUCCESS
    assert p.irq_unmask(0) == SUCCESS
    if irq == 89:
        assert p.take_pending() == [(54, 0), (89, 0)]
        assert p.pending == set()
    else:  # 97 is still disabled in the restored GIC
        assert p.take_pending() == [(54, 0)]
        assert p.pending == {(97, SPI)}


def test_interrupts_pending_at_suspend_are_latched_through_it() -> None:
    p, _ = programmed(54)
    assert p.irq_mask(0) == SUCCESS
    assert p.raise_irq(89, 0).fate is IrqFate.PENDING
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    assert p.system_suspend(0, HYP_RESUME) == SUCCESS
    assert p.latched == [89]
    assert p.pending == set()
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)
    assert p.pending == {(54, SPI), (89, SPI)}


def test_a_wake_restarts_the_boot_pcpu_masked_at_its_resume_entry() -> None:
    p, clock = suspended(54)
    start = clock.now_ns()
    assert p.raise_irq(54, 0) == IrqResult(IrqFate.WOKE_SOC, 0)
    assert p.masked[0] is True
    assert p.drain_steps() == [
        BackendStep("soc.wake", "boot pCPU at 0x201000", start, start + 4_500_000, 0)
    ]


# ------------------------------------------------------------ fault injection


def test_an_injected_fault_fails_exactly_the_next_call() -> None:
    p, clock = platform()
    assert p.cpu_on(1, HYP_SECONDARY) == SUCCESS
    p.drain_steps()
    start = clock.now_ns()
    p.faults.arm("el3.cpu_off", 1, -3)
    assert p.cpu_off(1) == DENIED
    assert p.pcpu == [ON, ON, OFF, OFF]
    assert p.drain_steps() == [
        BackendStep("el3.cpu_off", "pCPU 1 (injected fault)", start, start, -3)
    ]
    assert p.faults.armed == {}
    assert p.cpu_off(1) == SUCCESS
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.drain_steps() == [BackendStep("el3.cpu_off", "pCPU 1", start, start + 120_000, 0)]


def test_an_injected_fault_with_a_count_fails_that_many_calls() -> None:
    p, _ = platform()
    p.faults.arm("cpu.irq_mask", 2, -6)
    assert p.irq_mask(0) == INTERNAL_FAILURE
    assert p.irq_mask(0) == INTERNAL_FAILURE
    assert p.masked[0] is False
    assert p.irq_mask(0) == SUCCESS
    assert p.masked[0] is True


def test_arming_a_count_of_zero_disarms() -> None:
    p, _ = platform()
    p.faults.arm("wdt.enable", 3, -6)
    p.faults.arm("wdt.enable", 0, -6)
    assert p.watchdog_enable() == SUCCESS


def test_an_injected_fault_in_a_save_returns_no_context() -> None:
    p, _ = programmed()
    registers = p.gic_registers()
    p.faults.arm("gic.save", 1, -6)
    assert p.gic_save() == (INTERNAL_FAILURE, None)
    p.faults.arm("el2.save", 1, -6)
    assert p.el2_save() == (INTERNAL_FAILURE, None)
    p.faults.arm("timer.suspend", 1, -6)
    assert p.timer_suspend() == (INTERNAL_FAILURE, None)
    assert p.timer_registers()[0] == 1
    assert p.gic_registers() == registers


def test_an_injected_system_suspend_fault_leaves_the_soc_running() -> None:
    p, _ = programmed(54)
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    registers = p.gic_registers()
    p.faults.arm("el3.system_suspend", 1, -6)
    assert p.system_suspend(0, HYP_RESUME) == INTERNAL_FAILURE
    assert p.soc is SocState.ACTIVE
    assert p.pcpu == [ON, OFF, OFF, OFF]
    assert p.gic_registers() == registers
    assert p.armed == frozenset()


def test_the_fault_names_and_their_default_errors() -> None:
    assert ZynqMP.FAULTS == {
        "el3.cpu_on": -6,
        "el3.cpu_off": -3,
        "el3.system_suspend": -6,
        "gic.save": -6,
        "gic.restore": -6,
        "timer.suspend": -6,
        "timer.resume": -6,
        "wdt.disable": -6,
        "wdt.enable": -6,
        "cpu.irq_mask": -6,
        "cpu.irq_unmask": -6,
        "el2.save": -6,
        "el2.restore": -6,
    }


# ------------------------------------------------------------------ latencies


def _cpu_off(p: ZynqMP) -> Callable[[], object]:
    p.cpu_on(1, HYP_SECONDARY)
    return lambda: p.cpu_off(1)


def _system_suspend(p: ZynqMP) -> Callable[[], object]:
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    return lambda: p.system_suspend(0, HYP_RESUME)


def _wake(p: ZynqMP) -> Callable[[], object]:
    for pcpu in (1, 2, 3):
        p.cpu_off(pcpu)
    p.system_suspend(0, HYP_RESUME)
    return lambda: p.raise_irq(54, 0)


def _gic_restore(p: ZynqMP) -> Callable[[], object]:
    _, context = p.gic_save()
    return lambda: p.gic_restore(context)


def _timer_resume(p: ZynqMP) -> Callable[[], object]:
    _, context = p.timer_suspend()
    return lambda: p.timer_resume(context)


def _el2_restore(p: ZynqMP) -> Callable[[], object]:
    _, context = p.el2_save()
    return lambda: p.el2_restore(context)


LATENCIES: list[tuple[str, int, Callable[[ZynqMP], Callable[[], object]]]] = [
    ("el3.cpu_on", 250_000, lambda p: (p.cpu_off(1), lambda: p.cpu_on(1, HYP_SECONDARY))[1]),
    ("el3.cpu_off", 120_000, _cpu_off),
    ("el3.system_suspend", 3_000_000, _system_suspend),
    ("soc.wake", 4_500_000, _wake),
    ("gic.save", 12_000, lambda p: p.gic_save),
    ("gic.restore", 15_000, _gic_restore),
    ("timer.suspend", 1_000, lambda p: p.timer_suspend),
    ("timer.resume", 1_000, _timer_resume),
    ("wdt.disable", 2_000, lambda p: p.watchdog_disable),
    ("wdt.enable", 2_000, lambda p: p.watchdog_enable),
    ("cpu.irq_mask", 100, lambda p: lambda: p.irq_mask(0)),
    ("cpu.irq_unmask", 100, lambda p: lambda: p.irq_unmask(0)),
    ("el2.save", 3_000, lambda p: p.el2_save),
    ("el2.restore", 3_000, _el2_restore),
]


@pytest.mark.parametrize(
    ("name", "latency_ns", "prepare"), LATENCIES, ids=[name for name, _, _ in LATENCIES]
)
def test_each_operation_takes_exactly_its_modelled_latency(
    name: str, latency_ns: int, prepare: Callable[[ZynqMP], Callable[[], object]]
) -> None:
    p, clock = programmed(54)
    operation = prepare(p)
    p.drain_steps()
    start = clock.now_ns()
    operation()
    assert clock.now_ns() == start + latency_ns
    steps = p.drain_steps()
    assert [(s.name, s.start_ns, s.end_ns, s.result) for s in steps] == [
        (name, start, start + latency_ns, 0)
    ]


def test_every_modelled_latency_is_covered() -> None:
    assert {name: ns for name, ns, _ in LATENCIES} == LATENCY_NS


def test_operations_without_a_latency_take_no_time() -> None:
    p, clock = platform()
    clock.advance(7)
    p.gic_init()
    p.gic_route(IrqRoute(54, 0))
    p.gic_cpu_init(0)
    p.timer_init(1_000_000)
    p.set_wake_source(54, True)
    p.gic_unroute(54)
    p.gic_registers()
    p.timer_registers()
    p.counter()
    p.take_pending()
    assert clock.now_ns() == 7
    assert p.drain_steps() == []
