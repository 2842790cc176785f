"""HTTP API (JSON). Maps requests to the room service and results to statuses; no business rules here."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from aiohttp import web

from inventory.domain import ID_RE, ConfirmCode, InvalidInput, ReleaseCode, ReserveCode, sale_of_hold
from inventory.store import OrderRecord
from commerce.identity import Identity, TokenError, mint_viewer_token, verify_token
from stream_gateway.messages import MAX_SALE_UNITS
from commerce.service import ActionError, sale_wire

from .appkeys import BUS, GATEWAY, HUB, INVENTORY, SERVICE, SETTINGS, STORE

__all__ = ["setup", "error_middleware", "ApiError", "MAX_URL_BYTES", "MAX_REQUEST_LINE"]

log = logging.getLogger(__name__)

STATUS = {
    "BAD_JSON": 400, "INVALID": 400, "BAD_MESSAGE": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403,
    "NOT_FOUND": 404, "NOT_SETTLED": 404, "SOLD_OUT": 409, "LIMIT": 409, "NOT_STARTED": 409,
    "IDEM_MISMATCH": 409, "CONFLICT": 409, "ALREADY_CONFIRMED": 409, "NOT_HELD": 409, "ENDED": 410,
    "EXPIRED": 410, "RATE_LIMITED": 429, "MUTED": 403, "URI_TOO_LONG": 414,
}
_MESSAGES = {
    "NOT_STARTED": "the sale has not started yet", "ENDED": "the sale has ended", "SOLD_OUT": "sold out",
    "LIMIT": "you reached the per-person limit for this sale", "INVALID": "invalid request",
    "NOT_FOUND": "no such sale or hold", "IDEM_MISMATCH": "this request_id was already used for another purchase",
    "EXPIRED": "the hold expired or was released; you were not charged",
    "ALREADY_CONFIRMED": "this hold was already paid with another payment; refund this one",
    "FORBIDDEN": "this hold belongs to someone else", "NOT_HELD": "the hold is no longer held",
}
_TITLE_MAX = 200
MAX_URL_BYTES = 8192          # path + query string; longer: 414 URI_TOO_LONG (JSON)
MAX_REQUEST_LINE = 64 * 1024  # the HTTP parser's own cut (plain-text 400 before any handler runs)
MY_ORDERS_LIMIT = 200         # GET /api/me/orders: most orders per page
_MY_ORDERS_DEFAULT = 50
_MAX_MS = 10**14


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status or STATUS.get(code, 400)


def _error_response(code: str, message: str, status: int) -> web.Response:
    return web.Response(body=orjson.dumps({"error": {"code": code, "message": message}}), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if len(request.raw_path) > MAX_URL_BYTES:
        return _error_response("URI_TOO_LONG", f"the URL is longer than {MAX_URL_BYTES} bytes", 414)
    try:
        return await handler(request)
    except ApiError as e:
        return _error_response(e.code, e.message, e.status)
    except ActionError as e:
        return _error_response(e.code, e.message, STATUS.get(e.code, 400))
    except InvalidInput as e:
        return _error_response("INVALID", e.message, 400)
    except web.HTTPException as e:
        if not request.path.startswith("/api/"):
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE"}.get(e.status, "HTTP_ERROR")
        return _error_response(code, e.reason, e.status)
    except Exception:
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
        raise ApiError("BAD_JSON", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError("BAD_JSON", "request body must be a JSON object")
    return data


def identity(request: web.Request, required: bool = True) -> Identity | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        if required:
            raise ApiError("UNAUTHORIZED", "send Authorization: Bearer <token>")
        return None
    try:
        return verify_token(request.app[SETTINGS].signing_secret(), header[7:].strip())
    except TokenError as e:
        raise ApiError("UNAUTHORIZED", str(e)) from None


def host_of(request: web.Request, room_id: str | None = None) -> Identity:
    ident = identity(request)
    assert ident is not None
    if ident.role != "host" or (room_id is not None and not ident.hosts(room_id)):
        raise ApiError("FORBIDDEN", "this needs a host token for this room")
    return ident


def viewer_of(request: web.Request) -> Identity:
    ident = identity(request)
    assert ident is not None
    if not ident.is_viewer:
        raise ApiError("UNAUTHORIZED", "this needs a viewer token")
    return ident


def _str(data: dict[str, Any], name: str, default: str | None = None, max_len: int = _TITLE_MAX) -> str:
    value = data.get(name, default)
    if value is None:
        raise ApiError("INVALID", f"{name} is required")
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError("INVALID", f"{name} must be a string of at most {max_len} characters")
    return value.strip()


def _int(data: dict[str, Any], name: str, default: int | None = None, lo: int = 0, hi: int = 10**14) -> int:
    value = data.get(name, default)
    if value is None:
        raise ApiError("INVALID", f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError("INVALID", f"{name} must be an integer between {lo} and {hi}")
    return value


def _opt_int(data: dict[str, Any], name: str, lo: int = 0, hi: int = 10**14) -> int | None:
    return None if data.get(name) is None else _int(data, name, lo=lo, hi=hi)


_URL = re.compile(r"^(https?://[^\s]{1,500})?$")


# -- handlers -----------------------------------------------------------------------------------------

async def get_time(request: web.Request) -> web.Response:
    return json({"server_time": request.app[HUB].now_ms()})


async def health(request: web.Request) -> web.Response:
    await request.app[INVENTORY].redis.ping()
    return json({"ok": True, "gateway": request.app[HUB].gateway_id, "connections": len(request.app[GATEWAY].connections),
                 "rooms": len(request.app[HUB].rooms), "stats": request.app[HUB].stats})


async def viewer_token(request: web.Request) -> web.Response:
    data = await body(request)
    name = _str(data, "name", "guest", 40) or "guest"
    token, user = mint_viewer_token(request.app[SETTINGS].signing_secret(), name)
    return json({"token": token, "user": user, "name": name}, 201)


async def create_room(request: web.Request) -> web.Response:
    host = host_of(request)
    data = await body(request)
    room_id = data.get("room_id")
    if room_id is not None and not isinstance(room_id, str):
        raise ApiError("INVALID", "room_id must be a string")
    if room_id and not host.hosts(room_id):
        raise ApiError("FORBIDDEN", f"this host token does not cover room {room_id}")
    player_url = _str(data, "player_url", "", 500)
    if not _URL.match(player_url):
        raise ApiError("INVALID", "player_url must be an http(s) URL")
    title = _str(data, "title")
    if not title:
        raise ApiError("INVALID", "title must not be empty")
    room = await request.app[SERVICE].create_room(host, room_id, title, player_url)
    return json(room, 201)


async def list_rooms(request: web.Request) -> web.Response:
    rooms = await request.app[STORE].list_rooms()
    return json({"rooms": [{"room_id": r.room_id, "title": r.title, "status": r.status} for r in rooms]})


async def get_room(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    room = await svc.room(request.match_info["room"])
    store = request.app[STORE]
    products = await store.list_products(room.room_id)
    sales = []
    for s in await store.list_sales(room.room_id):
        _, wire = await svc.sale(s.sale_id)
        sales.append(wire)
    return json({"room_id": room.room_id, "title": room.title, "status": room.status,
                 "player_url": room.player_url, "host_id": room.host_id,
                 "products": [{"product_id": p.product_id, "sku": p.sku, "title": p.title,
                               "description": p.description, "image_url": p.image_url,
                               "unit_price": p.unit_price, "currency": p.currency} for p in products],
                 "sales": sales})


async def add_product(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    data = await body(request)
    image_url = _str(data, "image_url", "", 500)
    if not _URL.match(image_url):
        raise ApiError("INVALID", "image_url must be an http(s) URL")
    product = await request.app[SERVICE].add_product(
        room_id, data.get("product_id"), _str(data, "sku", None, 128), _str(data, "title"),
        _int(data, "unit_price", hi=10**12), _str(data, "currency", "EUR", 3), _str(data, "description", "", 2000),
        image_url)
    return json(product, 201)


async def create_sale(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    data = await body(request)
    sale = await request.app[SERVICE].launch_sale(
        room_id, _str(data, "product_id", None, 64), _int(data, "units", lo=1, hi=MAX_SALE_UNITS),
        price=_opt_int(data, "unit_price", hi=10**12), per_user_limit=_int(data, "per_user_limit", 1, 1, 10**6),
        starts_at_ms=_opt_int(data, "starts_at"), starts_in_s=_int(data, "starts_in_s", 0, 0, 31536000),
        ends_at_ms=_opt_int(data, "ends_at"), duration_s=_int(data, "duration_s", 300, 1, 31536000),
        hold_ttl_s=_opt_int(data, "hold_ttl_s", 5, 86400), sale_id=data.get("sale_id"))
    return json(sale, 201)


async def room_action(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    await request.app[SERVICE].room(room_id)
    action = request.match_info["action"]
    data = await body(request)
    svc = request.app[SERVICE]
    if action == "go_live":
        await svc.set_status(room_id, "live")
    elif action == "end_live":
        await svc.set_status(room_id, "ended")
    elif action == "pin":
        await svc.pin(room_id, _str(data, "product", None, 64))
    elif action == "unpin":
        await svc.unpin(room_id)
    elif action == "announce":
        text = _str(data, "text", None, 300)
        if not text:
            raise ApiError("INVALID", "text must not be empty")
        await svc.announce(room_id, text)
    elif action == "hide_comment":
        await svc.hide_comment(room_id, _str(data, "comment", None, 128))
    elif action == "mute":
        await svc.mute(room_id, _str(data, "user", None, 128))
    elif action == "end_sale":
        await svc.end_sale(room_id, _str(data, "sale", None, 64))
    else:
        raise ApiError("NOT_FOUND", f"unknown action {action[:40]!r}")
    return json({"ok": True, "action": action})


async def dashboard(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    app = request.app
    room = await app[SERVICE].room(room_id)
    store = app[STORE]
    now = app[HUB].now_ms()
    orders, units, gmv = await store.room_totals(room_id)
    per_minute = await store.orders_per_minute(room_id, now - 30 * 60_000)
    latest = await store.orders_for_room(room_id, 20)
    funnel = await app[BUS].funnel(room_id)
    local = app[HUB].rooms.get(room_id)
    viewers = local.state.viewers if local else await app[BUS].report_viewers(room_id, "-", 0, now)
    likes = local.state.likes if local else 0
    sales = []
    for s in await store.list_sales(room_id):
        _, wire = await app[SERVICE].sale(s.sale_id)
        wire["settled_units"] = await store.sold_units(s.sale_id)
        sales.append(wire)
    return json({
        "room": {"room_id": room.room_id, "title": room.title, "status": room.status},
        "server_time": now, "viewers": viewers, "likes": likes,
        "orders": orders, "units": units, "gmv": gmv,
        "orders_per_minute": [{"minute": m, "orders": c, "gmv": g} for m, c, g in per_minute],
        "funnel": {"viewers": viewers, "tapped": funnel.get("tapped", 0), "reserved": funnel.get("reserved", 0),
                   "paid": funnel.get("paid", 0)},
        "sales": sales,
        "latest_orders": [{"order_id": o.order_id, "sale_id": o.sale_id, "user_id": o.user_id, "qty": o.qty,
                           "total": o.total, "currency": o.currency, "confirmed_at": o.confirmed_at_ms}
                          for o in latest],
    })


async def get_sale(request: web.Request) -> web.Response:
    _, wire = await request.app[SERVICE].sale(request.match_info["sale"])
    return json(wire)


async def reserve(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    data = await body(request)
    sale_id = request.match_info["sale"]
    rid = data.get("request_id")
    if not isinstance(rid, str):
        raise ApiError("INVALID", "request_id is required (a string, unique per purchase attempt)")
    svc = request.app[SERVICE]
    rec = await request.app[STORE].get_sale(sale_id) if len(sale_id) <= 64 else None
    r = await svc.buy(viewer, rec.room_id if rec else None, sale_id, data.get("qty", 1), rid)
    if r.code is ReserveCode.RESERVED:
        return json({"hold_id": r.hold_id, "sale_id": sale_id, "qty": data.get("qty", 1), "pay_by": r.pay_by_ms,
                     "units_left": r.available, "user_units": r.user_units, "status": "held"}, 201)
    raise ApiError(r.code.value, _MESSAGES.get(r.code.value, r.code.value.lower()))


def _hold_json(h: Any) -> dict[str, Any]:
    return {"hold_id": h.hold_id, "sale_id": h.sale_id, "user_id": h.user_id, "qty": h.qty, "status": h.status,
            "pay_by": h.pay_by_ms, "created_at": h.created_ms, "order_id": h.hold_id if h.status == "confirmed" else None}


async def _own_hold(request: web.Request) -> tuple[Identity, Any]:
    viewer = viewer_of(request)
    hold_id = request.match_info["hold"]
    try:
        sale_of_hold(hold_id)
    except InvalidInput as e:
        raise ApiError("INVALID", e.message) from None
    hold = await request.app[INVENTORY].get_hold(hold_id)
    if hold is None:
        raise ApiError("NOT_FOUND", f"no hold {hold_id}")
    if hold.user_id != viewer.user:
        raise ApiError("FORBIDDEN", "this hold belongs to someone else")
    return viewer, hold


async def get_hold(request: web.Request) -> web.Response:
    _, hold = await _own_hold(request)
    return json(_hold_json(hold))


async def pay(request: web.Request) -> web.Response:
    viewer, hold = await _own_hold(request)
    data = await body(request)
    ref = data.get("payment_ref")
    if ref is not None and not isinstance(ref, str):
        raise ApiError("INVALID", "payment_ref must be a string")
    c = await request.app[SERVICE].pay(viewer, hold.hold_id, ref)
    if c.code is ConfirmCode.CONFIRMED:
        reply: dict[str, Any] = {"order_id": c.order_id, "hold_id": hold.hold_id, "status": "confirmed",
                                 "settled": False}
        if not c.fresh and c.order_id:  # a repeated pay: the order may be in SQL by now
            o = await request.app[STORE].get_order(c.order_id)
            if o is not None:
                reply.update(settled=True, order=_order_json(o))
        return json(reply, 201 if c.fresh else 200)
    raise ApiError(c.code.value, _MESSAGES.get(c.code.value, c.code.value.lower()))


async def release(request: web.Request) -> web.Response:
    viewer, hold = await _own_hold(request)
    r = await request.app[SERVICE].release(viewer, hold.hold_id)
    if r.code is ReleaseCode.RELEASED:
        return json({"hold_id": hold.hold_id, "status": "released", "units_left": r.available})
    raise ApiError(r.code.value, _MESSAGES.get(r.code.value, r.code.value.lower()))


async def get_order(request: web.Request) -> web.Response:
    ident = identity(request)
    assert ident is not None
    order_id = request.match_info["order"]
    if len(order_id) > 128:
        raise ApiError("INVALID", "order id too long")
    o = await request.app[STORE].get_order(order_id)
    if o is None:
        try:
            hold = await request.app[INVENTORY].get_hold(order_id)
        except InvalidInput:
            hold = None
        counters = await request.app[INVENTORY].counters(hold.sale_id) if hold is not None else None
        if (hold is not None and hold.status == "confirmed"
                and (hold.user_id == ident.user or (counters is not None and ident.hosts(counters.room_id)))):
            raise ApiError("NOT_SETTLED", "the order is confirmed and being settled; retry shortly")
        raise ApiError("NOT_FOUND", f"no order {order_id}")
    if o.user_id != ident.user and not ident.hosts(o.room_id):
        raise ApiError("FORBIDDEN", "this order belongs to someone else")
    return json(_order_json(o))


def _order_json(o: OrderRecord) -> dict[str, Any]:
    return {"order_id": o.order_id, "sale_id": o.sale_id, "room_id": o.room_id, "sku": o.sku,
            "user_id": o.user_id, "qty": o.qty, "unit_price": o.unit_price, "total": o.total,
            "currency": o.currency, "payment_ref": o.payment_ref, "reserved_at": o.reserved_at_ms,
            "confirmed_at": o.confirmed_at_ms, "settled_at": o.settled_at_ms, "status": "settled"}


def _query_ms(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15 or int(raw) > _MAX_MS:
        raise ApiError("INVALID", f"{name} must be a time in ms: an integer between 0 and {_MAX_MS}")
    return int(raw)


async def my_orders(request: web.Request) -> web.Response:
    """The viewer's settled orders with settled_at >= since, oldest first, a page at a time.

    ``next`` is an opaque cursor ("<settled_at>.<order_id>" of the page's last order) to pass back
    as ``cursor`` for the following page; null on the last page.
    """
    viewer = viewer_of(request)
    since = _query_ms(request, "since") or 0
    raw_limit = request.query.get("limit", str(_MY_ORDERS_DEFAULT))
    if (not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 3
            or not 1 <= int(raw_limit) <= MY_ORDERS_LIMIT):
        raise ApiError("INVALID", f"limit must be an integer between 1 and {MY_ORDERS_LIMIT}")
    limit = int(raw_limit)
    after: tuple[int, str] | None = None
    cursor = request.query.get("cursor")
    if cursor is not None:
        at, dot, order_id = cursor.partition(".")
        if (not dot or not (at.isascii() and at.isdigit()) or len(at) > 15 or int(at) > _MAX_MS
                or not ID_RE.match(order_id)):
            raise ApiError("INVALID", "cursor must be the `next` value of a previous page")
        after = (int(at), order_id)
    rows = await request.app[STORE].orders_settled_for_user(viewer.user, since, after, limit + 1)
    page = rows[:limit]
    nxt = f"{page[-1].settled_at_ms}.{page[-1].order_id}" if len(rows) > limit else None
    return json({"orders": [_order_json(o) for o in page], "next": nxt})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", health)
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
    r.add_get("/api/orders/{order}", get_order)
    r.add_get("/api/me/orders", my_orders)
    _ = sale_wire  # re-exported for API consumers
