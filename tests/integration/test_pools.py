"""Stock pools over HTTP against real engines (issue "Goods", items 1-3): a merchant's pool shared by two
rooms' sales and a web-shop channel; launch from the pool or POOL_SHORT, top-up mid-sale, the unsold
units back at the end (and the units of holds that expire later), channel orders settled with their
channel, the ledger in SQL, the audit; bad input and foreign actors refused with nothing changed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from commerce.identity import mint_merchant_token
from conftest import timeout
from goods_helpers import GoodsEnv, open_goods_env, until
from gateway_helpers import JSON, WsClient, host_token, viewer
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

PRICE = 4999


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def open_pool(env: GoodsEnv, uid: str, units: int = 350) -> tuple[str, str]:
    sku = f"SKU-{uid}"
    pool = await env.api.ok("POST", "/api/pools", env.merchant,
                            {"pool_id": f"pl{uid[:12]}", "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE,
                             "units": units, "per_user_limit": 2}, 201)
    assert pool["available"] == units and pool["received"] == units and pool["at_sales"] == 0, pool
    return str(pool["pool_id"]), sku


async def room_with(env: GoodsEnv, room: str, sku: str) -> None:
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": f"Room {room}"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE}, 201)


async def launch(env: GoodsEnv, room: str, pool: str, units: int, **kw: Any) -> dict[str, Any]:
    return dict(await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                                 {"product_id": "p0", "units": units, "pool": pool, "per_user_limit": 2, **kw}, 201))


async def audit_ok(env: GoodsEnv, pool: str) -> dict[str, Any]:
    report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
    assert report["ok"], report["problems"]
    return dict(report)


async def test_pool_shared_by_two_rooms_and_a_channel(env: GoodsEnv, uid: str) -> None:
    pool, sku = await open_pool(env, uid)
    room_a, room_b = f"a{uid[:10]}", f"b{uid[:10]}"
    await room_with(env, room_a, sku)
    await room_with(env, room_b, sku)
    sale_a = await launch(env, room_a, pool, 100)
    sale_b = await launch(env, room_b, pool, 100, duration_s=600)
    assert sale_a["pool"] == pool and sale_a["sale_id"].startswith(f"{pool}--") and sale_a["units_left"] == 100
    view = await env.api.ok("GET", f"/api/pools/{pool}", env.host)
    assert view["available"] == 150 and view["at_sales"] == 200
    assert {s["room_id"]: s["allocated"] for s in view["sales"]} == {room_a: 100, room_b: 100}

    # a launch the pool cannot cover is refused whole: nothing moved, no sale in SQL
    st, body = await env.api.call("POST", f"/api/rooms/{room_b}/sales", env.host,
                                  {"product_id": "p0", "units": 151, "pool": pool, "sale_id": "big"})
    assert st == 409 and body["error"]["code"] == "POOL_SHORT", body
    assert (await env.api.call("GET", f"/api/sales/{pool}--big"))[0] == 404
    assert (await env.api.ok("GET", f"/api/pools/{pool}", env.merchant))["available"] == 150

    # a channel buyer reserves straight from the pool and pays; the order settles with its channel
    token, user = viewer(env.settings.secret, "Shopper")
    hold = await env.api.ok("POST", "/api/channels/web-shop/holds", token,
                            {"pool": pool, "qty": 2, "request_id": "c-1"}, 201)
    assert hold["channel"] == "web-shop" and hold["units_left"] == 148
    again = await env.api.ok("POST", "/api/channels/web-shop/holds", token, {"pool": pool, "qty": 2, "request_id": "c-1"})
    assert again["hold_id"] == hold["hold_id"]  # a retry: the same hold, nothing more taken
    st, body = await env.api.call("POST", "/api/channels/web-shop/holds", token,
                                  {"pool": pool, "qty": 1, "request_id": "c-2"})
    assert st == 409 and body["error"]["code"] == "LIMIT", body  # the pool's per-user limit (2)
    paid = await env.api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201)

    async def settled() -> Any:
        st, o = await env.api.call("GET", f"/api/orders/{paid['order_id']}", token)
        return o if st == 200 else None

    order = await until("the channel order in SQL", settled)
    assert order["channel"] == "web-shop" and order["room_id"] == "" and order["qty"] == 2 and order["sku"] == sku
    mine = await env.api.ok("GET", "/api/me/orders", token)
    assert [o["order_id"] for o in mine["orders"]] == [paid["order_id"]] and user

    # room A is topped up mid-sale, once per request id
    top = await env.api.ok("POST", f"/api/rooms/{room_a}/sales/{sale_a['sale_id']}/topup", env.host,
                           {"units": 50, "request_id": "t-1"}, 201)
    assert top["units_left"] == 150 and top["pool_available"] == 98
    top2 = await env.api.ok("POST", f"/api/rooms/{room_a}/sales/{sale_a['sale_id']}/topup", env.host,
                            {"units": 50, "request_id": "t-1"}, 200)
    assert top2["replayed"] and top2["pool_available"] == 98
    st, body = await env.api.call("POST", f"/api/rooms/{room_a}/sales/{sale_a['sale_id']}/topup", env.host,
                                  {"units": 99, "request_id": "t-2"})
    assert st == 409 and body["error"]["code"] == "POOL_SHORT"
    await audit_ok(env, pool)

    # a room viewer holds 2 in room B; the host ends B: its 98 unsold units go back at once, the held 2
    # follow when the hold expires (released here)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    vt, _ = viewer(env.settings.secret, "Bea")
    await ws.join(room_b, vt, timeout=timeout(10))
    await env.api.ok("GET", f"/api/sales/{sale_b['sale_id']}")

    async def bought() -> Any:
        r = await ws.request({"type": "buy", "sale": sale_b["sale_id"], "qty": 2}, timeout(10))
        return r if r["code"] == "RESERVED" else None

    r = await until("the sale open for buying", bought)
    await env.api.ok("POST", f"/api/rooms/{room_b}/actions/end_sale", env.host, {"sale": sale_b["sale_id"]})
    assert (await env.api.ok("GET", f"/api/pools/{pool}", env.merchant))["available"] == 98 + 98
    await ws.request({"type": "release", "hold": r["hold"]}, timeout(10))

    async def all_back() -> bool:
        return bool((await env.api.ok("GET", f"/api/pools/{pool}", env.merchant))["available"] == 98 + 100)

    await until("the released hold's units back in the pool", all_back)
    report = await audit_ok(env, pool)
    assert report["at_sales"] == 150 and report["channel_sold"] == 2 and report["received"] == 350

    # the ledger in SQL: opening stock, two allocations, a top-up, returns
    async def ledger_written() -> Any:
        entries = (await env.api.ok("GET", f"/api/pools/{pool}/ledger", env.merchant))["entries"]
        return entries if sum(e["units"] for e in entries if e["kind"] == "return") == 100 else None

    entries = await until("the ledger in SQL", ledger_written)
    kinds = sorted(e["kind"] for e in entries)
    assert kinds.count("allocate") == 2 and kinds.count("topup") == 1 and kinds.count("receive") == 1
    assert (await audit_ok(env, pool))["sql"]["journal_pending"] == 0
    await ws.close()


async def test_restock_and_adjust_once_per_request(env: GoodsEnv, uid: str) -> None:
    pool, _sku = await open_pool(env, uid, units=10)
    out = await env.api.ok("POST", f"/api/pools/{pool}/stock", env.merchant,
                           {"units": 5, "request_id": "r-1", "reason": "truck 17"}, 201)
    assert out["pool"]["available"] == 15 and not out["replayed"]
    again = await env.api.ok("POST", f"/api/pools/{pool}/stock", env.merchant,
                             {"units": 5, "request_id": "r-1", "reason": "truck 17"}, 200)
    assert again["replayed"] and again["pool"]["available"] == 15
    out = await env.api.ok("POST", f"/api/pools/{pool}/stock", env.merchant,
                           {"units": -3, "kind": "adjust", "request_id": "a-1", "reason": "damaged"}, 201)
    assert out["pool"]["available"] == 12 and out["pool"]["received"] == 12
    st, body = await env.api.call("POST", f"/api/pools/{pool}/stock", env.merchant,
                                  {"units": -13, "kind": "adjust", "request_id": "a-2", "reason": "count"})
    assert st == 409 and body["error"]["code"] == "POOL_SHORT"
    await audit_ok(env, pool)


async def test_bad_input_and_foreign_actors_change_nothing(env: GoodsEnv, uid: str) -> None:
    pool, sku = await open_pool(env, uid, units=20)
    room, other_room = f"r{uid[:10]}", f"o{uid[:10]}"
    await room_with(env, room, sku)
    sale = await launch(env, room, pool, 5)
    before = await env.api.ok("GET", f"/api/pools/{pool}", env.merchant)
    vt, _ = viewer(env.settings.secret, "Eve")
    other_merchant = mint_merchant_token(env.settings.secret, "m-other")
    other_host = host_token(env.settings.secret, "h2", (other_room,))
    cases: list[tuple[str, str, str | None, Any, int, str]] = [
        ("POST", "/api/pools", env.host, {"sku": "X", "title": "t", "unit_price": 1, "units": 1}, 403, "FORBIDDEN"),
        ("POST", "/api/pools", env.merchant, {"sku": "X", "title": "t", "unit_price": 1, "units": -1}, 400, "INVALID"),
        ("POST", "/api/pools", env.merchant, {"sku": sku, "title": "t", "unit_price": 1, "units": 1, "pool_id": "p2"},
         409, "CONFLICT"),
        ("POST", "/api/pools", env.merchant, {"sku": "Y", "title": "t", "unit_price": 1, "units": 1,
                                              "pool_id": "a--b"}, 400, "INVALID"),
        ("POST", f"/api/pools/{pool}/stock", vt, {"units": 5, "request_id": "x"}, 403, "FORBIDDEN"),
        ("POST", f"/api/pools/{pool}/stock", other_merchant, {"units": 5, "request_id": "x"}, 403, "FORBIDDEN"),
        ("POST", f"/api/pools/{pool}/stock", env.merchant, {"units": 0, "request_id": "x"}, 400, "INVALID"),
        ("POST", f"/api/pools/{pool}/stock", env.merchant, {"units": -1, "request_id": "x"}, 400, "INVALID"),
        ("POST", "/api/pools/nope/stock", env.merchant, {"units": 1, "request_id": "x"}, 404, "NOT_FOUND"),
        ("GET", f"/api/pools/{pool}", vt, None, 403, "FORBIDDEN"),
        ("GET", f"/api/pools/{pool}", other_merchant, None, 403, "FORBIDDEN"),
        ("POST", f"/api/rooms/{room}/sales", env.host, {"product_id": "p0", "units": 1, "pool": "nope"}, 404,
         "NOT_FOUND"),
        ("POST", f"/api/rooms/{room}/sales", env.host, {"product_id": "p0", "units": -4, "pool": pool}, 400, "INVALID"),
        ("POST", f"/api/rooms/{room}/sales", env.host, {"product_id": "p0", "units": 21, "pool": pool}, 409,
         "POOL_SHORT"),
        ("POST", f"/api/rooms/{room}/sales", env.host, {"product_id": "p0", "units": 1, "sale_id": "x--y"}, 400,
         "INVALID"),
        ("POST", f"/api/rooms/{room}/sales/{sale['sale_id']}/topup", other_host, {"units": 1, "request_id": "t"}, 403,
         "FORBIDDEN"),
        ("POST", f"/api/rooms/{room}/sales/{sale['sale_id']}/topup", vt, {"units": 1, "request_id": "t"}, 403,
         "FORBIDDEN"),
        ("POST", f"/api/rooms/{room}/sales/{sale['sale_id']}/topup", env.host, {"units": 0, "request_id": "t"}, 400,
         "INVALID"),
        ("POST", "/api/channels/web-shop/holds", vt, {"pool": "nope", "request_id": "c"}, 404, "NOT_FOUND"),
        ("POST", "/api/channels/web-shop/holds", vt, {"pool": pool, "qty": 0, "request_id": "c"}, 400, "INVALID"),
        ("POST", "/api/channels/bad%20channel/holds", vt, {"pool": pool, "request_id": "c"}, 400, "INVALID"),
        ("POST", "/api/channels/web-shop/holds", None, {"pool": pool, "request_id": "c"}, 401, "UNAUTHORIZED"),
        ("POST", f"/api/sales/{pool}--pool/reserve", vt, {"request_id": "c"}, 404, "NOT_FOUND"),
    ]
    for method, path, token, payload, status, code in cases:
        st, body = await env.api.call(method, path, token, payload)
        assert (st, body["error"]["code"]) == (status, code), (method, path, payload, st, body)
    after = await env.api.ok("GET", f"/api/pools/{pool}", env.merchant)
    assert after == before
    await audit_ok(env, pool)


async def test_livesale_audit_command(env: GoodsEnv, uid: str) -> None:
    """`livesale audit` prints one OK line per pool (and exits 0), DRIFT with the problem (exit 1)
    after the pool's counters were tampered with in Redis."""
    from inventory import keys as K
    from server.cli import _audit_main

    pool, sku = await open_pool(env, uid, units=30)
    room = f"r{uid[:10]}"
    await room_with(env, room, sku)
    await launch(env, room, pool, 10)
    assert await _audit_main(env.settings, [pool]) == 0
    redis = env.client.app[COMMERCE].inventory.redis
    await redis.hincrby(K.pool_keys(pool).bucket.sale, "available", 1)  # a unit from nowhere
    try:
        assert await _audit_main(env.settings, [pool]) == 1
        assert await _audit_main(env.settings, ["no-such-pool"]) == 1
    finally:
        await redis.hincrby(K.pool_keys(pool).bucket.sale, "available", -1)


async def test_sku_history_and_lifecycle(env: GoodsEnv, uid: str) -> None:
    """GET /api/skus/{sku}/history: units sold per show and per channel over time, and the SKU's state."""
    pool, sku = await open_pool(env, uid, units=4)
    hist = await env.api.ok("GET", f"/api/skus/{sku}/history", env.merchant)
    assert hist["state"] == "ended" and hist["shows"] == [] and hist["pool"] == pool
    room = f"h{uid[:10]}"
    await room_with(env, room, sku)
    sale = await launch(env, room, pool, 2, starts_in_s=3600)
    assert (await env.api.ok("GET", f"/api/skus/{sku}/history", env.host))["state"] == "scheduled"
    await env.api.ok("POST", f"/api/rooms/{room}/actions/end_sale", env.host, {"sale": sale["sale_id"]})
    live = await launch(env, room, pool, 2)

    token, _ = viewer(env.settings.secret, "Hal")

    async def bought() -> Any:
        st, body = await env.api.call("POST", f"/api/sales/{live['sale_id']}/reserve", token,
                                      {"qty": 2, "request_id": "h-1"})
        return body if st == 201 else None

    hold = await until("the live sale open", bought)
    assert (await env.api.ok("GET", f"/api/skus/{sku}/history", env.merchant))["state"] == "sold_out"  # 2 held
    await env.api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201)
    ch = await env.api.ok("POST", "/api/channels/store:17/holds", token, {"pool": pool, "request_id": "s-1"}, 201)
    await env.api.ok("POST", f"/api/holds/{ch['hold_id']}/pay", token, {}, 201)

    async def both_settled() -> Any:
        h = await env.api.ok("GET", f"/api/skus/{sku}/history?bucket_s=60", env.merchant)
        return h if sum(c["units"] for c in h["channels"]) == 3 else None

    hist = await until("both orders in the history", both_settled)
    assert {c["channel"]: c["units"] for c in hist["channels"]} == {room: 2, "store:17": 1}
    assert [s["sale_id"] for s in hist["shows"]] == [live["sale_id"], f"{pool}--pool"]
    assert sum(p["units"] for p in hist["timeline"]) == 3 and all(p["t"] % 60_000 == 0 for p in hist["timeline"])
    st, body = await env.api.call("GET", f"/api/skus/{sku}/history", mint_merchant_token(env.settings.secret, "m-x"))
    assert (st, body["error"]["code"]) == (403, "FORBIDDEN")
    st, body = await env.api.call("GET", f"/api/skus/{sku}/history", token)
    assert (st, body["error"]["code"]) == (403, "FORBIDDEN")
    st, body = await env.api.call("GET", f"/api/skus/NOPE-{uid}/history", env.merchant)
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND")
    st, body = await env.api.call("GET", f"/api/skus/{sku}/history?bucket_s=5", env.merchant)
    assert (st, body["error"]["code"]) == (400, "INVALID")


async def test_per_user_limit_per_sku_across_rooms_and_channels(env: GoodsEnv, uid: str) -> None:
    """A pool's sku_user_limit counts a buyer's units of the SKU in every room and channel together."""
    sku = f"SKU-{uid}"
    pool = (await env.api.ok("POST", "/api/pools", env.merchant,
                             {"pool_id": f"pl{uid[:12]}", "sku": sku, "title": "Limited", "unit_price": PRICE,
                              "units": 50, "per_user_limit": 5, "sku_user_limit": 2}, 201))
    assert pool["sku_user_limit"] == 2
    room_a, room_b = f"a{uid[:10]}", f"b{uid[:10]}"
    await room_with(env, room_a, sku)
    await room_with(env, room_b, sku)
    sale_a = await launch(env, room_a, pool["pool_id"], 10, per_user_limit=5)
    sale_b = await launch(env, room_b, pool["pool_id"], 10, per_user_limit=5)
    token, _ = viewer(env.settings.secret, "Lim")

    async def reserve(sale: dict[str, Any], rid: str) -> tuple[int, Any]:
        async def go() -> Any:
            st, body = await env.api.call("POST", f"/api/sales/{sale['sale_id']}/reserve", token,
                                          {"qty": 1, "request_id": rid})
            return (st, body) if not (st == 409 and body["error"]["code"] == "NOT_STARTED") else None
        return tuple(await until("the sale open", go))  # type: ignore[return-value]

    st, a1 = await reserve(sale_a, "a1")
    assert st == 201
    st, c1 = await env.api.call("POST", "/api/channels/web-shop/holds", token,
                                {"pool": pool["pool_id"], "request_id": "c1"})
    assert st == 201, c1
    st, body = await reserve(sale_b, "b1")
    assert (st, body["error"]["code"]) == (409, "LIMIT"), body  # 2 of this SKU already, across rooms + channel
    st, body = await env.api.call("POST", "/api/channels/web-shop/holds", token,
                                  {"pool": pool["pool_id"], "request_id": "c2"})
    assert (st, body["error"]["code"]) == (409, "LIMIT"), body
    await env.api.ok("DELETE", f"/api/holds/{a1['hold_id']}", token)  # one given back: room for one more
    st, b2 = await reserve(sale_b, "b2")
    assert st == 201, b2
    report = await env.api.ok("GET", f"/api/pools/{pool['pool_id']}/audit", env.merchant)
    assert report["ok"], report["problems"]


async def test_audit_during_live_moves_reports_no_false_difference(env: GoodsEnv, uid: str) -> None:
    """Audits taken while top-ups, restocks and channel holds run concurrently (and the reaper copies the
    journal to SQL) all balance: the audit compares one atomic snapshot of the pool and its sales."""
    pool, sku = await open_pool(env, uid, units=2000)
    room = f"r{uid[:10]}"
    await room_with(env, room, sku)
    sales = [await launch(env, room, pool, 10, sale_id=f"s{i}") for i in range(3)]
    token, _ = viewer(env.settings.secret, "Aud")
    stop = asyncio.Event()

    async def mover(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            sale = sales[i % len(sales)]
            await env.api.call("POST", f"/api/rooms/{room}/sales/{sale['sale_id']}/topup", env.host,
                               {"units": 1, "request_id": f"t{n}-{i}"})
            await env.api.call("POST", f"/api/pools/{pool}/stock", env.merchant,
                               {"units": 1, "request_id": f"r{n}-{i}", "reason": "load"})
            if n == 0 and i % 5 == 0:
                await env.api.call("POST", "/api/channels/web-shop/holds", token,
                                   {"pool": pool, "request_id": f"c{i}"})

    movers = [asyncio.create_task(mover(n)) for n in range(4)]
    try:
        for _ in range(40):
            report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
            assert report["ok"], report["problems"]
    finally:
        stop.set()
        await asyncio.gather(*movers)
