"""Ambient ticks: every ``tick_ms`` (stretched by ``decisions.tick_stride`` under load) each room with
something new gets one ``tick`` frame (viewers, likes, units left, comments, "just bought"), framed
once per lane and skipped for connections above the soft write-buffer limit. A process that used a
whole core over the last second ticks less often (``decisions.ambient_shed``, at least once a second):
the ambient lane yields to the clicks. Also reports this process's viewers to Redis once a second and
polls units left of open sales."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson

from commerce.room_bus import RoomBus

from .connection import Conn
from .decisions import UNITS, UNITS_CHANGED, VIEWERS, ambient_shed, tick_message, tick_stride
from .frames import BINARY, TEXT, frame
from .lifecycle import LoopPart
from .messages import encode_msgpack
from .rooms import LocalRoom, RoomRegistry

__all__ = ["Ticker", "UnitsSource", "PresenceHook"]

# (room id, gateway id, members connected per fan team, viewer ids connected, open draw ids, now ms):
# who is in the room on this gateway, every second, for rooms with teams or an open draw
PresenceHook = Callable[[str, str, dict[str, int], list[str], list[str], int], Awaitable[None]]
SecondHook = Callable[["LocalRoom", int], None]  # (room, now ms): once a second per loaded room
# (gateway id, {room: [viewer ids connected here]}): who is online on this gateway, everyone every ONLINE_EVERY_S
# and, each second in between, who joined since the last report
OnlineHook = Callable[[str, dict[str, list[str]]], Awaitable[Any]]
ONLINE_EVERY_S = 10.0

log = logging.getLogger(__name__)

VIEWERS_EVERY_S = 1.0


class UnitsSource(Protocol):
    """Units left of sales (``inventory.scripts.Inventory`` is one)."""

    async def available_many(self, sale_ids: Sequence[str]) -> dict[str, int | None]: ...


class Ticker(LoopPart):
    name = "ticker"

    def __init__(self, registry: RoomRegistry, bus: RoomBus, units: UnitsSource, now_ms: Callable[[], int], *,
                 gateway_id: str, tick_ms: int, ambient_rate: int, sample_threshold: int, soft_limit: int,
                 stats: dict[str, int], on_presence: PresenceHook | None = None,
                 on_second: SecondHook | None = None, on_online: OnlineHook | None = None,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        super().__init__()
        self._cpu_clock = cpu_clock  # this process's CPU seconds (all threads): how busy it is
        self._cpu_at: tuple[float, float] | None = None  # (monotonic, cpu) at the last measure
        self.shed = 1  # decisions.ambient_shed: how many times less often a saturated process ticks
        self._on_online = on_online
        self._online_at = 0.0
        self._online_ms = 0  # server time of the last online report (who joined since: reported next second)
        self._on_presence = on_presence
        self._on_second = on_second
        self._registry = registry
        self._bus = bus
        self._units = units
        self._now_ms = now_ms
        self._gateway_id = gateway_id
        self.tick_s = tick_ms / 1000
        self.ambient_rate = ambient_rate  # ambient frames per second this process writes at most
        self._sample_threshold = sample_threshold
        self._soft_limit = soft_limit
        self._stats = stats
        self._viewers_at = 0.0
        self._held: dict[str, list[Conn]] = {}  # room id -> connections whose tick was held at its last tick

    def stride(self) -> int:
        return tick_stride(self._registry.connections(), self.ambient_rate, self.tick_s, self.shed)

    def measure_cpu(self, mono: float) -> None:
        """The share of a core this process used since the last call: the ambient shed factor follows it."""
        cpu = self._cpu_clock()
        if self._cpu_at is not None and mono > self._cpu_at[0]:
            share = (cpu - self._cpu_at[1]) / (mono - self._cpu_at[0])
            self.shed = ambient_shed(self.shed, share)
            self._stats["ambient_shed"] = self.shed
        self._cpu_at = (mono, cpu)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        n = 0
        while not self._closing:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > self.tick_s:  # fell behind: skip, don't burst
                next_at = loop.time()
            n += 1
            try:
                await self._step(n, loop.time())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("tick failed: %s", exc)

    async def _step(self, n: int, mono: float) -> None:
        now = self._now_ms()
        if mono - self._viewers_at >= VIEWERS_EVERY_S:
            self._viewers_at = mono
            self.measure_cpu(mono)
            await self._report_viewers(now)
            if self._on_online is not None:
                await self._report_online(mono, now)
        if n % self.stride():
            return
        await self._poll_units(now)
        rooms = self._registry.rooms
        for room in list(rooms.values()):
            if room.ready.is_set() and room.size:
                self._tick(room, now)
            elif room.ready.is_set():
                room.comments.clear()
                room.bought.clear()
                room.dirty.clear()
                room.live.clear()
        for room_id in [r for r in self._held if r not in rooms]:  # rooms unloaded since
            del self._held[room_id]

    async def _report_online(self, mono: float, now: int) -> None:
        """Who is online here: everyone every ONLINE_EVERY_S, and each second the viewers who joined since the
        last report (so a reminder that fires right after a join reaches the new viewer in the app)."""
        assert self._on_online is not None
        full = mono - self._online_at >= ONLINE_EVERY_S
        since, self._online_ms = self._online_ms, now
        rooms = self._registry.rooms.values()
        if full:
            self._online_at = mono
            users = {r.room_id: [u for u in r.by_user if u] for r in rooms if r.by_user}
        else:
            users = {r.room_id: [c.identity.user for c in r.conns() if c.identity.user and c.joined_ms >= since]
                     for r in rooms if r.by_user}
            users = {room: us for room, us in users.items() if us}
        if not users:
            return
        try:
            await self._on_online(self._gateway_id, users)
        except Exception as exc:  # Redis briefly away: the next round reports again
            log.warning("online report failed: %s", exc)
            self._online_at = 0.0  # the next round reports everyone

    async def _report_viewers(self, now: int) -> None:
        for room in list(self._registry.rooms.values()):
            total = await self._bus.report_viewers(room.room_id, self._gateway_id, room.size, now)
            if total != room.state.viewers:
                room.state.viewers = total
                room.dirty.add(VIEWERS)
            st = room.state
            if self._on_second is not None and room.ready.is_set():
                try:
                    self._on_second(room, now)
                except Exception:
                    log.exception("per-second hook of room %s failed", room.room_id)
            if self._on_presence is not None and room.ready.is_set() and (st.teams or st.draws):
                draws = [d["draw_id"] for d in st.open_draws()]
                if st.teams or draws:
                    teams: dict[str, int] = {}
                    for c in room.conns():
                        if c.team:
                            teams[c.team] = teams.get(c.team, 0) + 1
                    users = list(room.by_user) if draws else []
                    try:
                        await self._on_presence(room.room_id, self._gateway_id, teams, users, draws, now)
                    except Exception as exc:
                        log.warning("presence of room %s failed: %s", room.room_id, exc)

    async def _poll_units(self, now: int) -> None:
        wanted = [(room, sid) for room in self._registry.rooms.values()
                  if room.ready.is_set() and room.size and UNITS in room.dirty
                  for sid in room.state.open_sales(now)]
        if not wanted:
            return
        units = await self._units.available_many([sid for _, sid in wanted])
        for room, sid in wanted:
            v = units.get(sid)
            if v is not None and room.state.units.get(sid) != v:
                room.state.units[sid] = v
                room.dirty.add(UNITS_CHANGED)

    def _tick(self, room: LocalRoom, now: int) -> None:
        held = self._held.pop(room.room_id, None)
        dirty = room.dirty
        if not (dirty or room.comments or room.bought or room.live):
            if held:  # nothing new to send: the ticks held at the last tick leave now, on their own
                self._release(held)
            return
        msg, keep_polling = tick_message(room.state, dirty, room.comments, room.bought, room_size=room.size,
                                         sample_threshold=self._sample_threshold, now_ms=now, live=room.live)
        room.comments = []
        room.bought = []
        room.live = {}
        dirty.clear()
        if keep_polling:
            dirty.add(UNITS)
        if msg is not None:
            self._stats["ticks"] += 1
            self._send(room, msg)  # a tick held at the last tick goes first, in the same write
        elif held:
            self._release(held)

    def _send(self, room: LocalRoom, msg: dict[str, Any]) -> None:
        """The ambient lane: one frame per lane; connections over the soft limit skip it."""
        soft = self._soft_limit
        reap = self._registry.reap_dead
        stats = self._stats
        # a buyer who clicked since the room's last tick (its answers carry units_left) has its tick held for its
        # next frame too, at the latest until the next tick: in a click storm the ticks ride on the answers
        active_since = time.monotonic() - self.tick_s * self.stride()
        held: list[Conn] = []
        stats["ambient_deliveries"] += len(room.text) + len(room.bin)  # less the skipped ones, counted below
        for conns, binary in ((room.text, False), (room.bin, True)):
            if not conns:
                continue
            fr = frame(encode_msgpack(msg), BINARY) if binary else frame(orjson.dumps(msg), TEXT)
            for c in list(conns):
                if c.dead or c.transport.get_write_buffer_size() > soft:
                    if not c.dead:
                        c.skipped += 1
                        stats["skipped"] += 1
                    stats["ambient_deliveries"] -= 1
                    if not c.write(b""):  # closes it past the hard limit; reaps closed ones
                        reap(c)
                    continue
                if (c.inflight or c.clicked > active_since) and c.out is None and c.ambient is None:
                    c.defer(fr)  # an answer is on its way: one send() for both (stream_gateway/connection.py)
                    held.append(c)
                    stats["ambient_deferred"] += 1
                elif not c.write(fr):  # a tick held since the last one goes first
                    reap(c)
        if held:
            self._held[room.room_id] = held

    def _release(self, held: list[Conn]) -> None:
        """Held ticks still waiting (no frame of their connection came by the next tick): written now."""
        reap = self._registry.reap_dead
        for c in held:
            if c.ambient is not None and not c.dead and not c.write(b""):  # write(): the held tick goes first
                reap(c)
