"""Unloading: a loaded room nobody has been in for ``grace_s`` is forgotten (unsubscribed, timers off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .decisions import should_unload
from .lifecycle import LoopPart
from .rooms import LocalRoom, RoomRegistry

__all__ = ["IdleRoomSweeper", "UNLOAD_GRACE_S"]

UNLOAD_GRACE_S = 30.0
SWEEP_EVERY_S = 5.0


class IdleRoomSweeper(LoopPart):
    name = "room sweeper"

    def __init__(self, registry: RoomRegistry, unload: Callable[[LocalRoom], None], *,
                 grace_s: float = UNLOAD_GRACE_S, every_s: float = SWEEP_EVERY_S) -> None:
        super().__init__()
        self._registry = registry
        self._unload = unload
        self._grace_s = grace_s
        self._every_s = every_s

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._every_s)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        for room in list(self._registry.rooms.values()):
            if should_unload(room.empty_since, room.size, now, self._grace_s):
                self._unload(room)
