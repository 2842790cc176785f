"""Variants (issue "Goods", item 4): a product's variants are SKUs with their own pools (ids
<product>__<variant>, one hash slot); a sale offers several variants at once, all or nothing; the
viewer buys a variant and a quantity; the per-user limit holds across the variants of the sale."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import timeout
from goods_helpers import GoodsEnv, open_goods_env, until
from gateway_helpers import JSON, WsClient, viewer
from server.config import Settings

PRICE = 2900


@pytest.fixture
async def env(aiohttp_client: Any, settings: Settings) -> GoodsEnv:
    return await open_goods_env(aiohttp_client, settings)


async def tee(env: GoodsEnv, uid: str, red: int = 5, blue: int = 3) -> tuple[str, str, str]:
    fam = f"tee{uid[1:9]}"
    red_pool, blue_pool = f"{fam}__red-m", f"{fam}__blue-l"
    for pool, units, sku in ((red_pool, red, f"TEE-{uid}-RM"), (blue_pool, blue, f"TEE-{uid}-BL")):
        await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": pool, "sku": sku, "title": "Tee",
                                                              "unit_price": PRICE, "units": units}, 201)
    room = f"r{uid[:12]}"
    await env.api.ok("POST", "/api/rooms", env.host, {"room_id": room, "title": "Tees"}, 201)
    product = await env.api.ok("POST", f"/api/rooms/{room}/products", env.host, {
        "product_id": "tee", "sku": f"TEE-{uid}", "title": "Logo Tee", "unit_price": PRICE,
        "variants": [{"variant_id": "red-m", "sku": f"TEE-{uid}-RM", "label": "Red / M"},
                     {"variant_id": "blue-l", "sku": f"TEE-{uid}-BL", "label": "Blue / L"}]}, 201)
    assert [v["label"] for v in product["variants"]] == ["Red / M", "Blue / L"]
    return room, red_pool, blue_pool


async def test_a_sale_of_variants_with_one_limit_across_them(env: GoodsEnv, uid: str) -> None:
    room, red_pool, blue_pool = await tee(env, uid)
    out = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host, {
        "product_id": "tee", "units": 2, "per_user_limit": 3,
        "variants": [{"pool": red_pool, "units": 4}, {"pool": blue_pool}]}, 201)
    sales = {s["variant"]: s for s in out["sales"]}
    assert set(sales) == {"Red / M", "Blue / L"} and len({s["group"] for s in out["sales"]}) == 1
    red, blue = sales["Red / M"], sales["Blue / L"]
    assert red["units_left"] == 4 and blue["units_left"] == 2 and red["group"] == out["group"]
    assert (await env.api.ok("GET", f"/api/pools/{red_pool}", env.merchant))["available"] == 1
    assert (await env.api.ok("GET", f"/api/pools/{blue_pool}", env.merchant))["available"] == 1

    token, _ = viewer(env.settings.secret, "Vic")
    ws = await WsClient.connect(env.client, "/ws", JSON)
    await ws.join(room, token, timeout=timeout(10))
    listed = (await env.api.ok("GET", f"/api/rooms/{room}"))["sales"]
    assert {s["sale_id"]: s.get("group") for s in listed} == {red["sale_id"]: out["group"],
                                                              blue["sale_id"]: out["group"]}

    async def buy(sale: str, qty: int) -> dict[str, Any]:
        async def go() -> Any:
            r = await ws.request({"type": "buy", "sale": sale, "qty": qty}, timeout(10))
            return None if r["code"] == "NOT_FOUND" else r
        return dict(await until("the variant known to the gateway", go))

    assert (await buy(red["sale_id"], 2))["code"] == "RESERVED"
    assert (await buy(blue["sale_id"], 1))["code"] == "RESERVED"
    r = await buy(blue["sale_id"], 1)
    assert r["code"] == "LIMIT", r  # 3 units across the sale's variants already
    for pool in (red_pool, blue_pool):
        report = await env.api.ok("GET", f"/api/pools/{pool}/audit", env.merchant)
        assert report["ok"], report["problems"]
    await ws.close()


async def test_variants_launch_all_or_nothing_and_bad_input(env: GoodsEnv, uid: str) -> None:
    room, red_pool, blue_pool = await tee(env, uid, red=5, blue=1)
    st, body = await env.api.call("POST", f"/api/rooms/{room}/sales", env.host, {
        "product_id": "tee", "units": 2, "variants": [{"pool": red_pool}, {"pool": blue_pool}]})
    assert (st, body["error"]["code"]) == (409, "POOL_SHORT"), body
    assert (await env.api.ok("GET", f"/api/pools/{red_pool}", env.merchant))["available"] == 5  # nothing moved
    other = f"x{uid[1:9]}"
    await env.api.ok("POST", "/api/pools", env.merchant, {"pool_id": other, "sku": f"OTHER-{uid}", "title": "X",
                                                          "unit_price": PRICE, "units": 5}, 201)
    for variants, code in (([{"pool": red_pool}, {"pool": red_pool}], "INVALID"),
                           ([{"pool": red_pool, "units": -1}], "INVALID"),
                           ([], "INVALID"),
                           ([{"pool": other}], "INVALID"),
                           ([{"pool": "nope"}], "NOT_FOUND")):
        st, body = await env.api.call("POST", f"/api/rooms/{room}/sales", env.host,
                                      {"product_id": "tee", "units": 1, "variants": variants})
        assert (st, body["error"]["code"])[1] == code, (variants, st, body)
    assert (await env.api.ok("GET", f"/api/pools/{red_pool}", env.merchant))["available"] == 5
