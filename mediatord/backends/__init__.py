"""Platforms the mediator runs on, behind one protocol (:mod:`mediatord.backends.base`)."""

from __future__ import annotations

from mediatord.backends.base import Platform
from mediatord.core.clock import Clock
from mediatord.core.config import BoardConfig


def create_platform(board: BoardConfig, clock: Clock) -> Platform:
    """The platform the board file names (``[board] backend``)."""
    if board.backend == "zynqmp":
        from mediatord.backends.zynqmp import ZynqMP

        devices = frozenset(d.node_id for d in board.devices)
        return ZynqMP(board.pcpus, board.boot_pcpu, clock, devices)
    if board.backend == "generic":
        from mediatord.backends.generic import Generic

        return Generic(board.pcpus, board.boot_pcpu, clock)
    if board.backend == "imx8":
        from mediatord.backends.imx8 import Imx8

        resources = frozenset(d.node_id for d in board.devices)
        return Imx8(board.pcpus, board.boot_pcpu, clock, resources)
    raise ValueError(f"unknown backend {board.backend!r}")
