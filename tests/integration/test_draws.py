"""Lucky draws (issue "#10 Interaction", docs/PROTOCOL.md Lucky draws, docs/DRAWS.md) against real
engines: the host opens a draw over the WebSocket (its commitment published before anyone can enter),
viewers enter under each rule part (keyword by comment, team, watch time, bought) or are told why
not; only the entrants still in the room when entries close are drawn; ``draw_result`` reveals the
seed, the list's hash and the winners; ``GET /api/draws/{draw}/entrants`` serves the list and
``livesale verify-draw`` agrees with it (and not with a tampered copy). A pool prize is a zero-price
hold its winner pays; the prize sale is nobody else's to buy; a prize given up goes to the next
entrant of the ranking (``draw_redrawn``); once every prize is paid the rest goes back to the pool."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from commerce.draws import Draws
from conftest import timeout
from gateway_helpers import JSON, WsClient, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory.keys import INTERACTION_DUE
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

ROOT = Path(__file__).resolve().parents[2]
PRICE = 4900
TEAMS = [{"team_id": "red", "name": "Red", "colour": "#aa0000", "badge": "R"},
         {"team_id": "blue", "name": "Blue", "colour": "#0000aa", "badge": "B"}]


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


def draws_of(env: GoodsEnv) -> Draws:
    draws: Draws = env.client.app[COMMERCE].draws
    return draws


async def open_room(env: GoodsEnv, uid: str, pool_units: int = 10, product: bool = True) -> tuple[str, str]:
    """A room (with the pool's SKU as a product, or not) and a stock pool: (room, pool)."""
    room, pool, sku = f"r{uid}", f"pl{uid}", f"SKU-{uid}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Draw night"}, 201)
    if product:
        await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                         {"product_id": "p0", "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE}, 201)
    await env.api.ok("POST", "/api/pools", env.merchant,
                     {"pool_id": pool, "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE,
                      "units": pool_units}, 201)
    return room, pool


async def joined(env: GoodsEnv, room: str, name: str, token: str | None = None) -> tuple[WsClient, str]:
    """A socket joined to the room: (client, user)."""
    user = ""
    if token is None:
        token, user = viewer(env.settings.secret, name)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    snap = await ws.join(room, token, timeout=timeout(10))
    assert snap["type"] == "snapshot", snap
    return ws, user or snap["you"]["user"]


async def create(host: WsClient, **body: Any) -> dict[str, Any]:
    ok = await host.request({"type": "create_draw", **body}, timeout(10))
    assert ok["type"] == "ok" and ok["action"] == "create_draw", ok
    draw: dict[str, Any] = ok["draw"]
    return draw


async def enter(ws: WsClient, draw_id: str) -> dict[str, Any]:
    out = await ws.request({"type": "enter_draw", "draw": draw_id}, timeout(10))
    assert out["type"] == "entry_result" and out["draw"] == draw_id, out
    return out


async def verify_cli(*args: str) -> tuple[int, str]:
    """``livesale verify-draw`` as its own process (the module's command line, as installed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "verify-draw", *args, cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_entry_rules_each_tell_why_and_a_keyword_comment_enters(env: GoodsEnv, uid: str) -> None:
    room, pool = await open_room(env, uid, pool_units=20)
    host, _ = await joined(env, room, "host", env.host)
    await env.api.ok("POST", f"/api/rooms/{room}/actions/set_teams", env.host, {"teams": TEAMS}, 200)
    ana, ana_id = await joined(env, room, "Ana")
    ben, _ben_id = await joined(env, room, "Ben")

    # a viewer cannot open a draw; bad terms are refused
    refused = await ana.request({"type": "create_draw", "title": "x", "winners": 1, "entry_s": 60,
                                 "prize": {"pool": pool}})
    assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN"), refused
    for bad in ({"entry_s": 5}, {"winners": 0}, {"prize": {"pool": pool, "coupon": {"kind": "amount", "value": 1}}},
                {"pay_within_s": 10}, {"rule": {"watched_s": -1}}):
        out = await host.request({"type": "create_draw", "title": "x", "winners": 1, "entry_s": 60,
                                  "prize": {"pool": pool}, **bad})
        assert (out["type"], out["code"]) in {("error", "INVALID"), ("error", "BAD_MESSAGE")}, (bad, out)
    # the pool has 20 units: 7 winners x 3 units is more than that
    short = await host.request({"type": "create_draw", "title": "Big", "winners": 7, "entry_s": 60,
                                "prize": {"pool": pool, "units": 3}})
    assert (short["type"], short["code"]) == ("error", "POOL_SHORT"), short
    st, body = await env.api.call("POST", f"/api/rooms/{room}/actions/create_draw", env.host,
                                  {"title": "Big", "winners": 21, "entry_s": 60, "prize": {"pool": pool}})
    assert (st, body["error"]["code"]) == (409, "POOL_SHORT"), body

    kw = await create(host, draw_id=f"wk{uid}", title="Say the word", winners=1, entry_s=600,
                      prize={"pool": pool}, rule={"keyword": "Lucky Me"})
    assert kw["state"] == "open" and kw["entrants"] == 0 and kw["rule"] == {"keyword": "Lucky Me"}, kw
    assert len(kw["commitment"]) == 64 and "seed" not in kw and "list_hash" not in kw, kw
    assert kw["entry_until"] - kw["opened_at"] == 600_000 and kw["pay_within_s"] == 600
    assert kw["prize"] == {"pool": pool, "units": 1, "title": "Aurora Earbuds", "sku": f"SKU-{uid}"} \
        and kw["winners"] == 1 and kw["room_id"] == room
    opened = await ana.wait(lambda m: m.get("type") == "draw_opened", timeout(10))
    assert opened["draw"] == kw and "seq" in opened
    # the pool's units for the prize left the pool at once, into a sale the room was never told about
    got = await env.api.ok("GET", f"/api/pools/{pool}", env.merchant)
    assert got["available"] == 19, got
    prize_sale = f"{pool}--d-wk{uid}"
    assert prize_sale in {s["sale_id"] for s in got["sales"]}
    assert not [m for m in ana.msgs if m.get("type") == "sale_scheduled"]
    assert prize_sale not in {s["sale_id"] for s in (await env.api.ok("GET", f"/api/rooms/{room}"))["sales"]}

    # keyword: enter_draw alone is not enough; the comment enters (and tells the viewer)
    no = await enter(ana, kw["draw_id"])
    assert no["code"] == "NOT_ELIGIBLE" and "Lucky Me" in no["message"] and "entry_id" not in no, no
    await ana.send({"type": "comment", "text": "please, lucky me!"})
    told = await ana.wait(lambda m: m.get("type") == "entry_result" and m.get("code") == "ENTERED", timeout(10))
    assert told["draw"] == kw["draw_id"] and told["entry_id"].startswith("e-") and len(told["entry_id"]) == 18
    again = await enter(ana, kw["draw_id"])
    assert (again["code"], again["entry_id"]) == ("ALREADY_ENTERED", told["entry_id"]), again
    await ben.send({"type": "comment", "text": "no keyword here"})
    assert (await enter(ben, kw["draw_id"]))["code"] == "NOT_ELIGIBLE"
    # the entrant count rides on the ticks
    tick = await host.wait(lambda m: m.get("type") == "tick" and kw["draw_id"] in (m.get("draws") or {}), timeout(10))
    assert tick["draws"][kw["draw_id"]] == {"entrants": 1}, tick

    # team: only the team's members
    team = await create(host, title="Reds only", winners=1, entry_s=600, prize={"pool": pool}, rule={"team": "red"})
    assert team["draw_id"].startswith("w-")
    no = await enter(ben, team["draw_id"])
    assert no["code"] == "NOT_ELIGIBLE" and "red" in no["message"], no
    assert (await ben.request({"type": "join_team", "team": "red"}))["type"] == "team_joined"
    assert (await enter(ben, team["draw_id"]))["code"] == "ENTERED"

    # watch time: on the connection that enters, without a break
    watched = await create(host, title="Stay", winners=1, entry_s=600, prize={"pool": pool},
                           rule={"watched_s": 3600})
    no = await enter(ana, watched["draw_id"])
    assert no["code"] == "NOT_ELIGIBLE" and "3600 s" in no["message"], no
    short_watch = await create(host, title="Stay a bit", winners=1, entry_s=600, prize={"pool": pool},
                               rule={"watched_s": 1})
    await until("a second on the socket", lambda: asyncio.sleep(1.05, True))
    assert (await enter(ana, short_watch["draw_id"]))["code"] == "ENTERED"

    # bought: a paid order in this room
    buyers = await create(host, title="Buyers", winners=1, entry_s=600, prize={"pool": pool}, rule={"bought": True})
    no = await enter(ana, buyers["draw_id"])
    assert no["code"] == "NOT_ELIGIBLE" and "paid" in no["message"], no
    sale = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                            {"product_id": "p0", "units": 5, "pool": pool}, 201)
    await ana.wait(lambda m: m.get("type") == "sale_scheduled" and m["sale"]["sale_id"] == sale["sale_id"],
                   timeout(10))  # the gateway knows the sale (a buy names one of the room's sales)
    bought = await ana.request({"type": "buy", "sale": sale["sale_id"], "qty": 1})
    assert bought["code"] == "RESERVED", bought
    assert (await enter(ana, buyers["draw_id"]))["code"] == "NOT_ELIGIBLE"  # held, not paid
    paid = await ana.request({"type": "pay", "hold": bought["hold"]})
    assert paid["code"] == "CONFIRMED", paid
    assert (await enter(ana, buyers["draw_id"]))["code"] == "ENTERED"  # paid, maybe not settled yet

    # every part the host set must hold
    both = await create(host, title="Reds who stayed", winners=1, entry_s=600, prize={"pool": pool},
                        rule={"team": "red", "watched_s": 3600})
    no = await enter(ben, both["draw_id"])
    assert no["code"] == "NOT_ELIGIBLE" and "3600" in no["message"], no

    # unknown draw, another room's draw, another room's draw id
    assert (await enter(ana, f"nope{uid}"))["code"] == "NOT_FOUND"
    other = f"o{uid}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": other, "title": "Other"}, 201)
    elsewhere, _ = await joined(env, other, "Cy")
    assert (await enter(elsewhere, kw["draw_id"]))["code"] == "NOT_FOUND"
    st, body = await env.api.call("POST", f"/api/rooms/{other}/actions/create_draw", env.host,
                                  {"draw_id": kw["draw_id"], "title": "Mine", "winners": 1, "entry_s": 60,
                                   "prize": {"pool": pool}})
    assert (st, body["error"]["code"]) == (409, "CONFLICT"), body
    # the same id again in the same room answers the draw
    st, body = await env.api.call("POST", f"/api/rooms/{room}/actions/create_draw", env.host,
                                  {"draw_id": kw["draw_id"], "title": "Say the word", "winners": 1, "entry_s": 600,
                                   "prize": {"pool": pool}, "rule": {"keyword": "Lucky Me"}})
    assert st == 200 and body["draw"]["commitment"] == kw["commitment"], body

    # before the draw: the draw without its seed, no entrant list yet
    got = await env.api.ok("GET", f"/api/draws/{kw['draw_id']}")
    assert got == {**kw, "entrants": 1}, got
    st, body = await env.api.call("GET", f"/api/draws/{kw['draw_id']}/entrants")
    assert (st, body["error"]["code"]) == (409, "NOT_STARTED"), body
    st, body = await env.api.call("GET", f"/api/draws/nope{uid}")
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND"), body
    # nobody buys the prize: not over HTTP, not over the socket
    tok = viewer(env.settings.secret, "Dee")[0]
    st, body = await env.api.call("POST", f"/api/sales/{prize_sale}/reserve", tok, {"request_id": "x", "qty": 1})
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND"), body
    assert (await ana.request({"type": "buy", "sale": prize_sale, "qty": 1}))["code"] == "NOT_FOUND"
    # the room's snapshot carries the open draws
    late, _ = await joined(env, room, "Late")
    snap = next(m for m in late.msgs if m.get("type") == "snapshot")
    assert {kw["draw_id"], team["draw_id"]} <= {d["draw_id"] for d in snap["draws"]}, snap["draws"]
    for ws in (host, ana, ben, elsewhere, late):
        await ws.close()
    # these draws end in ten minutes: not this test's business
    for d in (kw, team, watched, short_watch, buyers, both):
        await env.client.app[COMMERCE].inventory.redis.zrem(INTERACTION_DUE, f"draw:{d['draw_id']}")


async def test_the_draw_is_checkable_and_prizes_are_paid_or_redrawn(env: GoodsEnv, uid: str,
                                                                   tmp_path: Path) -> None:
    room, pool = await open_room(env, uid, pool_units=10, product=False)  # the prize product is made quietly
    host, _ = await joined(env, room, "host", env.host)
    tokens = [viewer(env.settings.secret, f"V{i}")[0] for i in range(5)]
    viewers = [await joined(env, room, f"V{i}", tokens[i]) for i in range(5)]
    draw = await create(host, draw_id=f"w{uid}", title="Earbuds x2", winners=2, entry_s=10, pay_within_s=60,
                        prize={"pool": pool, "units": 1})
    entries = {}
    for ws, user in viewers[:4]:  # V4 watches and never enters
        out = await enter(ws, draw["draw_id"])
        assert out["code"] == "ENTERED", out
        entries[user] = out["entry_id"]
    gone_ws, gone = viewers[3]
    await gone_ws.close()  # entered, but not in the room when entries close

    result = await host.wait(lambda m: m.get("type") == "draw_result", timeout(30))
    d = result["draw"]
    assert d["state"] == "drawn" and d["draw_id"] == draw["draw_id"] and d["commitment"] == draw["commitment"], d
    assert hashlib.sha256(bytes.fromhex(d["seed"])).hexdigest() == draw["commitment"]
    present = sorted(e for u, e in entries.items() if u != gone)
    assert d["entrants"] == 3 and len(d["winner_ids"]) == 2 and set(d["winner_ids"]) <= set(present), d
    assert d["list_hash"] == hashlib.sha256("\n".join(present).encode()).hexdigest()
    assert d["redraws"] == []

    # the published list and its check
    listed = await env.api.ok("GET", f"/api/draws/{draw['draw_id']}/entrants")
    assert listed == {"draw_id": draw["draw_id"], "commitment": draw["commitment"], "list_hash": d["list_hash"],
                      "seed": d["seed"], "k": 2, "entrants": present, "winner_ids": d["winner_ids"],
                      "redraws": []}, listed
    assert await env.api.ok("GET", f"/api/draws/{draw['draw_id']}") == {**d}
    doc = tmp_path / "entrants.json"
    doc.write_text(json.dumps(listed))
    rc, out = await verify_cli(str(doc), "--commitment", draw["commitment"], "--entry-id", present[0])
    assert rc == 0 and "VERIFIED" in out and "NOT VERIFIED" not in out, out
    url = str(env.client.make_url(f"/api/draws/{draw['draw_id']}/entrants"))
    rc, out = await verify_cli(url, "--commitment", draw["commitment"], "--list-hash", d["list_hash"])
    assert rc == 0, out
    tampered = {**listed, "entrants": present[:-1]}  # one entrant dropped from the list
    doc.write_text(json.dumps(tampered))
    rc, out = await verify_cli(str(doc))
    assert rc == 1 and "NOT VERIFIED" in out, out
    doc.write_text(json.dumps({**listed, "seed": "00" * 32}))
    rc, out = await verify_cli(str(doc), "--commitment", draw["commitment"])
    assert rc == 1 and "NOT VERIFIED" in out, out

    # the winners get a zero-price hold each; nobody else hears of it
    by_entry = {entries[u]: (ws, u) for ws, u in viewers[:3]}
    won = {}
    for e in d["winner_ids"]:
        ws, _ = by_entry[e]
        m = await ws.wait(lambda m: m.get("type") == "draw_won", timeout(10))
        assert m["draw_id"] == draw["draw_id"] and m["entry_id"] == e and m["prize"]["pool"] == pool and m["prize"]["units"] == 1, m
        assert m["hold"] and abs(m["pay_by"] - (d["entry_until"] + 60_000)) < 10_000, m
        won[e] = m
    loser = next(e for e in present if e not in won)
    assert not [m for m in by_entry[loser][0].msgs if m.get("type") == "draw_won"]
    first, second = d["winner_ids"]
    ws1, user1 = by_entry[first]
    mine = await env.api.ok("GET", "/api/me/orders", tokens[[u for _, u in viewers].index(user1)])
    line = next(h for h in mine["holds"] if h["hold_id"] == won[first]["hold"])
    assert (line["amount"], line["status"], line["qty"]) == (0, "reserved", 1), line
    paid = await ws1.request({"type": "pay", "hold": won[first]["hold"]})
    assert paid["code"] == "CONFIRMED", paid
    ws2, _ = by_entry[second]
    released = await ws2.request({"type": "release", "hold": won[second]["hold"]})
    assert released["code"] == "RELEASED", released

    # the prize given up goes to the next entrant of the ranking (the handler runs at once here, three
    # times at once as several processes would: one lease holder advances it, the others come back later)
    await asyncio.gather(*(draws_of(env)._due(draw["draw_id"]) for _ in range(3)))
    redrawn = await host.wait(lambda m: m.get("type") == "draw_redrawn", timeout(15))
    assert (redrawn["round"], redrawn["replaced"], redrawn["added"]) == (1, [second], [loser]), redrawn
    assert redrawn["draw"]["redraws"] == [{"round": 1, "replaced": [second], "added": [loser]}]
    ws3, _ = by_entry[loser]
    m3 = await ws3.wait(lambda m: m.get("type") == "draw_won", timeout(10))
    assert m3["entry_id"] == loser and m3["hold"], m3
    listed = await env.api.ok("GET", f"/api/draws/{draw['draw_id']}/entrants")
    assert listed["redraws"] == [{"round": 1, "replaced": [second], "added": [loser]}]
    doc.write_text(json.dumps(listed))
    rc, out = await verify_cli(str(doc), "--commitment", draw["commitment"])
    assert rc == 0, out
    doc.write_text(json.dumps({**listed, "redraws": [{"round": 1, "replaced": [second], "added": [first]}]}))
    rc, out = await verify_cli(str(doc))
    assert rc == 1, out

    # the last prize paid: the draw is done, the prize sale ends and its spare unit goes back
    assert (await ws3.request({"type": "pay", "hold": m3["hold"]}))["code"] == "CONFIRMED"
    await draws_of(env)._due(draw["draw_id"])

    async def returned() -> bool:
        got = await env.api.ok("GET", f"/api/pools/{pool}", env.merchant)
        return bool(got["available"] == 8)
    await until("the prize sale's spare unit back in the pool", returned)
    assert len(host.of_type("draw_result")) == 1 and len(host.of_type("draw_redrawn")) == 1
    assert len(ws3.of_type("draw_won")) == 1 and len(ws1.of_type("draw_won")) == 1

    # once Redis forgot the draw, SQL still serves it and its list
    final = await env.api.ok("GET", f"/api/draws/{draw['draw_id']}")
    listed = await env.api.ok("GET", f"/api/draws/{draw['draw_id']}/entrants")
    redis = env.client.app[COMMERCE].inventory.redis
    async for key in redis.scan_iter(match=f"*{{draw:{draw['draw_id']}}}*"):
        await redis.delete(key)
    assert await env.api.ok("GET", f"/api/draws/{draw['draw_id']}") == final
    assert await env.api.ok("GET", f"/api/draws/{draw['draw_id']}/entrants") == listed
    for ws, _ in viewers[:3]:
        await ws.close()
    await host.close()


async def test_a_coupon_prize_lands_in_the_winners_wallet(env: GoodsEnv, uid: str) -> None:
    room, _ = await open_room(env, uid)
    host, _ = await joined(env, room, "host", env.host)
    token, _ = viewer(env.settings.secret, "Ana")
    ana, _ = await joined(env, room, "Ana", token)
    draw = await create(host, draw_id=f"c{uid}", title="A coupon", winners=3, entry_s=10,
                        prize={"coupon": {"kind": "percent", "value": 20, "valid_s": 3600}})
    assert draw["prize"]["coupon"]["kind"] == "percent"
    assert (await enter(ana, draw["draw_id"]))["code"] == "ENTERED"
    result = await ana.wait(lambda m: m.get("type") == "draw_result", timeout(30))
    assert result["draw"]["entrants"] == 1 and len(result["draw"]["winner_ids"]) == 1
    won = await ana.wait(lambda m: m.get("type") == "draw_won", timeout(10))
    assert won["coupon"]["drop_id"] == f"c{uid}-prize" and "hold" not in won, won
    assert won["pay_by"] == won["coupon"]["expires_at"], won
    wallet = await env.api.ok("GET", "/api/me/coupons", token)
    assert [c["drop_id"] for c in wallet["coupons"]] == [f"c{uid}-prize"], wallet
    assert wallet["coupons"][0]["kind"] == "percent" and wallet["coupons"][0]["value"] == 20
    await ana.close()
    await host.close()
