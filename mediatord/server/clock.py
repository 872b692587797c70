"""The server's clock: the host's monotonic clock plus modelled hardware time.

The emulated hardware says how long each operation takes (``Clock.advance``);
on a real board that time would pass, here it is added on top of the monotonic
clock, so durations on the daemon's timeline are those the hardware would show.
"""

from __future__ import annotations

import time


class EmulatedClock:
    def __init__(self) -> None:
        self._modelled_ns = 0

    def now_ns(self) -> int:
        return time.monotonic_ns() + self._modelled_ns

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"time cannot go backwards ({ns} ns)")
        self._modelled_ns += ns
