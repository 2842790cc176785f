"""The HTTP transport of goods (docs/PROTOCOL.md "Stock pools", "Refunds"): parse, call ``commerce``,
answer. Merchants open and restock pools; hosts launch sales from them (``pool`` in
``POST /api/rooms/{room}/sales``) and top them up; a channel's buyers reserve straight from a pool;
a host or the pool's merchant refunds a settled order."""

from __future__ import annotations

from aiohttp import web

from commerce.errors import InvalidInput
from commerce.requests import CHANNEL_RULE, ChannelReserve, CreatePool, RefundOrder, StockChange, TopUp
from commerce.validation import Schema

from .api import _commerce, _parse, _query_int, _refused, body, host_of, identity, json, viewer_of

__all__ = ["setup"]

_CREATE_POOL, _STOCK, _TOPUP = Schema(CreatePool), Schema(StockChange), Schema(TopUp)
_CHANNEL_RESERVE, _REFUND = Schema(ChannelReserve), Schema(RefundOrder)


async def create_pool(request: web.Request) -> web.Response:
    return json(await _commerce(request).pools.create(identity(request), _parse(_CREATE_POOL, await body(request))),
                201)


async def list_pools(request: web.Request) -> web.Response:
    return json({"pools": await _commerce(request).pools.listing(identity(request))})


async def get_pool(request: web.Request) -> web.Response:
    return json(await _commerce(request).pools.view(identity(request), request.match_info["pool"]))


async def pool_stock(request: web.Request) -> web.Response:
    pools = _commerce(request).pools
    out = await pools.stock(identity(request), request.match_info["pool"], _parse(_STOCK, await body(request)))
    return json(out, 200 if out["replayed"] else 201)


async def pool_ledger(request: web.Request) -> web.Response:
    limit = _query_int(request, "limit", 1000, 10_000, "an integer between 1 and 10000")
    return json({"entries": await _commerce(request).pools.ledger(identity(request), request.match_info["pool"],
                                                                   max(1, limit))})


async def pool_audit(request: web.Request) -> web.Response:
    who = identity(request)
    pools = _commerce(request).pools
    await pools.view(who, request.match_info["pool"])  # merchants of the pool and hosts only
    return json((await pools.audit(request.match_info["pool"])).wire())


async def topup(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    host_of(request, room_id)
    out = await _commerce(request).pools.topup(room_id, request.match_info["sale"],
                                               _parse(_TOPUP, await body(request)))
    return json(out, 200 if out["replayed"] else 201)


async def channel_reserve(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    channel = request.match_info["channel"]
    if not CHANNEL_RULE.pattern.match(channel):
        raise InvalidInput(f"channel must be {CHANNEL_RULE.expect}")
    req = _parse(_CHANNEL_RESERVE, await body(request))
    r = await _commerce(request).pools.channel_reserve(viewer, channel, req)
    if r.ok:
        return json({"hold_id": r.hold_id, "pool": req.pool, "channel": channel, "qty": req.qty, "pay_by": r.at_ms,
                     "units_left": r.available, "user_units": r.user_units, "status": "held"}, 201)
    raise _refused(r.code.value)


async def refund_order(request: web.Request) -> web.Response:
    fresh, refund = await _commerce(request).order_refunds.refund(identity(request), request.match_info["order"],
                                                                  _parse(_REFUND, await body(request)))
    return json(refund, 201 if fresh else 200)


async def sku_history(request: web.Request) -> web.Response:
    bucket = _query_int(request, "bucket_s", 3600, 31 * 86400, "seconds between 60 and 2678400")
    if bucket < 60:
        raise InvalidInput("bucket_s must be seconds between 60 and 2678400")
    return json(await _commerce(request).pools.sku_history(identity(request), request.match_info["sku"], bucket))


async def save_item(request: web.Request) -> web.Response:
    fresh, item = await _commerce(request).saved.save(viewer_of(request), request.match_info["room"],
                                                      request.match_info["product"])
    return json(item, 201 if fresh else 200)


async def unsave_item(request: web.Request) -> web.Response:
    removed = await _commerce(request).saved.unsave(viewer_of(request), request.match_info["room"],
                                                    request.match_info["product"])
    return json({"removed": removed})


async def saved_items(request: web.Request) -> web.Response:
    return json({"saved": await _commerce(request).saved.of(viewer_of(request))})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/pools", create_pool)
    r.add_get("/api/pools", list_pools)
    r.add_get("/api/pools/{pool}", get_pool)
    r.add_post("/api/pools/{pool}/stock", pool_stock)
    r.add_get("/api/pools/{pool}/ledger", pool_ledger)
    r.add_get("/api/pools/{pool}/audit", pool_audit)
    r.add_post("/api/rooms/{room}/sales/{sale}/topup", topup)
    r.add_post("/api/channels/{channel}/holds", channel_reserve)
    r.add_post("/api/orders/{order}/refund", refund_order)
    r.add_get("/api/skus/{sku}/history", sku_history)
    r.add_get("/api/me/saved", saved_items)
    r.add_put("/api/me/saved/{room}/{product}", save_item)
    r.add_delete("/api/me/saved/{room}/{product}", unsave_item)
