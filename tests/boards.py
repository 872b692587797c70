"""The boards the backend-parametrized suites (PSCI, host suspend) run on: the
default board on the ZynqMP backend, and the same layout on the generic and the
i.MX8 backends (tests/boards/). Issue 11: the platform protocol is the only seam."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from mediatord.board import default_board, load_board
from mediatord.core.config import BoardConfig

BOARDS: Final[dict[str, BoardConfig]] = {
    "zynqmp": default_board(),
    "generic": load_board(Path(__file__).parent / "boards" / "generic.toml"),
    "imx8": load_board(Path(__file__).parent / "boards" / "imx8.toml"),
}
