"""The boards the backend-parametrized suites (PSCI, host suspend) run on: the
default board on the ZynqMP backend, and the same layout on the generic and the
i.MX8 backends (tests/boards/). Issue 11: the platform protocol is the only seam."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from hypothesis import settings

from mediatord.board import default_board, load_board
from mediatord.core.config import BoardConfig

BOARDS: Final[dict[str, BoardConfig]] = {
    "zynqmp": default_board(),
    "generic": load_board(Path(__file__).parent / "boards" / "generic.toml"),
    "imx8": load_board(Path(__file__).parent / "boards" / "imx8.toml"),
}


def on_other_backends(machine: type[Any], examples: int) -> list[type[Any]]:
    """The TestCases of a hypothesis state machine (whose ``backend`` attribute names
    the board it boots) on every board but the ZynqMP, with ``examples`` each: the
    rules under test are the core's, run in full on the ZynqMP."""
    cases = []
    for backend in sorted(BOARDS.keys() - {"zynqmp"}):
        variant = type(f"{machine.__name__}{backend.title()}", (machine,), {"backend": backend})
        case = variant.TestCase
        case.settings = settings(max_examples=examples, stateful_step_count=40, deadline=None)
        cases.append(case)
    return cases
