"""Interest audiences (issue "Growth and data", item 2) against real engines: rules over the `signals`
table compiled to one SQL query; "held but did not pay" from real holds (an expired unpaid hold is in,
a paid one and one still within its pay-by are out, a released one is in); "team Lakers, watched > 10
min" from signals recorded through `commerce.signals` and the sink; absent, within_days, min_count,
a SKU matched through the room's product; exports in CSV and JSON Lines row for row (across pages);
owners only (401 / 403 / 404); bad rules refused with 400 INVALID naming the field, nothing stored."""

from __future__ import annotations

import csv
import io
import secrets
import time
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from commerce.identity import mint_merchant_token
from gateway_helpers import host_token, viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory.audiences import PAY_GRACE_MS
from inventory.signal_log import SignalKind, signals
from inventory.store import Store
from server.appkeys import COMMERCE, CORE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

DAY = 86_400_000
TEAM_WATCH = "team Lakers, watched > 10 min"


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings.replace(signal_flush_ms=50))


def _store(env: GoodsEnv) -> Store:
    return env.client.app[CORE].store


def now_ms() -> int:
    return int(time.time() * 1000)


async def put_signals(env: GoodsEnv, rows: list[dict[str, Any]]) -> None:
    """Rows straight into the `signals` table (what the sink would write), each under its own entry id."""
    base = {"room_id": "", "sale_id": "", "product_id": "", "sku": "", "ref": "", "detail": "", "value": 0,
            "at_ms": now_ms()}
    full = [{**base, **r, "entry": f"t-{secrets.token_hex(8)}", "idx": 0} for r in rows]
    async with _store(env).engine.begin() as conn:
        for i in range(0, len(full), 500):
            await conn.execute(signals.insert().values(full[i:i + 500]))


async def define(env: GoodsEnv, rules: list[dict[str, Any]], token: str | None = None, status: int = 201,
                 **kw: Any) -> dict[str, Any]:
    return dict(await env.api.ok("POST", "/api/audiences", token or env.merchant,
                                 {"name": kw.pop("name", "audience"), "rules": rules, **kw}, status))


async def export(env: GoodsEnv, audience_id: str, fmt: str, token: str | None = None) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {token or env.merchant}"}
    async with env.client.get(f"/api/audiences/{audience_id}/export?format={fmt}", headers=headers) as r:
        assert r.status == 200, await r.text()
        return r.headers["Content-Type"], await r.text()


def csv_rows(text: str) -> list[tuple[str, int, int]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["user_id", "signals", "last_at"], rows[:1]
    return [(u, int(n), int(t)) for u, n, t in rows[1:]]


def jsonl_rows(text: str) -> list[tuple[str, int, int]]:
    out = []
    for line in text.splitlines():
        d = orjson.loads(line)
        out.append((d["user_id"], d["signals"], d["last_at"]))
    return out


async def test_held_but_did_not_pay_from_real_holds(env: GoodsEnv, uid: str) -> None:
    """Holds taken over HTTP record `held` (pay-by) through the recorder and the sink; one is paid and
    settles. The rule is evaluated now and at a later instant: an unpaid hold counts once its pay-by and
    the grace have passed (or at once when released); a paid one never; one still payable not yet."""
    room = f"h{uid[:12]}"
    sku = f"SKU-{uid}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Drop"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Sneaker", "unit_price": 5000}, 201)
    short = (await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                              {"product_id": "p0", "units": 20, "hold_ttl_s": 5}, 201))["sale_id"]
    long = (await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                             {"product_id": "p0", "units": 20, "hold_ttl_s": 3600}, 201))["sale_id"]
    (t_exp, expired), (t_paid, paid), (t_open, still_open), (t_rel, released) = (
        viewer(env.settings.secret, n) for n in ("Exp", "Paid", "Open", "Rel"))

    async def hold(sale: str, token: str) -> dict[str, Any]:
        return dict(await env.api.ok("POST", f"/api/sales/{sale}/reserve", token,
                                     {"qty": 1, "request_id": "r-" + secrets.token_hex(3)}, 201))

    h_exp = await hold(short, t_exp)
    h_paid = await hold(short, t_paid)
    h_open = await hold(long, t_open)
    h_rel = await hold(long, t_rel)
    await env.api.ok("POST", f"/api/holds/{h_paid['hold_id']}/pay", t_paid, {}, 201)
    await env.api.ok("DELETE", f"/api/holds/{h_rel['hold_id']}", t_rel)
    commerce = env.client.app[COMMERCE]
    await commerce.signals.flush()

    async def landed() -> bool:
        async with _store(env).engine.connect() as conn:
            held = (await conn.execute(select(func.count()).select_from(signals).where(
                signals.c.room_id == room, signals.c.kind == "held", signals.c.sku == sku))).scalar_one()
            released_n = (await conn.execute(select(func.count()).select_from(signals).where(
                signals.c.ref == h_rel["hold_id"], signals.c.kind == "released"))).scalar_one()
        order = await _store(env).get_order(h_paid["hold_id"])
        return held == 4 and released_n == 1 and order is not None

    await until("held signals, the release and the paid order in SQL", landed)
    aud = await define(env, [{"signal": "held_unpaid", "sku": sku, "within_days": 7}], name="held, did not pay")
    assert aud["rules"] == [{"signal": "held_unpaid", "sku": sku, "within_days": 7}]
    # now: only the released hold (every pay-by is still ahead, or within the grace)
    assert await commerce.audiences.members(aud["audience_id"]) == [released]
    assert (await env.api.ok("GET", f"/api/audiences/{aud['audience_id']}", env.merchant))["count"] == 1
    # once the short holds' pay-by and the grace have passed: the expired one too, never the paid one,
    # and not the hold still payable for an hour
    later = h_exp["pay_by"] + PAY_GRACE_MS + 1
    assert h_open["pay_by"] > later
    assert await commerce.audiences.members(aud["audience_id"], now_ms=later) == sorted([expired, released])
    assert await commerce.audiences.count(aud["audience_id"], now_ms=later) == 2
    assert paid not in await commerce.audiences.members(aud["audience_id"], now_ms=later + DAY)
    assert still_open not in await commerce.audiences.members(aud["audience_id"], now_ms=later)
    assert await commerce.audiences.member_of(expired, [aud["audience_id"]], now_ms=later) == [aud["audience_id"]]
    assert await commerce.audiences.member_of(paid, [aud["audience_id"]], now_ms=later) == []
    rows = [r async for r in commerce.audiences.export_rows(aud["audience_id"], now_ms=later)]
    by_user = {r["user_id"]: r for r in rows}
    assert by_user[expired]["signals"] == 1 and by_user[expired]["last_at"] > 0


async def test_team_and_watch_time_recorded_through_the_sink(env: GoodsEnv, uid: str) -> None:
    """"Team Lakers, watched > 10 min": `team` and `leave` signals recorded through `commerce.signals`
    reach SQL through the stream and the sink; watch time sums over sessions; anonymous ids are out."""
    commerce = env.client.app[COMMERCE]
    room = f"w{uid[:12]}"
    rec = commerce.signals.record
    fan, short, rival, both = (f"{uid}-{n}" for n in ("fan", "short", "rival", "both"))
    anon = f"b:{uid}"
    for user, team, watched in ((fan, "lakers", [400_000, 300_000]), (short, "lakers", [500_000]),
                                (rival, "celtics", [900_000]), (anon, "lakers", [900_000]),
                                (both, "lakers", [600_000])):
        rec(SignalKind.TEAM, user, room, ref=team)
        for i, ms in enumerate(watched):
            rec(SignalKind.LEAVE, user, room, ref=f"sess-{i}", value=ms)
    await commerce.signals.flush()

    async def landed() -> bool:
        async with _store(env).engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(signals).where(signals.c.room_id == room))
                 ).scalar_one()
        return n == 11

    await until("the recorded signals in SQL", landed)
    rules = [{"signal": "team", "ref": "lakers", "room": room}, {"signal": "leave", "room": room, "min_value": 600_000}]
    aud = await define(env, rules, name=TEAM_WATCH)
    got = await env.api.ok("GET", f"/api/audiences/{aud['audience_id']}", env.merchant)
    assert got["count"] == 2 and got["name"] == TEAM_WATCH and got["rules"] == rules
    assert await commerce.audiences.members(aud["audience_id"]) == sorted([fan, both])
    # exports carry the first condition's signals (one team join each)
    _, text = await export(env, aud["audience_id"], "csv")
    assert [(u, n) for u, n, _ in csv_rows(text)] == sorted([(fan, 1), (both, 1)])


async def test_absent_within_days_min_count_and_sku_through_the_product(env: GoodsEnv, uid: str) -> None:
    room = f"a{uid[:12]}"
    sku = f"SKU-{uid}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Rules"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Bag", "unit_price": 100}, 201)
    u = {n: f"{uid}-{n}" for n in ("a", "b", "c", "d")}
    now = now_ms()
    await put_signals(env, [
        {"kind": "tap", "user_id": u["a"], "room_id": room, "at_ms": now - 1000},
        {"kind": "tap", "user_id": u["a"], "room_id": room, "at_ms": now - 2000},
        {"kind": "tap", "user_id": u["a"], "room_id": room, "at_ms": now - 3000},
        {"kind": "tap", "user_id": u["b"], "room_id": room},
        {"kind": "paid", "user_id": u["b"], "room_id": room},
        {"kind": "tap", "user_id": u["c"], "room_id": room, "at_ms": now - 10 * DAY},
        {"kind": "saved", "user_id": u["c"], "room_id": room, "product_id": "p0", "at_ms": now - 10 * DAY},
        {"kind": "saved", "user_id": u["d"], "room_id": room, "product_id": "p0", "at_ms": now - 2 * DAY},
        {"kind": "tap", "user_id": f"s:{uid}", "room_id": room},
    ])
    commerce = env.client.app[COMMERCE]

    async def members(rules: list[dict[str, Any]]) -> list[str]:
        aud = await define(env, rules)
        return list(await commerce.audiences.members(aud["audience_id"]))

    assert await members([{"signal": "tap", "room": room}]) == sorted([u["a"], u["b"], u["c"]])
    assert await members([{"signal": "tap", "room": room}, {"signal": "paid", "room": room, "absent": True}]) == \
        sorted([u["a"], u["c"]])
    assert await members([{"signal": "tap", "room": room, "within_days": 7}]) == sorted([u["a"], u["b"]])
    assert await members([{"signal": "tap", "room": room, "min_count": 3}]) == [u["a"]]
    # `saved` names a product, not a sale: the SKU matches through the room's product
    assert await members([{"signal": "saved", "sku": sku}]) == sorted([u["c"], u["d"]])
    assert await members([{"signal": "saved", "sku": sku, "within_days": 7}]) == [u["d"]]
    assert await members([{"signal": "saved", "sku": sku}, {"signal": "tap", "room": room, "absent": True}]) == \
        [u["d"]]
    assert await commerce.audiences.member_of(f"s:{uid}") == []


async def test_export_csv_and_jsonl_row_for_row_across_pages(env: GoodsEnv, uid: str) -> None:
    """1,203 members (more than one page of the export): both formats list exactly the expected rows,
    ordered by user id, with the first condition's signal count and newest time."""
    room = f"e{uid[:12]}"
    now = now_ms()
    expected = []
    rows = []
    for i in range(1203):
        user = f"{uid}-{i:05d}"
        n = 1 + i % 3
        for k in range(n):
            rows.append({"kind": "viewed", "user_id": user, "room_id": room, "product_id": "p1", "at_ms": now - i - k})
        expected.append((user, n, now - i))
    rows.append({"kind": "viewed", "user_id": f"b:{uid}", "room_id": room, "product_id": "p1"})  # anonymous
    rows.append({"kind": "viewed", "user_id": f"{uid}-other", "room_id": room, "product_id": "p2"})
    await put_signals(env, rows)
    aud = await define(env, [{"signal": "viewed", "room": room, "product": "p1"}])
    ctype, text = await export(env, aud["audience_id"], "csv")
    assert ctype.startswith("text/csv")
    assert csv_rows(text) == sorted(expected)
    ctype, text = await export(env, aud["audience_id"], "jsonl")
    assert ctype.startswith("application/x-ndjson")
    assert jsonl_rows(text) == sorted(expected)
    assert (await env.api.ok("GET", f"/api/audiences/{aud['audience_id']}", env.merchant))["count"] == 1203
    st, body = await env.api.call("GET", f"/api/audiences/{aud['audience_id']}/export?format=xml", env.merchant)
    assert st == 400 and body["error"]["code"] == "INVALID"


async def test_owners_only_and_idempotent_definitions(env: GoodsEnv, uid: str) -> None:
    rules = [{"signal": "tap", "room": f"o{uid[:12]}"}]
    aid = f"au-{uid}"
    first = await define(env, rules, audience_id=aid, name="tappers")
    assert first["audience_id"] == aid and first["owner"] == env.merchant_id and first["created_at"] > 0
    again = await define(env, rules, audience_id=aid, name="tappers", status=200)
    assert again == first
    st, body = await env.api.call("POST", "/api/audiences", env.merchant,
                                  {"audience_id": aid, "name": "other", "rules": rules})
    assert st == 409 and body["error"]["code"] == "CONFLICT"
    listed = (await env.api.ok("GET", "/api/audiences", env.merchant))["audiences"]
    assert first in listed

    other = mint_merchant_token(env.settings.secret, "m-" + secrets.token_hex(3))
    a_host = host_token(env.settings.secret, "host-" + uid[:6])
    token, _ = viewer(env.settings.secret, "V")
    base = f"/api/audiences/{aid}"
    for method, path in (("GET", base), ("GET", base + "/export?format=csv"), ("DELETE", base)):
        assert (await env.api.call(method, path))[0] == 401
        for who in (other, a_host, token):
            st, body = await env.api.call(method, path, who)
            assert st == 403 and body["error"]["code"] == "FORBIDDEN", (method, path, body)
    st, body = await env.api.call("GET", f"/api/audiences/nope-{uid}", env.merchant)
    assert st == 404 and body["error"]["code"] == "NOT_FOUND"
    assert (await env.api.call("POST", "/api/audiences", token, {"name": "x", "rules": rules}))[0] == 403
    assert aid not in [a["audience_id"] for a in (await env.api.ok("GET", "/api/audiences", other))["audiences"]]

    # a host defines its own; a host limited to some rooms must name one of them in every condition
    mine = await define(env, rules, token=a_host)
    assert (await env.api.ok("GET", f"/api/audiences/{mine['audience_id']}", a_host))["count"] == 0
    assert (await env.api.call("GET", f"/api/audiences/{mine['audience_id']}", env.merchant))[0] == 403
    narrow = host_token(env.settings.secret, "host-" + uid[:6], rooms=("r1",))
    st, body = await env.api.call("POST", "/api/audiences", narrow, {"name": "x", "rules": [{"signal": "tap"}]})
    assert st == 403, body
    await define(env, [{"signal": "tap", "room": "r1"}], token=narrow)

    assert (await env.api.ok("DELETE", base, env.merchant)) == {"removed": True}
    assert (await env.api.call("GET", base, env.merchant))[0] == 404


@pytest.mark.parametrize("rules, field", [
    ([{"signal": "clicked"}], "rules[0].signal"),
    ([{"signal": "tap"}, {"signal": "leave", "within_days": 0}], "rules[1].within_days"),
    ([{"signal": "tap", "within_days": 366}], "rules[0].within_days"),
    ([{"signal": "tap", "min_count": 0}], "rules[0].min_count"),
    ([{"signal": "leave", "min_value": -1}], "rules[0].min_value"),
    ([{"signal": "leave", "min_value": "600000"}], "rules[0].min_value"),
    ([{"signal": "tap", "absent": "yes"}], "rules[0].absent"),
    ([{"signal": "tap", "room": "no spaces"}], "rules[0].room"),
    ([{"signal": "tap", "sku": ""}], "rules[0].sku"),
    ([{"signal": "tap", "colour": "red"}], "colour"),
    ([{"signal": "tap", "absent": True}], "without absent"),
    ([{"signal": "tap"}] * 11, "at most 10"),
    ([], "rules"),
    ("tap", "rules"),
    ([["tap"]], "rules[0]"),
])
async def test_bad_rules_are_refused_and_nothing_is_stored(env: GoodsEnv, uid: str, rules: Any, field: str) -> None:
    aid = f"bad-{uid}"
    st, body = await env.api.call("POST", "/api/audiences", env.merchant,
                                  {"audience_id": aid, "name": "bad", "rules": rules})
    assert st == 400 and body["error"]["code"] == "INVALID", body
    assert field in body["error"]["message"], body
    assert (await env.api.call("GET", f"/api/audiences/{aid}", env.merchant))[0] == 404
    for bad in ({"audience_id": "has space", "name": "x", "rules": [{"signal": "tap"}]},
                {"name": "", "rules": [{"signal": "tap"}]}, {"rules": [{"signal": "tap"}]}):
        st, body = await env.api.call("POST", "/api/audiences", env.merchant, bad)
        assert st == 400 and body["error"]["code"] == "INVALID", body
    assert (await env.api.ok("GET", "/api/audiences", env.merchant))["audiences"] == []
