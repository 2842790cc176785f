"""The one Redis subscription of this process: reads every loaded room's channel, loads rooms, and
reloads them (resync) when a seq gap, a new epoch or a broken subscription may have lost messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from commerce.room_bus import RoomBus

from .decisions import UNITS
from .fanout import RoomFeed
from .lifecycle import LoopPart
from .rooms import LocalRoom, RoomRegistry
from .sale_timers import SaleTimers

__all__ = ["RoomReader"]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 1.0
MAX_BACKOFF_S = 5.0


class RoomReader(LoopPart):
    name = "room reader"

    def __init__(self, redis: Redis, bus: RoomBus, registry: RoomRegistry, feed: RoomFeed, timers: SaleTimers,
                 *, replay_keep: int, stats: dict[str, int],
                 on_loaded: Callable[[LocalRoom], Coroutine[Any, Any, None]] | None = None) -> None:
        super().__init__()
        self._on_loaded = on_loaded  # the room's interaction live counts, fresh for this gateway
        self._bus = bus
        self._registry = registry
        self._feed = feed
        self._timers = timers
        self._replay_keep = replay_keep
        self._stats = stats
        self._pubsub = redis.pubsub()
        self._has_channels = asyncio.Event()  # set once the pubsub connection has a channel to read

    # -- subscriptions ----------------------------------------------------------------------------

    async def subscribe(self, room: LocalRoom) -> None:
        await self._pubsub.subscribe(room.channel)
        self._has_channels.set()

    def unsubscribe(self, channel: bytes) -> None:
        if not self._closing:
            self._tasks.spawn(self._unsubscribe(channel))

    async def _unsubscribe(self, channel: bytes) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe(channel)

    # -- loading ----------------------------------------------------------------------------------

    async def load(self, room: LocalRoom) -> None:
        """(Re)load the room from Redis, then apply what arrived meanwhile and re-arm its timers."""
        room.ready.clear()
        room.loading = True
        state, ring = await self._bus.load(room.room_id)
        state.viewers = room.state.viewers
        room.state = state
        room.ring.clear()
        room.ring.extend(ring[-self._replay_keep:])
        pending, room.pending = room.pending, []
        room.loading = False
        room.ready.set()
        for payload in pending:
            self._feed.on_event(room, payload)
        self._timers.schedule(room)
        room.dirty.add(UNITS)
        if self._on_loaded is not None:
            self._tasks.spawn(self._on_loaded(room))

    def resync(self, room: LocalRoom) -> None:
        """Reload the room in the background and send everyone in it a fresh snapshot."""
        if not self._closing:
            self._tasks.spawn(self._resync(room))

    async def _resync(self, room: LocalRoom) -> None:
        if self._closing or self._registry.rooms.get(room.room_id) is not room:
            return
        self._stats["resyncs"] += 1
        try:
            await self.load(room)
        except Exception as exc:
            log.warning("room %s resync failed: %s", room.room_id, exc)
            room.loading = False
            room.ready.set()
            return
        self._feed.send_snapshots(room)

    # -- the read loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.1
        by_channel = self._registry.by_channel
        dispatch = self._feed.dispatch
        while not self._closing:
            if not self._pubsub.subscribed:  # no room loaded: nothing to read until one subscribes
                self._has_channels.clear()
                await self._has_channels.wait()
                continue
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_TIMEOUT_S)
                backoff = 0.1
                if msg is None or msg.get("type") != "message":
                    continue
                room = by_channel.get(msg["channel"])
                if room is not None:
                    dispatch(room, msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("room subscription failed (%s); reconnecting and resyncing rooms", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                for room in list(self._registry.rooms.values()):
                    if room.ready.is_set():
                        self.resync(room)

    async def aclose(self) -> None:
        await super().aclose()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
