"""Interest signals the gateway sees (docs/PROTOCOL.md, Interest signals): who joined and left a room
and for how long, and who watched a pinned product long enough (``watched``). Recording is an append
to the process's ``commerce.signals`` buffer; nothing here waits on I/O.

``WatchSignals.check(room, now)`` runs once a second per loaded room (the ticker's viewer round): a
viewer present since the product was pinned (or since joining, whichever is later) for at least
``watch_ms`` records one ``watched`` signal per pin. Hosts (host tokens) are not the audience: nothing is
recorded for them.
"""

from __future__ import annotations

from commerce.signals import Signals, SignalKind, viewer_key

from .connection import Conn
from .rooms import LocalRoom

__all__ = ["WatchSignals", "who"]


def who(conn: Conn) -> str:
    """The viewer a signal is about: the token's user, the page's browser id, or the session."""
    return viewer_key(conn.identity.user, conn.device, conn.session)


class WatchSignals:
    def __init__(self, signals: Signals, watch_ms: int) -> None:
        self.signals = signals
        self.watch_ms = watch_ms
        self._pins: dict[str, tuple[str, int]] = {}  # room -> (pinned product, pinned since, ms)

    def joined(self, conn: Conn, room_id: str) -> None:
        if conn.identity.role == "host":  # hosts and moderators are not the audience
            return
        self.signals.record(SignalKind.JOIN, who(conn), room_id, ref=conn.session, at_ms=conn.joined_ms)

    def left(self, conn: Conn, room_id: str, now_ms: int) -> None:
        if conn.identity.role == "host":
            return
        self.signals.record(SignalKind.LEAVE, who(conn), room_id, ref=conn.session,
                            value=max(0, now_ms - conn.joined_ms), at_ms=now_ms)

    def check(self, room: LocalRoom, now_ms: int) -> None:
        if not self.signals.enabled:
            return
        pinned = room.state.pinned
        product = str(pinned.get("product_id", "")) if pinned else ""
        seen = self._pins.get(room.room_id)
        if seen is None or seen[0] != product:
            seen = self._pins[room.room_id] = (product, now_ms)
        if not product:
            return
        since = seen[1]
        mark = f"{product}@{since}"
        for conn in room.conns():
            if conn.watched == mark or conn.identity.role == "host":
                continue
            if now_ms - max(since, conn.joined_ms) >= self.watch_ms:
                conn.watched = mark
                self.signals.record(SignalKind.WATCHED, who(conn), room.room_id, product=product,
                                    value=(now_ms - max(since, conn.joined_ms)) // 1000, at_ms=now_ms)

    def forget(self, room_id: str) -> None:
        self._pins.pop(room_id, None)
