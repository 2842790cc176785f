"""One stock pool sold by two rooms on two gateway processes and a web-shop channel, in one burst.

Two `livesale serve` processes on one Redis/Valkey and one SQL database (instant payments, each with
its settlement worker and reaper). A merchant's pool of 350 units; room A (viewers on gateway 1) and
room B (viewers on gateway 2) each launch a sale of 100 from it; the web-shop channel sells from the
150 left in the pool. 2 x 2,500 WebSocket viewers (several OS processes of tests/pool_burst_proc.py,
each from its own 127.0.0.x address, every socket joined first) and 500 HTTP channel buyers (keep-alive
connections open first) each ask for one unit at GO; right after GO the host tops room A up by 50
from the pool, racing the channel for the pool's last units (POOL_SHORT when the channel got there
first). Room A's viewers come in two waves (the second once the top-up answered), so there is always
demand left for the units the top-up moved.

Exactly 350 units end up held, split as the top-up's outcome says (A + channel == 250); nobody holds
more than the per-user limit (some users have two sockets or send two channel requests); every loser
is answered SOLD_OUT or LIMIT. Half of the holds are paid, a quarter released, the rest expire; then
the sales are ended, and the pool, its sales, the ledger and the SQL orders balance to the unit.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from commerce.identity import mint_merchant_token, mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from inventory.keys import pool_bucket_id
from inventory.store import Store, orders
from proc_helpers import ServerProc, free_port, stop_all
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "pool_burst_proc.py"

POOL_UNITS, SALE_UNITS, TOPUP = 350, 100, 50
VIEWERS = 2500            # per room
DOUBLES = 100             # users with two sockets in a room (the second must not get a second unit)
CHANNEL_BUYERS = 500      # HTTP requests on the channel
CHANNEL_DOUBLES = 50      # users sending two channel requests
SHARED = 50               # channel users who are also room A viewers (limits are per sale / per pool bucket)
WS_PROCS_PER_ROOM = 2
HOLD_TTL_S = max(20, round(timeout(20)))  # the burst and the payments fit well inside it
PRICE = 2599
CHANNEL = "web-shop"
LOSER_CODES = {"SOLD_OUT", "LIMIT"}


def server_env(settings: Settings, redis_url: str, database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data_dir), "LIVESALE_SECRET": settings.secret,
            "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_PAYMENT_MODE": "instant",
            "LIVESALE_TICK_MS": "500",  # fewer ambient frames to 2,500 sockets a gateway on a small machine
            "LIVESALE_SETTLE_BLOCK_MS": "200", "LIVESALE_REAP_INTERVAL_MS": "100"}


async def until(what: str, check: Callable[[], Awaitable[Any]], limit: float) -> Any:
    deadline = time.monotonic() + timeout(limit)
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # polling a condition (bounded by the deadline)


class Buyers:
    """The burst's buyers: (bucket, user, token) per request, in config order per child process."""

    def __init__(self, secret: str, uid: str) -> None:
        self.secret = secret
        self.uid = uid
        self.tokens: dict[str, str] = {}

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = mint_viewer_token(self.secret, user, user=user)[0]
        return self.tokens[user]

    def room_users(self, tag: str) -> list[str]:
        """VIEWERS sockets' users: DOUBLES users appear twice."""
        users = [f"{self.uid}-{tag}{i}" for i in range(VIEWERS - DOUBLES)]
        return users + users[:DOUBLES]

    def channel_users(self) -> list[str]:
        users = [f"{self.uid}-a{i}" for i in range(SHARED)]  # room A viewers too
        users += [f"{self.uid}-c{i}" for i in range(CHANNEL_BUYERS - CHANNEL_DOUBLES - SHARED)]
        return users + users[SHARED:SHARED + CHANNEL_DOUBLES]


async def run_burst(configs: list[dict[str, Any]], between: Callable[[], Awaitable[Any]]) -> tuple[list[dict[str, Any]], Any, float]:
    """Start one child per config; when all are READY: GO 1, ``between()`` (the top-up), GO 2, END.
    Returns (each child's results, what ``between`` returned, seconds from GO to the last answer)."""
    children: list[asyncio.subprocess.Process] = []
    try:
        for cfg in configs:
            p = await asyncio.create_subprocess_exec(
                sys.executable, str(PROC), cwd=str(ROOT), limit=2**24, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            children.append(p)
            assert p.stdin is not None
            p.stdin.write((json.dumps(cfg) + "\n").encode())
            await p.stdin.drain()
        for p in children:
            assert p.stdout is not None and p.stderr is not None
            try:
                line = await asyncio.wait_for(p.stdout.readline(), timeout(120))
            except TimeoutError:
                line = b"(nothing in time)"
            if line.strip() != b"READY":
                p.kill()
                err = await asyncio.wait_for(p.stderr.read(), timeout(10))
                raise AssertionError(f"burst process not ready: {line!r} {err.decode()[-3000:]}")

        async def send(word: str) -> None:
            for p in children:
                assert p.stdin is not None
                p.stdin.write(word.encode() + b"\n")
            await asyncio.gather(*(p.stdin.drain() for p in children if p.stdin is not None))

        t0 = time.monotonic()
        await send("GO 1")
        mid = await between()
        await send("GO 2")
        await send("END")
        results = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(90))
            assert p.returncode == 0, err.decode()[-4000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results, mid, time.monotonic() - t0
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_one_pool_two_rooms_two_gateways_and_a_channel_in_one_burst(
        settings: Settings, redis_url: str, database_url: str, tmp_path: Path, uid: str) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    pa, pb = free_port(), free_port()
    gw1 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g1", pa))
    gw2 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g2", pb))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=timeout(60)))  # no call hangs the test
    try:
        (l1,), (l2,) = await asyncio.gather(gw1.wait_lines("livesale listening on"),
                                            gw2.wait_lines("livesale listening on"))
        url1, url2 = l1.split()[-1], l2.split()[-1]
        api1, api2 = Api(session, url1), Api(session, url2)
        host = host_token(settings.secret)
        merchant = mint_merchant_token(settings.secret, f"m-{uid}")

        # -- the pool, two rooms (A set up through gateway 1, B through gateway 2), a sale of 100 each
        pool_id, sku = f"pl{uid}", f"SKU-{uid}"
        room_a, room_b = f"a{uid}", f"b{uid}"
        pool = await api1.ok("POST", "/api/pools", merchant,
                             {"pool_id": pool_id, "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE,
                              "units": POOL_UNITS, "currency": "EUR", "per_user_limit": 1,
                              "hold_ttl_s": HOLD_TTL_S}, 201)
        assert pool["available"] == POOL_UNITS, pool
        sales: dict[str, str] = {}
        for api, room in ((api1, room_a), (api2, room_b)):
            await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": f"Room {room}"}, 201)
            await api.ok("POST", f"/api/rooms/{room}/products", host,
                         {"product_id": "p0", "sku": sku, "title": "Aurora Earbuds", "unit_price": PRICE,
                          "currency": "EUR"}, 201)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                                {"product_id": "p0", "units": SALE_UNITS, "pool": pool_id, "per_user_limit": 1,
                                 "hold_ttl_s": HOLD_TTL_S, "starts_in_s": 0, "duration_s": 600}, 201)
            assert sale["sale_id"].startswith(f"{pool_id}--") and sale["units_left"] == SALE_UNITS, sale
            sales[room] = sale["sale_id"]
        view = await api1.ok("GET", f"/api/pools/{pool_id}", merchant)
        assert view["available"] == POOL_UNITS - 2 * SALE_UNITS and view["at_sales"] == 2 * SALE_UNITS, view
        timings["setup"] = time.monotonic() - started

        # -- the buyers, spread over child processes and source addresses
        people = Buyers(settings.secret, uid)
        rnd = random.Random(uid)
        configs: list[dict[str, Any]] = []
        # per child: ("ws", bucket, [user per socket]) or ("http", None, [user per request])
        layout: list[tuple[str, str, list[str]]] = []
        src = 2
        for room, base, tag in ((room_a, url1, "a"), (room_b, url2, "b")):
            users = people.room_users(tag)
            rnd.shuffle(users)
            for k in range(WS_PROCS_PER_ROOM):
                share = users[k::WS_PROCS_PER_ROOM]
                # room A: half of each share waits for the top-up's answer (wave 2); room B: all at GO
                viewers = [[people.token(u), f"{tag}{k}-{i}", (2 if room == room_a and i % 2 else 1)]
                           for i, u in enumerate(share)]
                configs.append({"src": f"127.0.0.{src}", "timeout": timeout(45), "concurrency": 100,
                                "ws": {"base": base, "room": room, "sale": sales[room], "viewers": viewers},
                                "http": None})
                layout.append(("ws", room, share))
                src += 1
        channel_users = people.channel_users()
        rnd.shuffle(channel_users)
        buyers = [[people.token(u), f"c-{i}", 1, i % 2] for i, u in enumerate(channel_users)]
        configs.append({"src": f"127.0.0.{src}", "timeout": timeout(45), "ws": None,
                        "http": {"bases": [url1, url2], "channel": CHANNEL, "pool": pool_id, "buyers": buyers}})
        layout.append(("http", CHANNEL, channel_users))

        top: dict[str, Any] = {}

        async def topup() -> None:
            top["at"] = time.monotonic()
            top["status"], top["body"] = await api1.call(
                "POST", f"/api/rooms/{room_a}/sales/{sales[room_a]}/topup", host,
                {"units": TOPUP, "request_id": "mid-burst"})
            top["took"] = time.monotonic() - top["at"]

        t_children = time.monotonic()
        results, _, burst_s = await run_burst(configs, topup)
        timings["connect+join"] = top["at"] - t_children
        timings["burst"] = burst_s

        # -- the burst's answers
        assert top["status"] in (201, 409), top
        topped = top["status"] == 201
        if topped:
            assert top["body"]["pool_available"] >= 0 and not top["body"]["replayed"], top
        else:
            assert top["body"]["error"]["code"] == "POOL_SHORT", top
        answers: list[tuple[str, str, str, str | None]] = []  # (bucket, user, code, hold)
        for (kind, bucket, users), res in zip(layout, results, strict=True):
            rows = res["ws"] if kind == "ws" else res["http"]
            assert len(rows) == len(users)
            for user, row in zip(users, rows, strict=True):
                if kind == "ws":
                    code, hold, _left = row
                else:
                    status, code, hold = row
                    assert (status == 201) == (code == "RESERVED") and (code == "RESERVED" or status == 409), row
                answers.append((bucket, user, code, hold))
        assert len(answers) == 2 * VIEWERS + CHANNEL_BUYERS
        codes = Counter(code for _, _, code, _ in answers)
        assert set(codes) <= LOSER_CODES | {"RESERVED"}, codes  # every loser told why (no silence, no error)
        reserved = Counter(bucket for bucket, _, code, _ in answers if code == "RESERVED")
        summary = {"topped_up": topped, "reserved": dict(reserved),
                   "codes": dict(Counter(f"{bucket[:1]}:{code}" for bucket, _, code, _ in answers))}
        assert sum(reserved.values()) == POOL_UNITS, summary   # every unit held, none twice
        assert reserved[room_b] == SALE_UNITS, summary
        assert reserved[room_a] + reserved[CHANNEL] == POOL_UNITS - SALE_UNITS, summary
        assert reserved[room_a] == SALE_UNITS + (TOPUP if topped else 0), summary
        holds = [hold for _, _, code, hold in answers if code == "RESERVED"]
        assert len(set(holds)) == POOL_UNITS and all(holds), summary

        # limits: one unit per user per sale (and per the pool's channel); LIMIT only to a user who holds one there
        per_user = Counter((bucket, user) for bucket, user, code, _ in answers if code == "RESERVED")
        assert max(per_user.values()) == 1, per_user.most_common(3)
        limited = [(bucket, user) for bucket, user, code, _ in answers if code == "LIMIT"]
        assert all(per_user[k] == 1 for k in limited), [k for k in limited if not per_user[k]]

        # Redis agrees: the pool is empty, every unit held where the answers say
        view = await api2.ok("GET", f"/api/pools/{pool_id}", merchant)
        rows = {s["room_id"]: s for s in view["sales"]}
        assert view["available"] == 0 and view["channel_held"] == reserved[CHANNEL], view
        assert view["at_sales"] == 2 * SALE_UNITS + (TOPUP if topped else 0), view
        for room in (room_a, room_b):
            assert (rows[room]["held"], rows[room]["available"], rows[room]["sold"]) == (reserved[room], 0, 0), rows
            assert rows[room]["allocated"] == reserved[room], rows
        report = await audit(api1, merchant, pool_id)
        assert report["channel_held"] == reserved[CHANNEL] and report["received"] == POOL_UNITS, report

        # -- pay half of each bucket's holds, release a quarter, let the rest expire
        t_pay = time.monotonic()
        by_bucket: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for bucket, user, code, hold in answers:
            if code == "RESERVED":
                assert hold is not None
                by_bucket[bucket].append((user, hold))
        to_pay, to_release, to_expire = [], [], []
        for bucket, hs in by_bucket.items():
            hs.sort(key=lambda h: h[1])
            half, quarter = len(hs) // 2, len(hs) // 4
            to_pay += [(bucket, *h) for h in hs[:half]]
            to_release += [(bucket, *h) for h in hs[half:half + quarter]]
            to_expire += [(bucket, *h) for h in hs[half + quarter:]]
        assert len(to_pay) == POOL_UNITS // 2 and to_expire
        sem = asyncio.Semaphore(50)
        paid_orders: dict[str, tuple[str, str, str]] = {}  # order id -> (bucket, user, hold)

        async def pay(i: int, bucket: str, user: str, hold: str) -> None:
            async with sem:
                api = (api1, api2)[i % 2]
                out = await api.ok("POST", f"/api/holds/{hold}/pay", people.token(user), {}, 201)
                paid_orders[out["order_id"]] = (bucket, user, hold)

        async def release(i: int, bucket: str, user: str, hold: str) -> None:
            async with sem:
                api = (api1, api2)[i % 2]
                out = await api.ok("DELETE", f"/api/holds/{hold}", people.token(user), None, 200)
                assert out["status"] == "released", out

        await asyncio.gather(*(pay(i, *h) for i, h in enumerate(to_pay)),
                             *(release(i, *h) for i, h in enumerate(to_release)))
        assert len(paid_orders) == len(to_pay)
        timings["pay+release"] = time.monotonic() - t_pay
        paid = Counter(bucket for bucket, _, _ in paid_orders.values())

        async def expired() -> Any:
            v = await api1.ok("GET", f"/api/pools/{pool_id}", merchant)
            return v if v["channel_held"] == 0 and all(s["held"] == 0 for s in v["sales"]) else None

        t_exp = time.monotonic()
        view = await until("every unpaid hold expired", expired, HOLD_TTL_S + 30)
        timings["expiry wait"] = time.monotonic() - t_exp
        rows = {s["room_id"]: s for s in view["sales"]}
        sold = view["channel_sold"] + rows[room_a]["sold"] + rows[room_b]["sold"]
        assert sold == len(paid_orders) == POOL_UNITS // 2, view
        assert (view["channel_sold"], rows[room_a]["sold"], rows[room_b]["sold"]) == (
            paid[CHANNEL], paid[room_a], paid[room_b]), (view, paid)
        assert view["available"] + rows[room_a]["available"] + rows[room_b]["available"] == POOL_UNITS - sold, view
        await audit(api2, merchant, pool_id)

        # -- the host ends both sales: their unsold units go back to the pool
        for api, room in ((api1, room_a), (api2, room_b)):
            await api.ok("POST", f"/api/rooms/{room}/actions/end_sale", host, {"sale": sales[room]})

        async def returned() -> Any:
            v = await api1.ok("GET", f"/api/pools/{pool_id}", merchant)
            return v if v["available"] == POOL_UNITS - sold else None

        view = await until("the unsold units back in the pool", returned, 20)
        rows = {s["room_id"]: s for s in view["sales"]}
        assert view["at_sales"] == rows[room_a]["sold"] + rows[room_b]["sold"] == paid[room_a] + paid[room_b], view
        assert view["sold"] == sold and view["on_hand"] == POOL_UNITS - sold, view  # sold anywhere / not sold

        # -- settlement drained: SQL has exactly the paid orders, the ledger is written, the audit balances
        t_settle = time.monotonic()

        async def settled() -> Any:
            r = await api1.ok("GET", f"/api/pools/{pool_id}/audit", merchant)
            done = r["sql"]["settled_units"] == len(paid_orders) and r["sql"]["journal_pending"] == 0
            return r if done and r["ok"] else None

        report = await until("orders settled and the ledger written", settled, 30)
        timings["settle wait"] = time.monotonic() - t_settle
        assert report["available"] == POOL_UNITS - sold and report["channel_held"] == 0, report
        assert report["sql"]["received"] == POOL_UNITS and report["sql"]["at_sales"] == report["at_sales"], report

        store = await asyncio.wait_for(Store.open(database_url), timeout(30))
        try:
            ids = [sales[room_a], sales[room_b], pool_bucket_id(pool_id)]
            async with store.engine.connect() as conn:
                rows_sql = list(await conn.execute(select(orders).where(orders.c.sale_id.in_(ids))))
        finally:
            await store.close()
        assert len(rows_sql) == len(paid_orders), (len(rows_sql), len(paid_orders))
        assert sum(r.qty for r in rows_sql) == len(paid_orders)
        room_of_sale = {sales[room_a]: room_a, sales[room_b]: room_b}
        for r in rows_sql:
            bucket, user, _hold = paid_orders[r.order_id]
            assert r.user_id == user and r.unit_price == PRICE and r.sku == sku, r
            if bucket == CHANNEL:
                assert (r.sale_id, r.room_id, r.channel) == (pool_bucket_id(pool_id), "", CHANNEL), r
            else:
                assert room_of_sale[r.sale_id] == bucket == r.room_id, r
        view = await api2.ok("GET", f"/api/pools/{pool_id}", merchant)
        assert view["channels"] == [{"channel": CHANNEL, "orders": paid[CHANNEL], "units": paid[CHANNEL]}], view

        entries = (await api1.ok("GET", f"/api/pools/{pool_id}/ledger", merchant))["entries"]
        kinds = Counter(e["kind"] for e in entries)
        assert kinds["receive"] == 1 and kinds["allocate"] == 2 and kinds["topup"] == (1 if topped else 0), kinds
        # everything in minus everything still out at the (ended) sales == what the pool holds itself
        assert sum(e["units"] for e in entries) == view["available"] + view["channel_sold"], (entries, view)
        timings["total"] = time.monotonic() - started
        print(f"\npool burst: {summary}; top-up took {top['took']:.2f}s; "
              + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    finally:
        await session.close()
        rcs = await stop_all(gw1, gw2)
    assert rcs == [0, 0], (rcs, [ln[:500] for ln in gw1.lines[-20:]], [ln[:500] for ln in gw2.lines[-20:]])


async def audit(api: Api, merchant: str, pool_id: str) -> dict[str, Any]:
    report = await api.ok("GET", f"/api/pools/{pool_id}/audit", merchant)
    assert report["ok"], report["problems"]
    return dict(report)
