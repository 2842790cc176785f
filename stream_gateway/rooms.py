"""The rooms this gateway process serves and who is in them (membership only, no I/O)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from commerce.room_state import RoomState
from inventory.keys import room_keys

from .connection import Conn
from .decisions import VIEWERS

__all__ = ["LocalRoom", "RoomRegistry", "new_stats"]


def new_stats() -> dict[str, int]:
    """The hub's plain counters, shared by its parts (read by server/metrics.py): deliveries are frames
    written, +n per fan-out to n sockets (ambient ones less those skipped)."""
    return {"events": 0, "ticks": 0, "slow_closed": 0, "skipped": 0, "resyncs": 0,
            "critical_deliveries": 0, "ambient_deliveries": 0, "ambient_deferred": 0, "ambient_shed": 1,
            "resumed": 0, "snapshots": 0}


class LocalRoom:
    """One loaded room: its state, local connections by lane and user, the replay ring, and what its
    next tick carries (``comments``, ``bought``, ``dirty``; see ``decisions.tick_message``)."""

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
        self.pending: list[bytes] = []  # events that arrived while loading, applied after it
        self.comments: list[dict[str, Any]] = []
        self.bought: list[dict[str, Any]] = []
        self.dirty: set[str] = set()
        self.live: dict[str, Any] = {}  # interaction live counts since the last tick (teams, polls, drops, draws)
        self.empty_since: float | None = None

    @property
    def size(self) -> int:
        return len(self.text) + len(self.bin)

    def conns(self) -> list[Conn]:
        return [*self.text, *self.bin]


class RoomRegistry:
    """Loaded rooms (by id and by channel), every open connection, and who joined which room."""

    def __init__(self, stats: dict[str, int]) -> None:
        self.rooms: dict[str, LocalRoom] = {}
        self.by_channel: dict[bytes, LocalRoom] = {}
        self.all: set[Conn] = set()  # every open connection, joined or not (heartbeat covers them all)
        self._stats = stats

    def register(self, room: LocalRoom) -> None:
        self.rooms[room.room_id] = room
        self.by_channel[room.channel] = room

    def forget(self, room: LocalRoom) -> None:
        self.rooms.pop(room.room_id, None)
        self.by_channel.pop(room.channel, None)

    def connections(self) -> int:
        """Joined connections over every local room."""
        return sum(r.size for r in self.rooms.values())

    def add(self, conn: Conn, room: LocalRoom) -> None:
        (room.bin if conn.binary else room.text).add(conn)
        if conn.identity.user:
            room.by_user.setdefault(conn.identity.user, set()).add(conn)
        conn.room_id = room.room_id
        room.empty_since = None
        room.dirty.add(VIEWERS)

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
        room.dirty.add(VIEWERS)

    def reap_dead(self, conn: Conn) -> None:
        """Take a connection that a write found dead (slow, closed) out of its room."""
        if conn.dead and conn.room_id is not None:
            self._stats["slow_closed"] += 1
            self.remove(conn)
