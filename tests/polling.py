"""Waiting for the daemon's state over Control, by bounded polling (never by sleeping)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from mediator_client import Operator

from mediatord.api.mediator.v1 import mediator_pb2 as pb

POLLS: Final = 500  # Control round trips a state change may take


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Repeat ``check`` (which makes at least one RPC) until it holds, a bounded number of times."""
    for _ in range(POLLS):
        if await check():
            return
    raise AssertionError(f"never saw {what} in {POLLS} round trips")


async def in_state(op: Operator, name: str, state: pb.DomainState.ValueType) -> bool:
    info = await op.domain(name)
    return info is not None and info.state == state
