"""The host's funnel (tapped -> reserved -> paid): counted in memory, flushed to Redis each second."""

from __future__ import annotations

import asyncio
import logging

from .room_bus import RoomBus
from .tasks import OwnedTasks

__all__ = ["Funnel"]

log = logging.getLogger(__name__)


class Funnel:
    """Per-room counters; ``count`` is synchronous (the buy path calls it), the flush is batched."""

    def __init__(self, bus: RoomBus, interval_s: float = 1.0) -> None:
        self.bus = bus
        self.interval_s = interval_s
        self._counts: dict[str, dict[str, int]] = {}
        self._tasks = OwnedTasks(log, "funnel flush")

    def count(self, room_id: str, field: str) -> None:
        room = self._counts.setdefault(room_id, {})
        room[field] = room.get(field, 0) + 1

    async def flush(self) -> None:
        pending, self._counts = self._counts, {}
        for room_id, counts in pending.items():
            for field, n in counts.items():
                await self.bus.count(room_id, field, n)

    async def counts(self, room_id: str) -> dict[str, int]:
        return await self.bus.funnel(room_id)

    def start(self) -> None:
        self._tasks.spawn(self._loop())

    async def aclose(self) -> None:
        await self._tasks.cancel(5.0)
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception as exc:  # Redis briefly away: the counts of that interval are dropped
                log.warning("funnel flush failed: %s", exc)
