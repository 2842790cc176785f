"""Local fan-out: the rooms this gateway process serves, fed by one Redis subscription.

- Critical lane: sequenced events arrive on the room channel in seq order; each is framed once
  (the JSON bytes from Redis are the wire payload) and the same bytes are written to every
  connection. Never skipped; a connection over the hard write-buffer limit is closed (4008).
- Ambient lane: comments, likes, "just bought", viewers and units left are coalesced into one
  ``tick`` per room per ``tick_ms``; skipped for connections above the soft limit, sampled in
  huge rooms.
- Resume: each room keeps the last N events (prefilled from the Redis log when it is loaded).
- A gap or an epoch change on the channel (lost pub/sub messages, Redis restarted) reloads the
  room and sends every connection a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from redis.asyncio import Redis

from commerce.room_bus import RoomBus
from .connection import CLOSE_GOING_AWAY, CLOSE_HEARTBEAT, Conn
from .frames import BINARY, PING_FRAME, TEXT, frame
from inventory.keys import room_keys
from .messages import encode_msgpack
from inventory.keys import sale_keys
from commerce.room_state import RoomState, sale_state_at
from commerce.tasks import OwnedTasks

__all__ = ["Hub", "LocalRoom"]

log = logging.getLogger(__name__)

MAX_TICK_ITEMS = 100
SAMPLED_TICK_ITEMS = 10
UNLOAD_GRACE_S = 30.0


class LocalRoom:
    def __init__(self, room_id: str, keep: int) -> None:
        self.room_id = room_id
        self.channel = room_keys(room_id).channel.encode()
        self.state = RoomState(room_id)
        self.text: set[Conn] = set()
        self.bin: set[Conn] = set()
        self.by_user: dict[str, set[Conn]] = {}
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self.ready = asyncio.Event()
        self.loading = False
        self.pending: list[bytes] = []
        self.comments: list[dict[str, Any]] = []
        self.bought: list[dict[str, Any]] = []
        self.dirty: set[str] = set()
        self.timers: dict[str, list[asyncio.TimerHandle]] = {}
        self.empty_since: float | None = None

    @property
    def size(self) -> int:
        return len(self.text) + len(self.bin)

    def conns(self) -> list[Conn]:
        return [*self.text, *self.bin]


class Hub:
    def __init__(self, redis: Redis, bus: RoomBus, *, tick_ms: int, replay_keep: int, soft_limit: int,
                 heartbeat_s: float, sample_threshold: int, ambient_rate: int = 20000,
                 on_open: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
                 on_close: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]) -> None:
        self.redis = redis
        self.bus = bus
        self.tick_s = tick_ms / 1000
        self.replay_keep = replay_keep
        self.soft_limit = soft_limit
        self.heartbeat_s = heartbeat_s
        self.sample_threshold = sample_threshold
        self.ambient_rate = ambient_rate  # ambient frames per second this process writes at most
        self.on_open = on_open
        self.on_close = on_close
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.rooms: dict[str, LocalRoom] = {}
        self.all: set[Conn] = set()  # every open connection, joined or not (heartbeat covers them all)
        self._by_channel: dict[bytes, LocalRoom] = {}
        self._pubsub = redis.pubsub()
        self._tasks = OwnedTasks(log, "hub task")
        self._loops: list[asyncio.Task[Any]] = []
        self._offset_ms = 0.0
        self._closing = False
        self._has_channels = asyncio.Event()  # set once the pubsub connection has a channel to read
        self.stats = {"events": 0, "ticks": 0, "slow_closed": 0, "skipped": 0, "resyncs": 0}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.sync_clock()
        self._loops = [asyncio.create_task(self._reader(), name="hub-reader"),
                       asyncio.create_task(self._ticker(), name="hub-ticker"),
                       asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
                       asyncio.create_task(self._housekeeping(), name="hub-housekeeping")]

    async def stop(self) -> None:
        self._closing = True
        for room in self.rooms.values():
            for timers in room.timers.values():
                for t in timers:
                    t.cancel()
            for c in room.conns():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutdown"), 1.0)
        for t in self._loops:
            t.cancel()
        stuck = await self._tasks.cancel(5.0)  # bounded: a swallowed cancel must not hang shutdown
        if self._loops:
            _, pending = await asyncio.wait(self._loops, timeout=5.0)
            stuck += len(pending)
        if stuck:
            log.warning("hub stop: %d task(s) did not finish", stuck)
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)

    # -- clock ------------------------------------------------------------------------------------

    async def sync_clock(self) -> None:
        best = None
        for _ in range(3):
            t0 = time.time() * 1000
            sec, usec = await self.redis.time()
            t1 = time.time() * 1000
            server = int(sec) * 1000 + int(usec) / 1000
            rtt = t1 - t0
            if best is None or rtt < best[0]:
                best = (rtt, server - (t0 + t1) / 2)
        self._offset_ms = best[1] if best else 0.0

    def now_ms(self) -> int:
        """Server time (Redis TIME) as estimated locally."""
        return int(time.time() * 1000 + self._offset_ms)

    # -- membership -------------------------------------------------------------------------------

    async def room(self, room_id: str) -> LocalRoom:
        room = self.rooms.get(room_id)
        if room is None:
            room = LocalRoom(room_id, self.replay_keep)
            self.rooms[room_id] = room
            self._by_channel[room.channel] = room
            room.loading = True
            try:
                await self._pubsub.subscribe(room.channel)
                self._has_channels.set()
                await self._load(room)
            except BaseException:
                self._drop_room(room)
                raise
        elif not room.ready.is_set():
            await room.ready.wait()
        return room

    async def _load(self, room: LocalRoom) -> None:
        room.ready.clear()
        room.loading = True
        state, ring = await self.bus.load(room.room_id)
        state.viewers = room.state.viewers
        room.state = state
        room.ring.clear()
        room.ring.extend(ring[-self.replay_keep:])
        pending, room.pending = room.pending, []
        room.loading = False
        room.ready.set()
        for payload in pending:
            self._on_event(room, payload)
        self._schedule_sales(room)
        room.dirty.add("units")

    def drop_if_unused(self, room: LocalRoom) -> None:
        """Forget a loaded room nobody is in (a join for a room that does not exist)."""
        if self.rooms.get(room.room_id) is room and not room.size and room.ready.is_set():
            self._drop_room(room)

    def _drop_room(self, room: LocalRoom) -> None:
        self.rooms.pop(room.room_id, None)
        self._by_channel.pop(room.channel, None)
        for timers in room.timers.values():
            for t in timers:
                t.cancel()
        room.ready.set()
        self.spawn(self._unsubscribe(room.channel))

    async def _unsubscribe(self, channel: bytes) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe(channel)

    def add(self, conn: Conn, room: LocalRoom) -> None:
        (room.bin if conn.binary else room.text).add(conn)
        if conn.identity.user:
            room.by_user.setdefault(conn.identity.user, set()).add(conn)
        conn.room_id = room.room_id
        room.empty_since = None
        room.dirty.add("viewers")

    def remove(self, conn: Conn) -> None:
        room = self.rooms.get(conn.room_id or "")
        conn.room_id = None
        if room is None:
            return
        room.text.discard(conn)
        room.bin.discard(conn)
        users = room.by_user.get(conn.identity.user)
        if users is not None:
            users.discard(conn)
            if not users:
                del room.by_user[conn.identity.user]
        if not room.size:
            room.empty_since = time.monotonic()
        room.dirty.add("viewers")

    def resume_or_snapshot(self, conn: Conn, room: LocalRoom, resume: tuple[str, int] | None) -> bool:
        """Send what a joining connection needs, synchronously (no event can slip in between)."""
        st = room.state
        if resume is not None:
            epoch, seq = resume
            first = room.ring[0][0] if room.ring else st.seq + 1
            if epoch == st.epoch and seq <= st.seq and seq >= first - 1:
                conn.send({"type": "resumed", "recovered": True, "epoch": st.epoch, "from_seq": seq,
                           "to_seq": st.seq})
                for s, payload in room.ring:
                    if s > seq:
                        conn.write(self._encode_event(payload, conn.binary))
                return True
        you = {"user": conn.identity.user, "name": conn.identity.name, "role": conn.identity.role}
        conn.send(st.snapshot(self.now_ms(), you))
        return False

    # -- inbound from Redis -------------------------------------------------------------------------

    async def _reader(self) -> None:
        backoff = 0.1
        while not self._closing:
            if not self._pubsub.subscribed:  # no room loaded: nothing to read until one subscribes
                self._has_channels.clear()
                await self._has_channels.wait()
                continue
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                backoff = 0.1
                if msg is None or msg.get("type") != "message":
                    continue
                room = self._by_channel.get(msg["channel"])
                if room is not None:
                    self.dispatch(room, msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("room subscription failed (%s); reconnecting and resyncing rooms", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                for room in list(self.rooms.values()):
                    if room.ready.is_set():
                        self.spawn(self._resync(room))

    def dispatch(self, room: LocalRoom, data: bytes) -> None:
        kind, payload = data[:1], data[1:]
        if kind == b"E":
            if room.loading:
                room.pending.append(payload)
            else:
                self._on_event(room, payload)
        elif kind == b"A":
            self._on_ambient(room, orjson.loads(payload))
        elif kind == b"U":
            msg = orjson.loads(payload)
            for c in list(room.by_user.get(msg["u"], ())):
                c.send(msg["m"])

    def _on_event(self, room: LocalRoom, payload: bytes) -> None:
        ev = orjson.loads(payload)
        st = room.state
        seq = ev["seq"]
        if ev["epoch"] != st.epoch or seq > st.seq + 1:
            log.info("room %s: seq gap or new epoch (have %s/%s, got %s/%s): resync", room.room_id,
                     st.epoch, st.seq, ev["epoch"], seq)
            room.loading = True
            room.pending.append(payload)
            self.spawn(self._resync(room))
            return
        if seq <= st.seq:
            return
        st.apply(ev)
        room.ring.append((seq, payload))
        self.stats["events"] += 1
        self._fanout_critical(room, payload, ev)
        t = ev["type"]
        if t in ("sale_scheduled", "sale_open", "sale_closed"):
            self._schedule_sales(room)
        if t in ("sale_open", "sale_sold_out", "sale_scheduled"):
            room.dirty.add("units")

    def _encode_event(self, payload: bytes, binary: bool) -> bytes:
        if binary:
            return frame(encode_msgpack(orjson.loads(payload)), BINARY)
        return frame(payload, TEXT)

    def _fanout_critical(self, room: LocalRoom, payload: bytes, ev: dict[str, Any]) -> None:
        if room.text:
            data = frame(payload, TEXT)
            for c in list(room.text):
                if not c.write(data):
                    self._reap_dead(c)
        if room.bin:
            data = frame(encode_msgpack(ev), BINARY)
            for c in list(room.bin):
                if not c.write(data):
                    self._reap_dead(c)

    def _reap_dead(self, conn: Conn) -> None:
        if conn.dead and conn.room_id is not None:
            self.stats["slow_closed"] += 1
            self.remove(conn)

    def _on_ambient(self, room: LocalRoom, amb: dict[str, Any]) -> None:
        k = amb.get("k")
        st = room.state
        if k == "c":
            c = amb["c"]
            st.add_comment(c)
            if c["user"] not in st.muted:
                room.comments.append(c)
                del room.comments[:-MAX_TICK_ITEMS]
        elif k == "l":
            if amb["n"] > st.likes:
                st.likes = amb["n"]
                room.dirty.add("likes")
        elif k == "b":
            room.bought.append(amb["b"])
            del room.bought[:-MAX_TICK_ITEMS]
            room.dirty.add("units")

    async def _resync(self, room: LocalRoom) -> None:
        if self._closing or self.rooms.get(room.room_id) is not room:
            return
        self.stats["resyncs"] += 1
        try:
            await self._load(room)
        except Exception as exc:
            log.warning("room %s resync failed: %s", room.room_id, exc)
            room.loading = False
            room.ready.set()
            return
        for c in room.conns():
            you = {"user": c.identity.user, "name": c.identity.name, "role": c.identity.role}
            if not c.write(self._snapshot_frame(room, you, c.binary)):
                self._reap_dead(c)

    def _snapshot_frame(self, room: LocalRoom, you: dict[str, Any], binary: bool) -> bytes:
        snap = room.state.snapshot(self.now_ms(), you)
        return frame(encode_msgpack(snap), BINARY) if binary else frame(orjson.dumps(snap), TEXT)

    # -- sale timers ------------------------------------------------------------------------------

    def _schedule_sales(self, room: LocalRoom) -> None:
        loop = asyncio.get_running_loop()
        now = self.now_ms()
        for sale_id, sale in room.state.sales.items():
            for t in room.timers.pop(sale_id, []):
                t.cancel()
            if sale.get("state") == "closed":
                continue
            handles = []
            if sale.get("state") == "scheduled":
                delay = max(0.0, (int(sale["starts_at"]) - now + 1) / 1000)
                handles.append(loop.call_later(delay, self._fire, self.on_open, room.room_id, sale_id))
            delay = max(0.0, (int(sale["ends_at"]) - now + 1) / 1000)
            handles.append(loop.call_later(delay, self._fire, self.on_close, room.room_id, sale_id))
            room.timers[sale_id] = handles

    def _fire(self, fn: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]], room_id: str,
              sale_id: str) -> None:
        room = self.rooms.get(room_id)
        if room is None or sale_id not in room.state.sales:
            return
        self.spawn(fn(room_id, room.state.sales[sale_id]))

    # -- ambient ticks ----------------------------------------------------------------------------

    def tick_stride(self) -> int:
        """Room ticks happen every N-th base tick, N chosen so that the ambient frames this process
        writes (one per local viewer per tick) stay within ``ambient_rate`` per second. Small rooms
        tick at ``tick_ms``; with 20,000 frames/s and 200 ms ticks, 5,000 local viewers tick every 0.4 s, 19,000 every
        ~1 s. Critical events are never delayed by this: they do not wait for a tick."""
        conns = sum(r.size for r in self.rooms.values())
        budget_per_tick = max(1.0, self.ambient_rate * self.tick_s)
        return max(1, math.ceil(conns / budget_per_tick))

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        last_viewers = 0.0
        n = 0
        while not self._closing:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > self.tick_s:  # fell behind: skip, don't burst
                next_at = loop.time()
            n += 1
            try:
                now = self.now_ms()
                if loop.time() - last_viewers >= 1.0:
                    last_viewers = loop.time()
                    await self._report_viewers(now)
                if n % self.tick_stride():
                    continue
                await self._poll_units(now)
                for room in list(self.rooms.values()):
                    if room.ready.is_set() and room.size:
                        self._tick(room, now)
                    elif room.ready.is_set():
                        room.comments.clear()
                        room.bought.clear()
                        room.dirty.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tick failed: %s", exc)

    async def _report_viewers(self, now: int) -> None:
        for room in list(self.rooms.values()):
            total = await self.bus.report_viewers(room.room_id, self.gateway_id, room.size, now)
            if total != room.state.viewers:
                room.state.viewers = total
                room.dirty.add("viewers")

    async def _poll_units(self, now: int) -> None:
        wanted: list[tuple[LocalRoom, str]] = []
        for room in self.rooms.values():
            if room.ready.is_set() and room.size and "units" in room.dirty:
                wanted += [(room, sid) for sid in room.state.open_sales(now)]
        if not wanted:
            return
        async with self.redis.pipeline(transaction=False) as p:
            for _, sid in wanted:
                p.hget(sale_keys(sid).sale, "available")
            values = await p.execute()
        for (room, sid), v in zip(wanted, values):
            if v is not None and room.state.units.get(sid) != int(v):
                room.state.units[sid] = int(v)
                room.dirty.add("units_changed")

    def _tick(self, room: LocalRoom, now: int) -> None:
        dirty = room.dirty
        if not (dirty or room.comments or room.bought):
            return
        st = room.state
        msg: dict[str, Any] = {"type": "tick", "ts": now}
        if "viewers" in dirty:
            msg["viewers"] = st.viewers
        if "likes" in dirty:
            msg["likes"] = st.likes
        if "units_changed" in dirty:
            msg["units"] = {sid: st.units[sid] for sid in st.open_sales(now) if sid in st.units}
        limit = SAMPLED_TICK_ITEMS if room.size > self.sample_threshold else MAX_TICK_ITEMS
        if room.comments:
            visible = [c for c in room.comments if c["id"] not in st.hidden and c["user"] not in st.muted]
            if visible:
                msg["comments"] = visible[-limit:]
                if len(visible) > limit:
                    msg["sampled"] = True
        if room.bought:
            msg["bought"] = room.bought[-limit:]
        room.comments = []
        room.bought = []
        keep_polling = "units" in dirty and any(
            sale_state_at(st.sales[s], now, None) == "open" for s in st.open_sales(now))
        dirty.clear()
        if keep_polling:
            dirty.add("units")
        if len(msg) <= 2:
            return
        self.stats["ticks"] += 1
        soft = self.soft_limit
        for conns, data in ((room.text, lambda: frame(orjson.dumps(msg), TEXT)),
                            (room.bin, lambda: frame(encode_msgpack(msg), BINARY))):
            if not conns:
                continue
            fr = data()
            for c in list(conns):
                if c.dead or c.transport.get_write_buffer_size() > soft:
                    if not c.dead:
                        c.skipped += 1
                        self.stats["skipped"] += 1
                    if not c.write(b""):  # closes it past the hard limit; reaps closed ones
                        self._reap_dead(c)
                    continue
                if not c.write(fr):
                    self._reap_dead(c)

    # -- heartbeat and housekeeping -------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Ping every connection once per interval, spread over SLICES steps so the pongs don't all
        come back (and wake every handler) at the same instant."""
        slices = 20
        step = 0
        while not self._closing:
            await asyncio.sleep(self.heartbeat_s / slices)
            limit = time.monotonic() - 2 * self.heartbeat_s
            for c in list(self.all):
                if hash(c) % slices != step:
                    continue
                if c.last_seen < limit:
                    c.kill(CLOSE_HEARTBEAT, "heartbeat timeout")
                    self._reap_dead(c)
                elif not c.write(PING_FRAME):
                    self._reap_dead(c)
            step = (step + 1) % slices

    async def _housekeeping(self) -> None:
        while not self._closing:
            await asyncio.sleep(5.0)
            try:
                await self.sync_clock()
            except Exception as exc:
                log.warning("clock sync failed: %s", exc)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                if room.empty_since is not None and now - room.empty_since > UNLOAD_GRACE_S and not room.size:
                    self._drop_room(room)
