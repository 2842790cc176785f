"""Share-to-earn (issue "Growth and data", item 1) against real engines: share links attribute a viewer
who joins through them (first touch, never to themselves, nothing without a joined session), the
commission is written with the order in settlement's transaction and reversed by a refund; mini-shops
sell merchants' open pools through the channel path and earn their owner the pool's rate; payouts
export as CSV; bad input is refused with a typed error. Interest signals of the same session (join,
leave, tap, held, saved, viewed) reach the `signals` table through the stream and the sink."""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from typing import Any

import pytest
from sqlalchemy import select

from conftest import timeout
from gateway_helpers import JSON, WsClient, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory.growth import commission_of, commissions
from inventory.signal_log import signals
from server.appkeys import COMMERCE, CORE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

PRICE = 3333


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings.replace(signal_flush_ms=50, commission_bps=500))


async def room_with_sale(env: GoodsEnv, uid: str, units: int = 50) -> tuple[str, str]:
    room = f"g{uid[:12]}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Share night"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": f"SKU-{uid}", "title": "Bag", "unit_price": PRICE}, 201)
    s = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                         {"product_id": "p0", "units": units, "per_user_limit": 5}, 201)
    return room, s["sale_id"]


async def join(env: GoodsEnv, room: str, token: str, ref: str | None = None) -> WsClient:
    ws = await WsClient.connect(env.client, protocol=JSON)
    msg: dict[str, Any] = {"type": "join", "room": room, "token": token}
    if ref:
        msg["ref"] = ref
    await ws.send(msg)
    await ws.wait(lambda m: m["type"] == "snapshot", timeout(5))
    return ws


async def buy_and_pay(env: GoodsEnv, sale: str, token: str, qty: int = 1) -> str:
    hold = await env.api.ok("POST", f"/api/sales/{sale}/reserve", token,
                            {"qty": qty, "request_id": "r-" + secrets.token_hex(3)}, 201)
    await env.api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201)
    return str(hold["hold_id"])


async def settled(env: GoodsEnv, order_id: str, token: str) -> dict[str, Any]:
    async def get() -> dict[str, Any] | None:
        status, body = await env.api.call("GET", f"/api/orders/{order_id}", token)
        return body if status == 200 else None
    return await until(f"order {order_id} settled", get)


async def commission_rows(env: GoodsEnv, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    store = env.client.app[CORE].store
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(commissions).where(commissions.c.order_id.in_(order_ids)))).all()
    return {r.order_id: dict(r._mapping) for r in rows}


async def test_a_share_link_attributes_the_buyer_and_settlement_writes_the_commission(env: GoodsEnv, uid: str) -> None:
    room, sale = await room_with_sale(env, uid)
    sharer, sharer_id = viewer(env.settings.secret, "Sharer")
    buyer, buyer_id = viewer(env.settings.secret, "Buyer")
    link = await env.api.ok("POST", "/api/share-links", sharer, {"room_id": room, "product_id": "p0"}, 201)
    assert link["url"] == f"/rooms/{room}?ref={link['code']}&product=p0" and link["sharer"] == sharer_id
    assert (await env.api.ok("GET", f"/api/share-links/{link['code']}"))["room_id"] == room
    await env.api.ok("PUT", f"/api/rooms/{room}/products/p0/commission", env.host, {"commission_bps": 1250})

    ws = await join(env, room, buyer, link["code"])
    order_id = await buy_and_pay(env, sale, buyer, qty=2)
    order = await settled(env, order_id, buyer)
    rows = await commission_rows(env, [order_id])
    assert rows[order_id]["sharer"] == sharer_id and rows[order_id]["source"] == "link"
    assert rows[order_id]["amount"] == commission_of(2 * PRICE, 1250) == (2 * PRICE * 1250 + 5000) // 10000
    assert rows[order_id]["state"] == "earned" and order["total"] == 2 * PRICE

    mine = await env.api.ok("GET", "/api/me/earnings", sharer)
    assert mine["totals"]["EUR"]["pending"] == rows[order_id]["amount"]
    assert [c["status"] for c in mine["commissions"]] == ["pending"]
    sharing = await env.api.ok("GET", f"/api/rooms/{room}/sharing", env.host)
    assert {(s["source"], s["orders"]) for s in sharing["by_source"]} == {("link", 1)}
    assert sharing["top_sharers"][0]["sharer"] == sharer_id

    # a refund reverses exactly this commission, in the refund's transaction
    await env.api.ok("POST", f"/api/orders/{order_id}/refund", env.host, {"restock": True}, 201)
    assert (await commission_rows(env, [order_id]))[order_id]["state"] == "reversed"
    mine = await env.api.ok("GET", "/api/me/earnings", sharer)
    assert mine["totals"]["EUR"]["reversed"] == rows[order_id]["amount"] and mine["totals"]["EUR"]["pending"] == 0

    status, _ = await env.api.call("GET", "/api/payouts.csv?room=" + room, buyer)
    assert status == 403
    resp = await env.client.get(f"/api/payouts.csv?room={room}", headers={"Authorization": f"Bearer {env.host}"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert table == [{"sharer": sharer_id, "currency": "EUR", "orders": "1", "pending": "0", "confirmed": "0",
                      "reversed": str(rows[order_id]["amount"])}]
    await ws.close()


async def test_first_touch_wins_and_nobody_earns_from_themselves_or_without_a_join(env: GoodsEnv, uid: str) -> None:
    room, sale = await room_with_sale(env, uid)
    a, a_id = viewer(env.settings.secret, "A")
    b, _ = viewer(env.settings.secret, "B")
    c, _ = viewer(env.settings.secret, "C")
    d, _ = viewer(env.settings.secret, "D")
    link_a = (await env.api.ok("POST", "/api/share-links", a, {"room_id": room}, 201))["code"]
    link_b = (await env.api.ok("POST", "/api/share-links", b, {"room_id": room}, 201))["code"]

    ws1 = await join(env, room, c, link_a)  # first touch: A
    ws2 = await join(env, room, c, link_b)  # a second link in the window changes nothing
    own = await join(env, room, a, link_a)  # A through A's own link: nothing
    orders = [await buy_and_pay(env, sale, c), await buy_and_pay(env, sale, a), await buy_and_pay(env, sale, d)]
    for o, t in zip(orders, (c, a, d)):
        await settled(env, o, t)
    rows = await commission_rows(env, orders)
    assert set(rows) == {orders[0]} and rows[orders[0]]["sharer"] == a_id
    store = env.client.app[CORE].store
    got = {o.order_id: o for o in (await store.get_orders(orders)).values()}
    assert [got[o].source for o in orders] == ["link", "direct", "direct"]
    # a link of another room attributes nothing either
    other, _ = await room_with_sale(env, uid[::-1])
    e, _ = viewer(env.settings.secret, "E")
    ws3 = await join(env, other, e, link_a)
    assert await env.client.app[COMMERCE].growth.attribution(e) == ""
    for ws in (ws1, ws2, own, ws3):
        await ws.close()


async def test_a_mini_shop_sells_open_pools_and_earns_its_owner_the_pools_rate(env: GoodsEnv, uid: str) -> None:
    pool = f"pl{uid[:10]}"
    closed_pool = f"pc{uid[:10]}"
    for pid in (pool, closed_pool):
        await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": pid, "sku": f"SKU-{pid}", "title": "Lamp",
                                                              "unit_price": 2000, "units": 20}, 201)
    keeper, keeper_id = viewer(env.settings.secret, "Keeper")
    buyer, _ = viewer(env.settings.secret, "Friend")
    # the merchant opens one pool to shopkeepers at 8%; a shop may list only open pools
    status, err = await env.api.call("POST", "/api/shops", keeper, {"title": "Ana's picks", "pools": [pool]})
    assert status == 403 and err["error"]["code"] == "FORBIDDEN"
    out = await env.api.ok("PUT", f"/api/pools/{pool}/shopkeepers", env.merchant, {"open": True, "commission_bps": 800})
    assert out == {"pool_id": pool, "open": True, "commission_bps": 800}
    status, err = await env.api.call("PUT", f"/api/pools/{pool}/shopkeepers", keeper, {"open": True})
    assert status == 403
    assert pool in {p["pool_id"] for p in (await env.api.ok("GET", "/api/shop-pools"))["pools"]}
    shop = await env.api.ok("POST", "/api/shops", keeper, {"shop_id": f"s{uid[:10]}", "title": "Ana's picks",
                                                           "pools": [pool]}, 201)
    assert shop["channel"] == f"shop:s{uid[:10]}" and [p["pool_id"] for p in shop["products"]] == [pool]
    assert (await env.api.ok("GET", f"/api/shops/{shop['shop_id']}"))["title"] == "Ana's picks"

    status, err = await env.api.call("POST", f"/api/channels/{shop['channel']}/holds", buyer,
                                     {"pool": closed_pool, "request_id": "x1"})
    assert status == 404  # the shop does not sell that pool: nothing reserved
    hold = await env.api.ok("POST", f"/api/channels/{shop['channel']}/holds", buyer,
                            {"pool": pool, "request_id": "h1", "qty": 3}, 201)
    await env.api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", buyer, {}, 201)
    order = await settled(env, hold["hold_id"], buyer)
    assert order["channel"] == shop["channel"]
    rows = await commission_rows(env, [hold["hold_id"]])
    assert rows[hold["hold_id"]]["sharer"] == keeper_id and rows[hold["hold_id"]]["rate_bps"] == 800
    assert rows[hold["hold_id"]]["amount"] == commission_of(6000, 800) == 480
    # the shopkeeper buying in their own shop earns nothing
    own = await env.api.ok("POST", f"/api/channels/{shop['channel']}/holds", keeper, {"pool": pool, "request_id": "o1"}, 201)
    await env.api.ok("POST", f"/api/holds/{own['hold_id']}/pay", keeper, {}, 201)
    await settled(env, own["hold_id"], keeper)
    assert await commission_rows(env, [own["hold_id"]]) == {}
    resp = await env.client.get("/api/payouts.csv", headers={"Authorization": f"Bearer {env.merchant}"})
    assert keeper_id in await resp.text()


async def test_bad_input_is_refused_and_changes_nothing(env: GoodsEnv, uid: str) -> None:
    room, _ = await room_with_sale(env, uid)
    a, _ = viewer(env.settings.secret, "A")
    for body, status, code in (({"room_id": "nope-" + uid}, 404, "NOT_FOUND"),
                               ({"room_id": room, "product_id": "zz"}, 404, "NOT_FOUND"),
                               ({"room_id": "bad room"}, 400, "INVALID"), ({}, 400, "INVALID")):
        got, err = await env.api.call("POST", "/api/share-links", a, body)
        assert (got, err["error"]["code"]) == (status, code), body
    got, err = await env.api.call("POST", "/api/share-links", None, {"room_id": room})
    assert got == 401
    got, err = await env.api.call("PUT", f"/api/rooms/{room}/products/p0/commission", env.host, {"commission_bps": 10001})
    assert (got, err["error"]["code"]) == (400, "INVALID")
    got, _ = await env.api.call("PUT", f"/api/rooms/{room}/products/p0/commission", a, {"commission_bps": 100})
    assert got == 403
    got, err = await env.api.call("GET", "/api/share-links/nosuchcode")
    assert got == 404
    assert (await env.api.ok("GET", "/api/me/share-links", a))["links"] == []
    # link creation is rate-limited per viewer
    b, _ = viewer(env.settings.secret, "B")
    codes = [await env.api.call("POST", "/api/share-links", b, {"room_id": room}) for _ in range(21)]
    assert [s for s, _ in codes].count(201) == 20 and codes[-1][0] == 429


async def test_interest_signals_of_a_session_reach_sql(env: GoodsEnv, uid: str) -> None:
    room, sale = await room_with_sale(env, uid, units=1)
    a, a_id = viewer(env.settings.secret, "A")
    b, b_id = viewer(env.settings.secret, "B")
    ws = await join(env, room, a)
    await ws.send({"type": "view", "product": "p0"})
    hold = await env.api.ok("POST", f"/api/sales/{sale}/reserve", a, {"qty": 1, "request_id": "q1"}, 201)
    status, _ = await env.api.call("POST", f"/api/sales/{sale}/reserve", b, {"qty": 1, "request_id": "q2"})
    assert status == 409  # sold out: came too late
    await env.api.ok("PUT", f"/api/me/saved/{room}/p0", b, None, 201)
    anon = await WsClient.connect(env.client, protocol=JSON)
    await anon.send({"type": "join", "room": room, "device": "dev-" + uid[:6]})
    await anon.wait(lambda m: m["type"] == "snapshot", timeout(5))
    await ws.close()
    await anon.close()
    store = env.client.app[CORE].store

    async def kinds() -> set[tuple[str, str]] | None:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(signals.c.kind, signals.c.user_id, signals.c.ref, signals.c.sku)
                                       .where(signals.c.room_id == room))).all()
        got = {(r.kind, r.user_id) for r in rows}
        want = {("join", a_id), ("viewed", a_id), ("tap", a_id), ("held", a_id), ("tap", b_id), ("sold_out", b_id),
                ("saved", b_id), ("leave", a_id), ("join", "b:dev-" + uid[:6]), ("leave", "b:dev-" + uid[:6])}
        if want <= got:
            assert any(r.kind == "held" and r.ref == hold["hold_id"] and r.sku == f"SKU-{uid}" for r in rows)
            return got
        return None
    await until("the session's signals in SQL", kinds)


async def test_watching_a_pinned_product_long_enough_records_watched_once_per_pin(
        aiohttp_client: Any, settings: Settings, uid: str) -> None:
    env = await open_goods_env(aiohttp_client, settings.replace(signal_flush_ms=50, signal_watch_s=1))
    room, _ = await room_with_sale(env, uid)
    a, a_id = viewer(env.settings.secret, "A")
    ws = await join(env, room, a)
    host_ws = await join(env, room, env.host)  # hosts are not the audience: nothing recorded for them
    await env.api.ok("POST", f"/api/rooms/{room}/actions/pin", env.host, {"product": "p0"})
    store = env.client.app[CORE].store

    async def watched() -> list[Any] | None:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(signals.c.user_id, signals.c.product_id, signals.c.value)
                                       .where(signals.c.room_id == room, signals.c.kind == "watched"))).all()
        return rows or None
    rows = await until("a watched signal", watched)
    assert [(r.user_id, r.product_id) for r in rows] == [(a_id, "p0")] and rows[0].value >= 1
    # still watching the same pin: no second signal
    await ws.send({"type": "ping", "rid": "p"})
    await ws.wait(lambda m: m["type"] == "pong", timeout(5))
    async with store.engine.connect() as conn:
        kinds = {r.user_id for r in (await conn.execute(select(signals.c.user_id)
                                                       .where(signals.c.room_id == room))).all()}
    assert kinds == {a_id}
    await ws.close()
    await host_ws.close()


async def test_concurrent_flushes_write_each_signal_once(redis_url: str, uid: str) -> None:
    """The recorder's loop, a caller and the shutdown may flush at once: every signal is in the stream
    exactly once, in order, and none recorded meanwhile is lost."""
    from redis_helpers import redis_for

    from commerce.signals import SignalKind, Signals
    from inventory.signal_log import decode_batch

    client = redis_for(redis_url, decode=False)
    stream = f"ls:test-signals:{uid}"
    rec = Signals(client, stream=stream)
    try:
        for i in range(50):
            rec.record(SignalKind.TAP, f"u{i}", "r")
        first = asyncio.ensure_future(rec.flush())
        for i in range(50, 80):
            rec.record(SignalKind.TAP, f"u{i}", "r")
        await asyncio.gather(first, rec.flush(), rec.flush())
        await rec.flush()
        users = [s.user_id for _, f in await client.xrange(stream) for s in decode_batch(f[b"d"])]
        assert users == [f"u{i}" for i in range(80)]
    finally:
        await client.delete(stream)
        await client.aclose()
