"""Show reports for brands (issue #11 item 6) against real engines: a show's viewers join over real
WebSockets, tap, reserve and pay over HTTP; the report (JSON and CSV) counts unique viewers, the peak of
sessions at once, watch time, a funnel of users whose steps never grow, and orders by source, fan team
and SKU, from SQL alone (right after Redis forgot the room). Who may read it; bad input refused. The
host's live funnel counts unique viewers per step (HyperLogLog keys that expire with the room's)."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, insert, select

from commerce.funnel import unique_keys
from commerce.identity import mint_host_token
from conftest import timeout
from gateway_helpers import WsClient, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory import keys as K
from inventory.offers import RedemptionRecord, offer_redemptions
from inventory.signal_log import signals
from inventory.store import OrderRecord, orders
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

PRICE = 5000
TEAMS = [{"team_id": "lakers", "name": "Lakers", "colour": "#552583", "badge": "L"},
         {"team_id": "celtics", "name": "Celtics", "colour": "#007a33", "badge": "C"}]


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def make_room(env: GoodsEnv, uid: str, units: int = 20, limit: int = 5) -> tuple[str, str, str]:
    room, sku = f"r{uid[:12]}", f"SKU-{uid[:8]}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Sneaker night"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Sneaker", "unit_price": PRICE}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/actions/go_live", env.host, {})
    s = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                         {"product_id": "p0", "units": units, "per_user_limit": limit}, 201)
    return room, s["sale_id"], sku


async def report(env: GoodsEnv, room: str, token: str | None = None) -> dict[str, Any]:
    return await env.api.ok("GET", f"/api/rooms/{room}/report", token or env.host, status=200)


async def hold(env: GoodsEnv, sale: str, token: str, qty: int, rid: str) -> str:
    body = await env.api.ok("POST", f"/api/sales/{sale}/reserve", token, {"qty": qty, "request_id": rid}, 201)
    return str(body["hold_id"])


async def join(env: GoodsEnv, room: str, token: str | None = None, device: str | None = None) -> WsClient:
    ws = await WsClient.connect(env.client)
    msg: dict[str, Any] = {"type": "join", "room": room}
    if token:
        msg["token"] = token
    if device:
        msg["device"] = device
    await ws.send(msg)
    await ws.wait(lambda m: m["type"] == "snapshot", timeout(5))
    return ws


def csv_sections(text: str) -> dict[str, list[list[str]]]:
    """``[name]`` line, header, rows, blank line -> {name: [header, *rows]}."""
    out: dict[str, list[list[str]]] = {}
    name = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            name = None
        elif name is None:
            assert len(row) == 1 and row[0].startswith("[") and row[0].endswith("]"), row
            name = row[0][1:-1]
            out[name] = []
        else:
            out[name].append(row)
    return out


# -- a real show ----------------------------------------------------------------------------------------

async def test_a_real_show_report_from_sql_after_redis_forgot_the_room(env: GoodsEnv, uid: str,
                                                                       redis: Redis) -> None:
    room, sale, sku = await make_room(env, uid)
    await env.api.ok("POST", f"/api/rooms/{room}/actions/set_teams", env.host,
                     {"teams": TEAMS, "switch_cooldown_s": 0})
    (a, ua), (b, ub), (c, uc), (e, ue) = (viewer(env.settings.secret, n) for n in ("Ana", "Ben", "Cy", "Eve"))
    await env.api.ok("POST", f"/api/rooms/{room}/teams/celtics/join", a, {})
    await env.api.ok("POST", f"/api/rooms/{room}/teams/lakers/join", a, {})  # the latest team counts
    await env.api.ok("POST", f"/api/rooms/{room}/teams/celtics/join", b, {})
    socks = [await join(env, room, t) for t in (a, b, c)] + [await join(env, room, device=f"dev{uid[:6]}")]
    host_ws = await join(env, room, env.host)  # the room's own host watching: not audience
    # taps: Ana 2 units (paid) and 1 more (not paid), Ben 1 (paid), Cy 1 (released), Eve over HTTP only (paid)
    paid = [await hold(env, sale, a, 2, "a1"), await hold(env, sale, b, 1, "b1"), await hold(env, sale, e, 1, "e1")]
    await hold(env, sale, a, 1, "a2")
    released = await hold(env, sale, c, 1, "c1")
    await env.api.ok("DELETE", f"/api/holds/{released}", c, status=200)
    for h, tok in zip(paid, (a, b, e), strict=True):
        await env.api.ok("POST", f"/api/holds/{h}/pay", tok, {}, 201)
    await socks[2].close()  # Cy and the anonymous watcher leave; Ana and Ben stay
    await socks[3].close()

    async def settled() -> dict[str, Any] | None:
        r = await report(env, room)
        done = r["orders"]["count"] == 3 and r["unique_viewers"] == 4 and r["sessions"]["count"] == 4 \
            and r["sessions"]["open"] == 2 and r["funnel"]["tapped"] == 4 and r["orders"]["by_team"]
        return r if done else None
    r = await until("the show's signals and orders in SQL", settled)
    assert r["room"] == {"room_id": room, "title": "Sneaker night", "status": "live"}
    assert r["peak_concurrent"] == 4
    # people, not requests: Ana tapped twice; Eve bought over HTTP without joining (a viewer all the same)
    assert r["funnel"] == {"viewers": 5, "tapped": 4, "reserved": 4, "paid": 3}
    o = r["orders"]
    assert (o["count"], o["units"], o["gmv"]) == (3, 4, {"EUR": 4 * PRICE})
    assert o["by_source"] == [{"source": "direct", "orders": 3, "units": 4, "gmv": {"EUR": 4 * PRICE}}] + [
        {"source": s, "orders": 0, "units": 0, "gmv": {}} for s in ("link", "shop", "channel")]
    assert {t["team"]: (t["orders"], t["units"]) for t in o["by_team"]} == {"lakers": (1, 2), "celtics": (1, 1),
                                                                             "": (1, 1)}
    assert o["by_sku"] == [{"sku": sku, "orders": 3, "units": 4, "gmv": {"EUR": 4 * PRICE}}]
    assert o["offline"] == []
    assert r["watch_time"]["viewers"] == 4 and sum(x["viewers"] for x in r["watch_time"]["buckets"]) == 4
    assert r["watch_time"]["buckets"][0]["viewers"] == 4  # all under a minute

    # the show ends, everyone leaves: the report is the same once Redis forgot the room
    await env.api.ok("POST", f"/api/rooms/{room}/actions/end_live", env.host, {})
    for s in [*socks[:2], host_ws]:
        await s.close()

    async def closed() -> dict[str, Any] | None:
        x = await report(env, room)
        return x if x["sessions"]["open"] == 0 and x["room"]["status"] == "ended" else None
    before = await until("the last leaves in SQL", closed)
    async with env.client.app[COMMERCE].store.engine.connect() as conn:  # hosts are not the audience
        hosts = (await conn.execute(select(signals.c.user_id).where(
            signals.c.room_id == room, signals.c.kind == "join", signals.c.user_id == "h1"))).all()
    assert not hosts and before["unique_viewers"] == 4
    gone = [k async for k in redis.scan_iter(match=f"ls:room:{{room:{room}}}*")]
    assert gone
    await redis.delete(*gone)
    after = await report(env, room)
    assert {**after, "generated_at": 0} == {**before, "generated_at": 0}
    assert after["funnel"] == {"viewers": 5, "tapped": 4, "reserved": 4, "paid": 3}
    # the dashboard of the ended room, its keys gone: the unique funnel from SQL, the requests from the archive
    dash = await env.api.ok("GET", f"/api/rooms/{room}/dashboard", env.host)
    assert dash["funnel"] == after["funnel"]
    assert dash["requests"] == {"tapped": 5, "reserved": 5, "paid": 3}

    # CSV: one section per table
    st, raw = await env.api.call("GET", f"/api/rooms/{room}/report?format=csv", env.merchant)
    assert st == 200, raw
    sec = csv_sections(raw.decode())
    assert list(sec) == ["report", "funnel", "watch_time", "orders", "by_source", "by_team", "by_sku", "offline"]
    fields = dict(sec["report"][1:])
    assert (fields["room_id"], fields["unique_viewers"], fields["peak_concurrent"], fields["orders"]) == \
        (room, "4", "4", "3")
    assert sec["funnel"] == [["step", "users"], ["viewers", "5"], ["tapped", "4"], ["reserved", "4"], ["paid", "3"]]
    assert sec["orders"] == [["currency", "orders", "units", "gmv_minor"], ["EUR", "3", "4", str(4 * PRICE)]]
    assert sec["by_source"][1] == ["direct", "EUR", "3", "4", str(4 * PRICE)]
    assert sec["by_source"][2] == ["link", "", "0", "0", "0"]
    assert sec["by_sku"] == [["sku", "currency", "orders", "units", "gmv_minor"], [sku, "EUR", "3", "4", str(4 * PRICE)]]
    assert sec["offline"] == [["channel", "currency", "redemptions", "units", "gmv_minor"]]
    assert len(sec["watch_time"]) == 7 and sec["watch_time"][-1] == [">60 min", "3600", "", "0"]


async def test_who_may_read_a_report_and_bad_input(env: GoodsEnv, uid: str) -> None:
    room, _, _ = await make_room(env, uid)
    tok, _ = viewer(env.settings.secret, "Vic")
    other_host = mint_host_token(env.settings.secret, "h2", ("elsewhere",))
    own_host = mint_host_token(env.settings.secret, "h3", (room,))
    for token, status, code in ((None, 401, "UNAUTHORIZED"), ("junk", 401, "UNAUTHORIZED"), (tok, 403, "FORBIDDEN"),
                                (other_host, 403, "FORBIDDEN")):
        st, body = await env.api.call("GET", f"/api/rooms/{room}/report", token)
        assert (st, body["error"]["code"]) == (status, code), (token, body)
    for token in (env.host, own_host, env.merchant):
        assert (await report(env, room, token))["room"]["room_id"] == room
    st, body = await env.api.call("GET", f"/api/rooms/{room}-nope/report", env.host)
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND")
    st, body = await env.api.call("GET", f"/api/rooms/{room}-nope/report", env.merchant)
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND")
    st, body = await env.api.call("GET", f"/api/rooms/{room}/report?format=xml", env.host)
    assert (st, body["error"]["code"]) == (400, "INVALID")
    empty = await report(env, room)  # a room nobody watched yet
    assert empty["unique_viewers"] == 0 and empty["peak_concurrent"] == 0 and empty["orders"]["count"] == 0
    assert empty["funnel"] == {"viewers": 0, "tapped": 0, "reserved": 0, "paid": 0}
    assert empty["watch_time"]["median_s"] == 0 and empty["orders"]["by_team"] == []


# -- exact numbers from SQL rows ------------------------------------------------------------------------

async def test_report_numbers_from_signal_and_order_rows(env: GoodsEnv, uid: str) -> None:
    """Rows written straight to SQL (the shape the signal sink writes): exact peak, watch-time buckets,
    median and mean, latest team per user, orders by source, an open session capped at the room's end."""
    room, sale, sku = await make_room(env, uid)
    store = env.client.app[COMMERCE].store
    t0 = int(time.time() * 1000) - 3 * 3600_000
    m = 60_000
    rows: list[dict[str, Any]] = []

    def sig(kind: str, user: str, at: int, ref: str = "", value: int = 0) -> None:
        rows.append({"entry": f"t-{uid}", "idx": len(rows), "kind": kind, "user_id": user, "room_id": room,
                     "sale_id": "", "product_id": "", "sku": "", "ref": ref, "detail": "", "value": value,
                     "at_ms": at})
    # u1: 0-30 min and 40-50 min (40 min in all); u2: 10-12; u3: 5-95; u5: 25-28; u4 joins at 20, never leaves
    for user, ref, start, end in (("u1", "s1", 0, 30), ("u1", "s2", 40, 50), ("u2", "s3", 10, 12),
                                  ("u3", "s4", 5, 95), ("u5", "s6", 25, 28)):
        sig("join", user, t0 + start * m, ref)
        sig("leave", user, t0 + end * m, ref, (end - start) * m)
    sig("join", "u4", t0 + 20 * m, "s5")
    sig("team", "u1", t0 + 1000, "celtics")
    sig("team", "u1", t0 + 2000, "lakers")  # the latest team counts
    sig("team", "u5", t0 + 2000, "celtics")  # a fan who bought nothing
    sig("tap", "u1", t0 + 3000)
    sig("tap", "u1", t0 + 3500)
    sig("held", "u1", t0 + 3001, "h")
    async with store.engine.begin() as conn:
        await conn.execute(insert(signals), rows)
    try:
        now = t0 + 100 * m

        def order(n: int, user: str, source: str, qty: int, currency: str = "EUR", sale_id: str = sale) -> OrderRecord:
            return OrderRecord(order_id=f"{uid}-o{n}", sale_id=sale_id, room_id=room, sku=sku, user_id=user, qty=qty,
                               unit_price=PRICE, total=qty * PRICE, currency=currency, payment_ref=f"p{n}",
                               reserved_at_ms=now, confirmed_at_ms=now, settled_at_ms=now, stream_id="",
                               channel=room, source=source)
        async with store.engine.begin() as conn:  # as settled (the growth hooks would re-attribute them)
            await conn.execute(insert(orders), [dataclasses.asdict(x) for x in (
                order(1, "u1", "link", 2), order(2, "u2", "shop", 1), order(3, "u9", "direct", 1, "USD"),
                order(4, "u1", "link", 1), order(5, "u7", "direct", 1, sale_id=f"pool{uid[:6]}--d-w1"))])  # 5: a prize

            def redeemed(n: int, channel: str, qty: int, in_room: str = room) -> dict[str, Any]:
                return dataclasses.asdict(RedemptionRecord(
                    redemption_id=f"{uid}-x{n}", offer_id=f"of-{uid}", user_id=f"u{n}", channel=channel, sku=sku,
                    qty=qty, price=4000, total=qty * 4000, currency="EUR", audience_id="a", room_id=in_room,
                    sharer="", request_id=f"{uid}-x{n}", redeemed_at_ms=now))
            await conn.execute(insert(offer_redemptions), [
                redeemed(1, "store:17", 2), redeemed(2, "store:17", 1), redeemed(3, "store:9", 1),
                redeemed(4, "store:9", 5, in_room=f"{room}-other")])  # another show's
        await env.api.ok("POST", f"/api/rooms/{room}/actions/end_live", env.host, {})
        await store.set_room_status(room, "ended", t0 + 100 * m)  # the room ended at minute 100
        r = await report(env, room, env.merchant)
        assert r["unique_viewers"] == 5
        assert r["peak_concurrent"] == 4  # minutes 25-28: u1, u3, u4, u5
        assert r["sessions"] == {"count": 6, "open": 1}  # u4's session runs until the room's end
        w = r["watch_time"]
        # u1 40 min, u2 2, u3 90, u4 80 (open: until minute 100), u5 3
        assert [b["viewers"] for b in w["buckets"]] == [0, 2, 0, 0, 1, 2]
        assert (w["viewers"], w["median_s"], w["mean_s"]) == (5, 2400.0, 2580.0)
        # users, not requests; payers without signals still count in every step before paid
        assert r["funnel"] == {"viewers": 6, "tapped": 3, "reserved": 3, "paid": 3}
        o = r["orders"]
        assert (o["count"], o["units"], o["gmv"]) == (4, 5, {"EUR": 4 * PRICE, "USD": PRICE})
        assert o["by_source"] == [
            {"source": "direct", "orders": 1, "units": 1, "gmv": {"USD": PRICE}},
            {"source": "link", "orders": 2, "units": 3, "gmv": {"EUR": 3 * PRICE}},
            {"source": "shop", "orders": 1, "units": 1, "gmv": {"EUR": PRICE}},
            {"source": "channel", "orders": 0, "units": 0, "gmv": {}}]
        assert o["by_team"] == [{"team": "lakers", "orders": 2, "units": 3, "gmv": {"EUR": 3 * PRICE}},
                                {"team": "", "orders": 2, "units": 2, "gmv": {"EUR": PRICE, "USD": PRICE}}]
        assert o["by_sku"] == [{"sku": sku, "orders": 4, "units": 5, "gmv": {"EUR": 4 * PRICE, "USD": PRICE}}]
        assert o["offline"] == [{"channel": "store:17", "redemptions": 2, "units": 3, "gmv": {"EUR": 12000}},
                                {"channel": "store:9", "redemptions": 1, "units": 1, "gmv": {"EUR": 4000}}]
        st, raw = await env.api.call("GET", f"/api/rooms/{room}/report?format=csv", env.host)
        assert st == 200
        sec = csv_sections(raw.decode())
        assert sec["by_team"][1:] == [["lakers", "EUR", "2", "3", str(3 * PRICE)], ["", "EUR", "1", "1", str(PRICE)],
                                      ["", "USD", "1", "1", str(PRICE)]]
        assert sec["orders"][1:] == [["EUR", "3", "4", str(4 * PRICE)], ["USD", "1", "1", str(PRICE)]]
        assert sec["offline"][1:] == [["store:17", "EUR", "2", "3", "12000"], ["store:9", "EUR", "1", "1", "4000"]]
        fields = dict(sec["report"][1:])
        assert (fields["watch_median_s"], fields["sessions"], fields["open_sessions"]) == ("2400.0", "6", "1")
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(delete(signals).where(signals.c.room_id == room))
            await conn.execute(delete(orders).where(orders.c.room_id == room))
            await conn.execute(delete(offer_redemptions).where(offer_redemptions.c.offer_id == f"of-{uid}"))


# -- the host's live funnel -----------------------------------------------------------------------------

async def test_live_funnel_counts_unique_viewers_and_its_keys_expire_with_the_room(env: GoodsEnv, uid: str,
                                                                                  redis: Redis) -> None:
    room, _, _ = await make_room(env, uid)
    commerce = env.client.app[COMMERCE]
    funnel = commerce.funnel
    for i in range(11):
        funnel.seen(room, f"v{i}")
    for i in range(38):  # 38 taps by 3 viewers: the old funnel showed tapped 38 > viewers 11
        funnel.count(room, "tapped", f"v{i % 3}")
    for u in ("v0", "v1"):
        funnel.count(room, "reserved", u)
    funnel.count(room, "paid", "v0")
    funnel.count(room, "paid", "buyer-over-http")  # never joined: a viewer, a tap, a reservation all the same
    funnel.count(room, "tapped")  # a request without a user: counted as a request only
    await funnel.flush()
    dash = await env.api.ok("GET", f"/api/rooms/{room}/dashboard", env.host)
    assert dash["funnel"] == {"viewers": 12, "tapped": 4, "reserved": 3, "paid": 2}
    assert dash["requests"] == {"tapped": 39, "reserved": 2, "paid": 2}
    # every funnel key is in the room's slot and carries the room window (publish.lua's rule)
    k = K.room_keys(room)
    keys = [k.funnel, *unique_keys(room)]
    assert all(key.startswith(f"ls:room:{{room:{room}}}") for key in keys)
    window = env.settings.retain_room_s * 1000
    assert all(0 < t <= window for t in [await redis.pttl(key) for key in keys])
    # a big room: the ids go in chunks; HyperLogLog counts are estimates within about 1%
    for i in range(6000):
        funnel.seen(room, f"w{i}")
    await funnel.flush()
    est = (await funnel.uniques(room) or {})["viewers"]
    assert abs(est - 6012) <= 6012 * 0.02, est
    # the live ends: the keys take the ended window, the archive keeps the request counts
    await env.api.ok("POST", f"/api/rooms/{room}/actions/end_live", env.host, {})
    ended = env.settings.retain_ended_s * 1000
    assert all(0 < t <= ended for t in [await redis.pttl(key) for key in keys])
    from inventory import archive
    row = await until("the room archive", lambda: archive.get_room(commerce.store, room))
    assert (row.tapped, row.reserved, row.paid) == (39, 2, 2)
    # an unknown room has no funnel keys
    assert await funnel.uniques(f"{room}-none") is None


async def test_live_funnel_through_the_buy_path(env: GoodsEnv, uid: str) -> None:
    """Taps over HTTP and WebSocket, a reservation and a payment: the dashboard's funnel counts people."""
    room, sale, _ = await make_room(env, uid)
    (a, _), (b, _) = viewer(env.settings.secret, "Ana"), viewer(env.settings.secret, "Ben")
    ws = await join(env, room, b)
    h = await hold(env, sale, a, 1, "a1")
    await hold(env, sale, a, 1, "a2")
    await env.api.ok("POST", f"/api/holds/{h}/pay", a, {}, 201)
    r = await ws.request({"type": "buy", "sale": sale, "qty": 1})
    assert r["code"] == "RESERVED", r
    await env.client.app[COMMERCE].funnel.flush()
    dash = await env.api.ok("GET", f"/api/rooms/{room}/dashboard", env.host)
    assert dash["requests"] == {"tapped": 3, "reserved": 3, "paid": 1}
    assert dash["funnel"]["tapped"] == 2 and dash["funnel"]["reserved"] == 2 and dash["funnel"]["paid"] == 1
    assert dash["funnel"]["viewers"] >= 2
    await ws.close()
