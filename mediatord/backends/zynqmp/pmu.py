"""The emulated PMU firmware: power nodes, requirements, resets, clocks, pins.

It answers the EEMI calls the mediator lets through, as the PMU firmware (behind
TF-A) would. The PMU sees *masters*; here every domain is its own master, which
is the "unified view" the Xilinx mediator says the hypervisor must present.

Slave nodes (devices and memories) hold one requirement per master
(capabilities ACCESS / CONTEXT / WAKEUP, a QoS). A node is on while any master
requires it with non-zero capabilities, and powers off when the last requirement
goes; its power island (FPD, LPD, PLD) powers off when all its nodes are off and
powers back on for a request. Until PM_INIT_FINALIZE every node stays as the
boot loader left it: on. When the SoC suspends, nodes nobody requires and that
are no wake source power down; the wake restores exactly the states before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mediatord.backends.base import BackendStep
from mediatord.core import smccc
from mediatord.core.clock import Clock
from mediatord.core.eemi import (
    ACKS,
    CAPS_VALID,
    CLOCK_END,
    CLOCK_NAMES,
    IOCTL_GET_PLL_FRAC_MODE,
    IOCTL_SD_DLL_RESET,
    IOCTL_SET_SD_TAPDELAY,
    MAX_QOS,
    NODE_APU,
    NODE_APU_CORES,
    NODE_NAMES,
    NODES,
    PLL_NODES,
    PROC_ACTIVE,
    PROC_FORCEDOFF,
    PROC_SLEEP,
    RESET_ACTIONS,
    RESET_FIRST,
    RESET_LAST,
    PmApi,
    PmCall,
    PmNode,
    PmStatus,
    encode,
)

Regs = tuple[int, int, int, int]

PM_VERSION: Final = 0x0001_0001  # TF-A PM_VERSION 1.1
TZ_VERSION: Final = 0x0001_0000  # ZYNQMP_TZ_VERSION 1.0
IDCODE: Final = 0x0473_8093  # XCZU9EG
CHIP_VERSION: Final = 0x0000_0003
SMC_UNK: Final = (smccc.MASK64, 0, 0, 0)
MAX_LATENCY: Final = 0xFFFF_FFFF
PIN_COUNT: Final = 78  # MIO pins
PIN_FUNCTIONS: Final = 32
PIN_PARAMS: Final = 9
PLL_MODES: Final = 3  # reset, integer, fractional
PLL_PARAMS: Final = 9
CLOCK_PARENTS: Final = 4
GGS_REGISTERS: Final = 4
FPGA_DONE: Final = 0x8  # PCAP_STATUS.PL_DONE
# TF-A ioctl ids the emulated EL3 firmware implements (beside the ones eemi names).
IOCTL_SET_PLL_FRAC_MODE: Final = 8
IOCTL_WRITE_GGS: Final = 12
IOCTL_READ_GGS: Final = 13
IOCTL_WRITE_PGGS: Final = 14
IOCTL_READ_PGGS: Final = 15
QID_CLOCK_GET_NAME: Final = 1
QID_CLOCK_GET_NUM_CLOCKS: Final = 12
CLOCK_NAME_BYTES: Final = 16

ISLANDS: Final = {"FPD": NODES["FPD"], "LPD": NODES["LPD"], "PLD": NODES["PLD"]}
PROCESSORS: Final = frozenset(NODES[n] for n in ("RPU", "RPU_0", "RPU_1"))
_FPD: Final = frozenset(
    NODES[n] for n in ("SATA", "GPU", "GPU_PP_0", "GPU_PP_1", "PCIE", "DP", "GDMA", "DDR", "L2")
)
_PLD: Final = frozenset(NODES[n] for n in ("PL", "VCU", "IPI_PL_0", "IPI_PL_1", "IPI_PL_2",
                                            "IPI_PL_3"))  # fmt: skip
# Not slaves: the unknown node, the APU (virtualised by the mediator), the RPU
# processors, the islands and the PLLs.
_NOT_SLAVES: Final = frozenset(
    {PmNode.NODE_UNKNOWN, NODE_APU, *NODE_APU_CORES, *PROCESSORS, *ISLANDS.values(), *PLL_NODES}
)
SLAVE_NODES: Final = tuple(n for n in NODE_NAMES if n not in _NOT_SLAVES)
# Memories and infrastructure the firmware itself keeps up (TF-A holds OCM, DDR
# goes to self-refresh, the IPIs carry EEMI): never swept off at INIT_FINALIZE or
# suspend, though a master may still request and release them.
SYSTEM_NODES: Final = frozenset(
    NODES[n]
    for n in (
        "L2",
        "OCM_BANK_0",
        "OCM_BANK_1",
        "OCM_BANK_2",
        "OCM_BANK_3",
        "TCM_0_A",
        "TCM_0_B",
        "TCM_1_A",
        "TCM_1_B",
        "DDR",
        "IPI_APU",
        "IPI_RPU_0",
        "IPI_RPU_1",
        "IPI_PL_0",
        "IPI_PL_1",
        "IPI_PL_2",
        "IPI_PL_3",
        "PMU",
        "CSU",
        "PJTAG",
        "TRACE",
        "TESTSCAN",
        "EXTERN",
        "GEM_TSU",
        "SWDT_0",
        "RTC",
    )
)


def island_of(node: int) -> int:
    if node in _FPD:
        return ISLANDS["FPD"]
    if node in _PLD:
        return ISLANDS["PLD"]
    return ISLANDS["LPD"]


@dataclass(slots=True)
class Requirement:
    caps: int
    qos: int
    latency: int = MAX_LATENCY


@dataclass(slots=True)
class SlaveNode:
    node: int
    on: bool = True
    requirements: dict[int, Requirement] = field(default_factory=dict)  # by master
    wake: bool = False

    @property
    def usage(self) -> int:
        return len(self.requirements)

    def required(self) -> bool:
        return any(r.caps for r in self.requirements.values())


@dataclass(slots=True)
class PmState:
    """Everything the firmware holds (compared whole in tests)."""

    slaves: dict[int, SlaveNode]
    islands: dict[int, bool]
    processors: dict[int, int]
    resets: dict[int, bool]
    clocks_on: list[bool]
    dividers: list[int]
    parents: list[int]
    pll_mode: dict[int, int]
    pll_params: dict[tuple[int, int], int]
    pll_frac: dict[int, int]
    pins_requested: set[int]
    pin_function: dict[int, int]
    pin_config: dict[tuple[int, int], int]
    registers: dict[int, int]
    ggs: list[int]
    pggs: list[int]
    notifiers: set[tuple[int, int, int]]
    initialized: bool = False
    fpga_loaded: bool = False
    configuration: int = 0
    suspend_mode: int = 0


def _fresh(present: frozenset[int]) -> PmState:
    # The boot loader powered the board's peripherals and the system nodes; the
    # peripherals the board does not use start off.
    def powered(node: int) -> bool:
        return node in present or node in SYSTEM_NODES

    slaves = {n: SlaveNode(n, on=powered(n)) for n in SLAVE_NODES}
    islands = {
        island: any(s.on for s in slaves.values() if island_of(s.node) == island)
        for island in ISLANDS.values()
    }
    return PmState(
        slaves=slaves,
        islands=islands,
        processors=dict.fromkeys(PROCESSORS, PROC_FORCEDOFF),
        resets=dict.fromkeys(range(RESET_FIRST, RESET_LAST + 1), False),
        clocks_on=[True] * CLOCK_END,
        dividers=[1] * CLOCK_END,
        parents=[0] * CLOCK_END,
        pll_mode=dict.fromkeys(PLL_NODES, 1),
        pll_params={},
        pll_frac=dict.fromkeys(PLL_NODES, 0),
        pins_requested=set(),
        pin_function=dict.fromkeys(range(PIN_COUNT), 0),
        pin_config={},
        registers={},
        ggs=[0] * GGS_REGISTERS,
        pggs=[0] * GGS_REGISTERS,
        notifiers=set(),
    )


class Pmu:
    """The firmware behind EEMI. ``call`` takes an already-mediated call."""

    def __init__(
        self,
        clock: Clock,
        record: Callable[[BackendStep], None],
        present: frozenset[int] = frozenset(),
    ) -> None:
        self.clock = clock
        self._record = record
        self.state = _fresh(present)
        self._before_suspend: dict[int, bool] | None = None
        self._handlers: dict[int, Callable[[int, PmCall], Regs]] = {
            PmApi.GET_API_VERSION: lambda m, c: encode(0, PM_VERSION),
            PmApi.GET_TRUSTZONE_VERSION: lambda m, c: encode(0, TZ_VERSION),
            PmApi.GET_CHIPID: lambda m, c: encode(0, IDCODE, CHIP_VERSION),
            PmApi.GET_CALLBACK_DATA: lambda m, c: encode(0),
            PmApi.FEATURE_CHECK: self._feature_check,
            PmApi.REGISTER_NOTIFIER: self._register_notifier,
            PmApi.QUERY_DATA: self._query_data,
            PmApi.GET_NODE_STATUS: self._get_node_status,
            PmApi.REQ_NODE: self._request_node,
            PmApi.RELEASE_NODE: self._release_node,
            PmApi.SET_REQUIREMENT: self._set_requirement,
            PmApi.SET_MAX_LATENCY: self._set_max_latency,
            PmApi.SET_WAKEUP_SOURCE: self._set_wakeup_source,
            PmApi.REQ_SUSPEND: self._processor_call,
            PmApi.REQ_WAKEUP: self._processor_call,
            PmApi.FORCE_POWERDOWN: self._force_powerdown,
            PmApi.RESET_ASSERT: self._reset_assert,
            PmApi.RESET_GET_STATUS: self._reset_get_status,
            PmApi.MMIO_WRITE: self._mmio_write,
            PmApi.MMIO_READ: self._mmio_read,
            PmApi.INIT_FINALIZE: self._init_finalize,
            PmApi.SET_CONFIGURATION: self._set_configuration,
            PmApi.FPGA_LOAD: self._fpga_load,
            PmApi.FPGA_GET_STATUS: lambda m, c: encode(
                0, FPGA_DONE if self.state.fpga_loaded else 0
            ),
            PmApi.SECURE_SHA: self._no_crypto,
            PmApi.SECURE_RSA: self._no_crypto,
            PmApi.PINCTRL_REQUEST: self._pin_request,
            PmApi.PINCTRL_RELEASE: self._pin_release,
            PmApi.PINCTRL_GET_FUNCTION: self._pin_get_function,
            PmApi.PINCTRL_SET_FUNCTION: self._pin_set_function,
            PmApi.PINCTRL_CONFIG_PARAM_GET: self._pin_config_get,
            PmApi.PINCTRL_CONFIG_PARAM_SET: self._pin_config_set,
            PmApi.IOCTL: self._ioctl,
            PmApi.CLOCK_ENABLE: self._clock_enable,
            PmApi.CLOCK_DISABLE: self._clock_disable,
            PmApi.CLOCK_GETSTATE: self._clock_getstate,
            PmApi.CLOCK_SETDIVIDER: self._clock_setdivider,
            PmApi.CLOCK_GETDIVIDER: self._clock_getdivider,
            PmApi.CLOCK_SETPARENT: self._clock_setparent,
            PmApi.CLOCK_GETPARENT: self._clock_getparent,
            PmApi.PLL_SET_PARAMETER: self._pll_set_parameter,
            PmApi.PLL_GET_PARAMETER: self._pll_get_parameter,
            PmApi.PLL_SET_MODE: self._pll_set_mode,
            PmApi.PLL_GET_MODE: self._pll_get_mode,
            PmApi.SET_SUSPEND_MODE: self._set_suspend_mode,
        }

    # ------------------------------------------------------------ interface

    def call(self, master: int, call: PmCall) -> Regs:
        handler = self._handlers.get(call.api)
        if handler is None:
            return SMC_UNK  # TF-A pm_smc_handler: "Unimplemented PM Service Call"
        return handler(master, call)

    def node_on(self, node: int) -> bool:
        slave = self.state.slaves.get(node)
        return slave is None or slave.on

    def node_usage(self, node: int) -> dict[int, int]:
        """Each master's requirement capabilities on ``node``."""
        slave = self.state.slaves.get(node)
        if slave is None:
            return {}
        return {master: r.caps for master, r in slave.requirements.items()}

    def set_wake(self, node: int, enabled: bool) -> None:
        slave = self.state.slaves.get(node)
        if slave is not None:
            slave.wake = enabled

    def clock_enabled(self, clock: int) -> bool:
        return self._clock(clock) and self.state.clocks_on[clock]

    def release_all(self, master: int, node: int) -> None:
        """Drop ``master``'s requirement on ``node`` (its domain lost the device)."""
        slave = self.state.slaves.get(node)
        if slave is not None and slave.requirements.pop(master, None) is not None:
            self._update(slave)

    def snapshot(self) -> PmState:
        return copy.deepcopy(self.state)

    STATE_TYPES: Final = (PmState, SlaveNode, Requirement)

    def save_state(self) -> dict[str, object]:
        return {"state": self.state, "before_suspend": self._before_suspend}

    def load_state(self, state: dict[str, object]) -> None:
        pm_state, before = state["state"], state["before_suspend"]
        if not isinstance(pm_state, PmState) or not (before is None or isinstance(before, dict)):
            raise ValueError("PMU state is not a PmState and an optional dict")
        self.state, self._before_suspend = pm_state, before

    def power_down_for_suspend(self) -> None:
        """At SoC suspend: what no one requires and no wake needs goes off."""
        self._before_suspend = {n: s.on for n, s in self.state.slaves.items()}
        for slave in self.state.slaves.values():
            sweep = slave.node not in SYSTEM_NODES and not slave.wake
            if slave.on and sweep and not slave.required():
                self._set_power(slave, False)

    def restore_after_wake(self) -> None:
        """At wake: every node back exactly as it was before the suspend."""
        before, self._before_suspend = self._before_suspend, None
        if before is None:
            return
        for node, on in before.items():
            slave = self.state.slaves[node]
            if slave.on != on:
                self._set_power(slave, on)

    # ------------------------------------------------------------- helpers

    def _slave(self, node: int) -> SlaveNode | None:
        return self.state.slaves.get(node)

    def _set_power(self, slave: SlaveNode, on: bool) -> None:
        island = island_of(slave.node)
        if on and not self.state.islands[island]:
            self._power_island(island, True)
        slave.on = on
        self._step("pmu.node", f"{NODE_NAMES[slave.node]} {'on' if on else 'off'}")
        if not on and not any(
            s.on for s in self.state.slaves.values() if island_of(s.node) == island
        ):
            self._power_island(island, False)

    def _power_island(self, island: int, on: bool) -> None:
        self.state.islands[island] = on
        self._step("pmu.island", f"{NODE_NAMES[island]} {'on' if on else 'off'}")

    def _update(self, slave: SlaveNode) -> None:
        """After a requirement changed: on while required (once initialised, or
        when a requirement is there to hold it)."""
        wanted = slave.required()
        if wanted != slave.on and (wanted or self.state.initialized or slave.usage == 0):
            self._set_power(slave, wanted)

    def _step(self, name: str, detail: str) -> None:
        now = self.clock.now_ns()
        self._record(BackendStep(name, detail, now, now))

    @staticmethod
    def _check_requirement(caps: int, qos: int, ack: int, allow_zero: bool) -> int | None:
        if caps & ~CAPS_VALID or (caps == 0 and not allow_zero):
            return PmStatus.INVALID_PARAM
        if qos > MAX_QOS or ack not in ACKS:
            return PmStatus.INVALID_PARAM
        return None

    # ------------------------------------------------------------ the APIs

    def _feature_check(self, master: int, call: PmCall) -> Regs:
        if call.arg0 in self._handlers:
            return encode(0, 1)
        return encode(PmStatus.NO_FEATURE)

    def _register_notifier(self, master: int, call: PmCall) -> Regs:
        node, event, _wake, enable = call.args[:4]
        if node not in NODE_NAMES:
            return encode(PmStatus.INVALID_NODE)
        key = (master, node, event)
        if enable:
            self.state.notifiers.add(key)
        else:
            self.state.notifiers.discard(key)
        return encode(0)

    def _query_data(self, master: int, call: PmCall) -> Regs:
        qid, clock = call.args[0], call.args[1]
        if qid == QID_CLOCK_GET_NUM_CLOCKS:
            return encode(0, CLOCK_END)
        if qid == QID_CLOCK_GET_NAME:
            # TF-A answers the 16-byte name itself in x0..x1, with no status.
            name = CLOCK_NAMES[clock] if self._clock(clock) else ""
            raw = name.encode()[:CLOCK_NAME_BYTES]
            raw = raw.ljust(CLOCK_NAME_BYTES, b"\0")
            return (
                int.from_bytes(raw[:8], "little"),
                int.from_bytes(raw[8:], "little"),
                0,
                0,
            )
        return encode(PmStatus.INVALID_PARAM)

    def _get_node_status(self, master: int, call: PmCall) -> Regs:
        node = call.arg0
        slave = self._slave(node)
        if slave is not None:
            requirement = slave.requirements.get(master)
            caps = 0 if requirement is None else requirement.caps
            return encode(0, int(slave.on), caps, slave.usage)
        if node in self.state.islands:
            return encode(0, int(self.state.islands[node]))
        if node in self.state.processors:
            return encode(0, self.state.processors[node])
        if node in PLL_NODES:
            return encode(0, 1)
        return encode(PmStatus.INVALID_NODE)

    def _request_node(self, master: int, call: PmCall) -> Regs:
        node, caps, qos, ack = call.args[:4]
        slave = self._slave(node)
        if slave is None:
            return encode(PmStatus.INVALID_NODE)
        error = self._check_requirement(caps, qos, ack, allow_zero=False)
        if error is not None:
            return encode(error)
        if master in slave.requirements:
            return encode(PmStatus.DOUBLE_REQ)
        slave.requirements[master] = Requirement(caps, qos)
        if not slave.on:
            self._set_power(slave, True)
        return encode(0)

    def _release_node(self, master: int, call: PmCall) -> Regs:
        slave = self._slave(call.arg0)
        if slave is None:
            return encode(PmStatus.INVALID_NODE)
        if master not in slave.requirements:
            return encode(PmStatus.ARGS)  # this master never requested it
        del slave.requirements[master]
        if not slave.required() and slave.on:
            self._set_power(slave, False)
        return encode(0)

    def _set_requirement(self, master: int, call: PmCall) -> Regs:
        node, caps, qos, ack = call.args[:4]
        slave = self._slave(node)
        if slave is None:
            return encode(PmStatus.INVALID_NODE)
        if master not in slave.requirements:
            return encode(PmStatus.ARGS)
        error = self._check_requirement(caps, qos, ack, allow_zero=True)
        if error is not None:
            return encode(error)
        requirement = slave.requirements[master]
        requirement.caps, requirement.qos = caps, qos
        if slave.required() != slave.on:
            self._set_power(slave, slave.required())
        return encode(0)

    def _set_max_latency(self, master: int, call: PmCall) -> Regs:
        slave = self._slave(call.arg0)
        if slave is None:
            return encode(PmStatus.INVALID_NODE)
        requirement = slave.requirements.get(master)
        if requirement is None:
            return encode(PmStatus.ARGS)
        requirement.latency = call.args[1]
        return encode(0)

    def _set_wakeup_source(self, master: int, call: PmCall) -> Regs:
        slave = self._slave(call.args[1])
        if slave is None:
            return encode(PmStatus.INVALID_NODE)
        slave.wake = bool(call.args[2])
        return encode(0)

    def _processor_call(self, master: int, call: PmCall) -> Regs:
        node = call.arg0
        if node not in self.state.processors:
            return encode(PmStatus.INVALID_NODE)
        wake = call.api == PmApi.REQ_WAKEUP
        self.state.processors[node] = PROC_ACTIVE if wake else PROC_SLEEP
        return encode(0)

    def _force_powerdown(self, master: int, call: PmCall) -> Regs:
        node = call.arg0
        if node in self.state.processors:
            self.state.processors[node] = PROC_FORCEDOFF
            return encode(0)
        if node in self.state.islands:
            # Everything in the island goes down, and with it every requirement.
            for slave in self.state.slaves.values():
                if island_of(slave.node) == node:
                    slave.requirements.clear()
                    if slave.on:
                        self._set_power(slave, False)
            if self.state.islands[node]:
                self._power_island(node, False)
            return encode(0)
        return encode(PmStatus.INVALID_NODE)

    def _reset_assert(self, master: int, call: PmCall) -> Regs:
        reset, action = call.args[:2]
        if reset not in self.state.resets or action not in RESET_ACTIONS:
            return encode(PmStatus.INVALID_PARAM)
        # RELEASE 0, ASSERT 1, PULSE 2 (asserted, then released).
        self.state.resets[reset] = action == 1
        return encode(0)

    def _reset_get_status(self, master: int, call: PmCall) -> Regs:
        if call.arg0 not in self.state.resets:
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, int(self.state.resets[call.arg0]))

    def _mmio_write(self, master: int, call: PmCall) -> Regs:
        address, mask, value = call.args[:3]
        if address & 0x3:
            return encode(PmStatus.INVALID_PARAM)
        old = self.state.registers.get(address, 0)
        self.state.registers[address] = (old & ~mask & smccc.MASK32) | (value & mask)
        return encode(0)

    def _mmio_read(self, master: int, call: PmCall) -> Regs:
        if call.arg0 & 0x3:
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.registers.get(call.arg0, 0))

    def _init_finalize(self, master: int, call: PmCall) -> Regs:
        # The boot is over: what no master requested powers down.
        self.state.initialized = True
        for slave in self.state.slaves.values():
            if slave.on and slave.node not in SYSTEM_NODES and not slave.required():
                self._set_power(slave, False)
        return encode(0)

    def _set_configuration(self, master: int, call: PmCall) -> Regs:
        self.state.configuration = call.arg0
        return encode(0)

    def _fpga_load(self, master: int, call: PmCall) -> Regs:
        size = call.args[2]
        if size == 0:
            return encode(PmStatus.INVALID_PARAM)
        self.state.fpga_loaded = True
        pl = self.state.slaves[NODES["PL"]]
        if not pl.on:
            self._set_power(pl, True)
        return encode(0)

    def _no_crypto(self, master: int, call: PmCall) -> Regs:
        # The emulated CSU has no SHA-3 / RSA engine and no access to guest memory.
        return encode(PmStatus.NOTSUPPORTED)

    def _pin(self, pin: int) -> bool:
        return 0 <= pin < PIN_COUNT

    def _pin_request(self, master: int, call: PmCall) -> Regs:
        if not self._pin(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        self.state.pins_requested.add(call.arg0)
        return encode(0)

    def _pin_release(self, master: int, call: PmCall) -> Regs:
        if not self._pin(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        self.state.pins_requested.discard(call.arg0)
        return encode(0)

    def _pin_get_function(self, master: int, call: PmCall) -> Regs:
        if not self._pin(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.pin_function[call.arg0])

    def _pin_set_function(self, master: int, call: PmCall) -> Regs:
        pin, function = call.args[:2]
        if not self._pin(pin) or function >= PIN_FUNCTIONS:
            return encode(PmStatus.INVALID_PARAM)
        self.state.pin_function[pin] = function
        return encode(0)

    def _pin_config_get(self, master: int, call: PmCall) -> Regs:
        pin, param = call.args[:2]
        if not self._pin(pin) or param >= PIN_PARAMS:
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.pin_config.get((pin, param), 0))

    def _pin_config_set(self, master: int, call: PmCall) -> Regs:
        pin, param, value = call.args[:3]
        if not self._pin(pin) or param >= PIN_PARAMS:
            return encode(PmStatus.INVALID_PARAM)
        self.state.pin_config[(pin, param)] = value
        return encode(0)

    def _ioctl(self, master: int, call: PmCall) -> Regs:
        node, ioctl, arg1, arg2 = call.args[:4]
        if ioctl in (IOCTL_GET_PLL_FRAC_MODE, IOCTL_SET_PLL_FRAC_MODE):
            if node not in PLL_NODES:
                return encode(PmStatus.INVALID_PARAM)
            if ioctl == IOCTL_GET_PLL_FRAC_MODE:
                return encode(0, self.state.pll_frac[node])
            if arg1 not in (0, 1):
                return encode(PmStatus.INVALID_PARAM)
            self.state.pll_frac[node] = arg1
            return encode(0)
        if ioctl in (IOCTL_SD_DLL_RESET, IOCTL_SET_SD_TAPDELAY):
            if node not in (NODES["SD_0"], NODES["SD_1"]) or arg1 > 2:
                return encode(PmStatus.INVALID_PARAM)
            return encode(0)
        if ioctl in (IOCTL_WRITE_GGS, IOCTL_READ_GGS, IOCTL_WRITE_PGGS, IOCTL_READ_PGGS):
            if arg1 >= GGS_REGISTERS:
                return encode(PmStatus.INVALID_PARAM)
            bank = self.state.ggs if ioctl in (IOCTL_WRITE_GGS, IOCTL_READ_GGS) else self.state.pggs
            if ioctl in (IOCTL_WRITE_GGS, IOCTL_WRITE_PGGS):
                bank[arg1] = arg2
                return encode(0)
            return encode(0, bank[arg1])
        return encode(PmStatus.NOTSUPPORTED)  # TF-A pm_api_ioctl: default

    def _clock(self, clock: int) -> bool:
        return 0 <= clock < CLOCK_END

    def _clock_enable(self, master: int, call: PmCall) -> Regs:
        if not self._clock(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        self.state.clocks_on[call.arg0] = True
        return encode(0)

    def _clock_disable(self, master: int, call: PmCall) -> Regs:
        if not self._clock(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        self.state.clocks_on[call.arg0] = False
        return encode(0)

    def _clock_getstate(self, master: int, call: PmCall) -> Regs:
        if not self._clock(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, int(self.state.clocks_on[call.arg0]))

    def _clock_setdivider(self, master: int, call: PmCall) -> Regs:
        clock, divider = call.args[:2]
        if not self._clock(clock) or divider == 0:
            return encode(PmStatus.INVALID_PARAM)
        self.state.dividers[clock] = divider
        return encode(0)

    def _clock_getdivider(self, master: int, call: PmCall) -> Regs:
        if not self._clock(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.dividers[call.arg0])

    def _clock_setparent(self, master: int, call: PmCall) -> Regs:
        clock, parent = call.args[:2]
        if not self._clock(clock) or parent >= CLOCK_PARENTS:
            return encode(PmStatus.INVALID_PARAM)
        self.state.parents[clock] = parent
        return encode(0)

    def _clock_getparent(self, master: int, call: PmCall) -> Regs:
        if not self._clock(call.arg0):
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.parents[call.arg0])

    def _pll_set_parameter(self, master: int, call: PmCall) -> Regs:
        node, param, value = call.args[:3]
        if param >= PLL_PARAMS:
            return encode(PmStatus.INVALID_PARAM)
        self.state.pll_params[(node, param)] = value
        return encode(0)

    def _pll_get_parameter(self, master: int, call: PmCall) -> Regs:
        node, param = call.args[:2]
        if param >= PLL_PARAMS:
            return encode(PmStatus.INVALID_PARAM)
        return encode(0, self.state.pll_params.get((node, param), 0))

    def _pll_set_mode(self, master: int, call: PmCall) -> Regs:
        node, mode = call.args[:2]
        if mode >= PLL_MODES:
            return encode(PmStatus.INVALID_PARAM)
        self.state.pll_mode[node] = mode
        return encode(0)

    def _pll_get_mode(self, master: int, call: PmCall) -> Regs:
        return encode(0, self.state.pll_mode[call.arg0])

    def _set_suspend_mode(self, master: int, call: PmCall) -> Regs:
        if call.arg0 not in (0, 1):  # standard, power-off
            return encode(PmStatus.ARGS)
        self.state.suspend_mode = call.arg0
        return encode(0)
