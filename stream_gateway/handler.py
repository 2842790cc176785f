"""The WebSocket endpoint: handshake, the socket's read loop, and routing of client messages to
``commerce``. Who may send what (joined, viewer, host, rate limits) is declared once per message
type in ``ROUTES``; every refusal and error is mapped to the wire in one place (``_on_message``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from aiohttp import WSMsgType, web

from commerce.addresses import AddressCount, AddressRate, Network, client_address
from commerce.errors import ErrorCode, Forbidden, NotFound, NotJoined, RateLimited, Refused, Unauthorized, as_error
from commerce.host_actions import HOST_ACTIONS
from commerce.identity import ANONYMOUS, TokenError, TokenVerifier
from commerce.deadline import LateAnswer
from commerce.meters import BuyMeter, ErrorMeter, RareLog
from commerce.service import Commerce
from commerce.signals import SignalKind
from inventory.domain import ReserveCode, ReserveResult

from . import messages as msg
from .connection import CLOSE_POLICY, Conn
from .hub import Hub
from .interest import WatchSignals, who
from .lingering import GatewaySocket
from .messages import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, BadInbound, Inbound, parse_inbound
from .outbox import Outbox

__all__ = ["Gateway", "GatewayLimits", "FLOOD_LIMIT", "ROUTES"]

log = logging.getLogger(__name__)

FLOOD_LIMIT = 50  # inbound messages per second before the socket is closed
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
_RETRY = "the server could not complete this request; retry"


_UNAVAILABLE_LOG = RareLog(log)  # a failover's UNAVAILABLE answers, one line a second


def _log_ids(conn: Conn, m: Inbound) -> dict[str, Any]:
    """A money-path message's ids for a log line's ``extra`` (server/logs.py): built only where something is
    logged, never per message on the hot path."""
    body = m.body
    return {"room_id": conn.room_id, "sale_id": getattr(body, "sale", None), "hold_id": getattr(body, "hold", None),
            "rid": m.rid}


@dataclass
class GatewayLimits:
    max_msg: int
    buy_rate: float
    comment_rate: float
    tick_ms: int
    soft_limit: int
    hard_limit: int
    guests: bool = False                   # guest tokens on (hello.limits.guests)
    conn_per_addr: int = 0                 # concurrent sockets per client address (0: no cap)
    join_rate_per_addr: float = 0.0        # joins per second per client address (0: no limit)
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For names the client


Refuse = Callable[[Inbound, str, str], dict[str, Any]]  # (message, code, why) -> the typed refusal


@dataclass(frozen=True, slots=True)
class Route:
    """How one message type is handled: ``run`` after the checks the flags ask for."""
    run: Callable[[Gateway, Conn, Inbound], Awaitable[Any] | None]
    joined: bool = True           # needs a joined room (else NOT_JOINED)
    viewer: bool = False          # needs a viewer (or host) token (else UNAUTHORIZED)
    host: bool = False            # needs a host token for the joined room (else FORBIDDEN / UNAUTHORIZED)
    bucket: str | None = None     # the Conn token bucket it draws from (else RATE_LIMITED)
    refuse: Refuse | None = None  # the typed reply that carries a refusal (buy/pay/release), else `error`
    answer_by: bool = False       # ``run`` returns the reply, sent if it is ready within the answer deadline
    sync: bool = field(init=False, default=False)  # handled start to end without awaiting (may run directly)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sync", not self.answer_by and not inspect.iscoroutinefunction(self.run))


class Gateway:
    def __init__(self, hub: Hub, commerce: Commerce, verifier: TokenVerifier, limits: GatewayLimits,
                 watch: WatchSignals | None = None) -> None:
        self.hub = hub
        self.commerce = commerce
        # join / leave / watched interest signals (stream_gateway/interest.py)
        self.watch = watch or WatchSignals(commerce.signals, 30_000)
        self.verifier = verifier  # HS256 secrets + the platform's JWKS (reloaded on an unknown kid)
        self.limits = limits
        self.connections: set[Conn] = set()
        self.per_addr = AddressCount(limits.conn_per_addr)
        self.joins = AddressRate(limits.join_rate_per_addr, 2 * limits.join_rate_per_addr)
        self.buys = BuyMeter()      # buy answers by code and click -> answer time (server/metrics.py)
        self.errors = ErrorMeter()  # Redis / database failures of requests
        self.direct = 0  # messages handled from the transport's data callback (``_direct``), not the read loop
        self.outbox = Outbox()  # a connection's frames of one loop iteration leave in one write

    async def handle(self, request: web.Request) -> web.StreamResponse:
        lim = self.limits
        addr = client_address(request.remote, request.headers.get("X-Forwarded-For"), lim.trusted_proxies)
        if not self.per_addr.acquire(addr):  # over LIVESALE_CONN_PER_ADDR: refused at the handshake
            return web.json_response({"error": {"code": "RATE_LIMITED", "message": (
                f"too many connections from your address (at most {lim.conn_per_addr}); retry later")}}, status=429)
        try:
            return await self._handle(request, addr)
        finally:
            self.per_addr.release(addr)

    async def _handle(self, request: web.Request, addr: str) -> web.StreamResponse:
        lim = self.limits
        ws = GatewaySocket(protocols=(SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK), compress=False,
                           max_msg_size=lim.max_msg, autoping=False, heartbeat=None)
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        conn = Conn(ws, transport, ws.ws_protocol == SUBPROTOCOL_MSGPACK, lim.buy_rate, lim.comment_rate,
                    lim.hard_limit, self.outbox)
        conn.addr = addr
        ws.before_close = conn.flush  # queued frames before any close frame
        ws.set_direct(partial(self._direct, conn))  # False (ordinary path only) when aiohttp's internals differ
        self.connections.add(conn)
        self.hub.all.add(conn)
        conn.send(msg.hello(self.hub.now_ms(), conn.session, {
            "max_msg": lim.max_msg, "buy_rate": lim.buy_rate, "comment_rate": lim.comment_rate,
            "tick_ms": lim.tick_ms, "guests": lim.guests, "payments": self.commerce.payments.mode.value}))
        try:
            await self._read_loop(conn, ws)
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            conn.dead = True
            ws.set_direct(None)  # the queue -> conn -> ws cycle
            self._left(conn)
            self.connections.discard(conn)
            self.hub.all.discard(conn)
            self.hub.remove(conn)
            if not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), 1.0)
                except Exception:
                    transport.abort()
            ws.before_close = None  # the ws -> conn cycle
            await ws.wait_lingering()  # an oversize message: the client reads its 1009, then we close
        return ws

    async def _read_loop(self, conn: Conn, ws: GatewaySocket) -> None:
        while not conn.dead:
            conn.reading = True  # idle: ``_direct`` may handle the next message itself
            frame = await ws.receive()
            conn.reading = False
            conn.last_seen = time.monotonic()
            if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                if conn.flood(FLOOD_LIMIT, conn.last_seen):
                    await conn.settle(2.0)  # the buys already accepted get their answers first
                    await ws.close(code=CLOSE_POLICY, message=b"too many messages")
                    return
                await self._on_message(conn, frame.data)
            elif frame.type == WSMsgType.PING:
                await ws.pong(frame.data)
            elif frame.type != WSMsgType.PONG:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. too big: 1009)
                return

    def _direct(self, conn: Conn, frame: Any) -> bool:
        """A joined socket's message handled from the transport's data callback (stream_gateway/direct.py),
        as the read loop would have handled it, when the read loop is idle (nothing in progress, nothing
        queued: the order of the connection's messages is kept) and its handling never awaits; False sends
        it through aiohttp's queue to the read loop (join, pay, comment, host actions, control frames, a
        message that floods, anything while the read loop is busy)."""
        if not conn.reading or conn.dead or conn.room_id is None or frame[0] not in _DATA or conn.ws.closed:
            return False
        now = time.monotonic()
        if conn.would_flood(FLOOD_LIMIT, now):  # the read loop closes the socket (1008) after the accepted buys
            return False
        try:
            m = parse_inbound(frame[1])
        except BadInbound as e:
            self._seen(conn, now)
            conn.send(msg.error(e.error.code, e.error.message, e.rid))
            return True
        route = ROUTES.get(m.type)
        if route is None or not route.sync:
            return False
        self._seen(conn, now)
        try:
            if self._allowed(conn, m, route):
                route.run(self, conn, m)
        except Exception as exc:
            self._failed(conn, m, exc)
        return True

    def _seen(self, conn: Conn, now: float) -> None:
        """What the read loop does for a data message before handling it: ``last_seen``, the flood count
        (not over the limit: ``_direct`` checked ``would_flood``); ``now``: when it arrived (monotonic)."""
        conn.last_seen = now
        conn.flood(FLOOD_LIMIT, now)
        self.direct += 1

    async def _on_message(self, conn: Conn, data: bytes | str) -> None:
        try:
            m = parse_inbound(data)
        except BadInbound as e:
            conn.send(msg.error(e.error.code, e.error.message, e.rid))
            return
        try:
            route = ROUTES[m.type]
            if self._allowed(conn, m, route):
                pending = route.run(self, conn, m)
                if route.answer_by:
                    reply = await self._in_time(m, pending)
                    conn.send(reply)
                elif pending is not None:
                    await pending
        except Exception as exc:
            self._failed(conn, m, exc)

    def _failed(self, conn: Conn, m: Inbound, exc: Exception) -> None:
        """A request's failure, answered as the typed ``error`` (and counted / logged)."""
        self.errors.seen("ws", exc)
        err = as_error(exc)
        if err is None:
            log.exception("handling %s failed", m.type, extra=_log_ids(conn, m))
            conn.send(msg.error("INTERNAL", _RETRY, m.rid))
        else:
            if err.code is ErrorCode.UNAVAILABLE:
                _UNAVAILABLE_LOG.note(m.type, exc)
            conn.send(msg.error(err.code, err.message, m.rid))

    async def _in_time(self, m: Inbound, pending: Any) -> Any:
        """The reply of a money request, or the retryable UNAVAILABLE once the answer deadline passes: the
        request goes on in the background (its reply dropped), and a retry with the same request id gets its
        outcome (the scripts and the payments are idempotent per request / hold; commerce/deadline.py)."""
        try:
            return await self.commerce.deadline.within(pending)
        except LateAnswer as late:
            return msg.error(ErrorCode.UNAVAILABLE, late.message, m.rid)

    def _allowed(self, conn: Conn, m: Inbound, route: Route) -> bool:
        """The route's checks; a refusal is raised (an ``error``) or sent as the typed reply."""
        if route.joined and conn.room_id is None:
            raise NotJoined(f"join a room before sending {m.type}")
        ident = conn.identity
        if route.host and not ident.hosts(conn.room_id or ""):
            error = Forbidden if ident.role != "anonymous" else Unauthorized
            raise error(f"{m.type} is a host action; this connection has no host token for room {conn.room_id}")
        if route.viewer and not ident.is_viewer:
            why = f"{m.type} needs a viewer token: join with a token"
            if m.type == "buy" and route.refuse is not None:  # buy answers with its own result
                conn.send(route.refuse(m, "UNAUTHORIZED", "buying needs a viewer token: join with a token"))
                self.buys.answered("UNAUTHORIZED", time.monotonic() - conn.last_seen)
                return False
            raise Unauthorized(why)
        if route.bucket is not None and not getattr(conn, route.bucket).take():
            if route.refuse is None:
                raise RateLimited(f"too many {m.type} requests; slow down")
            conn.send(route.refuse(m, "RATE_LIMITED", ""))
            if m.type == "buy":
                self.buys.answered("RATE_LIMITED", time.monotonic() - conn.last_seen)
            return False
        return True

    # -- session -----------------------------------------------------------------------------------

    def _clock(self, conn: Conn, m: Inbound) -> None:
        t1 = self.hub.now_ms()
        conn.send(msg.clock_reply(m.body.t0, t1, self.hub.now_ms(), m.rid))

    def _ping(self, conn: Conn, m: Inbound) -> None:
        conn.send(msg.pong(m.rid))

    async def _join(self, conn: Conn, m: Inbound) -> None:
        join: msg.Join = m.body
        if not self.joins.take(conn.addr):  # LIVESALE_JOIN_RATE_PER_ADDR
            raise RateLimited("too many joins from your address; retry in a second")
        identity = ANONYMOUS
        if join.token:
            try:
                identity = await self.verifier.verify_async(join.token)
            except TokenError as e:
                raise Unauthorized(str(e)) from None
        if conn.room_id is not None:
            self._left(conn)
            self.hub.remove(conn)  # under the identity it joined with: by_user is keyed by it
        conn.identity = identity
        conn.device = join.device or ""
        room = await self.hub.room(join.room)
        if not room.state.exists:
            self.hub.drop_if_unused(room)
            raise NotFound(f"no room {join.room}")
        if conn.dead:
            return
        conn.joined_ms = self.hub.now_ms()
        conn.team = None
        if room.state.teams and identity.user:  # a fan team member's comments carry the badge
            conn.team = await self.commerce.teams.team_of(room.room_id, identity.user)
        if join.ref and identity.is_viewer:  # arrived through a share link: first touch attributes
            await self.commerce.growth.arrived(identity, join.ref, room.room_id)
        if conn.dead:
            return
        self.hub.add(conn, room)
        self.watch.joined(conn, room.room_id)
        if conn.identity.role != "host":  # the live funnel's unique viewers (hosts are not audience)
            self.commerce.funnel.seen(room.room_id, who(conn))
        self.hub.resume_or_snapshot(conn, room, join.resume)
        if identity.is_viewer and len(room.state.products) >= 2:  # each viewer their own shelf (commerce/shelf.py)
            try:
                shelf = await self.commerce.shelf.message(identity.user, room.room_id, conn.team,
                                                          sorted(room.state.products))
            except Exception as exc:  # Redis away: the join stands, only the shelf is skipped
                log.warning("shelf for room %s not sent: %s", room.room_id, exc)
            else:
                if not conn.dead and conn.room_id == room.room_id:
                    conn.send(shelf)

    def _left(self, conn: Conn) -> None:
        """The connection leaves its room (closed, or joining another): its watch time is a signal."""
        if conn.room_id is not None:
            self.watch.left(conn, conn.room_id, self.hub.now_ms())

    # -- viewers -----------------------------------------------------------------------------------

    def _buy(self, conn: Conn, m: Inbound) -> None:
        room_id = conn.room_id
        local = self.hub.rooms.get(room_id or "")
        if local is not None and m.body.sale not in local.state.sales:  # only this room's sales
            conn.send(_buy_refusal(m, "NOT_FOUND", ""))
            self.buys.answered("NOT_FOUND", time.monotonic() - conn.last_seen)
            return
        conn.inflight += 1
        conn.clicked = conn.last_seen
        # conn.last_seen: when the read loop received this message (the click's latency starts there)
        self.commerce.checkout.submit_buy(conn.identity, room_id, m.body.sale, m.body.qty, m.rid or "",
                                          partial(_answer_buy, conn, m, self.buys, conn.last_seen))

    async def _pay(self, conn: Conn, m: Inbound) -> dict[str, Any]:
        try:
            c = await self.commerce.checkout.pay(conn.identity, m.body.hold, coupon=m.body.coupon)
        except Refused as e:  # a coupon refused (docs/PROTOCOL.md Coupon drops): nothing was paid
            return {**msg.pay_result(m.rid or "", e.code.value, m.body.hold), "message": e.message}
        out: dict[str, Any] = dict(msg.pay_result(m.rid or "", c.code.value, m.body.hold, c.order_id))
        if c.discount is not None:  # a coupon applied
            out.update(discount=c.discount, total=c.total, coupon=m.body.coupon)
        return out

    async def _checkout(self, conn: Conn, m: Inbound) -> dict[str, Any]:
        started = await self.commerce.payments.checkout(conn.identity, m.body.hold, coupon=m.body.coupon)
        return dict(msg.payment_started(m.rid or "", started))

    async def _release(self, conn: Conn, m: Inbound) -> dict[str, Any]:
        rel = await self.commerce.checkout.release(conn.identity, m.body.hold)
        return dict(msg.release_result(m.rid or "", rel.code.value, m.body.hold))

    async def _comment(self, conn: Conn, m: Inbound) -> None:
        room_id = conn.room_id or ""
        room = self.hub.rooms.get(room_id)
        muted = room is not None and conn.identity.user in room.state.muted
        await self.commerce.chat.comment(conn.identity, room_id, m.body.text, muted=muted, team=conn.team)
        if room is not None:  # a draw's keyword in a comment enters the draw (docs/PROTOCOL.md Lucky draws)
            text = m.body.text.casefold()
            hits = [d["draw_id"] for d in room.state.open_draws()
                    if (d.get("rule") or {}).get("keyword") and d["rule"]["keyword"].casefold() in text]
            if hits:
                await self.commerce.draws.on_comment(conn.identity, room_id, hits, self.hub.now_ms() - conn.joined_ms)

    def _view(self, conn: Conn, m: Inbound) -> None:
        """The viewer opened a product's details: an interest signal, no reply."""
        self.commerce.signals.record(SignalKind.VIEWED, who(conn), conn.room_id or "", product=m.body.product)

    async def _like(self, conn: Conn, m: Inbound) -> None:
        await self.commerce.chat.like(conn.room_id or "", m.body.n)
        if conn.team:
            self.commerce.teams.on_like(conn.room_id or "", conn.team, m.body.n)

    # -- interaction (docs/PROTOCOL.md Interaction) --------------------------------------------------

    async def _join_team(self, conn: Conn, m: Inbound) -> None:
        room_id = conn.room_id or ""
        joined = await self.commerce.teams.join(conn.identity, room_id, m.body.team)
        room = self.hub.rooms.get(room_id)
        for c in (room.by_user.get(conn.identity.user, ()) if room is not None else (conn,)):
            c.team = joined["team"]
        conn.send({"type": "team_joined", **({"rid": m.rid} if m.rid else {}), **joined})

    def _vote(self, conn: Conn, m: Inbound) -> None:
        """Like ``buy``: into the poll's vote batch, answered from its result loop."""
        conn.inflight += 1
        self.commerce.polls.submit_vote(conn.identity, conn.room_id, m.body.poll, m.body.option,
                                        partial(_answer_act, conn, m, "vote_result"))

    def _claim_coupon(self, conn: Conn, m: Inbound) -> None:
        """Like ``buy``: into the drop's claim batch, answered from its result loop."""
        conn.inflight += 1
        self.commerce.coupons.submit_claim(conn.identity, conn.room_id, m.body.drop, m.rid or "",
                                           partial(_answer_act, conn, m, "claim_result"))

    async def _enter_draw(self, conn: Conn, m: Inbound) -> None:
        out = await self.commerce.draws.enter(conn.identity, conn.room_id or "", m.body.draw,
                                              self.hub.now_ms() - conn.joined_ms)
        conn.send({"type": "entry_result", "rid": m.rid, **out})

    # -- hosts -------------------------------------------------------------------------------------

    async def _host_action(self, conn: Conn, m: Inbound) -> None:
        extra = await HOST_ACTIONS[m.type].run(self.commerce, conn.room_id or "", m.body) or {}
        conn.send(msg.ok(m.rid, m.type, extra))


def _buy_refusal(m: Inbound, code: str, why: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(msg.buy_result(m.rid or "", code, m.body.sale, m.body.qty, None))
    if why:
        out["message"] = why
    return out


def _pay_refusal(m: Inbound, code: str, why: str) -> dict[str, Any]:
    return dict(msg.pay_result(m.rid or "", code, m.body.hold))


def _refusal(reply: str, key: str) -> Refuse:
    """The typed reply of an interaction request that was refused before it ran (rate limit)."""
    def refuse(m: Inbound, code: str, why: str) -> dict[str, Any]:
        return {"type": reply, "rid": m.rid, "code": code, key: getattr(m.body, key)}
    return refuse


def _release_refusal(m: Inbound, code: str, why: str) -> dict[str, Any]:
    return dict(msg.release_result(m.rid or "", code, m.body.hold))


def _answer_act(conn: Conn, m: Inbound, reply: str, out: dict[str, Any] | BaseException) -> None:
    """A vote's or a claim's outcome (``reply``: its typed answer), from its batch's result loop."""
    conn.answered()
    if isinstance(out, BaseException):
        err = as_error(out)
        if err is None:
            log.warning("%s %s failed: %s", m.type, m.rid, out)
            conn.send(msg.error("INTERNAL", _RETRY, m.rid))
        else:
            conn.send(msg.error(err.code, err.message, m.rid))
        return
    conn.send({"type": reply, "rid": m.rid, **out})


def _answer_buy(conn: Conn, m: Inbound, meter: BuyMeter, received: float, r: ReserveResult | BaseException) -> None:
    """The reservation's outcome, to this viewer only (called from the batch's result loop); ``meter``
    counts it by code with the time since ``received`` (monotonic)."""
    conn.answered()
    if isinstance(r, BaseException):
        err = as_error(r)
        if err is not None and err.code is ErrorCode.UNAVAILABLE:
            _UNAVAILABLE_LOG.note("buy", r)
        else:
            log.warning("buy %s failed: %s", m.rid, r, extra=_log_ids(conn, m))
        conn.send(msg.error(err.code, err.message, m.rid) if err is not None else msg.error("INTERNAL", _RETRY, m.rid))
        meter.answered(err.code.value if err is not None else "INTERNAL", time.monotonic() - received)
        return
    if r.code is ReserveCode.MEMBERS_ONLY:  # decided before the stock: no units_left
        conn.send(_buy_refusal(m, "MEMBERS_ONLY", "this sale is for signed-in members: guest tokens cannot buy it"))
        meter.answered("MEMBERS_ONLY", time.monotonic() - received)
        return
    code = r.code
    value = code._value_  # Enum.value is a property costing ~0.25 µs a read on 3.11: once per click here
    out = cast(dict[str, Any], msg.buy_result(m.rid or "", value, m.body.sale, m.body.qty, r.available))
    if code is ReserveCode.RESERVED:
        out["hold"] = r.hold_id
        out["pay_by"] = r.at_ms
    elif code is ReserveCode.NOT_STARTED:
        out["starts_at"] = r.at_ms
    conn.send(out)
    meter.answered(value, time.monotonic() - received)


ROUTES: dict[str, Route] = {
    "join": Route(Gateway._join, joined=False),
    "clock": Route(Gateway._clock, joined=False),
    "ping": Route(Gateway._ping, joined=False),
    "buy": Route(Gateway._buy, viewer=True, bucket="buys", refuse=_buy_refusal),
    "pay": Route(Gateway._pay, viewer=True, bucket="buys", refuse=_pay_refusal, answer_by=True),
    "release": Route(Gateway._release, viewer=True, bucket="buys", refuse=_release_refusal, answer_by=True),
    "checkout": Route(Gateway._checkout, viewer=True, bucket="buys", answer_by=True),
    "comment": Route(Gateway._comment, viewer=True, bucket="comments"),
    "like": Route(Gateway._like, viewer=True),
    "join_team": Route(Gateway._join_team, viewer=True, bucket="acts"),
    "vote": Route(Gateway._vote, viewer=True, bucket="acts", refuse=_refusal("vote_result", "poll")),
    "claim_coupon": Route(Gateway._claim_coupon, viewer=True, bucket="acts", refuse=_refusal("claim_result", "drop")),
    "view": Route(Gateway._view, bucket="acts"),
    "enter_draw": Route(Gateway._enter_draw, viewer=True, bucket="acts", refuse=_refusal("entry_result", "draw")),
    **{name: Route(Gateway._host_action, host=True) for name in HOST_ACTIONS},
}
