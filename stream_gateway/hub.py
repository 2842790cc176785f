"""Local fan-out: the rooms this gateway process serves, fed by one Redis subscription.

``Hub`` composes parts with one job each and is what the endpoint and the HTTP API see:

- ``rooms.RoomRegistry``     loaded rooms, open connections, membership;
- ``reader.RoomReader``      the Redis subscription, room loading and resync (gap, new epoch, lost link);
- ``fanout.RoomFeed``        channel messages onto connections (critical lane framed once), join replay;
- ``ticker.Ticker``          ambient ticks, viewer counts, units left;
- ``sale_timers.SaleTimers`` sale open/close timers;
- ``heartbeat.Heartbeat``    pings and silent-peer closes;
- ``sweeper.IdleRoomSweeper`` unloading rooms nobody is in;
- ``clock.RedisClock``       server time (Redis ``TIME`` offset).

The decisions they act on are pure functions in ``decisions``. Lifecycle: ``start()`` starts the
parts in order; ``close_connections()`` (aiohttp ``on_shutdown``) says goodbye to every joined
connection so handlers end; ``aclose()`` (its one caller: the resources cleanup) stops the parts in
reverse order. Both are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from commerce.room_bus import RoomBus
from commerce.room_state import RoomState

from .clock import RedisClock
from .connection import CLOSE_GOING_AWAY, Conn
from .fanout import RoomFeed
from .heartbeat import Heartbeat
from .lifecycle import Lifecycle
from .reader import RoomReader
from .rooms import LocalRoom, RoomRegistry, new_stats
from .sale_timers import SaleHook, SaleTimers
from .sweeper import IdleRoomSweeper
from .ticker import OnlineHook, PresenceHook, SecondHook, Ticker, UnitsSource

__all__ = ["Hub", "LocalRoom"]

log = logging.getLogger(__name__)

# (room id, its state as just loaded): ask for the room's interaction live counts (commerce.Commerce.room_loaded)
LoadedHook = Callable[[str, RoomState], Coroutine[Any, Any, None]]

GOODBYE_TIMEOUT_S = 1.0


class Hub(Lifecycle):
    def __init__(self, redis: Redis, bus: RoomBus, units: UnitsSource, *, tick_ms: int, replay_keep: int,
                 soft_limit: int, heartbeat_s: float, sample_threshold: int, ambient_rate: int = 20000,
                 on_open: SaleHook, on_close: SaleHook, on_presence: PresenceHook | None = None,
                 on_loaded: LoadedHook | None = None, on_second: SecondHook | None = None,
                 on_online: OnlineHook | None = None) -> None:
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stats = new_stats()  # plain counters (server/metrics.py reads them)
        self._replay_keep = replay_keep
        self.clock = RedisClock(redis)
        self.now_ms = self.clock.now_ms  # bound once: called on every hello and clock ping
        self.registry = RoomRegistry(self.stats)
        self.rooms = self.registry.rooms
        self.all = self.registry.all
        self.timers = SaleTimers(self.rooms, self.now_ms, on_open, on_close)
        self.feed = RoomFeed(self.registry, self.now_ms, self.stats, on_gap=self._on_gap,
                             on_sales_changed=self.timers.schedule)
        self.reader = RoomReader(redis, bus, self.registry, self.feed, self.timers, replay_keep=replay_keep,
                                 stats=self.stats,
                                 on_loaded=(lambda room: on_loaded(room.room_id, room.state)) if on_loaded else None)
        self.ticker = Ticker(self.registry, bus, units, self.now_ms, gateway_id=self.gateway_id, tick_ms=tick_ms,
                             ambient_rate=ambient_rate, sample_threshold=sample_threshold, soft_limit=soft_limit,
                             stats=self.stats, on_presence=on_presence, on_second=on_second,
                             on_online=on_online)
        self.heartbeat = Heartbeat(self.registry, heartbeat_s)
        self.sweeper = IdleRoomSweeper(self.registry, self._unload)
        self._goodbye_said = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.clock.start()  # first: everything else reads server time
        for part in (self.timers, self.reader, self.ticker, self.heartbeat, self.sweeper):
            await part.start()

    async def close_connections(self) -> None:
        """Close every joined connection with 1001 (bounded per connection); runs once."""
        if self._goodbye_said:
            return
        self._goodbye_said = True
        for room in list(self.rooms.values()):
            for c in room.conns():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutdown"),
                                           GOODBYE_TIMEOUT_S)

    async def aclose(self) -> None:
        """Stop: the shutdown order, written once. Idempotent; a concurrent call waits for the first."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self.timers.aclose()        # no sale opens or closes from this process any more
            await self.close_connections()    # a no-op after on_shutdown
            for part in (self.sweeper, self.heartbeat, self.ticker, self.reader, self.clock):
                await part.aclose()
        finally:
            self._closed.set()

    # -- membership -------------------------------------------------------------------------------

    async def room(self, room_id: str) -> LocalRoom:
        """The loaded room (subscribed and loaded on first use; waits while it is (re)loading)."""
        room = self.rooms.get(room_id)
        if room is None:
            room = LocalRoom(room_id, self._replay_keep)
            self.registry.register(room)
            room.loading = True
            try:
                await self.reader.subscribe(room)
                await self.reader.load(room)
            except BaseException:
                self._unload(room)
                raise
        elif not room.ready.is_set():
            await room.ready.wait()
        return room

    def drop_if_unused(self, room: LocalRoom) -> None:
        """Forget a loaded room nobody is in (a join for a room that does not exist)."""
        if self.rooms.get(room.room_id) is room and not room.size and room.ready.is_set():
            self._unload(room)

    def add(self, conn: Conn, room: LocalRoom) -> None:
        self.registry.add(conn, room)

    def remove(self, conn: Conn) -> None:
        self.registry.remove(conn)

    def resume_or_snapshot(self, conn: Conn, room: LocalRoom, resume: tuple[str, int] | None) -> bool:
        """Send what a joining connection needs, synchronously (no event can slip in between)."""
        return self.feed.resume_or_snapshot(conn, room, resume)

    def _unload(self, room: LocalRoom) -> None:
        self.registry.forget(room)
        self.timers.cancel(room.room_id)
        room.ready.set()
        self.reader.unsubscribe(room.channel)

    def _on_gap(self, room: LocalRoom) -> None:
        self.reader.resync(room)
