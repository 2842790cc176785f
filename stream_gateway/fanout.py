"""Room messages from the bus onto this process's connections.

- Critical lane: a sequenced event is framed once (the JSON bytes from Redis are the wire payload,
  msgpack encoded once for binary connections) and the same bytes are written to every connection.
  Never skipped; a connection over the hard write-buffer limit is closed (4008).
- Ambient messages (comments, likes, "just bought") are only collected here; the ticker sends them.
- A join gets the events it missed from the replay ring, or a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from .connection import Conn
from .decisions import LIKES, MAX_TICK_ITEMS, UNITS, EventVerdict, can_resume, event_verdict
from .frames import BINARY, TEXT, frame
from .messages import encode_msgpack
from .rooms import LocalRoom, RoomRegistry

__all__ = ["RoomFeed"]

log = logging.getLogger(__name__)

SALE_TIMING_EVENTS = frozenset({"sale_scheduled", "sale_open", "sale_closed"})
UNITS_EVENTS = frozenset({"sale_open", "sale_sold_out", "sale_scheduled"})


class RoomFeed:
    def __init__(self, registry: RoomRegistry, now_ms: Callable[[], int], stats: dict[str, int], *,
                 on_gap: Callable[[LocalRoom], None], on_sales_changed: Callable[[LocalRoom], None]) -> None:
        self._registry = registry
        self._now_ms = now_ms
        self._stats = stats
        self._on_gap = on_gap                      # reload the room (seq gap, new epoch)
        self._on_sales_changed = on_sales_changed  # re-arm its sale timers

    def dispatch(self, room: LocalRoom, data: bytes) -> None:
        """One message from the room's channel: ``E`` sequenced event, ``A`` ambient, ``U`` to a user."""
        kind, payload = data[:1], data[1:]
        if kind == b"E":
            if room.loading:
                room.pending.append(payload)
            else:
                self.on_event(room, payload)
        elif kind == b"A":
            self._on_ambient(room, orjson.loads(payload))
        elif kind == b"U":
            msg = orjson.loads(payload)
            for c in list(room.by_user.get(msg["u"], ())):
                c.send(msg["m"])

    def on_event(self, room: LocalRoom, payload: bytes) -> None:
        ev = orjson.loads(payload)
        st = room.state
        seq = ev["seq"]
        verdict = event_verdict(st.epoch, st.seq, ev["epoch"], seq)
        if verdict is EventVerdict.RESYNC:
            log.info("room %s: seq gap or new epoch (have %s/%s, got %s/%s): resync", room.room_id,
                     st.epoch, st.seq, ev["epoch"], seq)
            room.loading = True
            room.pending.append(payload)
            self._on_gap(room)
            return
        if verdict is EventVerdict.STALE:
            return
        st.apply(ev)
        room.ring.append((seq, payload))
        self._stats["events"] += 1
        self._fanout_critical(room, payload, ev)
        t = ev["type"]
        if t in SALE_TIMING_EVENTS:
            self._on_sales_changed(room)
        if t in UNITS_EVENTS:
            room.dirty.add(UNITS)

    def _fanout_critical(self, room: LocalRoom, payload: bytes, ev: dict[str, Any]) -> None:
        reap = self._registry.reap_dead
        self._stats["critical_deliveries"] += len(room.text) + len(room.bin)
        if room.text:
            data = frame(payload, TEXT)
            for c in list(room.text):
                if not c.write(data):
                    reap(c)
        if room.bin:
            data = frame(encode_msgpack(ev), BINARY)
            for c in list(room.bin):
                if not c.write(data):
                    reap(c)

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
                room.dirty.add(LIKES)
        elif k == "b":
            room.bought.append(amb["b"])
            del room.bought[:-MAX_TICK_ITEMS]
            room.dirty.add(UNITS)
        elif k == "x":  # interaction live counts (commerce/live_counts.py): merged per kind and id
            for kind, value in amb["x"].items():
                if isinstance(value, dict):
                    st.live.setdefault(kind, {}).update(value)
                    room.live.setdefault(kind, {}).update(value)
                else:
                    st.live[kind] = room.live[kind] = value

    def resume_or_snapshot(self, conn: Conn, room: LocalRoom, resume: tuple[str, int] | None) -> bool:
        """Send what a joining connection needs, synchronously (no event can slip in between)."""
        st = room.state
        if resume is not None:
            epoch, seq = resume
            if can_resume(epoch, seq, st.epoch, st.seq, room.ring[0][0] if room.ring else None):
                conn.send({"type": "resumed", "recovered": True, "epoch": st.epoch, "from_seq": seq,
                           "to_seq": st.seq})
                for s, payload in room.ring:
                    if s > seq:
                        conn.write(_encode_event(payload, conn.binary))
                self._stats["resumed"] += 1
                return True
        conn.send(st.snapshot(self._now_ms(), _you(conn)))
        self._stats["snapshots"] += 1
        return False

    def send_snapshots(self, room: LocalRoom) -> None:
        """A fresh snapshot to everyone in the room (after a resync)."""
        for c in room.conns():
            snap = room.state.snapshot(self._now_ms(), _you(c))
            data = frame(encode_msgpack(snap), BINARY) if c.binary else frame(orjson.dumps(snap), TEXT)
            if not c.write(data):
                self._registry.reap_dead(c)


def _you(conn: Conn) -> dict[str, Any]:
    return {"user": conn.identity.user, "name": conn.identity.name, "role": conn.identity.role, "team": conn.team}


def _encode_event(payload: bytes, binary: bool) -> bytes:
    if binary:
        return frame(encode_msgpack(orjson.loads(payload)), BINARY)
    return frame(payload, TEXT)
