"""The WebSocket endpoint: handshake, join, and dispatch of client messages to the room service."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import WSMsgType, web

from inventory.domain import InvalidInput, ReserveCode, ReserveResult
from commerce.identity import ANONYMOUS, TokenError, verify_token
from .connection import CLOSE_POLICY, Conn
from .hub import Hub, LocalRoom
from .lingering import GatewaySocket
from .messages import (
    HOST_ACTIONS, PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Inbound, ProtocolError, parse_inbound,
)
from commerce.service import ActionError, RoomService

__all__ = ["Gateway", "FLOOD_LIMIT"]

log = logging.getLogger(__name__)

FLOOD_LIMIT = 50  # inbound messages per second before the socket is closed


@dataclass
class GatewayLimits:
    max_msg: int
    buy_rate: float
    comment_rate: float
    tick_ms: int
    soft_limit: int
    hard_limit: int


class Gateway:
    def __init__(self, hub: Hub, service: RoomService, secret: str, limits: GatewayLimits) -> None:
        self.hub = hub
        self.service = service
        self.secret = secret
        self.limits = limits
        self.connections: set[Conn] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = GatewaySocket(protocols=(SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK), compress=False,
                           max_msg_size=self.limits.max_msg, autoping=False, heartbeat=None)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        lim = self.limits
        conn = Conn(ws, transport, ws.ws_protocol == SUBPROTOCOL_MSGPACK, lim.buy_rate, lim.comment_rate,
                    lim.hard_limit)
        self.connections.add(conn)
        self.hub.all.add(conn)
        conn.send({"type": "hello", "v": PROTOCOL_VERSION, "server_time": self.hub.now_ms(), "session": conn.session,
                   "limits": {"max_msg": lim.max_msg, "buy_rate": lim.buy_rate, "comment_rate": lim.comment_rate,
                              "tick_ms": lim.tick_ms}})
        try:
            while not conn.dead:
                msg = await ws.receive()
                conn.last_seen = time.monotonic()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if conn.flood(FLOOD_LIMIT):
                        await conn.settle(2.0)  # the buys already accepted get their answers first
                        await ws.close(code=CLOSE_POLICY, message=b"too many messages")
                        break
                    await self._on_message(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    continue
                else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. oversized message: aiohttp closes with 1009)
                    break
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            conn.dead = True
            self.connections.discard(conn)
            self.hub.all.discard(conn)
            self.hub.remove(conn)
            if not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), 1.0)
                except Exception:
                    transport.abort()
            await ws.wait_lingering()  # an oversize message: the client reads its 1009, then we close
        return ws

    async def _on_message(self, conn: Conn, data: bytes | str) -> None:
        try:
            m = parse_inbound(data)
        except ProtocolError as e:
            conn.send(_error(e.code, e.message, e.rid))
            return
        try:
            await self._dispatch(conn, m)
        except ProtocolError as e:
            conn.send(_error(e.code, e.message, m.rid))
        except ActionError as e:
            conn.send(_error(e.code, e.message, m.rid))
        except InvalidInput as e:
            conn.send(_error("INVALID", e.message, m.rid))
        except Exception:
            log.exception("handling %s failed", m.type)
            conn.send(_error("INTERNAL", "the server could not complete this request; retry", m.rid))

    async def _dispatch(self, conn: Conn, m: Inbound) -> None:
        t = m.type
        if t == "clock":
            t1 = self.hub.now_ms()
            out = {"type": "clock", "t0": m["t0"], "t1": t1, "t2": self.hub.now_ms()}
            if m.rid:
                out["rid"] = m.rid
            conn.send(out)
            return
        if t == "ping":
            conn.send({"type": "pong", "rid": m.rid} if m.rid else {"type": "pong"})
            return
        if t == "join":
            await self._join(conn, m)
            return
        room_id = conn.room_id
        if room_id is None:
            raise ProtocolError("NOT_JOINED", f"join a room before sending {t}")
        ident = conn.identity
        if t in HOST_ACTIONS:
            if not ident.hosts(room_id):
                raise ActionError("FORBIDDEN" if ident.role != "anonymous" else "UNAUTHORIZED",
                                  f"{t} is a host action; this connection has no host token for room {room_id}")
            await self._host_action(conn, room_id, m)
            return
        if not ident.is_viewer:
            if t == "buy":
                conn.send({"type": "buy_result", "rid": m.rid, "code": "UNAUTHORIZED", "sale": m["sale"],
                           "qty": m["qty"], "units_left": None,
                           "message": "buying needs a viewer token: join with a token"})
                return
            raise ActionError("UNAUTHORIZED", f"{t} needs a viewer token: join with a token")
        if t == "buy":
            local = self.hub.rooms.get(room_id)
            if local is not None and m["sale"] not in local.state.sales:  # only this room's sales
                conn.send({"type": "buy_result", "rid": m.rid, "code": "NOT_FOUND", "sale": m["sale"],
                           "qty": m["qty"], "units_left": None})
                return
            if not conn.buys.take():
                conn.send({"type": "buy_result", "rid": m.rid, "code": "RATE_LIMITED", "sale": m["sale"],
                           "qty": m["qty"], "units_left": None})
                return
            conn.inflight += 1
            self.service.submit_buy(ident, room_id, m["sale"], m["qty"], m.rid, partial(_answer_buy, conn, m))
        elif t == "pay":
            if not conn.buys.take():
                conn.send({"type": "pay_result", "rid": m.rid, "code": "RATE_LIMITED", "hold": m["hold"]})
                return
            c = await self.service.pay(ident, m["hold"])
            out = {"type": "pay_result", "rid": m.rid, "code": c.code.value, "hold": m["hold"]}
            if c.order_id:
                out["order"] = c.order_id
            conn.send(out)
        elif t == "release":
            if not conn.buys.take():
                conn.send({"type": "release_result", "rid": m.rid, "code": "RATE_LIMITED", "hold": m["hold"]})
                return
            rel = await self.service.release(ident, m["hold"])
            conn.send({"type": "release_result", "rid": m.rid, "code": rel.code.value, "hold": m["hold"]})
        elif t == "comment":
            room = self.hub.rooms.get(room_id)
            if room is not None and ident.user in room.state.muted:
                raise ActionError("MUTED", "the host muted you in this room")
            if not conn.comments.take():
                raise ActionError("RATE_LIMITED", "too many comments; slow down")
            await self.service.comment(ident, room_id, m["text"])
        elif t == "like":
            await self.service.like(room_id, m["n"])

    async def _join(self, conn: Conn, m: Inbound) -> None:
        identity = ANONYMOUS
        if m["token"]:
            try:
                identity = verify_token(self.secret, m["token"])
            except TokenError as e:
                raise ActionError("UNAUTHORIZED", str(e)) from None
        if conn.room_id is not None:
            self.hub.remove(conn)  # under the identity it joined with: by_user is keyed by it
        conn.identity = identity
        room: LocalRoom = await self.hub.room(m["room"])
        if not room.state.exists:
            self.hub.drop_if_unused(room)
            raise ActionError("NOT_FOUND", f"no room {m['room']}")
        if conn.dead:
            return
        self.hub.add(conn, room)
        self.hub.resume_or_snapshot(conn, room, m["resume"])

    async def _host_action(self, conn: Conn, room_id: str, m: Inbound) -> None:
        s = self.service
        t = m.type
        extra: dict[str, Any] = {}
        if t == "go_live":
            await s.set_status(room_id, "live")
        elif t == "end_live":
            await s.set_status(room_id, "ended")
        elif t == "pin":
            await s.pin(room_id, m["product"])
        elif t == "unpin":
            await s.unpin(room_id)
        elif t == "announce":
            await s.announce(room_id, m["text"])
        elif t == "hide_comment":
            await s.hide_comment(room_id, m["comment"])
        elif t == "mute":
            await s.mute(room_id, m["user"])
        elif t == "end_sale":
            await s.end_sale(room_id, m["sale"])
        elif t == "launch_sale":
            extra["sale"] = await s.launch_sale(
                room_id, m["product"], m["units"], price=m["price"], per_user_limit=m["limit"],
                starts_in_s=m["starts_in_s"], duration_s=m["duration_s"], hold_ttl_s=m["hold_ttl_s"],
                sale_id=m["sale_id"])
        conn.send({"type": "ok", "rid": m.rid, "action": t, **extra})

    async def close_all(self) -> None:
        await self.hub.stop()


def _answer_buy(conn: Conn, m: Inbound, r: ReserveResult | BaseException) -> None:
    """The reservation's outcome, to this viewer only (called from the batch's result loop)."""
    conn.answered()
    if isinstance(r, BaseException):
        log.warning("buy %s failed: %s", m.rid, r)
        conn.send(_error("INTERNAL", "the server could not complete this request; retry", m.rid))
        return
    out: dict[str, Any] = {"type": "buy_result", "rid": m.rid, "code": r.code.value, "sale": m["sale"],
                           "qty": m["qty"], "units_left": r.available}
    if r.code is ReserveCode.RESERVED:
        out["hold"] = r.hold_id
        out["pay_by"] = r.pay_by_ms
    elif r.code is ReserveCode.NOT_STARTED:
        out["starts_at"] = r.pay_by_ms
    conn.send(out)


def _error(code: str, message: str, rid: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if rid:
        out["rid"] = rid
    return out
