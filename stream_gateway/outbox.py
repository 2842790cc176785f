"""Coalesced writes: the frames a connection gets within one event-loop iteration leave in one ``send()``.

A join's hello + snapshot + shelf, a resume's replayed events, the answers to several messages that arrived
in one TCP segment, a buy result and the tick or event that follows it: each personal frame of an iteration
(``Conn.queue``, ``Conn.send``) goes into the connection's list, and one callback at the end of the
iteration (``loop.call_soon``, scheduled once per iteration for every connection) hands each list to the
transport as one write. A broadcast frame (``Conn.write``: a room event, a tick, a ping: one frame for each
of thousands of connections) is written at once, since deferring it saves no write and measured +10% CPU per
fan-out delivery, unless the connection has frames queued: then it joins them, after them. Order per
connection is the order of the calls; a frame never waits longer than the rest of the current iteration.

Anything else that writes to the socket goes through ``Conn.flush`` first, so nothing overtakes what is
queued here: ``Conn.kill`` (the close frame after the queued answers) and ``GatewaySocket.close`` (aiohttp's
own close handshake) both flush before writing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["Outbox"]

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...


class Outbox:
    """The connections with frames queued in this iteration; flushed once at its end."""

    __slots__ = ("_dirty", "_scheduled", "flushes", "frames_saved")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self.flushes = 0       # connections flushed (one transport write each)
        self.frames_saved = 0  # frames that rode along in another frame's write (read by tests and metrics)

    def add(self, conn: Flushable) -> None:
        """``conn`` has its first frame of this iteration queued: flush it at the iteration's end."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self.flushes += len(dirty)
        for c in dirty:
            try:
                c.flush()
            except Exception:  # one broken transport must not keep the others' frames
                log.exception("flushing a connection's frames failed")
