"""Online-to-offline offers (issue "Growth and data", item 5) against real engines: a merchant offers a
price to its "held but did not pay" audience; a store's till looks a viewer up and redeems, idempotent
by request id, with the show (room) and the sharer that caused it recorded in `offer_redemptions`;
refused when expired (410), the viewer not in the audience (403), used up (409, also when tills race);
foreign merchants, hosts and bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import select

from commerce.identity import mint_merchant_token
from gateway_helpers import viewer
from goods_helpers import GoodsEnv, open_goods_env, until
from inventory.offers import offer_redemptions
from inventory.signal_log import signals
from inventory.store import OrderRecord, Store
from server.appkeys import CORE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

PRICE = 7900


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


def _store(env: GoodsEnv) -> Store:
    return env.client.app[CORE].store


def now_ms() -> int:
    return int(time.time() * 1000)


async def put_signals(env: GoodsEnv, rows: list[dict[str, Any]]) -> None:
    base = {"room_id": "", "sale_id": "", "product_id": "", "sku": "", "ref": "", "detail": "", "value": 0,
            "at_ms": now_ms()}
    async with _store(env).engine.begin() as conn:
        await conn.execute(signals.insert().values(
            [{**base, **r, "entry": f"t-{secrets.token_hex(8)}", "idx": 0} for r in rows]))


class Shop:
    """A merchant's pool, a "held SKU X, did not pay" audience and two viewers: ``lapsed`` in it (an
    expired unpaid hold in room ``room``, an earlier order through a share link), ``stranger`` not."""

    def __init__(self, env: GoodsEnv, uid: str) -> None:
        self.env, self.uid = env, uid
        self.sku = f"SKU-{uid}"
        self.room = f"o{uid[:12]}"
        self.lapsed = f"{uid}-lapsed"
        self.stranger = f"{uid}-stranger"
        self.audience = f"au-{uid}"

    async def open(self) -> Shop:
        api, env = self.env.api, self.env
        await api.ok("POST", "/api/pools", env.merchant, {"pool_id": f"pl{self.uid[:12]}", "sku": self.sku,
                                                          "title": "Boots", "unit_price": 9900, "units": 10}, 201)
        now = now_ms()
        await put_signals(env, [
            {"kind": "watched", "user_id": self.lapsed, "room_id": f"old{self.uid[:8]}", "sku": self.sku,
             "at_ms": now - 7_200_000},
            {"kind": "held", "user_id": self.lapsed, "room_id": self.room, "sale_id": f"{self.uid}-s", "sku": self.sku,
             "ref": f"{self.uid}-hold", "value": now - 3_600_000, "at_ms": now - 3_700_000},
            {"kind": "tap", "user_id": self.stranger, "room_id": self.room, "sale_id": f"{self.uid}-s", "sku": self.sku},
        ])
        await _store(env).insert_new_orders([OrderRecord(
            order_id=f"{self.uid}-o1", sale_id="x", room_id="elsewhere", sku="OTHER", user_id=self.lapsed, qty=1,
            unit_price=100, total=100, currency="EUR", payment_ref="p", reserved_at_ms=now - 9_000_000,
            confirmed_at_ms=now - 9_000_000, settled_at_ms=now - 9_000_000, stream_id="", source="link",
            sharer=f"{self.uid}-sharer", ref_code="c1")])
        await api.ok("POST", "/api/audiences", env.merchant,
                     {"audience_id": self.audience, "name": "held, did not pay",
                      "rules": [{"signal": "held_unpaid", "sku": self.sku, "within_days": 1}]}, 201)
        return self

    async def offer(self, status: int = 201, **kw: Any) -> dict[str, Any]:
        body = {"audience_id": self.audience, "sku": self.sku, "price": PRICE, "valid_s": 86_400, **kw}
        return dict(await self.env.api.ok("POST", "/api/offers", self.env.merchant, body, status))

    async def redeem(self, offer: str, user: str, rid: str, qty: int = 1, channel: str = "store:17",
                     token: str | None = None) -> tuple[int, Any]:
        return await self.env.api.call("POST", f"/api/offers/{offer}/redeem", token or self.env.merchant,
                                       {"user": user, "channel": channel, "request_id": rid, "qty": qty})

    async def at_till(self, user: str, channel: str = "store:17") -> list[dict[str, Any]]:
        return list((await self.env.api.ok("GET", f"/api/stores/{channel}/offers?user={user}",
                                           self.env.merchant))["offers"])


async def test_offer_looked_up_and_redeemed_at_the_till(env: GoodsEnv, uid: str) -> None:
    shop = await Shop(env, uid).open()
    offer = await shop.offer(offer_id=f"of-{uid}")
    assert offer["price"] == PRICE and offer["currency"] == "EUR" and offer["per_user"] == 1
    assert offer["valid_until"] > now_ms() + 86_000_000 and offer["merchant_id"] == env.merchant_id
    assert await shop.offer(offer_id=f"of-{uid}", status=200) == offer       # idempotent
    st, body = await env.api.call("POST", "/api/offers", env.merchant,
                                  {"offer_id": f"of-{uid}", "audience_id": shop.audience, "sku": shop.sku,
                                   "price": PRICE + 1, "valid_s": 86_400})
    assert st == 409 and body["error"]["code"] == "CONFLICT"
    assert offer in (await env.api.ok("GET", "/api/offers", env.merchant))["offers"]

    held = await shop.at_till(shop.lapsed)
    assert [o["offer_id"] for o in held] == [offer["offer_id"]] and held[0]["left"] == 1
    assert await shop.at_till(shop.stranger) == []

    st, first = await shop.redeem(offer["offer_id"], shop.lapsed, "till-1")
    assert st == 201, first
    assert first["room_id"] == shop.room and first["sharer"] == f"{uid}-sharer"
    assert (first["offer_id"], first["user_id"], first["channel"], first["sku"], first["qty"], first["price"],
            first["total"], first["currency"], first["audience_id"]) == (
        offer["offer_id"], shop.lapsed, "store:17", shop.sku, 1, PRICE, PRICE, "EUR", shop.audience)
    st, again = await shop.redeem(offer["offer_id"], shop.lapsed, "till-1")
    assert st == 200 and again == first
    st, body = await shop.redeem(offer["offer_id"], shop.lapsed, "till-1", channel="store:18")
    assert st == 409 and body["error"]["code"] == "IDEM_MISMATCH"
    st, body = await shop.redeem(offer["offer_id"], shop.lapsed, "till-2")
    assert st == 409 and body["error"]["code"] == "CONFLICT", body
    assert await shop.at_till(shop.lapsed) == []                              # used up
    st, body = await shop.redeem(offer["offer_id"], shop.stranger, "till-3")
    assert st == 403 and body["error"]["code"] == "NOT_ELIGIBLE"
    st, body = await shop.redeem(offer["offer_id"], f"b:{uid}", "till-4")
    assert st == 403 and body["error"]["code"] == "NOT_ELIGIBLE"

    # what the reports read: one row, with the show that caused it
    async with _store(env).engine.connect() as conn:
        rows = (await conn.execute(select(offer_redemptions).where(
            offer_redemptions.c.offer_id == offer["offer_id"]))).all()
    assert [(r.room_id, r.qty, r.total, r.currency, r.channel, r.redemption_id) for r in rows] == [
        (shop.room, 1, PRICE, "EUR", "store:17", first["redemption_id"])]


async def test_expired_offer_is_refused(env: GoodsEnv, uid: str) -> None:
    shop = await Shop(env, uid).open()
    offer = await shop.offer(valid_s=None, valid_until=now_ms() + 400)
    st, body = await shop.redeem(offer["offer_id"], shop.lapsed, "early")
    assert st == 201, body

    async def refused() -> Any:
        st, body = await shop.redeem(offer["offer_id"], shop.lapsed, "late")
        return body if st == 410 else None

    assert (await until("the offer to expire", refused))["error"]["code"] == "EXPIRED"
    assert await shop.at_till(shop.lapsed) == []
    st, again = await shop.redeem(offer["offer_id"], shop.lapsed, "early")   # a replay still answers
    assert st == 200 and again["request_id"] == "early"


async def test_racing_tills_never_exceed_per_user(env: GoodsEnv, uid: str) -> None:
    shop = await Shop(env, uid).open()
    offer = await shop.offer(per_user=3)
    results = await asyncio.gather(*(shop.redeem(offer["offer_id"], shop.lapsed, f"race-{i}", channel=f"store:{i}")
                                     for i in range(8)))
    assert sorted(st for st, _ in results) == [201] * 3 + [409] * 5, results
    st, body = await shop.redeem(offer["offer_id"], shop.lapsed, "two-more", qty=2)
    assert st == 409
    async with _store(env).engine.connect() as conn:
        n = len((await conn.execute(select(offer_redemptions.c.redemption_id).where(
            offer_redemptions.c.offer_id == offer["offer_id"]))).all())
    assert n == 3


async def test_offers_are_the_merchants_own_and_bad_input_changes_nothing(env: GoodsEnv, uid: str) -> None:
    shop = await Shop(env, uid).open()
    offer = await shop.offer()
    other_id = "m-" + secrets.token_hex(3)
    other = mint_merchant_token(env.settings.secret, other_id)
    token, _ = viewer(env.settings.secret, "V")
    body = {"audience_id": shop.audience, "sku": shop.sku, "price": PRICE, "valid_s": 3600}
    # another merchant: not its audience, not its SKU, not its offer
    st, out = await env.api.call("POST", "/api/offers", other, body)
    assert st == 403 and out["error"]["code"] == "FORBIDDEN"
    st, out = await shop.redeem(offer["offer_id"], shop.lapsed, "x", token=other)
    assert st == 403 and out["error"]["code"] == "FORBIDDEN"
    assert (await env.api.ok("GET", f"/api/stores/store:9/offers?user={shop.lapsed}", other))["offers"] == []
    await env.api.ok("POST", "/api/audiences", other, {"audience_id": f"au2-{uid}", "name": "theirs",
                                                       "rules": [{"signal": "held_unpaid", "sku": shop.sku}]}, 201)
    st, out = await env.api.call("POST", "/api/offers", other, {**body, "audience_id": f"au2-{uid}"})
    assert st == 400 and "sku" in out["error"]["message"], out
    # hosts and viewers make no offers; no token: 401
    for who in (env.host, token):
        assert (await env.api.call("POST", "/api/offers", who, body))[0] == 403
        assert (await env.api.call("GET", f"/api/stores/store:1/offers?user={shop.lapsed}", who))[0] == 403
        assert (await shop.redeem(offer["offer_id"], shop.lapsed, "y", token=who))[0] == 403
    assert (await env.api.call("POST", "/api/offers", None, body))[0] == 401
    st, out = await shop.redeem(f"nope-{uid}", shop.lapsed, "z")
    assert st == 404 and out["error"]["code"] == "NOT_FOUND"
    st, out = await env.api.call("POST", "/api/offers", env.merchant, {**body, "audience_id": f"nope-{uid}"})
    assert st == 404
    for bad, field in (({"valid_s": None}, "valid"), ({"valid_until": now_ms() + 60_000}, "valid"),
                       ({"valid_s": None, "valid_until": now_ms() - 1}, "valid_until"), ({"valid_s": 10}, "valid_s"),
                       ({"price": -1}, "price"), ({"per_user": 0}, "per_user"), ({"currency": "eur"}, "currency"),
                       ({"sku": f"NOPE-{uid}"}, "sku"), ({"offer_id": "bad id"}, "offer_id")):
        st, out = await env.api.call("POST", "/api/offers", env.merchant,
                                     {k: v for k, v in {**body, "offer_id": f"bad-{uid}", **bad}.items()
                                      if v is not None})
        assert st == 400 and out["error"]["code"] == "INVALID" and field in out["error"]["message"], (bad, out)
    assert [o["offer_id"] for o in (await env.api.ok("GET", "/api/offers", env.merchant))["offers"]] == \
        [offer["offer_id"]]
    for q in ("", "?user=", "?user=has%20space"):
        st, out = await env.api.call("GET", f"/api/stores/store:1/offers{q}", env.merchant)
        assert st == 400 and out["error"]["code"] == "INVALID"
    for bad in ({"user": shop.lapsed, "channel": "store 1", "request_id": "r"},
                {"user": shop.lapsed, "channel": "store:1", "request_id": "r", "qty": 0},
                {"channel": "store:1", "request_id": "r"}):
        st, out = await env.api.call("POST", f"/api/offers/{offer['offer_id']}/redeem", env.merchant, bad)
        assert st == 400 and out["error"]["code"] == "INVALID", out
    async with _store(env).engine.connect() as conn:
        assert (await conn.execute(select(offer_redemptions).where(
            offer_redemptions.c.offer_id == offer["offer_id"]))).all() == []
    # an audience deleted since: its offers hold nobody
    await env.api.ok("DELETE", f"/api/audiences/{shop.audience}", env.merchant)
    assert await shop.at_till(shop.lapsed) == []
    st, out = await shop.redeem(offer["offer_id"], shop.lapsed, "after-delete")
    assert st == 403 and out["error"]["code"] == "NOT_ELIGIBLE", out
