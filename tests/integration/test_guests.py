"""Guest viewer tokens, members-only sales and the per-address limits (issue 11, identity), over real
sockets: an in-process server (aiohttp's test server on a real TCP port), real Redis/Valkey and SQL.

- guests off: `POST /api/viewer-token` is 403 GUESTS_OFF, `hello.limits.guests` / `GET /api/time`
  say so; on: tokens carry `guest: true` and are rate-limited per client address (429);
- a members-only sale (HTTP and WS launch) refuses guests with MEMBERS_ONLY over WS and HTTP, and
  sells to platform-signed tokens; its wire shape carries `members_only`;
- the per-address connection cap (429 at the handshake) and join rate (`error RATE_LIMITED`);
- behind a trusted proxy the client address is X-Forwarded-For's last untrusted hop; otherwise the
  header is ignored;
- an existing `sales` table gets the new column at start.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from commerce.addresses import AddressCount, AddressRate, client_address, parse_proxies
from commerce.identity import mint_viewer_token, verify_token
from gateway_helpers import Api, WsClient, host_token, setup_room
from server.app import create_app
from server.config import Settings

pytestmark = pytest.mark.timeout(90, method="thread")


async def serve(aiohttp_client: Any, settings: Settings, **changes: Any) -> Any:
    return await aiohttp_client(create_app(settings.replace(tick_ms=50, settle_block_ms=100, **changes)))


def assert_error(status: int, body: Any, want: int, code: str) -> None:
    assert status == want, (status, body)
    assert body["error"]["code"] == code and body["error"]["message"], body


async def room_with_sale(api: Api, host: str, room: str, members_only: bool, **fields: Any) -> dict[str, Any]:
    await setup_room(api, host, room, products=1)
    await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
    body = {"product_id": "p0", "units": 5, "per_user_limit": 5, "members_only": members_only, **fields}
    sale: dict[str, Any] = await api.ok("POST", f"/api/rooms/{room}/sales", host, body, 201)
    return sale


# -- guest tokens on / off ---------------------------------------------------------------------------

async def test_guest_tokens_off_are_refused_and_advertised(aiohttp_client: Any, settings: Settings) -> None:
    client = await serve(aiohttp_client, settings, guest_tokens=False)
    api = Api(client)
    st, body = await api.call("POST", "/api/viewer-token", json={"name": "Bot"})
    assert_error(st, body, 403, "GUESTS_OFF")
    assert (await api.ok("GET", "/api/time", status=200))["guests"] is False
    ws = await WsClient.connect(client)
    hello = await ws.wait(lambda m: m["type"] == "hello")
    assert hello["limits"]["guests"] is False
    await ws.close()


async def test_guest_tokens_on_are_flagged_and_limited_per_address(aiohttp_client: Any, settings: Settings) -> None:
    client = await serve(aiohttp_client, settings, guest_tokens=True, guest_token_rate=3)
    api = Api(client)
    assert (await api.ok("GET", "/api/time", status=200))["guests"] is True
    users = set()
    for _ in range(3):  # a burst of LIVESALE_GUEST_TOKEN_RATE, then refused
        out = await api.ok("POST", "/api/viewer-token", json={"name": "Ana"}, status=201)
        assert out["guest"] is True
        ident = verify_token(settings.secret, out["token"])
        assert ident.guest and ident.role == "viewer" and ident.user == out["user"]
        users.add(out["user"])
    assert len(users) == 3
    st, body = await api.call("POST", "/api/viewer-token", json={"name": "Ana"})
    assert_error(st, body, 429, "RATE_LIMITED")
    ws = await WsClient.connect(client)
    assert (await ws.wait(lambda m: m["type"] == "hello"))["limits"]["guests"] is True
    await ws.close()


async def test_trusted_proxy_names_the_client_address(aiohttp_client: Any, settings: Settings) -> None:
    # the test client connects from 127.0.0.1: trusted as a proxy, its X-Forwarded-For counts
    client = await serve(aiohttp_client, settings, guest_tokens=True, guest_token_rate=1,
                         trusted_proxies="127.0.0.1, 10.0.0.0/8")

    async def mint(xff: str | None) -> int:
        headers = {"X-Forwarded-For": xff} if xff else {}
        async with client.post("/api/viewer-token", json={"name": "x"}, headers=headers) as r:
            return int(r.status)

    assert await mint("203.0.113.7") == 201
    assert await mint("203.0.113.7") == 429            # the same client
    assert await mint("198.51.100.1, 203.0.113.7") == 429  # a forged first hop does not help
    assert await mint("203.0.113.8, 10.1.2.3") == 201  # a trusted hop is skipped: the client is .8
    assert await mint("203.0.113.9") == 201
    assert await mint(None) == 201                      # no header: the peer itself
    assert await mint(None) == 429

    # not trusted: the header is ignored, every request is the peer's
    plain = await serve(aiohttp_client, settings, guest_tokens=True, guest_token_rate=1)
    statuses = []
    for xff in ("203.0.113.10", "203.0.113.11"):
        async with plain.post("/api/viewer-token", json={"name": "x"}, headers={"X-Forwarded-For": xff}) as r:
            statuses.append(r.status)
    assert statuses == [201, 429]


def test_client_address_rules() -> None:
    proxies = parse_proxies("10.0.0.1, 192.168.0.0/16, ::1")
    assert client_address("1.2.3.4", "9.9.9.9", proxies) == "1.2.3.4"          # peer not a proxy
    assert client_address("10.0.0.1", "9.9.9.9", proxies) == "9.9.9.9"
    assert client_address("10.0.0.1", "8.8.8.8, 9.9.9.9, 192.168.1.1", proxies) == "9.9.9.9"
    assert client_address("10.0.0.1", "10.0.0.1, 192.168.3.3", proxies) == "10.0.0.1"  # all trusted
    assert client_address("10.0.0.1", "garbage", proxies) == "10.0.0.1"
    assert client_address("10.0.0.1", "", proxies) == "10.0.0.1"
    assert client_address("::1", "2001:db8::5", proxies) == "2001:db8::5"
    assert client_address("::ffff:10.0.0.1", "[2001:db8::6]:443", proxies) == "2001:db8::6"
    assert client_address("1.2.3.4", None, ()) == "1.2.3.4"
    with pytest.raises(ValueError):
        parse_proxies("10.0.0.1, nope")
    rate = AddressRate(1.0, 2.0, max_keys=2)
    assert [rate.take("a", 0.0) for _ in range(3)] == [True, True, False]
    assert rate.take("a", 1.0) is True                                          # refilled
    rate.take("b", 1.0)
    rate.take("c", 1.0)                                                          # evicts "a" (bounded)
    assert len(rate) == 2
    count = AddressCount(2)
    assert [count.acquire("a") for _ in range(3)] == [True, True, False]
    count.release("a")
    count.release("a")
    assert count.of("a") == 0 and count.acquire("a")


# -- members-only sales ------------------------------------------------------------------------------

async def test_members_only_sale_refuses_guests_over_ws_and_http(aiohttp_client: Any, settings: Settings,
                                                                uid: str) -> None:
    client = await serve(aiohttp_client, settings, guest_tokens=True)
    api = Api(client)
    host = host_token(settings.secret)
    room = uid + "m"
    sale = await room_with_sale(api, host, room, members_only=True)
    assert sale["members_only"] is True
    assert (await api.ok("GET", f"/api/sales/{sale['sale_id']}", status=200))["members_only"] is True
    guest = await api.ok("POST", "/api/viewer-token", json={"name": "Guest"}, status=201)
    member, member_id = mint_viewer_token(settings.secret, "Member", user=uid + "-member")  # the platform's

    g = await WsClient.connect(client)
    snap = await g.join(room, guest["token"])
    assert snap["type"] == "snapshot"
    assert [s["members_only"] for s in snap["sales"]] == [True]
    for _ in range(2):  # the first click reads the flag, the second is answered from the cache
        r = await g.request({"type": "buy", "sale": sale["sale_id"], "qty": 1})
        assert r["type"] == "buy_result" and r["code"] == "MEMBERS_ONLY" and r["units_left"] is None, r
    st, body = await api.call("POST", f"/api/sales/{sale['sale_id']}/reserve", guest["token"],
                              {"request_id": "g1", "qty": 1})
    assert_error(st, body, 403, "MEMBERS_ONLY")

    m = await WsClient.connect(client)
    await m.join(room, member)
    r = await m.request({"type": "buy", "sale": sale["sale_id"], "qty": 1})
    assert r["code"] == "RESERVED" and r["units_left"] == 4, r
    held = await api.ok("POST", f"/api/sales/{sale['sale_id']}/reserve", member, {"request_id": "m2", "qty": 1},
                        201)
    assert held["units_left"] == 3
    counters = await api.ok("GET", f"/api/sales/{sale['sale_id']}", status=200)
    assert counters["held"] == 2 and counters["units_left"] == 3  # the guest took nothing
    assert member_id == uid + "-member"

    # a sale without the flag sells to guests; `members_only: "yes"` is not a flag
    other = await api.ok("POST", f"/api/rooms/{room}/sales", host, {"product_id": "p0", "units": 3}, 201)
    assert other["members_only"] is False
    await g.wait(lambda m: m.get("type") == "sale_scheduled" and m["sale"]["sale_id"] == other["sale_id"])
    r = await g.request({"type": "buy", "sale": other["sale_id"], "qty": 1})
    assert r["code"] == "RESERVED", r
    st, body = await api.call("POST", f"/api/rooms/{room}/sales", host,
                              {"product_id": "p0", "units": 3, "members_only": "yes"})
    assert_error(st, body, 400, "INVALID")
    for c in (g, m):
        await c.close()


async def test_members_only_launch_sale_over_ws(aiohttp_client: Any, settings: Settings, uid: str) -> None:
    client = await serve(aiohttp_client, settings, guest_tokens=True)
    api = Api(client)
    host = host_token(settings.secret)
    room = uid + "w"
    await setup_room(api, host, room, products=1)
    h = await WsClient.connect(client)
    await h.join(room, host)
    ok = await h.request({"type": "launch_sale", "product": "p0", "units": 2, "members_only": True})
    assert ok["type"] == "ok" and ok["sale"]["members_only"] is True, ok
    bad = await h.request({"type": "launch_sale", "product": "p0", "units": 2, "members_only": 1})
    assert bad["type"] == "error" and bad["code"] == "BAD_MESSAGE", bad
    guest = await api.ok("POST", "/api/viewer-token", json={"name": "G"}, status=201)
    g = await WsClient.connect(client)
    await g.join(room, guest["token"])
    r = await g.request({"type": "buy", "sale": ok["sale"]["sale_id"]})
    assert r["code"] == "MEMBERS_ONLY", r
    # a forged "guest: false" is not a thing: the flag comes from the signed claims only
    claims = jwt.decode(guest["token"], settings.secret, algorithms=["HS256"])
    assert claims["guest"] is True
    for c in (h, g):
        await c.close()


# -- per-address connection cap and join rate ---------------------------------------------------------

async def test_connection_cap_per_address(aiohttp_client: Any, settings: Settings) -> None:
    client = await serve(aiohttp_client, settings, conn_per_addr=2, trusted_proxies="127.0.0.1")
    a = await WsClient.connect(client)
    b = await WsClient.connect(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", protocols=("livesale.v1.json",))
    assert refused.value.status == 429
    async with client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                          "Sec-WebSocket-Version": "13",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
        assert r.status == 429
        assert (await r.json())["error"]["code"] == "RATE_LIMITED"
    # another client behind the trusted proxy has its own allowance
    c = await WsClient.connect(client, headers={"X-Forwarded-For": "203.0.113.50"})
    await a.close()
    await a.closed.wait()
    d = await WsClient.connect(client)  # a slot was freed
    for x in (b, c, d):
        await x.close()


async def test_join_rate_per_address(aiohttp_client: Any, settings: Settings, uid: str) -> None:
    client = await serve(aiohttp_client, settings, join_rate_per_addr=1.0)  # burst of 2
    api = Api(client)
    room = uid + "j"
    await setup_room(api, host_token(settings.secret), room, products=0)
    c = await WsClient.connect(client)
    assert (await c.join(room))["type"] == "snapshot"
    assert (await c.join(room))["type"] == "snapshot"
    refused = await c.join(room)
    assert refused["type"] == "error" and refused["code"] == "RATE_LIMITED", refused
    other = await WsClient.connect(client)  # the same address: the same bucket
    assert (await other.join(room))["code"] == "RATE_LIMITED"
    await c.close()
    await other.close()
    # off by default
    free = await serve(aiohttp_client, settings)
    f = await WsClient.connect(free)
    for _ in range(5):
        assert (await f.join(room))["type"] == "snapshot"
    await f.close()


# -- the new column on an existing database ------------------------------------------------------------

async def test_existing_sales_table_gets_the_members_only_column(tmp_path: Path) -> None:
    import sqlite3

    from inventory.store import SaleRecord, Store

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE sales (sale_id VARCHAR(64) PRIMARY KEY, room_id VARCHAR(64) NOT NULL, "
                "product_id VARCHAR(128) NOT NULL, sku VARCHAR(128) NOT NULL, title VARCHAR(256) NOT NULL, "
                "unit_price BIGINT NOT NULL, currency VARCHAR(3) NOT NULL, allocated BIGINT NOT NULL, "
                "per_user_limit BIGINT NOT NULL, starts_at_ms BIGINT NOT NULL, ends_at_ms BIGINT NOT NULL, "
                "hold_ttl_ms BIGINT NOT NULL, created_at_ms BIGINT NOT NULL)")
    con.execute("INSERT INTO sales VALUES ('s-old', 'r', 'p', 'sku', 't', 1, 'EUR', 1, 1, 1, 2, 1000, 0)")
    con.commit()
    con.close()
    store = await Store.open(f"sqlite:///{path}")
    try:
        old = await store.get_sale("s-old")
        assert old is not None and old.members_only is False
        rec = SaleRecord(sale_id="s-new" + secrets.token_hex(2), room_id="r", product_id="p", sku="sku", title="t",
                         unit_price=1, currency="EUR", allocated=1, per_user_limit=1, starts_at_ms=1, ends_at_ms=2,
                         hold_ttl_ms=1000, created_at_ms=0, members_only=True)
        assert await store.insert_sale(rec)
        got = await store.get_sale(rec.sale_id)
        assert got is not None and got.members_only is True
    finally:
        await store.close()
    again = await Store.open(f"sqlite:///{path}")  # a second start finds the column there
    await again.close()
