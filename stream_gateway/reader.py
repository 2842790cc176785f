"""The one Redis subscription of this process: reads every loaded room's channel, loads rooms, and
reloads them (resync) when a seq gap, a new epoch or a broken subscription may have lost messages.

Room channels are sharded channels (SSUBSCRIBE): on one server a single connection; on a cluster the
cluster client's pub/sub keeps one connection per shard that owns a subscribed room and reads them in turn
(``get_sharded_message``), and resubscribes on the promoted replica after a failover (the rooms resync)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from commerce.room_bus import RoomBus
from inventory.redis_link import is_cluster

from .decisions import UNITS
from .fanout import RoomFeed
from .lifecycle import LoopPart
from .rooms import LocalRoom, RoomRegistry
from .sale_timers import SaleTimers

__all__ = ["RoomReader"]

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 1.0
MAX_BACKOFF_S = 5.0


def _has_node(ps: Any, name: str) -> bool:
    return name in ps.node_pubsub_mapping


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
        self._cluster = is_cluster(redis)
        self._has_channels = asyncio.Event()  # set once the pubsub connection has a channel to read
        self._loop: asyncio.Task[None] | None = None
        self._failing = 0  # read loops whose subscription broke and has not read again yet

    async def start(self) -> None:
        self._loop = self._tasks.spawn(self._run())

    @property
    def reading(self) -> bool:
        """The subscription works: the read loop runs and no read loop is reconnecting (``/readyz``)."""
        return self._loop is not None and not self._loop.done() and not self._failing

    # -- subscriptions ----------------------------------------------------------------------------

    async def subscribe(self, room: LocalRoom) -> None:
        await self._pubsub.ssubscribe(room.channel)
        self._has_channels.set()

    def unsubscribe(self, channel: bytes) -> None:
        if not self._closing:
            self._tasks.spawn(self._unsubscribe(channel))

    async def _unsubscribe(self, channel: bytes) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.sunsubscribe(channel)

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
        if not self._cluster:
            await self._read_loop(self._read_server, lambda: bool(self._pubsub.subscribed))
            return
        # one read loop per shard holding a subscribed room: a quiet shard never delays another's events
        # (the cluster pub/sub's own round robin waits out each shard's timeout in turn)
        ps: Any = self._pubsub
        readers: dict[str, asyncio.Task[None]] = {}
        while not self._closing:
            for name in list(ps.node_pubsub_mapping):
                if name not in readers or readers[name].done():
                    readers[name] = self._tasks.spawn(self._read_loop(
                        partial(self._read_shard, name), partial(_has_node, ps, name)))
            self._has_channels.clear()
            with contextlib.suppress(TimeoutError):  # a new shard's first room, or a failover's new node
                await asyncio.wait_for(self._has_channels.wait(), READ_TIMEOUT_S)

    async def _read_loop(self, read: Callable[[], Coroutine[Any, Any, dict[str, Any] | None]],
                         active: Callable[[], bool]) -> None:
        backoff = 0.1
        lost = False  # the subscription broke: messages may be lost; resync the rooms once it reads again
        by_channel = self._registry.by_channel
        dispatch = self._feed.dispatch
        while not self._closing:
            if not active():  # nothing subscribed here: wait for a room (one server), or end (a shard)
                if lost:  # no channel left to lose messages of: not reconnecting any more
                    lost = False
                    self._failing -= 1
                if self._cluster:
                    return
                self._has_channels.clear()
                await self._has_channels.wait()
                continue
            try:
                msg = await read()
                backoff = 0.1
                if lost:  # reading again (redis-py resubscribed): reload the rooms once, not per failed try
                    lost = False
                    self._failing -= 1
                    self._resync_all()
                if msg is None or msg.get("type") != "smessage":
                    continue
                room = by_channel.get(msg["channel"])
                if room is not None:
                    dispatch(room, msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.warning("room subscription failed (%s); reconnecting, then resyncing rooms", exc)
                    self._failing += 1
                lost = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _resync_all(self) -> None:
        for room in list(self._registry.rooms.values()):
            if room.ready.is_set():
                self.resync(room)

    async def _read_server(self) -> dict[str, Any] | None:
        msg: dict[str, Any] | None = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                                   timeout=READ_TIMEOUT_S)
        return msg

    async def _read_shard(self, name: str) -> dict[str, Any] | None:
        ps: Any = self._pubsub
        node = ps.cluster.get_node(node_name=name)
        if node is None:
            raise ConnectionError(f"shard {name} left the cluster")
        msg: dict[str, Any] | None = await ps.get_sharded_message(ignore_subscribe_messages=True,
                                                                 timeout=READ_TIMEOUT_S, target_node=node)
        return msg

    async def aclose(self) -> None:
        await super().aclose()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
