"""Injected time. The core and the emulated hardware read time only from a Clock.

``advance`` models time the hardware takes (a power-down sequence, a register
save): a :class:`ManualClock` (tests) moves only when told to, so every duration
is exact; the server's clock (``mediatord.server.clock``) is the monotonic clock
plus the latencies the emulated hardware modelled.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since an arbitrary origin; never goes backwards."""
        ...

    def advance(self, ns: int) -> None:
        """Let ``ns`` nanoseconds of modelled hardware time pass."""
        ...


class ManualClock:
    """A clock that moves only by :meth:`advance` (tests, benchmarks, the demo)."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"time cannot go backwards ({ns} ns)")
        self._now += ns
