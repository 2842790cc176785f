"""Clock sync, NTP-style (docs/PROTOCOL.md "Clock sync"). Pure: the caller supplies the times.

Send ``clock {t0}`` with the local time, receive ``{t0, t1, t2}`` and note the arrival time ``t3``:
``offset = ((t1 - t0) + (t2 - t3)) / 2`` and ``rtt = (t3 - t0) - (t2 - t1)``. Of several samples the one
with the smallest round trip wins. Countdowns are drawn from a sale's absolute ``starts_at`` / ``ends_at``
against ``server_now()``, never from "seconds left".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["ClockSample", "ClockSync", "local_ms"]


def local_ms() -> float:
    """The local wall clock in ms (the clock ``t0`` / ``t3`` are read from)."""
    return time.time() * 1000.0


@dataclass(frozen=True, slots=True)
class ClockSample:
    rtt: float     # ms, the round trip less the server's own time
    offset: float  # ms, server time minus local time

    @classmethod
    def of(cls, t0: float, t1: float, t2: float, t3: float) -> ClockSample:
        return cls(rtt=(t3 - t0) - (t2 - t1), offset=((t1 - t0) + (t2 - t3)) / 2.0)


class ClockSync:
    """The best sample so far (smallest rtt). ``reset()`` starts over (after a reconnect); until a sample
    arrives the offset from ``hello.server_time`` (if given) is a rough first guess."""

    def __init__(self) -> None:
        self.best: ClockSample | None = None
        self.rough_offset = 0.0
        self.samples = 0

    def reset(self) -> None:
        self.best = None
        self.samples = 0

    def hint(self, server_time_ms: float, local_now_ms: float) -> None:
        """A first guess from ``hello.server_time`` (one-way, so off by the latency)."""
        self.rough_offset = server_time_ms - local_now_ms

    def add(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample:
        sample = ClockSample.of(t0, t1, t2, t3)
        self.samples += 1
        if self.best is None or sample.rtt < self.best.rtt:
            self.best = sample
        return sample

    @property
    def synced(self) -> bool:
        return self.best is not None

    @property
    def offset(self) -> float:
        """ms to add to the local clock to get the server's."""
        return self.best.offset if self.best is not None else self.rough_offset

    @property
    def rtt(self) -> float | None:
        return self.best.rtt if self.best is not None else None

    def server_now(self, local_now_ms: float | None = None) -> float:
        """The server's time in ms now (or at ``local_now_ms``)."""
        return (local_ms() if local_now_ms is None else local_now_ms) + self.offset
