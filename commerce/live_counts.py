"""Live counts of the room's interaction (team leaderboard, poll results, coupons claimed and
redeemed, draw entrants) on the ambient lane, coalesced: a vote, a claim or a team join only marks
its room dirty; at most every ``every_s`` this process reads the fresh counts of what changed from
Redis (one reader per kind) and publishes them once per room as an ambient ``x`` message, which the
gateways merge into the room's next ``tick`` (docs/PROTOCOL.md Interaction). A burst of 5,000 votes
is then a handful of messages, not 5,000."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .room_bus import RoomBus
from .tasks import OwnedTasks

__all__ = ["LiveCounts", "Reader"]

log = logging.getLogger(__name__)

# reads the counts of the ids given (a set of ids, empty for a per-room kind such as teams) ->
# the ambient value for that kind: {id: counts} merged by id, or a list replacing the last one
Reader = Callable[[str, set[str]], Awaitable[object]]


class LiveCounts:
    def __init__(self, bus: RoomBus, every_s: float = 0.3) -> None:
        self.bus = bus
        self.every_s = every_s
        self._readers: dict[str, Reader] = {}
        self._dirty: dict[tuple[str, str], set[str]] = {}  # (room, kind) -> ids
        self._wake = asyncio.Event()
        self._tasks = OwnedTasks(log, "live counts")
        self._started = False

    def register(self, kind: str, reader: Reader) -> None:
        self._readers[kind] = reader

    def mark(self, room_id: str, kind: str, ident: str = "") -> None:
        """Something of ``kind`` changed in the room: its counts go out within ``every_s``."""
        ids = self._dirty.setdefault((room_id, kind), set())
        if ident:
            ids.add(ident)
        if not self._started:
            self._started = True
            self._tasks.spawn(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.every_s)
            await self.flush()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        by_room: dict[str, dict[str, object]] = {}
        for (room_id, kind), ids in dirty.items():
            try:
                by_room.setdefault(room_id, {})[kind] = await self._readers[kind](room_id, ids)
            except Exception as exc:  # Redis briefly unreachable: mark again, the next round retries
                log.warning("live counts of %s in %s failed: %s", kind, room_id, exc)
                self._dirty.setdefault((room_id, kind), set()).update(ids)
                self._wake.set()
        for room_id, x in by_room.items():
            try:
                await self.bus.ambient(room_id, {"k": "x", "x": x})
            except Exception as exc:
                log.warning("live counts publish to %s failed: %s", room_id, exc)

    async def aclose(self) -> None:
        await self._tasks.cancel(1.0)
        if self._dirty:
            await self.flush()
