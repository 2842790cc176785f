"""My orders (issue "Goods", item 6): `GET /api/me/orders` shows a buyer's holds (reserved, paid and
settling, expired, released) in every sale and channel, their settled and refunded orders, and totals."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from commerce.identity import mint_merchant_token
from goods_helpers import until
from gateway_helpers import Api, host_token, viewer
from server.app import create_app
from server.config import Settings


async def test_my_orders_lists_holds_orders_refunds_and_totals(aiohttp_client: Any, settings: Settings,
                                                               uid: str) -> None:
    s = settings.replace(tick_ms=50, settle_block_ms=100, reap_interval_ms=50)
    api = Api(await aiohttp_client(create_app(s)))
    merchant, host = mint_merchant_token(s.secret, "m-" + secrets.token_hex(3)), host_token(s.secret)
    pool, sku, room = f"pl{uid[:12]}", f"SKU-{uid}", f"r{uid[:12]}"
    await api.ok("POST", "/api/pools", merchant, {"pool_id": pool, "sku": sku, "title": "Cap", "unit_price": 1500,
                                                   "units": 20, "per_user_limit": 5}, 201)
    await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Room"}, 201)
    await api.ok("POST", f"/api/rooms/{room}/products", host,
                 {"product_id": "p0", "sku": sku, "title": "Cap", "unit_price": 1500}, 201)
    sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                        {"product_id": "p0", "units": 10, "pool": pool, "per_user_limit": 5, "unit_price": 1200}, 201)
    token, user = viewer(s.secret, "Mia")
    other, _ = viewer(s.secret, "Noa")

    async def reserve(rid: str, qty: int) -> dict[str, Any]:
        async def go() -> Any:
            st, body = await api.call("POST", f"/api/sales/{sale['sale_id']}/reserve", token,
                                      {"qty": qty, "request_id": rid})
            return body if st == 201 else None
        return dict(await until("a reservation", go))

    paid_hold = await reserve("r-paid", 2)
    refunded_hold = await reserve("r-refund", 1)
    released_hold = await reserve("r-released", 1)
    kept_hold = await reserve("r-kept", 1)
    channel_hold = await api.ok("POST", "/api/channels/web-shop/holds", token, {"pool": pool, "request_id": "c-1"}, 201)
    await api.ok("POST", f"/api/sales/{sale['sale_id']}/reserve", other, {"qty": 1, "request_id": "x"}, 201)
    for h in (paid_hold, refunded_hold, channel_hold):
        await api.ok("POST", f"/api/holds/{h['hold_id']}/pay", token, {}, 201)
    await api.ok("DELETE", f"/api/holds/{released_hold['hold_id']}", token)

    async def settled() -> Any:
        body = await api.ok("GET", "/api/me/orders", token)
        return body if len(body["orders"]) == 3 else None

    await until("three settled orders", settled)
    await api.ok("POST", f"/api/orders/{refunded_hold['hold_id']}/refund", host, {"reason": "late"}, 201)
    mine = await api.ok("GET", "/api/me/orders", token)
    status = {o["order_id"]: o["status"] for o in mine["orders"]}
    assert status == {paid_hold["hold_id"]: "settled", refunded_hold["hold_id"]: "refunded",
                      channel_hold["hold_id"]: "settled"}, status
    assert {o["order_id"]: o["channel"] for o in mine["orders"]}[channel_hold["hold_id"]] == "web-shop"
    holds = {h["hold_id"]: h for h in mine["holds"]}
    assert set(holds) == {released_hold["hold_id"], kept_hold["hold_id"]}, holds  # settled ones are orders now
    assert holds[released_hold["hold_id"]]["status"] == "released"
    assert holds[kept_hold["hold_id"]]["status"] == "reserved" and holds[kept_hold["hold_id"]]["amount"] == 1200
    assert mine["totals"] == {"EUR": {"orders": 3, "units": 4, "spent": 2 * 1200 + 1200 + 1500, "refunded": 1200,
                                      "net": 2 * 1200 + 1500}}, mine["totals"]
    assert user


async def test_save_for_later_takes_no_stock(aiohttp_client: Any, settings: Settings, uid: str) -> None:
    """A viewer saves a product for later (PUT /api/me/saved/{room}/{product}): no stock is taken, the
    list shows it, saving twice keeps one, the host's dashboard counts it, removing it works."""
    api = Api(await aiohttp_client(create_app(settings)))
    host = host_token(settings.secret)
    room = f"s{uid[:12]}"
    await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Room"}, 201)
    await api.ok("POST", f"/api/rooms/{room}/products", host,
                 {"product_id": "p0", "sku": f"S-{uid}", "title": "Scarf", "unit_price": 900}, 201)
    sale = await api.ok("POST", f"/api/rooms/{room}/sales", host, {"product_id": "p0", "units": 3}, 201)
    token, _ = viewer(settings.secret, "Sam")
    other, _ = viewer(settings.secret, "Sol")
    first = await api.ok("PUT", f"/api/me/saved/{room}/p0", token, None, 201)
    assert first["saved"] and first["product"]["product_id"] == "p0"
    await api.ok("PUT", f"/api/me/saved/{room}/p0", token, None, 200)  # again: one entry
    await api.ok("PUT", f"/api/me/saved/{room}/p0", other, None, 201)
    mine = (await api.ok("GET", "/api/me/saved", token))["saved"]
    assert [(s["room_id"], s["product"]["title"]) for s in mine] == [(room, "Scarf")]
    assert (await api.ok("GET", f"/api/sales/{sale['sale_id']}"))["units_left"] == 3  # no stock taken
    assert (await api.ok("GET", f"/api/rooms/{room}/dashboard", host))["saved"] == {"p0": 2}
    for path, who, code in ((f"/api/me/saved/{room}/nope", token, (404, "NOT_FOUND")),
                            (f"/api/me/saved/nope-{uid}/p0", token, (404, "NOT_FOUND")),
                            (f"/api/me/saved/{room}/p0", None, (401, "UNAUTHORIZED"))):
        st, body = await api.call("PUT", path, who)
        assert (st, body["error"]["code"]) == code, body
    assert (await api.ok("DELETE", f"/api/me/saved/{room}/p0", token))["removed"]
    assert not (await api.ok("DELETE", f"/api/me/saved/{room}/p0", token))["removed"]
    assert (await api.ok("GET", "/api/me/saved", token))["saved"] == []


async def test_the_hold_index_writes_the_same_by_script_and_by_pipeline(redis: Any, inventory: Any, uid: str) -> None:
    """commerce/my_holds.py: one index_holds.lua call (one server) and the pipeline (a cluster) leave the same
    indexes: every new hold scored by its creation time, the expiry set, an index trimmed to the newest KEEP."""
    from commerce import my_holds as M
    from inventory.keys import user_holds_key
    from inventory.redis_link import is_cluster

    async def run(tag: str, use_script: bool) -> list[Any]:
        mh = M.MyHolds(redis, inventory, ttl_s=600)
        if not use_script:
            mh._script = None
        users = [f"{uid}{tag}{i}" for i in range(3)]
        await redis.zadd(user_holds_key(users[2]), {f"old{i}": i for i in range(M.KEEP + 5)})
        await mh.add_many({users[0]: {"h1": 1000}, users[1]: {"h2": 2000, "h3": 3000},
                           users[2]: {"h4": 10**12, "h5": 10**12 + 1}})
        out = []
        for u in users:
            key = user_holds_key(u)
            out.append((await redis.zrange(key, -3, -1, withscores=True), await redis.zcard(key),
                        0 < await redis.ttl(key) <= 600))
            await redis.delete(key)
        return out
    if is_cluster(redis):
        pytest.skip("a cluster client takes the pipeline only: compared on one server")
    by_script, by_pipeline = await run("s", True), await run("p", False)
    assert by_script == by_pipeline
    assert by_script[0] == ([("h1", 1000.0)], 1, True)
    assert by_script[1][1] == 2 and by_script[2][1] == M.KEEP  # two holds at once: trimmed to the newest KEEP
    assert [h for h, _ in by_script[2][0]] == ["old204", "h4", "h5"]

