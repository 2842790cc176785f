"""Sale open/close timers of the loaded rooms: when a sale's ``starts_at`` / ``ends_at`` passes, the
room service publishes ``sale_open`` / ``sale_closed`` (the first gateway to fire wins, deduplicated
in Redis)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from commerce.tasks import OwnedTasks

from .decisions import OPEN, sale_timers
from .lifecycle import STOP_TIMEOUT_S
from .rooms import LocalRoom

__all__ = ["SaleTimers", "SaleHook"]

log = logging.getLogger(__name__)

SaleHook = Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]


class SaleTimers:
    def __init__(self, rooms: Mapping[str, LocalRoom], now_ms: Callable[[], int], on_open: SaleHook,
                 on_close: SaleHook) -> None:
        self._rooms = rooms
        self._now_ms = now_ms
        self._on_open = on_open
        self._on_close = on_close
        self._handles: dict[str, list[asyncio.TimerHandle]] = {}  # room id -> its pending timers
        self._tasks = OwnedTasks(log, "sale timer")
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    def schedule(self, room: LocalRoom) -> None:
        """(Re)arm the room's timers from its current sales."""
        self.cancel(room.room_id)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        handles = [loop.call_later(t.delay_s, self._fire, t.action, room.room_id, t.sale_id)
                   for t in sale_timers(room.state.sales, self._now_ms())]
        if handles:
            self._handles[room.room_id] = handles

    def cancel(self, room_id: str) -> None:
        for handle in self._handles.pop(room_id, ()):
            handle.cancel()

    def _fire(self, action: str, room_id: str, sale_id: str) -> None:
        room = self._rooms.get(room_id)
        if self._closed or room is None or sale_id not in room.state.sales:
            return
        hook = self._on_open if action == OPEN else self._on_close
        self._tasks.spawn(hook(room_id, room.state.sales[sale_id]))

    async def aclose(self) -> None:
        """Cancel every pending timer and the hooks still running; idempotent."""
        self._closed = True
        for room_id in list(self._handles):
            self.cancel(room_id)
        stuck = await self._tasks.cancel(STOP_TIMEOUT_S)
        if stuck:
            log.warning("sale timers stop: %d task(s) did not finish", stuck)
