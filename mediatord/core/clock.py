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

    def tick(self) -> int:
        """An operation starts: catch up with real time (if the clock follows it)
        and return the time the operation runs at. Between ticks only ``advance``
        moves the clock, so an operation's timings depend on its start time alone
        and a journal replay (:meth:`set` to the recorded start) repeats them."""
        ...

    def set(self, ns: int) -> None:
        """Journal replay: the next operation runs at ``ns``; later ticks continue
        from there."""
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

    def tick(self) -> int:
        return self._now

    def set(self, ns: int) -> None:
        self._now = ns
