"""Server time: the offset of Redis ``TIME`` from the local clock, measured at start and every few seconds."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from .decisions import clock_offset
from .lifecycle import LoopPart

__all__ = ["RedisClock"]

log = logging.getLogger(__name__)

SAMPLES = 3
RESYNC_S = 5.0


class RedisClock(LoopPart):
    name = "clock"

    def __init__(self, redis: Redis, resync_s: float = RESYNC_S) -> None:
        super().__init__()
        self._redis = redis
        self._resync_s = resync_s
        self._offset_ms = 0.0

    async def start(self) -> None:
        await self.sync()
        await super().start()

    async def sync(self) -> None:
        """Measure the offset again: a few ``TIME`` round trips, the shortest one wins."""
        samples = []
        for _ in range(SAMPLES):
            t0 = time.time() * 1000
            sec, usec = await self._redis.time()
            t1 = time.time() * 1000
            samples.append((t0, int(sec) * 1000 + int(usec) / 1000, t1))
        self._offset_ms = clock_offset(samples)

    def now_ms(self) -> int:
        """Server time (Redis TIME) as estimated locally."""
        return int(time.time() * 1000 + self._offset_ms)

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._resync_s)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("clock sync failed: %s", exc)
