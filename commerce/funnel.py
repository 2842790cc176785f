"""The host's live funnel: counted in memory, flushed to Redis each second.

Two measures per room:

- **unique viewers per step** (``viewers -> tapped -> reserved -> paid``): the user ids seen since the
  last flush are kept per room and step in memory and added with ``PFADD`` to one HyperLogLog per step
  (``<room funnel key>:u:<step>``, in the room's hash slot); ``PFCOUNT`` reads them (an estimate:
  exact for small counts, within about 1% for large ones). A user counted at a step is also added to
  every step before it (a payer has reserved and tapped; a buyer over HTTP who never joined the
  room's socket is a viewer), so the steps are nested sets and the answer is clamped to
  ``viewers >= tapped >= reserved >= paid``.
- **requests** (``tapped`` / ``reserved`` / ``paid``): every decided reserve request, every reservation,
  every confirmed hold, in the room's funnel hash (what ``room_archive`` keeps).

Every flush gives the room's funnel keys the room's TTL the way ``publish.lua`` does (the ended window
once the room's meta says it ended, else the room window), so they expire with the room's other keys.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from inventory.keys import room_keys

from .lua_scripts import script
from .room_bus import RoomBus
from .tasks import OwnedTasks

__all__ = ["Funnel", "STEPS", "REQUESTS", "unique_keys"]

log = logging.getLogger(__name__)

STEPS = ("viewers", "tapped", "reserved", "paid")  # unique users, each step a subset of the one before
_TAPPED, _RESERVED = STEPS.index("tapped"), STEPS.index("reserved")
REQUESTS = ("tapped", "reserved", "paid")          # request counters (the funnel hash)

_CHUNK = 2000  # user ids per PFADD call at most (a script's arguments stay small)


def unique_keys(room_id: str) -> list[str]:
    """The HyperLogLog of each step (``STEPS`` order), next to the room's funnel hash (same hash tag)."""
    base = room_keys(room_id).funnel
    return [f"{base}:u:{step}" for step in STEPS]


class Funnel:
    """Per-room counters and user sets; ``count`` and ``seen`` are synchronous (the buy path and the
    join call them), the flush is batched."""

    def __init__(self, bus: RoomBus, interval_s: float = 1.0) -> None:
        self.bus = bus
        self.interval_s = interval_s
        self._counts: dict[str, dict[str, int]] = {}
        self._users: dict[str, list[set[str]]] = {}  # room -> one set per step (STEPS order)
        self._flush = script(bus.redis, "funnel_flush")  # commerce/lua/funnel_flush.lua
        self._tasks = OwnedTasks(log, "funnel flush")

    def count(self, room_id: str, field: str, user: str = "") -> None:
        """One request of ``field`` (tapped / reserved / paid); ``user``: who made it (unique counts)."""
        room = self._counts.setdefault(room_id, {})
        room[field] = room.get(field, 0) + 1
        if user and field in STEPS:
            self._add(room_id, STEPS.index(field), user)

    def tapped(self, room_id: str, user: str, reserved: bool) -> None:
        """A buy decided (not a replay): ``tapped``, and ``reserved`` when it got a hold; the same counts as
        ``count`` for each, with the buyer added to each step once (one call per click)."""
        room = self._counts.setdefault(room_id, {})
        room["tapped"] = room.get("tapped", 0) + 1
        if reserved:
            room["reserved"] = room.get("reserved", 0) + 1
        if user:
            self._add(room_id, _RESERVED if reserved else _TAPPED, user)

    def seen(self, room_id: str, user: str) -> None:
        """A viewer joined the room (the gateway's join): the ``viewers`` step."""
        if user and room_id:
            self._add(room_id, 0, user)

    def _add(self, room_id: str, step: int, user: str) -> None:
        sets = self._users.get(room_id)
        if sets is None:
            sets = self._users[room_id] = [set() for _ in STEPS]
        for s in sets[:step + 1]:  # a user at a step reached every step before it
            s.add(user)

    async def flush(self, room_id: str | None = None) -> None:
        """Write what was counted since the last flush. ``room_id``: also refresh that room's funnel TTLs
        when nothing was counted for it (``Commerce.archive_room``: the room just ended)."""
        counts, self._counts = self._counts, {}
        users, self._users = self._users, {}
        rooms = set(counts) | set(users)
        if room_id:
            rooms.add(room_id)
        for room in rooms:
            await self._write(room, counts.get(room, {}), users.get(room))

    async def _write(self, room_id: str, counts: dict[str, int], users: list[set[str]] | None) -> None:
        k = room_keys(room_id)
        keys = [k.meta, k.funnel, *unique_keys(room_id)]
        lists = [list(s) for s in users] if users else [[] for _ in STEPS]
        while True:  # big rooms: several script calls of at most _CHUNK ids each
            args: list[Any] = [self.bus.retain_room_ms, self.bus.retain_ended_ms, len(counts)]
            for f, n in counts.items():
                args += [f, n]
            budget = _CHUNK
            rest: list[list[str]] = []
            for ids in lists:
                take, left = ids[:budget], ids[budget:]
                budget -= len(take)
                args += [len(take), *take]
                rest.append(left)
            await self._flush(keys=keys, args=args)
            counts, lists = {}, rest
            if not any(lists):
                return

    async def counts(self, room_id: str) -> dict[str, int]:
        """The request counters (tapped / reserved / paid)."""
        return await self.bus.funnel(room_id)

    async def uniques(self, room_id: str) -> dict[str, int] | None:
        """Unique users per step (``PFCOUNT``, clamped so no step exceeds the one before); None when
        the room has no funnel keys (never counted, or expired)."""
        keys = unique_keys(room_id)
        async with self.bus.redis.pipeline(transaction=False) as p:
            p.exists(*keys)
            for key in keys:  # PFCOUNT by name: redis-py's cluster pipeline refuses its method (the keys
                p.execute_command("PFCOUNT", key)  # share the room's slot, so one shard answers all)
            present, *raw = await p.execute()
        if not present:
            return None
        out: dict[str, int] = {}
        prev: int | None = None
        for step, n in zip(STEPS, raw, strict=True):
            v = int(n) if prev is None else min(int(n), prev)
            out[step] = prev = v
        return out

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
