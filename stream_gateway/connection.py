"""One viewer connection: identity, limits, and the non-blocking write path with backpressure policy."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from commerce.identity import ANONYMOUS, Identity
from .frames import BINARY, TEXT, close_frame, frame
from .messages import encode_json, encode_msgpack
from .outbox import Outbox

__all__ = ["Conn", "TokenBucket", "CLOSE_SLOW", "CLOSE_HEARTBEAT", "CLOSE_POLICY", "CLOSE_GOING_AWAY", "CLOSES"]

CLOSE_SLOW = 4008        # write buffer over the hard limit: reconnect and resume / resync
CLOSE_HEARTBEAT = 4001   # nothing heard for two heartbeat intervals
CLOSE_POLICY = 1008      # inbound flood
CLOSE_GOING_AWAY = 1001

# connections of this process closed for a full write buffer (4008), read by server/metrics.py
CLOSES = {"slow": 0}


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class Conn:
    __slots__ = ("ws", "transport", "binary", "identity", "room_id", "last_seen", "dead", "session",
                 "buys", "comments", "flood_window", "flood_count", "hard_limit", "skipped", "inflight",
                 "_settled", "addr", "_acts", "team", "joined_ms", "device", "watched", "reading", "out", "outbox",
                 "ambient", "clicked")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, binary: bool,
                 buy_rate: float, comment_rate: float, hard_limit: int, outbox: Outbox | None = None) -> None:
        self.ws = ws
        self.transport = transport
        self.binary = binary
        self.identity: Identity = ANONYMOUS
        self.room_id: str | None = None
        self.last_seen = time.monotonic()
        self.dead = False
        self.session = secrets.token_hex(4)
        self.buys = TokenBucket(buy_rate, max(2.0, buy_rate * 2))
        self.comments = TokenBucket(comment_rate, 3.0)
        self._acts: TokenBucket | None = None  # made on the first interaction request (`acts`)
        self.team: str | None = None  # the viewer's fan team in the joined room (comments carry it)
        self.joined_ms = 0  # when this connection joined its room (server clock): a draw's watch time
        self.device = ""  # the page's per-browser id (`join.device`): who an anonymous watcher is in signals
        self.watched = ""  # the pin this viewer's `watched` signal was recorded for (stream_gateway/interest.py)
        self.flood_window = 0
        self.flood_count = 0
        self.hard_limit = hard_limit
        self.skipped = 0
        self.inflight = 0  # requests accepted and not answered yet (buys in a reserve batch)
        self._settled: asyncio.Future[None] | None = None
        self.addr = ""  # the client's address (commerce.addresses), for the per-address limits
        self.reading = False  # the read loop is waiting for the next message (idle): one may be handled directly
        self.outbox = outbox  # None: every frame is its own transport write (no coalescing)
        self.out: list[bytes] | None = None  # frames queued in this loop iteration (stream_gateway/outbox.py)
        self.ambient: bytes | None = None  # a tick held back for the answer on its way (``defer``)
        self.clicked = 0.0  # when this connection last sent a buy (monotonic s): ticks wait for its answers

    @property
    def acts(self) -> TokenBucket:
        """The bucket of join_team, vote, claim_coupon and enter_draw: 5 per second, burst 5."""
        if self._acts is None:
            self._acts = TokenBucket(5.0, 5.0)
        return self._acts

    def answered(self) -> None:
        """One accepted request got its answer (the caller sends it next, a held tick in front of it)."""
        self.inflight -= 1
        if not self.inflight and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def defer(self, data: bytes) -> None:
        """An ambient frame (a tick) for a connection with an answer on its way: it leaves in the same write
        as that answer, or with any other frame written to the connection before it; at the latest with
        the room's next tick (the ticker writes it then, before the new one). Order is kept: a held frame
        always goes out before anything written after it."""
        self.ambient = data if self.ambient is None else self.ambient + data

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) until every accepted request has been answered, e.g. before closing."""
        if self.inflight:
            self._settled = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._settled, timeout)
            except TimeoutError:
                pass
            finally:
                self._settled = None

    def send(self, obj: Mapping[str, Any]) -> None:
        """A personal message (critical lane): encoded for this connection, never skipped; coalesced with the
        connection's other frames of this loop iteration (``queue``)."""
        if self.binary:
            self.queue(frame(encode_msgpack(obj), BINARY))
        else:
            self.queue(frame(encode_json(obj), TEXT))

    def queue(self, data: bytes) -> bool:
        """One frame for this connection alone (an answer, a join's snapshot): it leaves with the connection's
        other frames of this iteration in one write (stream_gateway/outbox.py). False when the connection is
        gone (or was just closed as a slow consumer)."""
        if self.ambient is not None:  # a held tick was composed before this frame: it goes first
            data, self.ambient = self.ambient + data, None
        out = self.out
        if out is not None and not self.dead:  # already checked in this iteration: ride along
            out.append(data)
            return True
        if not self._writable():
            return False
        ob = self.outbox
        if ob is None:
            self.transport.write(data)
        else:
            self.out = [data]
            ob.add(self)
        return True

    def write(self, data: bytes) -> bool:
        """One frame of a broadcast (the same bytes to every connection of a room: events, ticks, pings):
        written at once, unless frames of this iteration are queued for the connection, which it follows.
        A broadcast gives each connection one frame, so deferring it would save no write, only cost
        (measured: +10% CPU per fan-out delivery). False when the connection is gone."""
        if self.ambient is not None:
            data, self.ambient = self.ambient + data, None
        out = self.out
        if out is not None and not self.dead:
            out.append(data)
            return True
        if self.dead:  # _writable() inlined: this runs once per connection per broadcast
            return False
        t = self.transport
        if t.is_closing():
            self.dead = True
            return False
        if t.get_write_buffer_size() > self.hard_limit:
            CLOSES["slow"] += 1
            self.kill(CLOSE_SLOW, "slow consumer: resync")
            return False
        t.write(data)
        return True

    def _writable(self) -> bool:
        """Open and under the hard write-buffer limit (else closed as a slow consumer, 4008)."""
        if self.dead:
            return False
        t = self.transport
        if t.is_closing():
            self.dead = True
            return False
        if t.get_write_buffer_size() > self.hard_limit:
            CLOSES["slow"] += 1
            self.kill(CLOSE_SLOW, "slow consumer: resync")
            return False
        return True

    def flush(self) -> None:
        """Hand this iteration's frames to the transport as one write (also before any close frame)."""
        out = self.out
        if self.ambient is not None:  # only before a close: every other write takes it along
            out, self.ambient = (out or []) + [self.ambient], None
        if out is None:
            return
        self.out = None
        t = self.transport
        if t.is_closing():
            self.dead = True
        elif len(out) == 1:
            t.write(out[0])
        else:
            t.write(b"".join(out))
            if self.outbox is not None:
                self.outbox.frames_saved += len(out) - 1

    def kill(self, code: int, reason: str) -> None:
        """Close without awaiting the peer: the queued frames, a close frame, then drop the transport shortly."""
        if self.dead:
            return
        self.flush()
        self.dead = True
        t = self.transport
        if not t.is_closing():
            t.write(close_frame(code, reason))
            asyncio.get_running_loop().call_later(2.0, t.abort)

    def would_flood(self, limit: int, now: float) -> bool:
        """True when one more inbound message at ``now`` (monotonic s) would be over ``limit`` (nothing counted)."""
        return self.flood_count >= limit and int(now) == self.flood_window

    def flood(self, limit: int, now: float) -> bool:
        """Count an inbound message arriving at ``now`` (monotonic s); True when more than ``limit`` arrived
        within this second."""
        second = int(now)
        if second != self.flood_window:
            self.flood_window, self.flood_count = second, 0
        self.flood_count += 1
        return self.flood_count > limit
