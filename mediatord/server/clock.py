"""The server's clock: the host's monotonic clock plus modelled hardware time.

The emulated hardware says how long each operation takes (``Clock.advance``);
on a real board that time would pass, here it is added on top of the monotonic
clock, so durations on the daemon's timeline are those the hardware would show.

The clock reads real time only at :meth:`tick`, which the engine calls when an
operation starts; within the operation only modelled time passes. That makes an
operation's timings a function of its start time, which the journal records, so
a replay after a restart reproduces them exactly.
"""

from __future__ import annotations

import time


class EmulatedClock:
    def __init__(self) -> None:
        # now = monotonic + offset; the offset grows with modelled time, and is
        # reset by set() so that a restarted daemon continues its journal's time.
        self._offset = 0
        self._now = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"time cannot go backwards ({ns} ns)")
        self._now += ns
        self._offset += ns

    def tick(self) -> int:
        self._now = max(self._now, time.monotonic_ns() + self._offset)
        return self._now

    def set(self, ns: int) -> None:
        self._now = ns
        self._offset = ns - time.monotonic_ns()
