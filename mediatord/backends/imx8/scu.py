"""The emulated SCU firmware (SCFW) behind the mediated SiP calls: each resource's
power mode (docs/imx8-scfw.md 2.1). Ownership by partition is checked by the
mediator before a call gets here (core/scfw.py), as imx-xen leaves it to the SCFW
and mediatord has to do it itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mediatord.backends.base import BackendStep
from mediatord.core.clock import Clock
from mediatord.core.scfw import RESOURCE_NAMES, PmFunc, PowerMode, ScCall, ScErr, Svc

# The SCFW answers a power-mode change in about the time of one MU round trip plus
# the power switch; an order of magnitude, not a measurement.
SET_MODE_NS: Final = 20_000


@dataclass(slots=True)
class ScuState:
    """Everything the SCFW holds that a guest can change."""

    modes: dict[int, PowerMode]


class Scu:
    STATE_TYPES: Final = (ScuState, PowerMode)

    def __init__(
        self, clock: Clock, record: Callable[[BackendStep], None], present: frozenset[int]
    ) -> None:
        """``present``: the board's resources; the boot loader left them ON."""
        self.clock = clock
        self._record = record
        self.state = ScuState(dict.fromkeys(sorted(present), PowerMode.ON))

    def call(self, call: ScCall) -> tuple[int, int]:
        """A mediated call: (sc_err_t, first out-value)."""
        resource = call.args[0]
        if call.svc == Svc.PM and resource in self.state.modes:
            if call.func == PmFunc.SET_RESOURCE_POWER_MODE:
                self.set_mode(resource, PowerMode(call.args[1]))
                return ScErr.NONE, 0
            if call.func == PmFunc.GET_RESOURCE_POWER_MODE:
                # SCFW reports only whether the resource is powered (OFF or ON).
                on = self.state.modes[resource] is not PowerMode.OFF
                return ScErr.NONE, PowerMode.ON if on else PowerMode.OFF
        return ScErr.PARM, 0  # not on this SoC (the mediator checked the rest)

    def set_mode(self, resource: int, mode: PowerMode) -> None:
        start = self.clock.now_ns()
        self.clock.advance(SET_MODE_NS)
        self.state.modes[resource] = mode
        name = RESOURCE_NAMES.get(resource, str(resource))
        self._record(
            BackendStep("scu.power_mode", f"{name} {mode.name}", start, self.clock.now_ns())
        )

    def resource_on(self, resource: int) -> bool:
        """Whether the resource is powered (a device off raises no interrupt)."""
        return self.state.modes.get(resource, PowerMode.OFF) is not PowerMode.OFF

    def save_state(self) -> dict[str, object]:
        return {"state": self.state}

    def load_state(self, state: dict[str, object]) -> None:
        scu_state = state["state"]
        if not isinstance(scu_state, ScuState):
            raise ValueError("SCU state is not a ScuState")
        self.state = scu_state
