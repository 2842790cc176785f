"""HTTP defects of issue 9 (items 5, 6 and 11): strict room/sale input, JSON for over-long URLs,
`settled: true` on a repeated pay of a settled order, and GET /api/me/orders for catching up on
`order_confirmed` messages a client may have missed. In-process over a real socket, real
Redis/Valkey and real SQL (SQLite, or PostgreSQL with DATABASE_URL)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from conftest import timeout
from gateway_helpers import Api, host_token, setup_room, viewer
from server.app import create_app
from server.config import Settings
from commerce.requests import MAX_SALE_UNITS
from stream_gateway.messages import BadInbound, parse_inbound

from test_api import api, host  # noqa: E402,F401  (the same fixtures)

pytestmark = pytest.mark.timeout(90, method="thread")


def assert_error(status: int, body: Any, want_status: int, code: str, mentions: str = "") -> None:
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert mentions in body["error"]["message"], body


async def order_settled(api: Api, token: str, order_id: str) -> dict[str, Any]:
    """Bounded poll: 404 NOT_SETTLED while in flight, then 200."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(10)
    while True:
        st, body = await api.call("GET", f"/api/orders/{order_id}", token)
        if st == 200:
            return body
        assert_error(st, body, 404, "NOT_SETTLED")
        assert loop.time() < deadline, "order not settled in time"
        await asyncio.sleep(0.05)  # polling a condition with a deadline


async def buy_and_pay(api: Api, token: str, sale_id: str, rid: str, qty: int = 1) -> str:
    hold = await api.ok("POST", f"/api/sales/{sale_id}/reserve", token, {"request_id": rid, "qty": qty}, 201)
    paid = await api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201)
    return paid["order_id"]


# -- item 5: HTTP leniency ---------------------------------------------------------------------------

async def test_create_room_requires_a_title(api: Api, host: str, uid: str) -> None:
    for body in ({}, {"room_id": uid}, {"room_id": uid, "title": None}, {"room_id": uid, "title": "   "}):
        st, resp = await api.call("POST", "/api/rooms", host, body)
        assert_error(st, resp, 400, "INVALID", "title")
    st, resp = await api.call("POST", "/api/rooms", host, data=b"")
    assert_error(st, resp, 400, "INVALID", "title")
    st, resp = await api.call("GET", f"/api/rooms/{uid}")
    assert_error(st, resp, 404, "NOT_FOUND")  # nothing was created
    room = await api.ok("POST", "/api/rooms", host, {"room_id": uid, "title": "Friday drop"}, 201)
    assert room["title"] == "Friday drop"


async def test_sale_units_between_1_and_the_bound(api: Api, host: str, uid: str) -> None:
    assert MAX_SALE_UNITS == 1_000_000
    await setup_room(api, host, uid)
    for units in (0, -1, MAX_SALE_UNITS + 1, 99_999_999):
        st, resp = await api.call("POST", f"/api/rooms/{uid}/sales", host, {"product_id": "p0", "units": units})
        assert_error(st, resp, 400, "INVALID", "units")
    full = await api.ok("GET", f"/api/rooms/{uid}", status=200)
    assert full["sales"] == []
    sale = await api.ok("POST", f"/api/rooms/{uid}/sales", host, {"product_id": "p0", "units": MAX_SALE_UNITS}, 201)
    assert sale["allocated"] == MAX_SALE_UNITS
    one = await api.ok("POST", f"/api/rooms/{uid}/sales", host, {"product_id": "p0", "units": 1}, 201)
    assert one["allocated"] == 1


def test_ws_launch_sale_units_use_the_same_bound() -> None:
    def launch(units: Any) -> Any:
        msg = {"type": "launch_sale", "rid": "l1", "product": "p0", "units": units}
        return parse_inbound(orjson.dumps(msg).decode())

    assert launch(MAX_SALE_UNITS).body.units == MAX_SALE_UNITS
    assert launch(1).body.units == 1
    for units in (0, MAX_SALE_UNITS + 1, 99_999_999):
        with pytest.raises(BadInbound) as exc:
            launch(units)
        assert exc.value.error.code == "INVALID" and "units" in exc.value.error.message


async def test_over_long_url_gets_the_json_error_shape(api: Api) -> None:
    for path in ("/api/rooms/" + "x" * 9000, "/api/time?pad=" + "y" * 20_000, "/rooms/" + "z" * 60_000):
        st, body = await api.call("GET", path)
        assert_error(st, body, 414, "URI_TOO_LONG")
    # just under the limit is routed as usual
    st, body = await api.call("GET", "/api/rooms/" + "x" * 8000)
    assert st in (400, 404) and body["error"]["code"] in ("INVALID", "NOT_FOUND"), (st, body)


# -- item 11: a repeated pay of a settled order says so -----------------------------------------------

async def test_repeated_pay_of_a_settled_order_says_settled(api: Api, host: str, uid: str,
                                                           settings: Settings) -> None:
    await setup_room(api, host, uid)
    sid = (await api.ok("POST", f"/api/rooms/{uid}/sales", host,
                        {"sale_id": f"{uid}-s", "product_id": "p0", "units": 5, "per_user_limit": 5}, 201))["sale_id"]
    a, ua = viewer(settings.secret, "Ana")
    hold = await api.ok("POST", f"/api/sales/{sid}/reserve", a, {"request_id": f"{uid}-1", "qty": 2}, 201)
    first = await api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", a, {"payment_ref": "ref-1"}, 201)
    assert first["settled"] is False and "order" not in first
    stored = await order_settled(api, a, first["order_id"])
    again = await api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", a, {"payment_ref": "ref-1"}, 200)
    assert again["settled"] is True and again["order_id"] == first["order_id"], again
    assert again["order"] == stored
    assert again["order"]["user_id"] == ua and again["order"]["qty"] == 2 and again["order"]["status"] == "settled"


# -- item 6: GET /api/me/orders ------------------------------------------------------------------------

async def test_my_orders_since(api: Api, host: str, uid: str, settings: Settings) -> None:
    await setup_room(api, host, uid)
    sid = (await api.ok("POST", f"/api/rooms/{uid}/sales", host,
                        {"sale_id": f"{uid}-s", "product_id": "p0", "units": 50, "per_user_limit": 10}, 201))["sale_id"]
    a, ua = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Ben")

    # auth: a viewer token is needed
    st, body = await api.call("GET", "/api/me/orders?since=0")
    assert_error(st, body, 401, "UNAUTHORIZED")
    st, body = await api.call("GET", "/api/me/orders?since=0", "forged.token.here")
    assert_error(st, body, 401, "UNAUTHORIZED")
    # a host token buys as its own user, like on the reserve and pay endpoints: its own (no) orders
    assert await api.ok("GET", "/api/me/orders?since=0", host, status=200) == {"orders": [], "next": None,
                                                                                "holds": [], "totals": {}}
    for bad in ("since=abc", "since=-1", "since=1.5", "since=", "since=1e3", "since=" + "9" * 30,
                "limit=0", "limit=201", "limit=x", "cursor=nope", "cursor=12", "cursor=x.y"):
        st, body = await api.call("GET", f"/api/me/orders?{bad}", a)
        assert_error(st, body, 400, "INVALID")

    assert await api.ok("GET", "/api/me/orders?since=0", a, status=200) == {"orders": [], "next": None, "holds": [],
                                                                             "totals": {}}

    mine = [await buy_and_pay(api, a, sid, f"{uid}-a{i}") for i in range(3)]
    theirs = await buy_and_pay(api, b, sid, f"{uid}-b0")
    settled = {o: await order_settled(api, a, o) for o in mine}
    await order_settled(api, b, theirs)

    got = await api.ok("GET", "/api/me/orders?since=0", a, status=200)
    assert got["next"] is None
    ids = [o["order_id"] for o in got["orders"]]
    assert sorted(ids) == sorted(mine) and theirs not in ids  # only my own orders
    keys = [(o["settled_at"], o["order_id"]) for o in got["orders"]]
    assert keys == sorted(keys)  # oldest first
    for o in got["orders"]:
        assert o == settled[o["order_id"]]  # the same shape as GET /api/orders/{order}
        assert o["user_id"] == ua and o["status"] == "settled"

    # since is inclusive and filters on settled_at
    newest = max(o["settled_at"] for o in got["orders"])
    later = await api.ok("GET", f"/api/me/orders?since={newest}", a, status=200)
    assert later["orders"] and all(o["settled_at"] >= newest for o in later["orders"])
    assert {o["order_id"] for o in later["orders"]} == {o["order_id"] for o in got["orders"]
                                                        if o["settled_at"] >= newest}
    assert (await api.ok("GET", f"/api/me/orders?since={newest + 1}", a, status=200))["orders"] == []
    # without since: everything
    assert [o["order_id"] for o in (await api.ok("GET", "/api/me/orders", a, status=200))["orders"]] == ids


async def test_my_orders_pages_with_next(api: Api, host: str, uid: str, settings: Settings) -> None:
    await setup_room(api, host, uid)
    sid = (await api.ok("POST", f"/api/rooms/{uid}/sales", host,
                        {"sale_id": f"{uid}-s", "product_id": "p0", "units": 50, "per_user_limit": 10}, 201))["sale_id"]
    a, _ = viewer(settings.secret, "Ana")
    mine = [await buy_and_pay(api, a, sid, f"{uid}-a{i}") for i in range(5)]
    for o in mine:
        await order_settled(api, a, o)
    seen: list[str] = []
    pages = 0
    url = "/api/me/orders?since=0&limit=2"
    while True:
        page = await api.ok("GET", url, a, status=200)
        pages += 1
        assert len(page["orders"]) <= 2
        seen += [o["order_id"] for o in page["orders"]]
        if page["next"] is None:
            break
        assert isinstance(page["next"], str)
        url = f"/api/me/orders?limit=2&cursor={page['next']}"
        assert pages < 10
    assert pages == 3 and sorted(seen) == sorted(mine) and len(seen) == len(set(seen))
    everything = await api.ok("GET", "/api/me/orders?limit=200", a, status=200)
    assert [o["order_id"] for o in everything["orders"]] == seen
