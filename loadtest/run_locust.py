"""``make loadtest``: our server on embedded defaults + the locust scenario + invariant checks.

    python -m loadtest.run_locust --users 200 --seconds 30

1. starts ``python -m server.cli serve`` (LIVESALE_PORT, LIVESALE_DATA_DIR = a temp dir), gets a host
   token from ``python -m server.cli token --host loadhost``, creates the room and product over HTTP;
2. runs ``locust -f loadtest/locustfile.py --headless`` and prints its summary; the locust users sign
   their viewer tokens with the server's LIVESALE_SECRET (as the platform would: the server runs with
   guest tokens off) and append every CONFIRMED pay result to an orders file;
3. checks, over the public HTTP API only, after settlement drained:
   - no oversell: for every sale, sold (+ held) <= allocated and units_left >= 0 (``GET /api/sales/{id}``);
   - every confirmed order recorded by the users exists in the database exactly once
     (``GET /api/orders/{id}`` with the buyer's token; distinct ids; DB order count per sale equals
     Redis ``sold``);
   - Redis and the database agree: per-sale ``sold`` from ``GET /api/sales`` vs the dashboard's DB
     totals (``GET /api/rooms/{room}/dashboard``).
Exits 1 when an invariant fails (2 when the run itself could not happen).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import lean
from .serverproc import Livesale, setup_room

HERE = Path(__file__).resolve().parent


def _num(d: dict, *names: str) -> int | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, (int, float)):
            return int(v)
    return None


def _dashboard_sales(dash: dict) -> dict[str, dict]:
    """Per-sale DB figures from the dashboard, whatever list/dict shape it uses."""
    sales = dash.get("sales") or []
    if isinstance(sales, dict):
        return {k: v for k, v in sales.items() if isinstance(v, dict)}
    return {s.get("sale_id"): s for s in sales if isinstance(s, dict) and s.get("sale_id")}


async def check_invariants(url: str, room: str, host_token: str, orders_file: Path, settle_timeout: float = 60.0,
                           log=print) -> list[str]:
    failures: list[str] = []
    st, room_doc = await lean.http_json("GET", f"{url}/api/rooms/{room}")
    if st != 200:
        return [f"GET /api/rooms/{room} -> {st} {room_doc}"]
    sale_ids = [s["sale_id"] for s in room_doc.get("sales", []) if isinstance(s, dict) and "sale_id" in s]
    log(f"checking {len(sale_ids)} sales")

    # 1. orders recorded by the locust users: each must be settled, once, for the right sale
    records = []
    if orders_file.exists():
        for line in orders_file.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    ids = [r["order"] for r in records]
    if len(ids) != len(set(ids)):
        failures.append(f"the same order was CONFIRMED twice to the users: {len(ids) - len(set(ids))} duplicates")
    pending = {r["order"]: r for r in records}
    deadline = time.monotonic() + settle_timeout
    found: dict[str, dict] = {}
    sem = asyncio.Semaphore(32)

    async def fetch(r: dict) -> None:
        async with sem:
            st, doc = await lean.http_json("GET", f"{url}/api/orders/{r['order']}", token=r["token"])
            if st == 200:
                found[r["order"]] = doc
            elif st != 404:
                failures.append(f"GET /api/orders/{r['order']} -> {st} {doc}")
                pending.pop(r["order"], None)

    while pending and time.monotonic() < deadline:
        await asyncio.gather(*(fetch(r) for r in list(pending.values())))
        for oid in list(pending):
            if oid in found:
                pending.pop(oid)
        if pending:
            await asyncio.sleep(0.5)
    if pending:
        failures.append(f"{len(pending)} confirmed orders not in the database after {settle_timeout:.0f} s, "
                        f"e.g. {list(pending)[:3]}")
    for oid, doc in found.items():
        order = doc.get("order", doc)
        if order.get("order_id", oid) != oid:
            failures.append(f"order {oid}: GET returned order_id {order.get('order_id')}")
        if order.get("sale_id") and order["sale_id"] != pending.get(oid, {}).get("sale", order["sale_id"]):
            failures.append(f"order {oid}: wrong sale {order['sale_id']}")
    log(f"orders: {len(records)} confirmed by the server to the users, {len(found)} found in the database")

    # 2. no oversell, per sale, from Redis counters
    redis_sold: dict[str, int] = {}
    for sid in sale_ids:
        st, sale = await lean.http_json("GET", f"{url}/api/sales/{sid}")
        if st != 200:
            failures.append(f"GET /api/sales/{sid} -> {st} {sale}")
            continue
        alloc = _num(sale, "allocated")
        left = _num(sale, "units_left", "available")
        sold = _num(sale, "sold")
        held = _num(sale, "held") or 0
        if alloc is None or left is None:
            failures.append(f"sale {sid}: no allocated/units_left in {sale}")
            continue
        if sold is None:
            sold = alloc - left - held
        redis_sold[sid] = sold
        if left < 0 or sold < 0 or held < 0:
            failures.append(f"sale {sid}: negative counter (units_left={left} held={held} sold={sold})")
        if sold + held > alloc:
            failures.append(f"OVERSELL sale {sid}: sold {sold} + held {held} > allocated {alloc}")
        if "sold" in sale and "held" in sale and left + held + sold != alloc:
            failures.append(f"sale {sid}: units_left {left} + held {held} + sold {sold} != allocated {alloc}")
        mine = sum(1 for r in records if r["sale"] == sid)
        if mine > sold:
            failures.append(f"sale {sid}: users hold {mine} confirmations but Redis sold is {sold}")

    # 3. Redis and the database agree (dashboard = DB totals); retry while settlement drains
    deadline = time.monotonic() + settle_timeout
    while True:
        st, dash = await lean.http_json("GET", f"{url}/api/rooms/{room}/dashboard", token=host_token)
        if st != 200:
            failures.append(f"GET dashboard -> {st} {dash}")
            break
        db = _dashboard_sales(dash)
        mismatch = []
        for sid, sold in redis_sold.items():
            row = db.get(sid)
            db_units = _num(row, "settled_units", "units_sold") if row else None
            if row is None:
                if sold:
                    mismatch.append(f"sale {sid}: Redis sold {sold}, not on the dashboard")
            elif db_units is not None and db_units != sold:
                mismatch.append(f"sale {sid}: Redis sold {sold} != DB settled units {db_units}")
        db_total_units = _num(dash, "units")
        if db_total_units is not None and db_total_units != sum(redis_sold.values()):
            mismatch.append(f"DB units total {db_total_units} != Redis sold total {sum(redis_sold.values())}")
        db_orders = _num(dash, "orders")
        if db_orders is not None and db_orders != sum(redis_sold.values()):  # every order is qty 1 here
            mismatch.append(f"DB orders {db_orders} != Redis sold total {sum(redis_sold.values())} (qty 1 each)")
        if not mismatch or time.monotonic() > deadline:
            failures.extend(mismatch)
            break
        await asyncio.sleep(1.0)
    log(f"Redis sold total {sum(redis_sold.values())}; dashboard: "
        + json.dumps({k: dash.get(k) for k in ("orders", "units", "gmv", "viewers", "likes", "funnel")}))
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--spawn-rate", type=float, default=0, help="users started per second (default users/5)")
    ap.add_argument("--processes", type=int, default=1, help="locust worker processes (-1: one per core)")
    ap.add_argument("--room", default="load")
    ap.add_argument("--sale-units", type=int, default=0, help="units per sale (default users/4)")
    ap.add_argument("--sale-every", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="50 users, 15 s")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    a = ap.parse_args(argv)
    if a.quick:
        a.users, a.seconds = min(a.users, 50), min(a.seconds, 15)
    spawn = a.spawn_rate or max(1.0, a.users / 5)

    srv = Livesale()
    print(f"starting: python -m server.cli serve (LIVESALE_PORT={srv.port} LIVESALE_DATA_DIR={srv.data_dir})",
          flush=True)
    try:
        srv.start()
    except Exception as exc:
        print(f"server did not start: {exc}", file=sys.stderr)
        return 2
    rc = 2
    try:
        token = srv.host_token("loadhost")
        print(f"host token (python -m server.cli token --host loadhost): {token[:24]}...", flush=True)
        asyncio.run(setup_room(srv.url, token, a.room))
        orders = Path(srv.data_dir) / "confirmed-orders.jsonl"
        # LIVESALE_SECRET: the viewers sign their own tokens as the platform would (guest tokens stay off)
        env = dict(os.environ, LIVESALE_HOST_TOKEN=token, LIVESALE_SECRET=srv.secret, LIVESALE_ROOM=a.room,
                   LIVESALE_ROOM_READY="1",
                   LIVESALE_ORDERS_FILE=str(orders), LIVESALE_SALE_UNITS=str(a.sale_units or max(5, a.users // 4)),
                   LIVESALE_SALE_EVERY_S=str(a.sale_every))
        cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "-u", str(a.users),
               "-r", str(spawn), "-t", f"{a.seconds}s", "--host", srv.url, "--stop-timeout", "5",
               "--only-summary", "--loglevel", "WARNING"]
        if a.processes != 1:
            cmd += ["--processes", str(a.processes)]
        print("running: " + " ".join(cmd[2:]), flush=True)
        lr = subprocess.run(cmd, env=env, cwd=HERE.parent, timeout=a.seconds + 180)
        print(f"locust exited with {lr.returncode}", flush=True)
        time.sleep(1.0)
        failures = asyncio.run(check_invariants(srv.url, a.room, token, orders))
        if failures:
            print("INVARIANTS FAILED:")
            for f in failures:
                print(f"  - {f}")
            rc = 1
        else:
            print("invariants hold: no oversell, every confirmed order settled once, Redis == DB")
            rc = 0
    except Exception as exc:
        print(f"load test could not run: {exc!r}\n--- server log ---\n{srv.tail()}", file=sys.stderr)
        rc = 2
    finally:
        srv.stop()
        if not a.keep:
            srv.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
