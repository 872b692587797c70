"""Shared fixtures for the functional-core unit tests."""

from __future__ import annotations

import pytest

from mediatord.backends import create_platform
from mediatord.board import default_board
from mediatord.core.clock import ManualClock
from mediatord.core.config import BoardConfig
from mediatord.core.mediator import Mediator


@pytest.fixture(scope="session")
def board() -> BoardConfig:
    """The embedded default board (immutable, so one parse serves every test)."""
    return default_board()


@pytest.fixture
def m(board: BoardConfig) -> Mediator:
    """A freshly booted mediator: vCPU 0 of dom0, domu1 and domu2 on, the rest off."""
    mediator, _ = Mediator.boot(board, create_platform(board, ManualClock()))
    return mediator
