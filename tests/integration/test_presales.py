"""Pre-sales (issue "Goods", item 8) against real engines: a deposit reserves the unit; the balance is
paid in its window (not before: NOT_OPEN) and the order settles at the full price; a balance left
unpaid expires the hold, the sale's rule refunds or keeps the deposit once, and the unit goes back to
the pool once. Bad terms are refused with nothing written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import timeout
from goods_helpers import GoodsEnv, open_goods_env, until
from gateway_helpers import JSON, WsClient, viewer
from inventory.presales import DepositStore
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

PRICE, DEPOSIT = 5000, 500


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def presale(env: GoodsEnv, uid: str, rule: str, **terms: Any) -> tuple[str, str, dict[str, Any]]:
    pool, sku, room = f"pl{uid[:12]}", f"SKU-{uid}", f"r{uid[:12]}"
    await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": pool, "sku": sku, "title": "Phone X",
                                                          "unit_price": PRICE, "units": 10}, 201)
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Launch"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Phone X", "unit_price": PRICE}, 201)
    sale = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                            {"product_id": "p0", "units": 3, "pool": pool, "per_user_limit": 1, "deposit": DEPOSIT,
                             "deposit_rule": rule, "duration_s": 2, "balance_in_s": 2, "balance_window_s": 3,
                             **terms}, 201)
    assert sale["presale"]["deposit"] == DEPOSIT and sale["presale"]["deposit_rule"] == rule
    return pool, room, sale


async def reserve(env: GoodsEnv, sale: dict[str, Any], token: str) -> str:
    async def go() -> Any:
        st, body = await env.api.call("POST", f"/api/sales/{sale['sale_id']}/reserve", token,
                                      {"qty": 1, "request_id": "r1"})
        return body if st == 201 else None
    return str((await until("the pre-sale open", go))["hold_id"])


async def pool_available(env: GoodsEnv, pool: str) -> int:
    return int((await env.api.ok("GET", f"/api/pools/{pool}", env.merchant))["available"])


@pytest.mark.parametrize("rule", ["refund", "keep"])
async def test_deposit_balance_and_the_unpaid_balance_rule(env: GoodsEnv, uid: str, rule: str) -> None:
    pool, room, sale = await presale(env, uid, rule)
    assert await pool_available(env, pool) == 7
    payer, _ = viewer(env.settings.secret, "Pat")
    dawdler, dawdler_id = viewer(env.settings.secret, "Dan")
    ws = await WsClient.connect(env.client, "/ws", JSON)
    await ws.join(room, dawdler, timeout=timeout(10))
    h1, h2 = await reserve(env, sale, payer), await reserve(env, sale, dawdler)
    for token, hold in ((payer, h1), (dawdler, h2)):
        dep = await env.api.ok("POST", f"/api/holds/{hold}/pay", token, {}, 201)
        assert dep == {"hold_id": hold, "status": "deposit", "deposit_paid": True}
        again = await env.api.ok("POST", f"/api/holds/{hold}/pay", token, {"payment_ref": f"demo-{hold}"}, 200)
        assert again["status"] == "deposit"  # the deposit's payment again: nothing more
        assert (await env.api.ok("GET", f"/api/holds/{hold}", token))["status"] == "deposit"
    st, body = await env.api.call("POST", f"/api/holds/{h1}/pay", payer, {"payment_ref": "balance-early"})
    assert (st, body["error"]["code"]) == (409, "NOT_OPEN"), body
    st, body = await env.api.call("DELETE", f"/api/holds/{h1}", payer)
    assert (st, body["error"]["code"]) == (409, "NOT_HELD"), body  # a paid deposit is not given back by hand

    async def balance_paid() -> Any:
        st, body = await env.api.call("POST", f"/api/holds/{h1}/pay", payer, {})
        assert st in (201, 409), body
        return body if st == 201 else None

    paid = await until("the balance window to open", balance_paid)
    assert paid["status"] == "confirmed"

    async def settled() -> Any:
        st, o = await env.api.call("GET", f"/api/orders/{h1}", payer)
        return o if st == 200 else None

    order = await until("the order in SQL", settled)
    assert order["total"] == PRICE and order["payment_ref"] == f"demo-balance-{h1}"

    # the dawdler never pays the balance: when the window closes the hold expires, the deposit rule
    # applies once and the unit goes back to the pool (the sale has ended: all its unsold units too)
    expired = await ws.wait(lambda m: m.get("type") == "deposit_expired", timeout(20))
    assert expired["hold"] == h2 and expired["amount"] == DEPOSIT
    assert expired["outcome"] == ("refunded" if rule == "refund" else "kept")
    outcome = await DepositStore(env.client.app[COMMERCE].store).get(h2)
    assert outcome is not None and outcome.user_id == dawdler_id and outcome.rule == rule
    assert outcome.outcome == ("refunded" if rule == "refund" else "kept")

    async def all_back() -> bool:
        return await pool_available(env, pool) == 9  # 10 - the one unit sold
    await until("the unsold and expired units back in the pool", all_back)
    view = await env.api.ok("GET", f"/api/pools/{pool}", env.merchant)
    assert view["at_sales"] == 1 and view["sales"][0]["sold"] == 1
    report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
    assert report["ok"], report["problems"]
    # the reaper's later passes change nothing: exactly once
    await asyncio.sleep(0.3)
    assert await pool_available(env, pool) == 9
    assert len(await DepositStore(env.client.app[COMMERCE].store).of_sale(sale["sale_id"])) == 1
    await ws.close()


async def test_bad_presale_terms_are_refused(env: GoodsEnv, uid: str) -> None:
    pool, sku, room = f"pl{uid[:12]}", f"SKU-{uid}", f"r{uid[:12]}"
    await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": pool, "sku": sku, "title": "T",
                                                          "unit_price": PRICE, "units": 10}, 201)
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Launch"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "T", "unit_price": PRICE}, 201)
    base = {"product_id": "p0", "units": 2, "pool": pool}
    for extra, code in (({"deposit": PRICE + 1}, "INVALID"), ({"deposit": 0}, "INVALID"),
                        ({"deposit": 10, "deposit_rule": "maybe"}, "INVALID"),
                        ({"deposit": 10, "balance_window_s": 0}, "INVALID"),
                        ({"deposit": 10, "pool": None}, "INVALID")):
        st, body = await env.api.call("POST", f"/api/rooms/{room}/sales", env.host, {**base, **extra})
        assert (st, body["error"]["code"]) == (400, code), (extra, body)
    assert await pool_available(env, pool) == 10
