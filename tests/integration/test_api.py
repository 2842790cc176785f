"""The HTTP API of docs/PROTOCOL.md, in-process over a real socket, real Redis/Valkey and real SQL."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from conftest import timeout
from gateway_helpers import Api, host_token, redis_now_ms, setup_room, viewer
from inventory.scripts import Inventory
from server.app import create_app
from server.config import Settings
from commerce.identity import mint_host_token

PRIVATE_REDIS = not os.environ.get("REDIS_URL")
# a hang (e.g. a server task that never stops) must fail loudly, not block the run forever
pytestmark = pytest.mark.timeout(90, method="thread")  # no other settlement worker can see our outbox


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    client = await aiohttp_client(create_app(settings.replace(tick_ms=50, settle_block_ms=100)))
    return Api(client)


@pytest.fixture
def host(settings: Settings) -> str:
    return host_token(settings.secret)


def assert_error(status: int, body: Any, want_status: int, code: str) -> None:
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


async def open_sale(api: Api, host: str, room: str, sale_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"product_id": "p0", "units": 5, **fields}
    if sale_id:
        body["sale_id"] = sale_id
    return await api.ok("POST", f"/api/rooms/{room}/sales", host, body, 201)


async def order_settled(api: Api, token: str, order_id: str) -> dict[str, Any]:
    """Bounded poll: 404 NOT_SETTLED while in flight, then 200."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(10)
    delay = 0.02
    while True:
        st, body = await api.call("GET", f"/api/orders/{order_id}", token)
        if st == 200:
            return body
        assert_error(st, body, 404, "NOT_SETTLED")
        assert loop.time() < deadline, "order not settled in time"
        await asyncio.sleep(delay)  # polling a condition with a deadline
        delay = min(delay * 2, 0.2)


async def test_time_and_viewer_token(api: Api, redis: Any, settings: Settings) -> None:
    r0 = await redis_now_ms(redis)
    body = await api.ok("GET", "/api/time", status=200)
    r1 = await redis_now_ms(redis)
    assert r0 - 25 <= body["server_time"] <= r1 + 25
    tok = await api.ok("POST", "/api/viewer-token", json={"name": "Ana"}, status=201)
    assert tok["name"] == "Ana" and tok["user"].startswith("v-") and tok["token"]
    st, body = await api.call("POST", "/api/viewer-token", json={"name": 42})
    assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", "/api/viewer-token", data=b"{nope")
    assert_error(st, body, 400, "BAD_JSON")
    health = await api.ok("GET", "/healthz", status=200)
    assert health["ok"] is True


async def test_rooms_products_sales_and_idempotent_sales(api: Api, host: str, uid: str, settings: Settings,
                                                         redis: Any) -> None:
    vtoken, _ = viewer(settings.secret, "Eve")
    st, body = await api.call("POST", "/api/rooms", None, {"room_id": uid, "title": "x"})
    assert_error(st, body, 401, "UNAUTHORIZED")
    st, body = await api.call("POST", "/api/rooms", vtoken, {"room_id": uid, "title": "x"})
    assert_error(st, body, 403, "FORBIDDEN")
    st, body = await api.call("POST", "/api/rooms", "forged.token.here", {"room_id": uid, "title": "x"})
    assert_error(st, body, 401, "UNAUTHORIZED")
    other = mint_host_token(settings.secret, "h9", (f"{uid}-elsewhere",))
    st, body = await api.call("POST", "/api/rooms", other, {"room_id": uid, "title": "x"})
    assert_error(st, body, 403, "FORBIDDEN")
    st, body = await api.call("POST", "/api/rooms", host, {"room_id": "bad id", "title": "x"})
    assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", "/api/rooms", host, data=b"[1, 2]")
    assert_error(st, body, 400, "BAD_JSON")

    room = await api.ok("POST", "/api/rooms", host, {"room_id": uid, "title": "Friday drop",
                                                      "player_url": "https://video.example/x.m3u8"}, 201)
    assert room["room_id"] == uid and room["title"] == "Friday drop" and room["status"] == "scheduled"
    st, body = await api.call("GET", f"/api/rooms/{uid}-missing")
    assert_error(st, body, 404, "NOT_FOUND")

    product = await api.ok("POST", f"/api/rooms/{uid}/products", host,
                           {"product_id": "p0", "sku": f"{uid}-sku", "title": "Mug", "unit_price": 1500,
                            "currency": "EUR"}, 201)
    assert product == {"product_id": "p0", "sku": f"{uid}-sku", "title": "Mug", "description": "", "image_url": "",
                       "unit_price": 1500, "currency": "EUR"}
    for bad in ({"sku": "s", "title": "t", "unit_price": "15", "currency": "EUR"},
                {"sku": "s", "title": "t", "unit_price": 1.5, "currency": "EUR"},
                {"sku": "s", "title": "t", "unit_price": 15, "currency": "eur"},
                {"sku": "s s", "title": "t", "unit_price": 15, "currency": "EUR"},
                {"title": "t", "unit_price": 15, "currency": "EUR"}):
        st, body = await api.call("POST", f"/api/rooms/{uid}/products", host, bad)
        assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", f"/api/rooms/{uid}/products", vtoken,
                              {"sku": "s", "title": "t", "unit_price": 15, "currency": "EUR"})
    assert_error(st, body, 403, "FORBIDDEN")

    now = int(await redis_now_ms(redis))
    spec = {"sale_id": f"{uid}-s1", "product_id": "p0", "units": 7, "per_user_limit": 2, "starts_at": now - 1000,
            "ends_at": now + 600_000, "hold_ttl_s": 60}
    sale = await api.ok("POST", f"/api/rooms/{uid}/sales", host, spec, 201)
    assert sale["sale_id"] == f"{uid}-s1" and sale["room_id"] == uid and sale["product_id"] == "p0"
    assert sale["unit_price"] == 1500 and sale["currency"] == "EUR" and sale["allocated"] == 7
    assert sale["units_left"] == 7 and sale["per_user_limit"] == 2 and sale["hold_ttl_ms"] == 60_000
    assert sale["starts_at"] == now - 1000 and sale["ends_at"] == now + 600_000 and sale["state"] == "open"
    again = await api.ok("POST", f"/api/rooms/{uid}/sales", host, spec, (200, 201))
    assert again["sale_id"] == sale["sale_id"] and again["allocated"] == 7 and again["starts_at"] == now - 1000
    for change in ({"units": 8}, {"per_user_limit": 3}, {"unit_price": 1}, {"ends_at": now + 700_000}):
        st, body = await api.call("POST", f"/api/rooms/{uid}/sales", host, {**spec, **change})
        assert_error(st, body, 409, "CONFLICT")
    got = await api.ok("GET", f"/api/sales/{uid}-s1", status=200)
    assert got["allocated"] == 7 and got["units_left"] == 7 and got["per_user_limit"] == 2
    assert got["unit_price"] == 1500 and got["state"] == "open"

    st, body = await api.call("POST", f"/api/rooms/{uid}/sales", host, {"product_id": "nope", "units": 1})
    assert_error(st, body, 404, "NOT_FOUND")
    for bad in ({"product_id": "p0", "units": "5"}, {"product_id": "p0", "units": -1},
                {"product_id": "p0", "units": 5, "per_user_limit": 0},
                {"product_id": "p0", "units": 5, "duration_s": 0}, {"units": 5}):
        st, body = await api.call("POST", f"/api/rooms/{uid}/sales", host, bad)
        assert_error(st, body, 400, "INVALID")
    st, body = await api.call("GET", f"/api/sales/{uid}-nope")
    assert_error(st, body, 404, "NOT_FOUND")

    full = await api.ok("GET", f"/api/rooms/{uid}", status=200)
    assert full["room_id"] == uid and [p["product_id"] for p in full["products"]] == ["p0"]
    assert [s["sale_id"] for s in full["sales"]] == [f"{uid}-s1"]


async def test_reserve_statuses_and_error_bodies(api: Api, host: str, uid: str, settings: Settings,
                                                 inventory: Inventory) -> None:
    await setup_room(api, host, uid)
    sid = (await open_sale(api, host, uid, f"{uid}-s", units=3, per_user_limit=2))["sale_id"]
    later = (await open_sale(api, host, uid, f"{uid}-later", starts_in_s=60))["sale_id"]
    a, ua = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Ben")
    c, _ = viewer(settings.secret, "Cid")
    path = f"/api/sales/{sid}/reserve"

    st, body = await api.call("POST", path, None, {"request_id": "r1", "qty": 1})
    assert_error(st, body, 401, "UNAUTHORIZED")
    st, body = await api.call("POST", path, "not-a-token", {"request_id": "r1", "qty": 1})
    assert_error(st, body, 401, "UNAUTHORIZED")
    for qty in (0, -1, "1", 1.5, True, None, [1], 10**9):
        st, body = await api.call("POST", path, a, {"request_id": f"{uid}-q", "qty": qty})
        assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", path, a, {"qty": 1})
    assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", path, a, {"request_id": 5, "qty": 1})
    assert_error(st, body, 400, "INVALID")
    st, body = await api.call("POST", path, a, data=b"{bad json")
    assert_error(st, body, 400, "BAD_JSON")
    st, body = await api.call("POST", path, a, data=b"[]")
    assert_error(st, body, 400, "BAD_JSON")
    st, body = await api.call("POST", f"/api/sales/{uid}-nope/reserve", a, {"request_id": f"{uid}-n", "qty": 1})
    assert_error(st, body, 404, "NOT_FOUND")
    st, body = await api.call("POST", f"/api/sales/{later}/reserve", a, {"request_id": f"{uid}-l", "qty": 1})
    assert_error(st, body, 409, "NOT_STARTED")
    untouched = await inventory.counters(sid)
    assert untouched is not None and (untouched.available, untouched.held) == (3, 0)

    hold = await api.ok("POST", path, a, {"request_id": f"{uid}-a1", "qty": 1}, 201)
    assert hold["hold_id"].startswith(sid + ".") and hold["qty"] == 1 and hold["units_left"] == 2
    assert hold["status"] == "held" and hold["sale_id"] == sid and hold["pay_by"] > 0
    replay = await api.ok("POST", path, a, {"request_id": f"{uid}-a1", "qty": 1}, 201)
    assert replay["hold_id"] == hold["hold_id"]
    st, body = await api.call("POST", path, a, {"request_id": f"{uid}-a1", "qty": 2})
    assert_error(st, body, 409, "IDEM_MISMATCH")
    st, body = await api.call("POST", path, a, {"request_id": f"{uid}-a2", "qty": 2})
    assert_error(st, body, 409, "LIMIT")
    await api.ok("POST", path, b, {"request_id": f"{uid}-b1", "qty": 2}, 201)
    st, body = await api.call("POST", path, c, {"request_id": f"{uid}-c1", "qty": 1})
    assert_error(st, body, 409, "SOLD_OUT")
    counters = await inventory.counters(sid)
    assert counters is not None and (counters.available, counters.held, counters.sold) == (0, 3, 0)
    assert (await inventory.check_invariant(sid)).ok

    # ended sale: 410
    await api.ok("POST", f"/api/rooms/{uid}/actions/end_sale", host, {"sale": later}, 200)
    st, body = await api.call("POST", f"/api/sales/{later}/reserve", a, {"request_id": f"{uid}-e", "qty": 1})
    assert_error(st, body, 410, "ENDED")


async def test_same_request_id_from_two_viewers(api: Api, host: str, uid: str, settings: Settings) -> None:
    """A request_id is unique per purchase attempt of one client; another viewer using the same string is
    another purchase, not IDEM_MISMATCH (and never someone else's hold)."""
    await setup_room(api, host, uid)
    sid = (await open_sale(api, host, uid, f"{uid}-s", units=5))["sale_id"]
    a, _ = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Ben")
    ha = await api.ok("POST", f"/api/sales/{sid}/reserve", a, {"request_id": "1", "qty": 1}, 201)
    st, hb = await api.call("POST", f"/api/sales/{sid}/reserve", b, {"request_id": "1", "qty": 1})
    assert st == 201 and hb["hold_id"] != ha["hold_id"], (st, hb)


async def test_holds_pay_orders_release(aiohttp_client: Any, settings: Settings, host: str, uid: str,
                                        inventory: Inventory) -> None:
    # a gateway without settlement: orders stay NOT_SETTLED until a settling process runs
    api = Api(await aiohttp_client(create_app(settings.replace(settle_in_process=False))))
    await setup_room(api, host, uid)
    sid = (await open_sale(api, host, uid, f"{uid}-s", units=5, per_user_limit=3))["sale_id"]
    a, ua = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Ben")
    hold = await api.ok("POST", f"/api/sales/{sid}/reserve", a, {"request_id": f"{uid}-1", "qty": 2}, 201)
    hid = hold["hold_id"]

    got = await api.ok("GET", f"/api/holds/{hid}", a, status=200)
    assert got["hold_id"] == hid and got["user_id"] == ua and got["qty"] == 2 and got["status"] == "held"
    assert got["order_id"] is None
    st, body = await api.call("GET", f"/api/holds/{hid}", b)
    assert_error(st, body, 403, "FORBIDDEN")
    st, body = await api.call("GET", f"/api/holds/{hid}")
    assert_error(st, body, 401, "UNAUTHORIZED")
    st, body = await api.call("GET", f"/api/holds/{sid}.0000000000000000", a)
    assert_error(st, body, 404, "NOT_FOUND")
    st, body = await api.call("GET", "/api/holds/no-dot-here", a)
    assert_error(st, body, 400, "INVALID")

    st, body = await api.call("POST", f"/api/holds/{hid}/pay", b, {})
    assert_error(st, body, 403, "FORBIDDEN")
    st, body = await api.call("POST", f"/api/holds/{hid}/pay", a, {"payment_ref": 7})
    assert_error(st, body, 400, "INVALID")
    paid = await api.ok("POST", f"/api/holds/{hid}/pay", a, {"payment_ref": f"{uid}-pay"}, 201)
    order_id = paid["order_id"]
    assert paid["status"] == "confirmed" and order_id
    again = await api.ok("POST", f"/api/holds/{hid}/pay", a, {"payment_ref": f"{uid}-pay"}, 200)
    assert again["order_id"] == order_id
    st, body = await api.call("POST", f"/api/holds/{hid}/pay", a, {"payment_ref": f"{uid}-other"})
    assert_error(st, body, 409, "ALREADY_CONFIRMED")
    assert (await api.ok("GET", f"/api/holds/{hid}", a, status=200))["status"] == "confirmed"

    st, body = await api.call("GET", f"/api/orders/{order_id}", a)
    if PRIVATE_REDIS:  # no settlement worker anywhere yet
        assert_error(st, body, 404, "NOT_SETTLED")
    st, body = await api.call("GET", f"/api/orders/{order_id}", b)
    assert st in (403, 404), (st, body)
    st, body = await api.call("GET", f"/api/orders/{uid}-s.ffffffffffffffff", a)
    assert_error(st, body, 404, "NOT_FOUND")

    # a second process with settlement picks the order up
    await aiohttp_client(create_app(settings.replace(settle_block_ms=100)))
    order = await order_settled(api, a, order_id)
    assert order["order_id"] == order_id and order["sale_id"] == sid and order["room_id"] == uid
    assert order["user_id"] == ua and order["qty"] == 2 and order["unit_price"] == 1999 and order["total"] == 3998
    assert order["currency"] == "EUR" and order["payment_ref"] == f"{uid}-pay" and order["status"] == "settled"
    assert order["settled_at"] >= order["confirmed_at"] >= order["reserved_at"]
    st, body = await api.call("GET", f"/api/orders/{order_id}", b)
    assert_error(st, body, 403, "FORBIDDEN")
    assert (await api.ok("GET", f"/api/orders/{order_id}", host, status=200))["order_id"] == order_id
    st, body = await api.call("GET", f"/api/orders/{order_id}")
    assert_error(st, body, 401, "UNAUTHORIZED")

    # release
    h2 = (await api.ok("POST", f"/api/sales/{sid}/reserve", a, {"request_id": f"{uid}-2", "qty": 1}, 201))["hold_id"]
    st, body = await api.call("DELETE", f"/api/holds/{h2}", b)
    assert_error(st, body, 403, "FORBIDDEN")
    rel = await api.ok("DELETE", f"/api/holds/{h2}", a, status=200)
    assert rel["hold_id"] == h2 and rel["status"] == "released" and rel["units_left"] == 3
    st, body = await api.call("DELETE", f"/api/holds/{h2}", a)
    assert st == 409 and body["error"]["code"] == "NOT_HELD", (st, body)
    st, body = await api.call("POST", f"/api/holds/{h2}/pay", a, {})
    assert_error(st, body, 410, "EXPIRED")
    st, body = await api.call("DELETE", f"/api/holds/{hid}", a)  # a paid hold can't be released
    assert st == 409 and body["error"]["code"] == "NOT_HELD", (st, body)
    c = await inventory.counters(sid)
    assert c is not None and (c.available, c.held, c.sold) == (3, 0, 2)
    assert (await inventory.check_invariant(sid)).ok


async def test_room_actions_and_dashboard(api: Api, host: str, uid: str, settings: Settings) -> None:
    await setup_room(api, host, uid)
    sid = (await open_sale(api, host, uid, f"{uid}-s", units=10, per_user_limit=5, unit_price=500))["sale_id"]
    a, _ = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Ben")
    for action, body in (("go_live", {}), ("pin", {"product": "p1"}), ("unpin", {}), ("announce", {"text": "hi"}),
                         ("hide_comment", {"comment": "c-1"}), ("mute", {"user": "v-x"})):
        assert await api.ok("POST", f"/api/rooms/{uid}/actions/{action}", host, body, 200) == \
            {"ok": True, "action": action}
    for action, body, code, status in (("pin", {}, "INVALID", 400), ("pin", {"product": "zz"}, "NOT_FOUND", 404),
                                       ("announce", {"text": "  "}, "INVALID", 400),
                                       ("announce", {"text": "x" * 301}, "INVALID", 400),
                                       ("end_sale", {"sale": f"{uid}-none"}, "NOT_FOUND", 404),
                                       ("explode", {}, "NOT_FOUND", 404)):
        st, resp = await api.call("POST", f"/api/rooms/{uid}/actions/{action}", host, body)
        assert_error(st, resp, status, code)
    st, resp = await api.call("POST", f"/api/rooms/{uid}-nope/actions/go_live", host, {})
    assert_error(st, resp, 404, "NOT_FOUND")
    st, resp = await api.call("POST", f"/api/rooms/{uid}/actions/go_live", a, {})
    assert_error(st, resp, 403, "FORBIDDEN")

    # two orders: Ana 2 units, Ben 1 unit; one more tap that is refused for LIMIT; one released hold
    h1 = await api.ok("POST", f"/api/sales/{sid}/reserve", a, {"request_id": f"{uid}-a", "qty": 2}, 201)
    h2 = await api.ok("POST", f"/api/sales/{sid}/reserve", b, {"request_id": f"{uid}-b", "qty": 1}, 201)
    h3 = await api.ok("POST", f"/api/sales/{sid}/reserve", b, {"request_id": f"{uid}-b2", "qty": 1}, 201)
    st, _ = await api.call("POST", f"/api/sales/{sid}/reserve", a, {"request_id": f"{uid}-a2", "qty": 4})
    assert st == 409
    await api.ok("DELETE", f"/api/holds/{h3['hold_id']}", b, status=200)
    o1 = (await api.ok("POST", f"/api/holds/{h1['hold_id']}/pay", a, {}, 201))["order_id"]
    o2 = (await api.ok("POST", f"/api/holds/{h2['hold_id']}/pay", b, {}, 201))["order_id"]
    await order_settled(api, a, o1)
    await order_settled(api, b, o2)

    st, resp = await api.call("GET", f"/api/rooms/{uid}/dashboard", a)
    assert_error(st, resp, 403, "FORBIDDEN")
    st, resp = await api.call("GET", f"/api/rooms/{uid}/dashboard")
    assert_error(st, resp, 401, "UNAUTHORIZED")
    # funnel counters are aggregated per process and flushed about once a second: bounded poll
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(5)
    while True:
        d = await api.ok("GET", f"/api/rooms/{uid}/dashboard", host, status=200)
        if d["requests"]["paid"] >= 2 or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)  # polling a condition with a deadline
    assert d["room"] == {"room_id": uid, "title": f"Room {uid}", "status": "live"}
    assert d["orders"] == 2 and d["units"] == 3 and d["gmv"] == {"EUR": 1500}
    # requests: 4 taps, 3 reservations, 2 payments; the funnel counts people (Ana and Ben)
    assert d["requests"] == {"tapped": 4, "reserved": 3, "paid": 2}
    assert {k: d["funnel"][k] for k in ("tapped", "reserved", "paid")} == {"tapped": 2, "reserved": 2, "paid": 2}
    assert d["funnel"]["viewers"] >= 2
    assert sum(m["orders"] for m in d["orders_per_minute"]) == 2
    assert sum(m["gmv"] for m in d["orders_per_minute"]) == 1500
    (sale,) = d["sales"]
    assert sale["sale_id"] == sid and sale["settled_units"] == 3 and sale["sold"] == 3 and sale["units_left"] == 7
    assert {o["order_id"] for o in d["latest_orders"]} == {o1, o2}
    assert isinstance(d["viewers"], int) and isinstance(d["likes"], int) and isinstance(d["server_time"], int)


async def test_unknown_api_path_is_json(api: Api) -> None:
    st, body = await api.call("GET", "/api/nothing-here")
    assert_error(st, body, 404, "NOT_FOUND")
    st, body = await api.call("PUT", "/api/time")
    assert st == 405 and body["error"]["code"] == "METHOD_NOT_ALLOWED"
