"""A hot sale split into buckets under a real multi-process burst (issue #12, part 6: hot-SKU buckets).

Two `livesale serve` processes (gateways, each with its own settlement and reaper) on one Redis/Valkey and
one SQL database; a sale of 500 units, limit 2 per buyer, armed as 3 buckets. 2,000 buyers, half on each
gateway, held by several OS processes of tests/act_burst_proc.py (proc_helpers.ActBurst), each from its own
127.0.0.x address, every socket joined first. 60% of the buyers have bucket 0 as their home, so it runs dry
while the other buckets still have units; at GO each buyer taps buy three times, one after another (every
other buyer asks for 2 units first, then 1 and 1). Then: exactly 500 units are held, nobody holds more than
2, every hold sits in its buyer's home bucket, every SOLD_OUT answer says fewer units than asked were left,
and at the end no bucket has a unit left or on its way (so no buyer was told SOLD_OUT while units were left
in another bucket); each bucket balances; both gateways show the sale as one (its total over HTTP, one
`sale_sold_out` once the last unit anywhere is gone).

On one server here; the lead runs the same burst on a cluster (LIVESALE_TEST_REDIS=cluster).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from commerce.identity import mint_viewer_token
from conftest import redis_for, timeout
from gateway_helpers import JSON, Api, WsClient, host_token
from inventory import buckets as B
from inventory import keys as K
from inventory.scripts import Inventory
from proc_helpers import ActBurst, ActOn, ServerProc, free_port, stop_all
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

UNITS, LIMIT, BUCKETS = 500, 2, 3
BUYERS, TAPS, PROCS = 2000, 3, 4  # buyers: 60% with bucket 0 as home


def homed(prefix: str, home: int, n: int) -> list[str]:
    """``n`` user ids whose home bucket is ``home``."""
    return list(itertools.islice((u for u in (f"{prefix}{i}" for i in itertools.count())
                                  if B.home_bucket(u, BUCKETS) == home), n))


def server_env(settings: Settings, redis_url: str, database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data_dir), "LIVESALE_SECRET": settings.secret,
            "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_BUY_RATE": "100",
            "LIVESALE_TICK_MS": "500"}  # fewer ambient frames to 1,000 sockets a gateway on a small machine


async def test_a_bucketed_sale_sells_exactly_its_units_to_a_burst_on_two_gateways(
        settings: Settings, redis_url: str, database_url: str, tmp_path: Path, uid: str) -> None:
    started = time.monotonic()
    gw1 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g1", free_port()))
    gw2 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g2", free_port()))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=timeout(60)))
    redis = redis_for(redis_url)
    observers: list[WsClient] = []
    burst: ActBurst | None = None
    timings: dict[str, float] = {}
    try:
        (l1,), (l2,) = await asyncio.gather(gw1.wait_lines("livesale listening on"),
                                            gw2.wait_lines("livesale listening on"))
        bases = [l1.split()[-1], l2.split()[-1]]
        api = Api(session, bases[0])
        host = host_token(settings.secret)
        room = f"r{uid}"
        await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Hot drop"}, 201)
        await api.ok("POST", f"/api/rooms/{room}/products", host,
                     {"product_id": "p0", "sku": f"HOT-{uid}", "title": "Hot item", "unit_price": 4900}, 201)
        await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
        for base in bases:  # one observer per gateway: the sale's ticks and events
            ws = await WsClient.connect(session, base + "/ws", JSON)
            assert (await ws.join(room, mint_viewer_token(settings.secret, "watch")[0], timeout=timeout(10)))["type"] \
                == "snapshot"
            observers.append(ws)
        sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                            {"product_id": "p0", "units": UNITS, "per_user_limit": LIMIT, "buckets": BUCKETS,
                             "duration_s": 600, "hold_ttl_s": 600}, 201)
        sid = sale["sale_id"]
        ids = B.bucket_ids(sid, BUCKETS)
        assert sale["units_left"] == UNITS

        # most buyers have bucket 0 as their home, so it runs dry while the others still have units (the burst
        # moves stock between buckets); every other buyer first asks for 2 units, then 1 and 1 (the limit)
        users = homed(f"{uid}a", 0, BUYERS * 3 // 5) + homed(f"{uid}b", 1, BUYERS // 5) + homed(f"{uid}c", 2, BUYERS // 5)
        random.Random(uid).shuffle(users)
        taps = {u: [2, 1, 1] if i % 2 else [1, 1, 1] for i, u in enumerate(users)}
        viewers: list[ActOn] = [(mint_viewer_token(settings.secret, u, user=u)[0], u,
                                 [{"type": "buy", "sale": sid, "qty": q} for q in taps[u]], bases[i % 2])
                                for i, u in enumerate(users)]
        timings["setup"] = time.monotonic() - started
        t0 = time.monotonic()
        burst = await ActBurst.start(bases[0], room, viewers, PROCS, concurrency=100, answer_s=60, ready_s=180)
        timings["connect+join"] = time.monotonic() - t0
        t1 = time.monotonic()
        results = await burst.go(wait_s=120)
        timings["burst"] = time.monotonic() - t1
        await burst.aclose()
        burst = None

        # -- the answers
        assert len(results) == BUYERS
        codes: Counter[str] = Counter()
        held: Counter[str] = Counter()
        holds: set[str] = set()
        sold_out_for_one = False
        for (user, answers), u in zip(results, users, strict=True):
            assert user == u and len(answers) == TAPS, (u, answers)
            for a, qty in zip(answers, taps[u], strict=True):
                assert a.get("type") == "buy_result", a
                codes[a["code"]] += 1
                if a["code"] == "RESERVED":
                    held[u] += qty
                    assert a["hold"] not in holds
                    holds.add(a["hold"])
                    assert a["hold"].split(".")[0] == ids[B.home_bucket(u, BUCKETS)], (u, a)  # its home bucket
                elif a["code"] == "SOLD_OUT":
                    assert a["units_left"] < qty, a  # said only when fewer units than asked were left anywhere
                    sold_out_for_one = sold_out_for_one or qty == 1
                else:
                    assert a["code"] == "LIMIT", a
                    assert held[u] + qty > LIMIT, (u, answers)
        assert max(held.values()) <= LIMIT
        assert codes["LIMIT"] > 0 and sold_out_for_one, codes
        assert sum(held.values()) == UNITS, (codes, sum(held.values()))  # stock only shrinks here: a SOLD_OUT
        # for 1 unit means none was left anywhere, so every unit went

        # -- Redis: every unit held, nothing left in any bucket or on its way, each bucket balanced
        inv = Inventory(redis)
        st = []
        for b in ids:
            v = await redis.hmget(K.sale_keys(b).sale, ["allocated", "available", "held", "sold"])
            st.append([int(x) for x in v])
            assert await redis.hlen(K.bucket_transfer_keys(b)[0]) == 0, f"units in transit from {b}"
        assert [s[1] for s in st] == [0] * BUCKETS, st
        assert sum(s[0] for s in st) == sum(s[2] for s in st) == UNITS, st
        report = await inv.check_invariant(sid)
        assert report.ok, report.problems
        moves = [await redis.hlen(K.bucket_transfer_keys(b)[1]) for b in ids]

        # -- the gateways show one sale: its total, sold out
        view = await Api(session, bases[1]).ok("GET", f"/api/sales/{sid}")
        assert (view["units_left"], view["held"], view["allocated"]) == (0, UNITS, UNITS), view
        for ws in observers:  # one sold-out for the sale, on both gateways
            await ws.wait(lambda m: m.get("type") == "sale_sold_out" and m.get("sale_id") == sid, timeout(10))
            await asyncio.sleep(0.5)  # a duplicate would follow within moments
            assert sum(1 for m in ws.msgs if m.get("type") == "sale_sold_out") == 1
        timings["total"] = time.monotonic() - started
        print(f"\nbucket burst: {dict(codes)}, per-bucket held {[s[2] for s in st]}, moves into buckets {moves}; "
              + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    finally:
        if burst is not None:
            await burst.aclose()
        for ws in observers:
            await ws.close()
        await session.close()
        await redis.aclose()
        rcs = await stop_all(gw1, gw2)
    assert rcs == [0, 0], (rcs, [ln[:500] for ln in gw1.lines[-20:]], [ln[:500] for ln in gw2.lines[-20:]])
