"""Heartbeat: ping every open connection once per interval; close one silent for two intervals (4001)."""

from __future__ import annotations

import asyncio
import time

from .connection import CLOSE_HEARTBEAT
from .frames import PING_FRAME
from .lifecycle import LoopPart
from .rooms import RoomRegistry

__all__ = ["Heartbeat"]

SLICES = 20


class Heartbeat(LoopPart):
    """The pings are spread over ``SLICES`` steps per interval so the pongs don't all come back (and
    wake every handler) at the same instant."""

    name = "heartbeat"

    def __init__(self, registry: RoomRegistry, interval_s: float) -> None:
        super().__init__()
        self._registry = registry
        self.interval_s = interval_s

    async def _run(self) -> None:
        step = 0
        conns = self._registry.all
        reap = self._registry.reap_dead
        while not self._closing:
            await asyncio.sleep(self.interval_s / SLICES)
            limit = time.monotonic() - 2 * self.interval_s
            for c in list(conns):
                if hash(c) % SLICES != step:
                    continue
                if c.last_seen < limit:
                    c.kill(CLOSE_HEARTBEAT, "heartbeat timeout")
                    reap(c)
                elif not c.write(PING_FRAME):
                    reap(c)
            step = (step + 1) % SLICES
