"""Polls (issue "#10 Interaction", docs/PROTOCOL.md Interaction, Polls) against real engines: the host
opens a poll over the WebSocket or HTTP, viewers vote once each (ALREADY_VOTED after, INVALID for no
such option, NOT_FOUND for another room's poll, CLOSED once it ended), the live counts ride on the
ticks, and the final result is the `poll_closed` event, a row in SQL and `GET /api/polls/{poll}`, also
after Redis forgot the poll."""

from __future__ import annotations

from typing import Any

import pytest

from commerce.polls import winners
from conftest import timeout
from gateway_helpers import JSON, WsClient, redis_now_ms, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory.keys import INTERACTION_DUE, poll_keys
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def room(env: GoodsEnv, name: str) -> str:
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": name, "title": f"Room {name}"}, 201)
    return name


async def joined(env: GoodsEnv, room_id: str, name: str) -> tuple[WsClient, str, str]:
    """A viewer's socket joined to the room: (client, token, user)."""
    token, user = viewer(env.settings.secret, name)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    snap = await ws.join(room_id, token, timeout=timeout(10))
    assert snap["type"] == "snapshot", snap
    return ws, token, user


def test_winners_are_every_most_voted_option() -> None:
    assert winners([3, 5, 5, 0]) == [1, 2]
    assert winners([0, 0]) == []
    assert winners([1, 0]) == [0]


async def test_a_poll_over_the_socket(env: GoodsEnv, uid: str) -> None:
    r = await room(env, f"r{uid}")
    host = await WsClient.connect(env.client, "/ws", JSON)
    assert (await host.join(r, env.host, timeout=timeout(10)))["type"] == "snapshot"
    v1, tok1, _ = await joined(env, r, "Ana")
    v2, tok2, _ = await joined(env, r, "Ben")

    # a viewer cannot open a poll
    refused = await v1.request({"type": "open_poll", "question": "Next colour?", "options": ["Red", "Blue"]})
    assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN"), refused
    bad = await host.request({"type": "open_poll", "question": "One option?", "options": ["Red"]})
    assert (bad["type"], bad["code"]) in {("error", "INVALID"), ("error", "BAD_MESSAGE")}, bad

    ok = await host.request({"type": "open_poll", "question": "Next colour?", "options": ["Red", "Blue", "Green"],
                             "duration_s": 600})
    assert ok["type"] == "ok" and ok["action"] == "open_poll", ok
    poll = ok["poll"]
    pid = poll["poll_id"]
    assert pid.startswith("p-") and poll["room_id"] == r and poll["state"] == "open", poll
    assert poll["counts"] == [0, 0, 0] and poll["total"] == 0 and "winners" not in poll
    assert poll["ends_at"] - poll["opened_at"] == 600_000
    opened = await v1.wait(lambda m: m.get("type") == "poll_opened", timeout(10))
    assert opened["poll"] == poll and "seq" in opened

    # one vote per viewer; the vote that counted comes back, nothing changes
    first = await v1.request({"type": "vote", "poll": pid, "option": 1})
    assert first == {**first, "type": "vote_result", "code": "VOTED", "poll": pid, "option": 1,
                     "counts": [0, 1, 0], "total": 1}, first
    again = await v1.request({"type": "vote", "poll": pid, "option": 2})
    assert (again["code"], again["option"], again["counts"], again["total"]) == ("ALREADY_VOTED", 1, [0, 1, 0], 1)
    invalid = await v2.request({"type": "vote", "poll": pid, "option": 3})
    assert invalid["code"] == "INVALID" and "option" not in invalid, invalid
    unknown = await v2.request({"type": "vote", "poll": f"{pid}x", "option": 0})
    assert unknown["code"] == "NOT_FOUND", unknown
    second = await v2.request({"type": "vote", "poll": pid, "option": 1})
    assert (second["code"], second["counts"], second["total"]) == ("VOTED", [0, 2, 0], 2), second

    # the live counts ride on a tick
    tick = await v1.wait(lambda m: m.get("type") == "tick" and (m.get("polls") or {}).get(pid, {}).get("total") == 2,
                         timeout(10))
    assert tick["polls"][pid] == {"counts": [0, 2, 0], "total": 2}, tick

    # a late joiner's snapshot carries the poll
    v3, tok3, _ = await joined(env, r, "Cy")
    snap = next(m for m in v3.msgs if m["type"] == "snapshot")
    assert [p["poll_id"] for p in snap["polls"]] == [pid], snap["polls"]
    assert snap["polls"][0]["state"] == "open"

    # GET: "you" for a viewer, nothing for a caller who is not one (a merchant)
    mine = await env.api.ok("GET", f"/api/polls/{pid}", tok1)
    assert (mine["you"], mine["counts"], mine["state"]) == (1, [0, 2, 0], "open"), mine
    assert (await env.api.ok("GET", f"/api/polls/{pid}", tok3))["you"] is None
    assert "you" not in await env.api.ok("GET", f"/api/polls/{pid}", env.merchant)

    # the host closes it: the final result, once
    start1 = len(v1.msgs)
    closed = await host.request({"type": "close_poll", "poll": pid})
    final = closed["poll"]
    assert final["state"] == "closed" and final["winners"] == [1] and final["counts"] == [0, 2, 0], final
    assert poll["opened_at"] <= final["closed_at"] <= final["ends_at"]
    ev = await v1.wait(lambda m: m.get("type") == "poll_closed", timeout(10), start=start1)
    assert ev["poll"] == final
    assert (await host.request({"type": "close_poll", "poll": pid}))["poll"] == final  # again: the same result
    late = await v3.request({"type": "vote", "poll": pid, "option": 0})
    assert (late["code"], late["counts"], late["total"]) == ("CLOSED", [0, 2, 0], 2), late
    row = await env.client.app[COMMERCE].polls.sql.get(pid)
    assert row is not None and (row.room_id, row.total, row.closed_at_ms) == (r, 2, final["closed_at"]), row
    assert (await env.api.ok("GET", f"/api/polls/{pid}", tok1)) == {**final, "you": 1}
    await until("one poll_closed only", lambda: _settled(v1, start1))
    assert len([m for m in v1.msgs[start1:] if m.get("type") == "poll_closed"]) == 1
    for ws in (host, v1, v2, v3):
        await ws.close()


async def _settled(ws: WsClient, start: int) -> bool:
    """True once a tick arrived after the poll_closed (the room's later messages were delivered)."""
    idx = next(i for i in range(start, len(ws.msgs)) if ws.msgs[i].get("type") == "poll_closed")
    return any(m.get("type") == "tick" for m in ws.msgs[idx:])


async def test_open_and_vote_over_http_and_the_poll_closes_at_its_time(env: GoodsEnv, uid: str, redis: Any) -> None:
    r, other = await room(env, f"r{uid}"), await room(env, f"o{uid}")
    v1, tok1, user1 = await joined(env, r, "Ana")
    tok2, _ = viewer(env.settings.secret, "Ben")
    pid = f"poll-{uid}"
    body = {"poll_id": pid, "question": "Which size first?", "options": ["S", "M", "L"], "duration_s": 5}
    opened = await env.api.ok("POST", f"/api/rooms/{r}/actions/open_poll", env.host, body, 200)
    poll = opened["poll"]
    assert opened["ok"] and poll["poll_id"] == pid and poll["ends_at"] - poll["opened_at"] == 5000, opened
    # the same open again is the same poll; another question or another room is a conflict
    assert (await env.api.ok("POST", f"/api/rooms/{r}/actions/open_poll", env.host, body, 200))["poll"] == poll
    for where, change in ((r, {"question": "Another?"}), (r, {"options": ["S", "M"]}), (other, {})):
        st, out = await env.api.call("POST", f"/api/rooms/{where}/actions/open_poll", env.host, {**body, **change})
        assert (st, out["error"]["code"]) == (409, "CONFLICT"), (where, change, st, out)
    await v1.wait(lambda m: m.get("type") == "poll_opened", timeout(10))

    voted = await env.api.ok("POST", f"/api/polls/{pid}/vote", tok1, {"option": 2}, 200)
    assert voted == {"code": "VOTED", "poll": pid, "option": 2, "counts": [0, 0, 1], "total": 1}, voted
    st, again = await env.api.call("POST", f"/api/polls/{pid}/vote", tok1, {"option": 0})
    assert (st, again["error"]["code"], again["option"], again["counts"]) == (409, "ALREADY_VOTED", 2, [0, 0, 1])
    st, bad = await env.api.call("POST", f"/api/polls/{pid}/vote", tok2, {"option": 3})
    assert (st, bad["error"]["code"]) == (400, "INVALID"), bad
    st, bad = await env.api.call("POST", f"/api/polls/{pid}/vote", None, {"option": 0})
    assert st == 401, bad
    st, missing = await env.api.call("POST", f"/api/polls/nope{uid}/vote", tok2, {"option": 0})
    assert (st, missing["error"]["code"]) == (404, "NOT_FOUND"), missing
    assert (await env.api.ok("POST", f"/api/polls/{pid}/vote", tok2, {"option": 2}, 200))["counts"] == [0, 0, 2]
    assert await redis.hget(poll_keys(pid).votes, user1) == "2" and await redis.hlen(poll_keys(pid).votes) == 2
    ttl = await redis.pttl(poll_keys(pid).meta)
    assert 0 < ttl <= env.settings.retain_room_s * 1000 + 5000, ttl  # the keys expire

    # the deadline closes it (any process's upkeep); nobody votes after ends_at
    ev = await v1.wait(lambda m: m.get("type") == "poll_closed", timeout(20))
    final = ev["poll"]
    assert (final["state"], final["counts"], final["total"], final["winners"]) == ("closed", [0, 0, 2], 2, [2])
    assert final["closed_at"] == final["ends_at"] == poll["ends_at"], final
    st, late = await env.api.call("POST", f"/api/polls/{pid}/vote", tok1, {"option": 0})
    assert (st, late["error"]["code"]) == (409, "CLOSED"), late
    late_ws = await v1.request({"type": "vote", "poll": pid, "option": 0})
    assert late_ws["code"] == "CLOSED", late_ws
    got = await env.api.ok("GET", f"/api/polls/{pid}", tok1)
    assert got == {**final, "you": 2}, got
    closed = await env.api.ok("POST", f"/api/rooms/{r}/actions/close_poll", env.host, {"poll": pid}, 200)
    assert closed["poll"] == final
    st, out = await env.api.call("POST", f"/api/rooms/{other}/actions/close_poll", env.host, {"poll": pid})
    assert (st, out["error"]["code"]) == (404, "NOT_FOUND"), out

    # Redis forgets the poll: SQL still answers, and the id stays taken
    k = poll_keys(pid)
    await redis.delete(k.meta, k.votes, k.counts)
    assert await env.api.ok("GET", f"/api/polls/{pid}", env.merchant) == final
    assert (await env.api.ok("GET", f"/api/polls/{pid}", tok1))["you"] is None  # who voted what is not kept
    assert (await env.api.ok("POST", f"/api/rooms/{r}/actions/open_poll", env.host, body, 200))["poll"] == final
    assert (await env.api.ok("POST", f"/api/rooms/{r}/actions/close_poll", env.host, {"poll": pid}, 200))["poll"] \
        == final
    st, out = await env.api.call("POST", f"/api/rooms/{other}/actions/open_poll", env.host, body)
    assert (st, out["error"]["code"]) == (409, "CONFLICT"), out
    st, out = await env.api.call("GET", f"/api/polls/none{uid}", tok1)
    assert (st, out["error"]["code"]) == (404, "NOT_FOUND"), out
    assert len([m for m in v1.msgs if m.get("type") == "poll_closed"]) == 1
    assert len([m for m in v1.msgs if m.get("type") == "poll_opened"]) == 1  # the repeated open published nothing
    await v1.close()


async def test_another_rooms_poll_is_not_found_and_a_poll_past_its_time_is_closed(
        env: GoodsEnv, uid: str, redis: Any) -> None:
    a, b = await room(env, f"a{uid}"), await room(env, f"b{uid}")
    va, _, _ = await joined(env, a, "Ana")
    vb, tok_b, _ = await joined(env, b, "Ben")
    poll = (await env.api.ok("POST", f"/api/rooms/{a}/actions/open_poll", env.host,
                             {"question": "Yes or no?", "options": ["Yes", "No"], "duration_s": 5}, 200))["poll"]
    pid = poll["poll_id"]
    out = await vb.request({"type": "vote", "poll": pid, "option": 0})
    assert out == {**out, "type": "vote_result", "code": "NOT_FOUND", "poll": pid} and "counts" not in out, out
    # over HTTP a poll of any room takes the vote
    assert (await env.api.ok("POST", f"/api/polls/{pid}/vote", tok_b, {"option": 0}, 200))["code"] == "VOTED"
    tick = await va.wait(lambda m: m.get("type") == "tick" and pid in (m.get("polls") or {}), timeout(10))
    assert tick["polls"][pid] == {"counts": [1, 0], "total": 1}

    # past ends_at: refused at once (Redis TIME), even before the deadline's close has run
    await redis.zrem(INTERACTION_DUE, f"poll:{pid}")  # keep the upkeep from closing it first

    async def past_end() -> bool:
        return bool(await redis_now_ms(redis) >= pid_ends_at)

    pid_ends_at = poll["ends_at"]
    await until("the poll's ends_at (Redis TIME)", past_end, 20)
    late = await va.request({"type": "vote", "poll": pid, "option": 1})
    assert late["code"] == "CLOSED", late
    assert (late["counts"], late["total"]) == ([1, 0], 1), late
    start = len(va.msgs)
    got = await env.api.ok("GET", f"/api/polls/{pid}", env.merchant)  # a read past ends_at closes it
    assert got["state"] == "closed" and got["closed_at"] == got["ends_at"] and got["winners"] == [0], got
    ev = await va.wait(lambda m: m.get("type") == "poll_closed", timeout(10), start=start)
    assert ev["poll"] == got
    for ws in (va, vb):
        await ws.close()
