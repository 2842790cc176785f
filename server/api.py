"""The HTTP transport (JSON): parses requests with ``commerce``'s typed definitions, calls
``commerce``, maps results and the error tree to statuses. No business rules, no Redis, no SQL."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from commerce.addresses import client_address
from commerce.errors import (
    BadJson, BadMessage, CommerceError, ErrorCode, Forbidden, InvalidInput, NotFound, Refused, Unauthorized, as_error,
    RateLimited, status_of,
)
from commerce.host_actions import HOST_ACTIONS
from commerce.identity import Identity, TokenError, mint_viewer_token
from commerce.requests import AddProduct, CheckoutBody, CreateRoom, CreateSale, GuestToken, PayHold, Reserve
from commerce.service import Commerce
from commerce.validation import ID_RE, Schema
from commerce.wire import hold_wire, order_wire
from inventory.domain import ConfirmCode, ReleaseCode, ReserveCode

from .appkeys import COMMERCE, GUEST_RATE, HUB, PROXIES, SETTINGS
from .appkeys import VERIFIER

__all__ = ["setup", "error_middleware", "token_keys_middleware", "MAX_URL_BYTES", "MAX_REQUEST_LINE"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MESSAGES = {
    "NOT_STARTED": "the sale has not started yet", "ENDED": "the sale has ended", "SOLD_OUT": "sold out",
    "LIMIT": "you reached the per-person limit for this sale", "INVALID": "invalid request",
    "NOT_FOUND": "no such sale or hold", "IDEM_MISMATCH": "this request_id was already used for another purchase",
    "EXPIRED": "the hold expired or was released; you were not charged",
    "ALREADY_CONFIRMED": "this hold was already paid with another payment; refund this one",
    "FORBIDDEN": "this hold belongs to someone else", "NOT_HELD": "the hold is no longer held",
    "MEMBERS_ONLY": "this sale is for signed-in members: guest tokens cannot buy it",
    "HOLD_LOST": "the hold was lost with the server's live data; buy again (you were not charged)",
    "NOT_OPEN": "the balance of this pre-sale can be paid once its window opens",
}
MAX_URL_BYTES = 8192          # path + query string; longer: 414 URI_TOO_LONG (JSON)
MAX_REQUEST_LINE = 64 * 1024  # the HTTP parser's own cut (plain-text 400 before any handler runs)
MY_ORDERS_LIMIT = 200         # GET /api/me/orders: most orders per page
_MY_ORDERS_DEFAULT = 50
_MAX_MS = 10**14
_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.TOO_LARGE}

_CREATE_ROOM, _ADD_PRODUCT, _CREATE_SALE = Schema(CreateRoom), Schema(AddProduct), Schema(CreateSale)
_RESERVE, _PAY, _GUEST = Schema(Reserve), Schema(PayHold), Schema(GuestToken)
_CHECKOUT = Schema(CheckoutBody)


def _error_response(code: str, message: str, status: int) -> web.Response:
    return web.Response(body=orjson.dumps({"error": {"code": code, "message": message}}), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.raw_path) > MAX_URL_BYTES:
        return _error_response("URI_TOO_LONG", f"the URL is longer than {MAX_URL_BYTES} bytes", 414)
    try:
        return await handler(request)
    except web.HTTPException as e:
        if not request.path.startswith("/api/"):
            raise
        code = _HTTP_CODES.get(e.status, "HTTP_ERROR")
        return _error_response(code, e.reason, e.status)
    except Exception as exc:
        err = as_error(exc)
        if err is not None:
            return _error_response(err.code, err.message, status_of(err.code))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response("INTERNAL", "internal error; nothing was changed by this request unless "
                                           "reported otherwise", 500)


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise BadJson("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadJson("request body must be a JSON object")
    return data


@web.middleware
async def token_keys_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A bearer token naming a platform key id (kid) this process does not hold yet: reload the platform
    key set first (in a worker thread, rate-limited), so ``identity`` below stays synchronous."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and request.app[VERIFIER].keys is not None:
        await request.app[VERIFIER].prepare(header[7:].strip())
    return await handler(request)


def identity(request: web.Request) -> Identity:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("send Authorization: Bearer <token>")
    try:
        return request.app[VERIFIER].verify(header[7:].strip())
    except TokenError as e:
        raise Unauthorized(str(e)) from None


def host_of(request: web.Request, room_id: str | None = None) -> Identity:
    ident = identity(request)
    if ident.role != "host" or (room_id is not None and not ident.hosts(room_id)):
        raise Forbidden("this needs a host token for this room")
    return ident


def viewer_of(request: web.Request) -> Identity:
    ident = identity(request)
    if not ident.is_viewer:
        raise Unauthorized("this needs a viewer token")
    return ident


def _parse(schema: Schema[T], data: dict[str, Any]) -> T:
    """A body checked by its typed definition. Over HTTP every bad field is 400 INVALID (missing,
    wrong type or out of range); the WebSocket tells BAD_MESSAGE from INVALID."""
    try:
        return schema.parse(data)
    except BadMessage as e:
        raise InvalidInput(e.message) from None


def _refused(code: str) -> CommerceError:
    return Refused(ErrorCode(code), _MESSAGES.get(code, code.lower()))


def _commerce(request: web.Request) -> Commerce:
    return request.app[COMMERCE]


def client_addr(request: web.Request) -> str:
    """The client's address: the peer's, or behind a trusted proxy its X-Forwarded-For (commerce.addresses)."""
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), request.app[PROXIES])


# -- rooms, products, sales -----------------------------------------------------------------------------

async def get_time(request: web.Request) -> web.Response:
    return json({"server_time": request.app[HUB].now_ms(), "guests": request.app[SETTINGS].guest_tokens})


async def viewer_token(request: web.Request) -> web.Response:
    """A guest viewer token (claim ``guest: true``): only with LIVESALE_GUEST_TOKENS on, and at most
    LIVESALE_GUEST_TOKEN_RATE per client address per minute."""
    settings = request.app[SETTINGS]
    if not settings.guest_tokens:
        raise Refused(ErrorCode.GUESTS_OFF, "guest tokens are off on this server: sign in on the platform, "
                                            "which passes you a signed viewer token")
    name = _parse(_GUEST, await body(request)).name or "guest"
    if not request.app[GUEST_RATE].take(client_addr(request)):
        raise RateLimited("too many guest tokens from your address; retry in a minute")
    token, user = mint_viewer_token(settings.secret, name, guest=True)
    return json({"token": token, "user": user, "name": name, "guest": True}, 201)


async def create_room(request: web.Request) -> web.Response:
    host = host_of(request)
    room = await _commerce(request).catalogue.create_room(host, _parse(_CREATE_ROOM, await body(request)))
    return json(room, 201)


async def list_rooms(request: web.Request) -> web.Response:
    return json({"rooms": await _commerce(request).catalogue.list_rooms()})


async def get_room(request: web.Request) -> web.Response:
    c = _commerce(request)
    room = await c.catalogue.room(request.match_info["room"])
    return json({"room_id": room.room_id, "title": room.title, "status": room.status,
                 "player_url": room.player_url, "host_id": room.host_id,
                 "products": await c.catalogue.products(room.room_id),
                 "sales": await c.sales.of_room(room.room_id)})


async def add_product(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    product = await _commerce(request).catalogue.add_product(room_id, _parse(_ADD_PRODUCT, await body(request)))
    return json(product, 201)


async def create_sale(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    sale = await _commerce(request).sales.launch(room_id, _parse(_CREATE_SALE, await body(request)))
    return json(sale, 201)


async def room_action(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    c = _commerce(request)
    await c.catalogue.room(room_id)
    name = request.match_info["action"]
    action = HOST_ACTIONS.get(name)
    if action is None:
        raise NotFound(f"unknown action {name[:40]!r}")
    extra = await action.run(c, room_id, _parse(action.schema, await body(request))) or {}
    return json({"ok": True, "action": name, **extra})


async def dashboard(request: web.Request) -> web.Response:
    from commerce.dashboard import dashboard as build

    room_id = request.match_info["room"]
    host_of(request, room_id)
    hub = request.app[HUB]
    local = hub.rooms.get(room_id)
    seen = (local.state.viewers, local.state.likes) if local is not None else None
    return json(await build(_commerce(request), room_id, hub.now_ms(), seen))


async def get_sale(request: web.Request) -> web.Response:
    _, wire = await _commerce(request).sales.get(request.match_info["sale"])
    return json(wire)


# -- buying ---------------------------------------------------------------------------------------------

async def reserve(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_RESERVE, await body(request))
    c = _commerce(request)
    sale_id = request.match_info["sale"]
    room_id = await c.sales.room_of(sale_id)  # None: the script answers NOT_FOUND / INVALID
    r = await c.checkout.buy(viewer, room_id, sale_id, req.qty, req.request_id)
    if r.code is ReserveCode.RESERVED:
        return json({"hold_id": r.hold_id, "sale_id": sale_id, "qty": req.qty, "pay_by": r.at_ms,
                     "units_left": r.available, "user_units": r.user_units, "status": "held"}, 201)
    raise _refused(r.code.value)


async def get_hold(request: web.Request) -> web.Response:
    hold = await _commerce(request).checkout.own_hold(viewer_of(request), request.match_info["hold"])
    return json(hold_wire(hold))


async def pay(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    checkout = _commerce(request).checkout
    hold = await checkout.own_hold(viewer, request.match_info["hold"])
    req = _parse(_PAY, await body(request))
    c = await _commerce(request).deadline.within(checkout.pay(viewer, hold.hold_id, req.payment_ref,
                                                               coupon=req.coupon))
    if c.code is ConfirmCode.DEPOSITED:  # a pre-sale's deposit: the unit stays held for the balance
        return json({"hold_id": hold.hold_id, "status": "deposit", "deposit_paid": True}, 201 if c.fresh else 200)
    if c.code is not ConfirmCode.CONFIRMED:
        raise _refused(c.code.value)
    reply: dict[str, Any] = {"order_id": c.order_id, "hold_id": hold.hold_id, "status": "confirmed",
                             "settled": False}
    if c.discount is not None:  # a coupon applied (docs/PROTOCOL.md Coupon drops)
        reply.update(coupon=req.coupon, discount=c.discount, total=c.total)
    if not c.fresh and c.order_id:  # a repeated pay: the order may be in SQL by now
        o = await checkout.settled_order(c.order_id)
        if o is not None:
            reply.update(settled=True, order=order_wire(o))
    return json(reply, 201 if c.fresh else 200)


async def checkout(request: web.Request) -> web.Response:
    """Start paying a hold through the provider: what the client needs (redirect URL / client secret)."""
    viewer = viewer_of(request)
    req = _parse(_CHECKOUT, await body(request))
    c = _commerce(request)
    started = await c.deadline.within(c.payments.checkout(viewer, request.match_info["hold"], coupon=req.coupon))
    return json(started, 201)


async def payment_webhook(request: web.Request) -> web.Response:
    """The provider's signed webhook (docs/PROTOCOL.md Payments): 200 once recorded in SQL."""
    raw = await request.read()
    outcome = await _commerce(request).payments.webhook(request.match_info["provider"], dict(request.headers), raw)
    return json(outcome.wire())


async def release(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    checkout = _commerce(request).checkout
    hold = await checkout.own_hold(viewer, request.match_info["hold"])
    r = await _commerce(request).deadline.within(checkout.release(viewer, hold.hold_id))
    if r.code is not ReleaseCode.RELEASED:
        raise _refused(r.code.value)
    return json({"hold_id": hold.hold_id, "status": "released", "units_left": r.available})


async def _with_refunds(c: Commerce, wires: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Orders refunded since they settled say so (``status: refunded``)."""
    refunded = await c.order_refunds.refunded_among([w["order_id"] for w in wires])
    for w in wires:
        if w["order_id"] in refunded:
            w["status"] = "refunded"
    return wires


async def get_order(request: web.Request) -> web.Response:
    c = _commerce(request)
    o = await c.checkout.order_for(identity(request), request.match_info["order"])
    return json((await _with_refunds(c, [order_wire(o)]))[0])


def _query_int(request: web.Request, name: str, default: int, hi: int, what: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15 or int(raw) > hi:
        raise InvalidInput(f"{name} must be {what}")
    return int(raw)


def _cursor(request: web.Request) -> tuple[int, str] | None:
    cursor = request.query.get("cursor")
    if cursor is None:
        return None
    at, dot, order_id = cursor.partition(".")
    if not dot or not (at.isascii() and at.isdigit()) or len(at) > 15 or int(at) > _MAX_MS or not ID_RE.match(order_id):
        raise InvalidInput("cursor must be the `next` value of a previous page")
    return int(at), order_id


async def my_orders(request: web.Request) -> web.Response:
    """The viewer's settled orders with settled_at >= since, oldest first, a page at a time.

    ``next`` is an opaque cursor ("<settled_at>.<order_id>" of the page's last order) to pass back
    as ``cursor`` for the following page; null on the last page.
    """
    viewer = viewer_of(request)
    since = _query_int(request, "since", 0, _MAX_MS, f"a time in ms: an integer between 0 and {_MAX_MS}")
    limit = _query_int(request, "limit", _MY_ORDERS_DEFAULT, MY_ORDERS_LIMIT,
                       f"an integer between 1 and {MY_ORDERS_LIMIT}")
    if limit < 1:
        raise InvalidInput(f"limit must be an integer between 1 and {MY_ORDERS_LIMIT}")
    c = _commerce(request)
    page, more = await c.checkout.my_orders(viewer, since, _cursor(request), limit)
    nxt = f"{more[0]}.{more[1]}" if more else None
    holds, totals = await c.checkout.my_holds_and_totals(viewer)
    return json({"orders": await _with_refunds(c, [order_wire(o) for o in page]), "next": nxt, "holds": holds,
                 "totals": totals})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/time", get_time)
    r.add_post("/api/viewer-token", viewer_token)
    r.add_get("/api/rooms", list_rooms)
    r.add_post("/api/rooms", create_room)
    r.add_get("/api/rooms/{room}", get_room)
    r.add_post("/api/rooms/{room}/products", add_product)
    r.add_post("/api/rooms/{room}/sales", create_sale)
    r.add_post("/api/rooms/{room}/actions/{action}", room_action)
    r.add_get("/api/rooms/{room}/dashboard", dashboard)
    r.add_get("/api/sales/{sale}", get_sale)
    r.add_post("/api/sales/{sale}/reserve", reserve)
    r.add_get("/api/holds/{hold}", get_hold)
    r.add_post("/api/holds/{hold}/pay", pay)
    r.add_delete("/api/holds/{hold}", release)
    r.add_post("/api/holds/{hold}/checkout", checkout)
    r.add_post("/api/payments/webhook/{provider}", payment_webhook)
    r.add_get("/api/orders/{order}", get_order)
    r.add_get("/api/me/orders", my_orders)
