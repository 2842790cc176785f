"""The HTTP transport of share-to-earn (docs/PROTOCOL.md Share-to-earn): share links, mini-shops,
commission rates, the sharers' earnings and payouts. Parse, call ``commerce.growth``, answer."""

from __future__ import annotations

from aiohttp import web

from commerce.errors import InvalidInput
from commerce.growth_requests import CreateLink, CreateShop, OpenPool, SetRate, ShopItems
from commerce.catalogue import check_slug
from commerce.validation import Schema

from .api import _commerce, _parse, body, identity, json, viewer_of

__all__ = ["setup"]

_LINK, _SHOP, _ITEMS, _OPEN, _RATE = (Schema(CreateLink), Schema(CreateShop), Schema(ShopItems), Schema(OpenPool),
                                      Schema(SetRate))


def _ms(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 15:
        raise InvalidInput(f"{name} must be a time in ms since the epoch")
    return int(raw)


async def create_link(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_LINK, await body(request))
    return json(await _commerce(request).growth.create_link(viewer, req.room_id, req.product_id), 201)


async def get_link(request: web.Request) -> web.Response:
    return json(await _commerce(request).growth.get_link(check_slug("code", request.match_info["code"])))


async def my_links(request: web.Request) -> web.Response:
    return json({"links": await _commerce(request).growth.my_links(viewer_of(request))})


async def my_earnings(request: web.Request) -> web.Response:
    return json(await _commerce(request).growth.earnings(viewer_of(request)))


async def payouts(request: web.Request) -> web.Response:
    room = request.query.get("room")
    if room is not None:
        check_slug("room", room)
    text = await _commerce(request).growth.payouts_csv(identity(request), room, _ms(request, "since", 0) or 0,
                                                       _ms(request, "until", None))
    return web.Response(text=text, content_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="payouts.csv"'})


async def set_rate(request: web.Request) -> web.Response:
    req = _parse(_RATE, await body(request))
    room = check_slug("room", request.match_info["room"])
    return json(await _commerce(request).growth.set_product_rate(identity(request), room,
                                                                  check_slug("product", request.match_info["product"]),
                                                                  req.commission_bps))


async def room_sharing(request: web.Request) -> web.Response:
    room = check_slug("room", request.match_info["room"])
    return json(await _commerce(request).growth.room_sharing(identity(request), room))


async def open_pool(request: web.Request) -> web.Response:
    req = _parse(_OPEN, await body(request))
    pool = check_slug("pool", request.match_info["pool"])
    return json(await _commerce(request).growth.open_pool(identity(request), pool, req.open, req.commission_bps))


async def shelf(request: web.Request) -> web.Response:
    return json({"pools": await _commerce(request).growth.shelf()})


async def create_shop(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_SHOP, await body(request))
    return json(await _commerce(request).growth.create_shop(viewer, req.shop_id, req.title, list(req.pools)), 201)


async def get_shop(request: web.Request) -> web.Response:
    return json(await _commerce(request).growth.shop_view(check_slug("shop", request.match_info["shop"])))


async def shop_items(request: web.Request) -> web.Response:
    viewer = viewer_of(request)
    req = _parse(_ITEMS, await body(request))
    return json(await _commerce(request).growth.set_shop_items(viewer, check_slug("shop", request.match_info["shop"]),
                                                                list(req.pools)))


async def my_shops(request: web.Request) -> web.Response:
    return json({"shops": await _commerce(request).growth.my_shops(viewer_of(request))})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/share-links", create_link)
    r.add_get("/api/share-links/{code}", get_link)
    r.add_get("/api/me/share-links", my_links)
    r.add_get("/api/me/earnings", my_earnings)
    r.add_get("/api/payouts.csv", payouts)
    r.add_put("/api/rooms/{room}/products/{product}/commission", set_rate)
    r.add_get("/api/rooms/{room}/sharing", room_sharing)
    r.add_put("/api/pools/{pool}/shopkeepers", open_pool)
    r.add_get("/api/shop-pools", shelf)
    r.add_post("/api/shops", create_shop)
    r.add_get("/api/shops/{shop}", get_shop)
    r.add_put("/api/shops/{shop}/items", shop_items)
    r.add_get("/api/me/shops", my_shops)
