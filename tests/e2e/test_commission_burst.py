"""Share-to-earn under a burst, on several processes (issue "Growth and data", Done when, first item).

Two `livesale serve` gateways (no settlement inside) and one `livesale settle` process on one Redis and
one SQL database, instant payments. 2,000 viewers join one room over real WebSockets from several OS
processes (tests/commission_proc.py, each from its own 127.0.0.x address), half on each gateway: 200 of
them through the share links of 20 sharers (10 each), the rest directly; at GO each buys one unit and
pays. 100 friends of 5 shopkeepers (20 each) buy from the shopkeepers' mini-shops through the channel
path over HTTP meanwhile. The settlement worker is killed with SIGKILL while orders are flowing and a new
one takes over.

After settlement: every paid order is in SQL once; 200 orders are `link`, 100 `shop`, 1,700 `direct`;
each sharer's commissions are exactly their attributed orders' (rate x paid total, rounded per order by
the documented rule), one row per order; refunding 10 of the link orders reverses exactly their
commissions and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from commerce.identity import mint_merchant_token, mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from inventory.growth import commission_of, commissions
from inventory.store import Store, orders
from goods_helpers import until
from proc_helpers import ServerProc, free_port, spawn_with_config, split_env, stop_all
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420, method="thread")]

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "commission_proc.py"

VIEWERS, SHARERS, PER_SHARER = 2000, 20, 10
SHOPKEEPERS, PER_SHOP = 5, 20
PROCS = 4                 # child processes of WebSocket viewers (two per gateway)
PRICE, SHOP_PRICE = 4999, 1250
LINK_BPS, SHOP_BPS = 700, 1100
REFUNDS = 10
COMMISSION_ENV = {"LIVESALE_SETTLE_CLAIM_IDLE_MS": "1000", "LIVESALE_SETTLE_BATCH": "50",
                  "LIVESALE_COMMISSION_BPS": "300"}


async def spawn(cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    return await spawn_with_config(PROC, cfg)


async def shop_buy(session: aiohttp.ClientSession, base: str, channel: str, pool: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{base}/api/channels/{channel}/holds", headers=headers,
                            json={"pool": pool, "qty": 1, "request_id": "r-" + secrets.token_hex(4)}) as r:
        body = await r.json()
        assert r.status == 201, body
    async with session.post(f"{base}/api/holds/{body['hold_id']}/pay", headers=headers, json={}) as r:
        assert r.status == 201, await r.text()
    return str(body["hold_id"])


async def test_sharers_earn_exactly_their_orders_commissions_across_processes_and_a_killed_settler(
        settings: Settings, redis_url: str, database_url: str, tmp_path: Path, uid: str) -> None:
    def env(name: str, port: int) -> dict[str, str]:
        return split_env(settings.secret, redis_url, database_url, tmp_path / name, port, **COMMISSION_ENV)

    gws = [await ServerProc.start(env(f"g{k}", free_port())) for k in range(2)]
    settle_env = env("s", free_port())
    settler = await ServerProc.start(settle_env, command="settle")
    store = await Store.open(database_url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=timeout(60)))
    children: list[asyncio.subprocess.Process] = []
    servers = [*gws, settler]
    try:
        lines = await asyncio.gather(*(g.wait_lines("livesale listening on") for g in gws))
        bases = [ls[0].split()[-1] for ls in lines]
        await settler.wait_lines("livesale settlement worker running")
        api = Api(session, bases[0])
        host = host_token(settings.secret)
        merchant = mint_merchant_token(settings.secret, f"m-{uid}")
        tok = {}

        def token(user: str) -> str:
            if user not in tok:
                tok[user] = mint_viewer_token(settings.secret, user, user=user)[0]
            return tok[user]

        # -- a room with one sale for everyone, a product rate; a pool open to shopkeepers
        room = f"c{uid}"
        await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Share night"}, 201)
        await api.ok("POST", f"/api/rooms/{room}/products", host,
                     {"product_id": "p0", "sku": f"SKU-{uid}", "title": "Jacket", "unit_price": PRICE}, 201)
        await api.ok("PUT", f"/api/rooms/{room}/products/p0/commission", host, {"commission_bps": LINK_BPS})
        await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
        sale = (await api.ok("POST", f"/api/rooms/{room}/sales", host,
                             {"product_id": "p0", "units": VIEWERS, "per_user_limit": 1, "duration_s": 900,
                              "hold_ttl_s": 600}, 201))["sale_id"]
        pool = f"pl{uid}"
        await api.ok("POST", "/api/pools", merchant, {"pool_id": pool, "sku": f"SKU-P-{uid}", "title": "Scarf",
                                                      "unit_price": SHOP_PRICE, "units": 500, "per_user_limit": 2,
                                                      "hold_ttl_s": 600}, 201)
        await api.ok("PUT", f"/api/pools/{pool}/shopkeepers", merchant, {"open": True, "commission_bps": SHOP_BPS})

        sharers = [f"{uid}-sh{i}" for i in range(SHARERS)]
        codes = {}
        for s in sharers:
            codes[s] = (await api.ok("POST", "/api/share-links", token(s), {"room_id": room}, 201))["code"]
        keepers = [f"{uid}-k{i}" for i in range(SHOPKEEPERS)]
        shops = {}
        for k in keepers:
            shops[k] = (await api.ok("POST", "/api/shops", token(k), {"title": f"{k}'s shop", "pools": [pool]},
                                     201))["channel"]

        # -- 2,000 viewers: the first 200 through links (10 per sharer), spread over processes and gateways
        viewers = [f"{uid}-v{i}" for i in range(VIEWERS)]
        ref_of = {v: codes[sharers[i // PER_SHARER]] for i, v in enumerate(viewers[:SHARERS * PER_SHARER])}
        sharer_of = {v: sharers[i // PER_SHARER] for i, v in enumerate(viewers[:SHARERS * PER_SHARER])}
        parts = [viewers[k::PROCS] for k in range(PROCS)]
        for k, part in enumerate(parts):
            children.append(await spawn({"src": f"127.0.0.{2 + k}", "timeout": timeout(90), "concurrency": 100,
                                         "base": bases[k % 2], "room": room, "sale": sale,
                                         "viewers": [[token(v), ref_of.get(v)] for v in part]}))
        for p in children:
            assert p.stdout is not None and p.stderr is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout(120))
            if line.strip() != b"READY":
                p.kill()
                raise AssertionError(f"viewers not ready: {line!r} {(await p.stderr.read()).decode()[-3000:]}")

        # -- GO: the buys and payments, the mini-shop buyers over HTTP, and a SIGKILL of the settler mid-way
        for p in children:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
            await p.stdin.drain()
        friends = [(k, f"{uid}-f{k[-1]}-{j}") for k in keepers for j in range(PER_SHOP)]
        shop_task = asyncio.gather(*(shop_buy(session, bases[j % 2], shops[k], pool, token(f))
                                     for j, (k, f) in enumerate(friends)))

        async def some_settled() -> int | None:
            async with store.engine.connect() as conn:
                n = (await conn.execute(select(func.count()).select_from(orders)
                                        .where(orders.c.sale_id == sale))).scalar_one()
            return n if n >= 200 else None
        at_kill = await until("the first orders settled", some_settled, 120)
        settler.proc.kill()  # SIGKILL mid-run: its batch in hand is neither committed nor acked, or committed only
        await settler.proc.wait()
        settler = await ServerProc.start(settle_env, command="settle")
        servers[-1] = settler

        shop_orders = await asyncio.wait_for(shop_task, timeout(120))
        results: list[list[Any]] = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(150))
            assert p.returncode == 0, err.decode()[-4000:]
            results.extend(json.loads(out.decode().strip().splitlines()[-1]))
        flat_users = [v for part in parts for v in part]
        outcome = Counter((r[0], r[2]) for r in results)
        assert outcome == Counter({("RESERVED", "CONFIRMED"): VIEWERS}), outcome
        order_of = {u: r[1] for u, r in zip(flat_users, results)}
        all_orders = list(order_of.values()) + shop_orders

        # -- settlement finishes with every paid order exactly once
        async def all_settled() -> int | None:
            async with store.engine.connect() as conn:
                n = (await conn.execute(select(func.count()).select_from(orders)
                                        .where(orders.c.order_id.in_(all_orders)))).scalar_one()
            return n if n == len(all_orders) else None
        await until("every paid order in SQL", all_settled, 180)
        assert at_kill < VIEWERS, f"the settler was killed after the run ({at_kill} orders in), not during it"
        print(f"settler killed with {at_kill} of {VIEWERS} room orders in SQL")
        got = await store.get_orders(all_orders)
        sources = Counter(o.source for o in got.values())
        assert sources == Counter({"direct": VIEWERS - SHARERS * PER_SHARER, "link": SHARERS * PER_SHARER,
                                   "shop": SHOPKEEPERS * PER_SHOP}), sources

        async with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(
                select(commissions).where(commissions.c.order_id.in_(all_orders)))).all()]
        by_order = {r["order_id"]: r for r in rows}
        assert len(rows) == len(by_order) == SHARERS * PER_SHARER + SHOPKEEPERS * PER_SHOP
        expected: dict[str, int] = defaultdict(int)
        for v, sharer in sharer_of.items():
            expected[sharer] += commission_of(PRICE, LINK_BPS)
            assert by_order[order_of[v]]["sharer"] == sharer and by_order[order_of[v]]["ref_code"] == codes[sharer]
        for (k, _f), oid in zip(friends, shop_orders):
            expected[k] += commission_of(SHOP_PRICE, SHOP_BPS)
            assert by_order[oid]["sharer"] == k and by_order[oid]["source"] == "shop"
        earned: dict[str, int] = defaultdict(int)
        for r in rows:
            earned[r["sharer"]] += r["amount"]
        assert dict(earned) == dict(expected)
        for s in sharers[:3] + keepers[:2]:  # what each sharer sees
            mine = await api.ok("GET", "/api/me/earnings", token(s))
            assert mine["totals"]["EUR"]["pending"] == expected[s], (s, mine["totals"])

        # -- refunding 10 link orders reverses exactly their commissions
        refunded = [order_of[v] for v in list(sharer_of)[::SHARERS * PER_SHARER // REFUNDS][:REFUNDS]]
        for oid in refunded:
            await api.ok("POST", f"/api/orders/{oid}/refund", host, {"restock": True}, 201)
        async with store.engine.connect() as conn:
            after = {r.order_id: r.state for r in (await conn.execute(
                select(commissions.c.order_id, commissions.c.state)
                .where(commissions.c.order_id.in_(all_orders)))).all()}
        assert {o for o, s in after.items() if s == "reversed"} == set(refunded)
        for oid in refunded:
            sharer = by_order[oid]["sharer"]
            expected[sharer] -= by_order[oid]["amount"]
        net: dict[str, int] = defaultdict(int)
        async with store.engine.connect() as conn:
            for r in (await conn.execute(select(commissions.c.sharer, commissions.c.amount)
                                         .where(commissions.c.order_id.in_(all_orders),
                                                commissions.c.state == "earned"))).all():
                net[r.sharer] += r.amount
        assert {k: v for k, v in net.items()} == {k: v for k, v in expected.items() if v}
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await session.close()
        await store.close()
        await stop_all(*servers)
