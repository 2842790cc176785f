"""Each viewer their own shelf (issue #11 item 4) against real engines and sockets: the signals a viewer
sends through the WebSocket and HTTP paths become scores, and their next join gets a ``shelf`` message
ordered by the documented rule (own score, then the team's, then the host's order); a team mate with no
signals gets the team's order, a viewer in no team the host's; ``GET /api/rooms/{room}/shelf`` answers
the same; with ``LIVESALE_PERSONAL_SHELF`` off everyone gets the host's order and ``personal: false``.
Every key the shelf writes has a TTL."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from commerce.shelf import WEIGHTS, shelf_key, team_shelf_key
from gateway_helpers import JSON, WsClient, setup_room, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

TEAMS = [{"team_id": "lakers", "name": "Lakers", "colour": "#552583", "badge": "L"},
         {"team_id": "celtics", "name": "Celtics", "colour": "#007a33", "badge": "C"}]
HOST_ORDER = ["p0", "p1", "p2", "p3"]


async def scored(redis: Redis, key: str, want: dict[str, int]) -> bool:
    return await scores(redis, key) == want


async def _true(value: bool) -> bool:
    return value


async def show(env: GoodsEnv, uid: str) -> tuple[str, dict[str, str]]:
    """A live room with 4 products, one open sale per product, and fan teams."""
    room = f"r{uid[:12]}"
    await setup_room(env.api, env.host, room, products=4)
    await action(env, room, "go_live", {})
    sales = {}
    for p in HOST_ORDER:
        s = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                             {"product_id": p, "units": 20, "per_user_limit": 5}, 201)
        sales[p] = s["sale_id"]
    await action(env, room, "set_teams", {"teams": TEAMS})
    return room, sales


async def action(env: GoodsEnv, room: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return await env.api.ok("POST", f"/api/rooms/{room}/actions/{name}", env.host, body, 200)


async def join_shelf(ws: WsClient, room: str, token: str | None) -> dict[str, Any] | None:
    """Join; the ``shelf`` message that follows the snapshot (None if there is none: a ping's pong
    comes back first, and a socket's messages are answered in order)."""
    start = len(ws.msgs)
    snap = await ws.join(room, token)
    assert snap["type"] == "snapshot", snap
    await ws.request({"type": "ping"})
    shelves = ws.of_type("shelf", start)
    assert len(shelves) <= 1
    if shelves:
        assert ws.msgs.index(shelves[0]) > ws.msgs.index(snap)  # right after the snapshot
        return {k: v for k, v in shelves[0].items() if k != "_t"}  # _t: when the test client got it
    return None


async def scores(redis: Redis, key: str) -> dict[str, int]:
    return {k: int(v) for k, v in (await redis.hgetall(key)).items()}


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def test_each_viewer_gets_their_own_shelf(env: GoodsEnv, uid: str, redis: Redis) -> None:
    room, sales = await show(env, uid)
    a_tok, a = viewer(env.settings.secret, "Ann")
    b_tok, b = viewer(env.settings.secret, "Bob")
    c_tok, c = viewer(env.settings.secret, "Cid")
    await env.api.ok("POST", f"/api/rooms/{room}/teams/lakers/join", b_tok, {})
    wa, wb, wc, anon = [await WsClient.connect(env.client, "/ws", JSON) for _ in range(4)]
    try:
        # nothing scored yet: the host's order, not personal
        first = await join_shelf(wa, room, a_tok)
        assert first == {"type": "shelf", "room": room, "order": HOST_ORDER, "personal": False}
        assert (await wa.request({"type": "join_team", "team": "lakers"}))["type"] == "team_joined"
        # A taps p3's sale and gets a hold (tap + held), saves p2, and opens a product that is not the room's
        bought = await wa.request({"type": "buy", "sale": sales["p3"], "qty": 1})
        assert bought["code"] == "RESERVED", bought
        await env.api.ok("PUT", f"/api/me/saved/{room}/p2", a_tok, None, (200, 201))
        await wa.send({"type": "view", "product": "not-in-this-room"})
        await wa.send({"type": "view", "product": "p2"})
        await wa.request({"type": "ping"})  # the views were handled
        p3, p2 = WEIGHTS["tap"] + WEIGHTS["held"], WEIGHTS["saved"] + WEIGHTS["viewed"]
        # the signal sink (in this process's settlement) writes the scores of each batch it stores
        await until("A's scores", lambda: scored(redis, shelf_key(a), {f"{room}/p3": p3, f"{room}/p2": p2}))
        assert await scores(redis, team_shelf_key(room)) == {"lakers|p3": p3, "lakers|p2": p2}
        for key in (shelf_key(a), team_shelf_key(room)):
            assert await redis.pttl(key) > 0, key  # nothing is left behind
        assert p3 > p2 > 0

        # A's next join: their own order; B (same team, no signals of their own): the team's; C: the host's
        want = ["p3", "p2", "p0", "p1"]
        assert await join_shelf(wa, room, a_tok) == {"type": "shelf", "room": room, "order": want, "personal": True}
        assert await join_shelf(wb, room, b_tok) == {"type": "shelf", "room": room, "order": want, "personal": True}
        assert await join_shelf(wc, room, c_tok) == {"type": "shelf", "room": room, "order": HOST_ORDER,
                                                    "personal": False}
        assert await join_shelf(anon, room, None) is None  # no token: no shelf
        assert await env.api.ok("GET", f"/api/rooms/{room}/shelf", a_tok) == \
            {"room": room, "order": want, "personal": True}
        assert await env.api.ok("GET", f"/api/rooms/{room}/shelf", b_tok) == \
            {"room": room, "order": want, "personal": True}
        assert await env.api.ok("GET", f"/api/rooms/{room}/shelf", c_tok) == \
            {"room": room, "order": HOST_ORDER, "personal": False}

        # B's own signal comes before the team's: B saves p1
        await env.api.ok("PUT", f"/api/me/saved/{room}/p1", b_tok, None, (200, 201))
        await until("B's save scored", lambda: scored(redis, shelf_key(b), {f"{room}/p1": WEIGHTS["saved"]}))
        assert (await join_shelf(wb, room, b_tok) or {})["order"] == ["p1", "p3", "p2", "p0"]

        # A pays p3: bought already, it goes below the products A never scored
        paid = await wa.request({"type": "pay", "hold": bought["hold"]})
        assert paid["code"] == "CONFIRMED", paid
        await until("A's payment scored", lambda: scored(redis, shelf_key(a), {f"{room}/p3": p3 + WEIGHTS["paid"],
                                                                              f"{room}/p2": p2}))
        assert p3 + WEIGHTS["paid"] < 0
        # (p1 before p0: A scored neither, and the team has B's save of p1)
        assert (await join_shelf(wa, room, a_tok) or {})["order"] == ["p2", "p1", "p0", "p3"]
    finally:
        for ws in (wa, wb, wc, anon):
            await ws.close()
        await redis.delete(shelf_key(a), shelf_key(b), shelf_key(c), team_shelf_key(room))


async def test_the_endpoint_refuses_bad_requests(env: GoodsEnv, uid: str) -> None:
    room, _ = await show(env, uid)
    tok, _ = viewer(env.settings.secret, "Dee")
    st, body = await env.api.call("GET", f"/api/rooms/{room}/shelf")
    assert (st, body["error"]["code"]) == (401, "UNAUTHORIZED")
    st, body = await env.api.call("GET", f"/api/rooms/nope-{uid}/shelf", tok)
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND")
    st, body = await env.api.call("GET", "/api/rooms/bad%20room/shelf", tok)
    assert st == 400 and body["error"]["code"] == "INVALID"


async def test_personal_shelf_off_gives_everyone_the_hosts_order(aiohttp_client: Any, settings: Settings,
                                                                 uid: str, redis: Redis) -> None:
    env = await open_goods_env(aiohttp_client, settings.replace(personal_shelf=False))
    room, sales = await show(env, uid)
    commerce = env.client.app[COMMERCE]
    tok, user = viewer(env.settings.secret, "Eve")
    ws = await WsClient.connect(env.client, "/ws", JSON)
    try:
        await join_shelf(ws, room, tok)
        assert (await ws.request({"type": "join_team", "team": "celtics"}))["type"] == "team_joined"
        assert (await ws.request({"type": "buy", "sale": sales["p3"], "qty": 1}))["code"] == "RESERVED"
        await env.api.ok("PUT", f"/api/me/saved/{room}/p2", tok, None, (200, 201))
        assert await commerce.shelf.flush() == 0
        off = {"type": "shelf", "room": room, "order": HOST_ORDER, "personal": False}
        assert await join_shelf(ws, room, tok) == off
        assert await env.api.ok("GET", f"/api/rooms/{room}/shelf", tok) == \
            {"room": room, "order": HOST_ORDER, "personal": False}
        assert not await redis.exists(shelf_key(user), team_shelf_key(room))  # nothing written
    finally:
        await ws.close()


async def test_redis_away_never_fails_the_join_and_scores_wait_for_the_next_flush(env: GoodsEnv, uid: str,
                                                                                  redis: Redis) -> None:
    room, _ = await show(env, uid)
    shelf = env.client.app[COMMERCE].shelf
    tok, user = viewer(env.settings.secret, "Fay")
    away = Redis.from_url("redis://127.0.0.1:1", decode_responses=True, socket_connect_timeout=1)
    real, shelf.redis = shelf.redis, away  # a Redis that is not there (connection refused)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    try:
        assert await join_shelf(ws, room, tok) is None  # joined (snapshot), the shelf skipped
        await env.api.ok("PUT", f"/api/me/saved/{room}/p1", tok, None, (200, 201))
        # the sink hands the save to the shelf, whose write fails (logged): the score waits in memory
        await until("the save absorbed", lambda: _true(shelf.pending > 0))
        with pytest.raises(RedisError):
            await shelf.flush()
        shelf.redis = real
        assert await shelf.flush() == 1  # kept for the next round
        assert await scores(redis, shelf_key(user)) == {f"{room}/p1": WEIGHTS["saved"]}
        assert (await join_shelf(ws, room, tok) or {})["order"] == ["p1", "p0", "p2", "p3"]
    finally:
        shelf.redis = real
        await away.aclose()
        await ws.close()
        await redis.delete(shelf_key(user))
