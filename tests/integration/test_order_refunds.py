"""Refunds of settled orders (issue "Goods", item 7), against real engines: the pool's merchant or a
host of the order's room refunds it; the order becomes refunded; its units return to the pool once
(or not, when the goods are damaged); kill -9 of the refunding process after each named step, then
the recovery, still puts the units back exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from commerce.identity import mint_merchant_token
from conftest import timeout
from goods_helpers import GoodsEnv, open_goods_env, until
from gateway_helpers import host_token, viewer
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")

ROOT = Path(__file__).resolve().parents[2]
PRICE = 2999


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def settled_order(env: GoodsEnv, uid: str, qty: int = 2) -> tuple[str, str, str, str]:
    """A pool of 10, a room sale of 5 from it, one buyer's paid and settled order of ``qty``:
    (pool, room, order id, buyer token)."""
    pool = f"pl{uid[:12]}"
    sku = f"SKU-{uid}"
    await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": pool, "sku": sku, "title": "Hoodie",
                                                          "unit_price": PRICE, "units": 10}, 201)
    room = f"r{uid[:12]}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Room"}, 201)
    await env.api.ok("POST", f"/api/rooms/{room}/products", env.host,
                     {"product_id": "p0", "sku": sku, "title": "Hoodie", "unit_price": PRICE}, 201)
    sale = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                            {"product_id": "p0", "units": 5, "pool": pool, "per_user_limit": 3}, 201)
    token, _ = viewer(env.settings.secret, "Buyer")

    async def reserved() -> Any:
        st, body = await env.api.call("POST", f"/api/sales/{sale['sale_id']}/reserve", token,
                                      {"qty": qty, "request_id": "b-1"})
        return body if st == 201 else None

    hold = await until("the sale to open", reserved)
    paid = await env.api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201)

    async def settled() -> bool:
        return (await env.api.call("GET", f"/api/orders/{paid['order_id']}", token))[0] == 200

    await until("the order in SQL", settled)
    return pool, room, str(paid["order_id"]), token


async def pool_view(env: GoodsEnv, pool: str) -> dict[str, Any]:
    return dict(await env.api.ok("GET", f"/api/pools/{pool}", env.merchant))


async def test_refund_restocks_once_and_the_order_says_refunded(env: GoodsEnv, uid: str) -> None:
    pool, room, order, token = await settled_order(env, uid)
    before = await pool_view(env, pool)
    assert before["available"] == 5 and before["restocked"] == 0
    out = await env.api.ok("POST", f"/api/orders/{order}/refund", env.merchant, {"reason": "wrong size"}, 201)
    assert out["status"] == "refunded" and out["restock"] and out["units"] == 2 and out["state"] == "done", out
    after = await pool_view(env, pool)
    assert after["available"] == 7 and after["restocked"] == 2
    again = await env.api.ok("POST", f"/api/orders/{order}/refund", env.host, {"reason": "again"}, 200)
    assert again["refunded_by"] == env.merchant_id and again["reason"] == "wrong size"  # the first one, unchanged
    assert (await pool_view(env, pool))["available"] == 7
    o = await env.api.ok("GET", f"/api/orders/{order}", token)
    assert o["status"] == "refunded"
    mine = await env.api.ok("GET", "/api/me/orders", token)
    assert [x["status"] for x in mine["orders"]] == ["refunded"]
    report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
    assert report["ok"], report["problems"]
    assert room


async def test_damaged_goods_do_not_return_and_strangers_are_refused(env: GoodsEnv, uid: str) -> None:
    pool, room, order, token = await settled_order(env, uid)
    other_merchant = mint_merchant_token(env.settings.secret, "m-other")
    other_host = host_token(env.settings.secret, "h9", ("elsewhere",))
    for who in (token, other_merchant, other_host):
        st, body = await env.api.call("POST", f"/api/orders/{order}/refund", who, {})
        assert (st, body["error"]["code"]) == (403, "FORBIDDEN"), body
    for payload in ({"restock": "no"}, {"reason": "x" * 201}):
        st, body = await env.api.call("POST", f"/api/orders/{order}/refund", env.host, payload)
        assert (st, body["error"]["code"]) == (400, "INVALID"), body
    st, body = await env.api.call("POST", f"/api/orders/{uid}.0000000000000000/refund", env.host, {})
    assert (st, body["error"]["code"]) == (404, "NOT_FOUND"), body
    assert (await pool_view(env, pool))["available"] == 5
    out = await env.api.ok("POST", f"/api/orders/{order}/refund", env.host, {"restock": False, "reason": "torn"}, 201)
    assert out["status"] == "refunded" and not out["restock"]
    view = await pool_view(env, pool)
    assert view["available"] == 5 and view["restocked"] == 0  # written off
    assert (await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant))["ok"]
    assert room


@pytest.mark.parametrize("kill_at", ["after_record", "after_restock", "after_money"])
async def test_kill_9_at_each_step_then_recovery_restocks_exactly_once(env: GoodsEnv, uid: str, kill_at: str,
                                                                       redis_url: str, database_url: str) -> None:
    pool, _room, order, token = await settled_order(env, uid)
    cfg = {"redis_url": redis_url, "database_url": env.settings.database_url or database_url, "order_id": order,
           "merchant": env.merchant_id, "kill_at": kill_at}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "tests" / "refund_proc.py"), json.dumps(cfg),
                                                cwd=str(ROOT), env=dict(os.environ),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    restocked_by_the_dead = 0 if kill_at == "after_record" else 2
    view = await pool_view(env, pool)
    assert view["restocked"] == restocked_by_the_dead and view["available"] == 5 + restocked_by_the_dead
    # the order is refunded from the first step on, whatever happened after
    assert (await env.api.ok("GET", f"/api/orders/{order}", token))["status"] == "refunded"

    refunds = env.client.app[COMMERCE].order_refunds
    assert await refunds.recover(older_than_s=0) == 1
    assert await refunds.recover(older_than_s=0) == 0
    view = await pool_view(env, pool)
    assert view["restocked"] == 2 and view["available"] == 7, view
    again = await env.api.ok("POST", f"/api/orders/{order}/refund", env.merchant, {}, 200)
    assert again["state"] == "done"
    assert (await pool_view(env, pool))["available"] == 7

    async def ledger_has_it() -> bool:
        entries = (await env.api.ok("GET", f"/api/pools/{pool}/ledger", env.merchant))["entries"]
        return [e["units"] for e in entries if e["kind"] == "refund_restock"] == [2]

    await until("the restock in the SQL ledger, once", ledger_has_it)
    report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
    assert report["ok"], report["problems"]
