"""Oversell under a real multi-process burst against a real Redis/Valkey.

Each burst runs in several OS processes (tests/burst_proc.py), each with its own event loop, redis
client and one asyncio.gather over its share of the requests. The processes connect and load the
scripts first, report READY, and only then get GO together, so their requests overlap on the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import timeout
from inventory import keys as K
from inventory.domain import SaleSpec
from inventory.scripts import Inventory

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("drop_test_sales")]

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "burst_proc.py"


async def arm(inv: Inventory, sale_id: str, allocated: int, limit: int) -> SaleSpec:
    now = await inv.now_ms()
    spec = SaleSpec(sale_id=sale_id, room_id="room1", sku="sku-1", unit_price=1999, currency="EUR",
                    allocated=allocated, per_user_limit=limit, starts_at_ms=now - 1_000,
                    ends_at_ms=now + 600_000, hold_ttl_ms=600_000)
    assert (await inv.arm(spec)).code.value == "ARMED"
    return spec


async def burst(url: str, sale_id: str, requests: list[tuple[str, int, str]], procs: int,
                mode: str = "single", batch: int = 50) -> list[list]:
    """Run ``requests`` split over ``procs`` OS processes started together; all results, any order."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shares = [requests[i::procs] for i in range(procs)]
    children = []
    try:
        for share in shares:
            p = await asyncio.create_subprocess_exec(
                sys.executable, str(PROC), cwd=str(ROOT), env=env, limit=2**24,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            children.append(p)
            cfg = {"url": url, "sale_id": sale_id, "mode": mode, "batch": batch, "max_qty": 100,
                   "max_connections": 50, "requests": share}
            p.stdin.write((json.dumps(cfg) + "\n").encode())
            await p.stdin.drain()
        for p in children:  # wait for every process to be connected with scripts loaded
            line = await asyncio.wait_for(p.stdout.readline(), timeout(30))
            if line.strip() != b"READY":
                err = await asyncio.wait_for(p.stderr.read(), timeout(10))
                raise AssertionError(f"burst process not ready: {line!r} {err.decode()[-2000:]}")
        for p in children:
            p.stdin.write(b"GO\n")
        await asyncio.gather(*(p.stdin.drain() for p in children))
        results: list[list] = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(30))
            assert p.returncode == 0, err.decode()[-4000:]
            results += json.loads(out.decode().strip().splitlines()[-1])["results"]
        assert len(results) == len(requests)
        return results
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def check_holds(inv: Inventory, sale_id: str, results: list[list]) -> None:
    """Every RESERVED result is one stored, held hold of exactly the requested qty for that user."""
    holds = await inv.redis.hgetall(K.sale_keys(sale_id).holds)
    reserved = [r for r in results if r[3] == "RESERVED"]
    assert len({r[4] for r in reserved}) == len(reserved) == len(holds)
    for rid, user, qty, _code, hold_id, _avail, _units in reserved:
        rec = json.loads(holds[hold_id])
        assert (rec["u"], rec["q"], rec["r"], rec["s"]) == (user, qty, rid, "held")
    report = await inv.check_invariant(sale_id)
    assert report.ok, report.problems


@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_no_oversell_2000_requests_from_4_processes(inventory, redis_url, uid, mode):
    sale = f"{uid}-{mode}"
    await arm(inventory, sale, allocated=100, limit=1)
    reqs = [(f"u{i}", 1, f"r{i}") for i in range(2000)]
    results = await burst(redis_url, sale, reqs, procs=4, mode=mode, batch=50)

    codes = Counter(r[3] for r in results)
    assert codes == {"RESERVED": 100, "SOLD_OUT": 1900}
    assert len({r[1] for r in results if r[3] == "RESERVED"}) == 100
    await check_holds(inventory, sale, results)
    c = await inventory.counters(sale)
    assert (c.available, c.held, c.sold) == (0, 100, 0)
    buyers = await inventory.redis.hgetall(K.sale_keys(sale).buyers)
    assert len(buyers) == 100 and set(buyers.values()) == {"1"}


@pytest.mark.parametrize("mode", ["single", "batch"])
async def test_mixed_qty_no_partial_fills(inventory, redis_url, uid, mode):
    sale = f"{uid}-mix{mode}"
    await arm(inventory, sale, allocated=100, limit=3)
    rnd = random.Random(sale)
    reqs = [(f"u{i}", rnd.randint(1, 3), f"r{i}") for i in range(2000)]
    results = await burst(redis_url, sale, reqs, procs=3, mode=mode, batch=50)

    assert set(r[3] for r in results) <= {"RESERVED", "SOLD_OUT"}
    await check_holds(inventory, sale, results)  # includes: each hold has exactly the requested qty
    reserved_units = sum(r[2] for r in results if r[3] == "RESERVED")
    c = await inventory.counters(sale)
    assert reserved_units == c.held == 100 - c.available
    assert 0 <= c.available < 3
    for _rid, _user, qty, code, _hid, available, _units in results:
        if code == "SOLD_OUT":
            assert available < qty, "SOLD_OUT although enough stock was left"
        else:
            assert available >= 0
    # stock only shrinks in this burst, so a refused qty-1 request means nothing at all is left
    if any(r[3] == "SOLD_OUT" and r[2] == 1 for r in results):
        assert c.available == 0


async def test_per_user_limit_across_processes(inventory, redis_url, uid):
    sale = f"{uid}-lim"
    await arm(inventory, sale, allocated=100, limit=2)
    reqs = [("whale", 1, f"r{i}") for i in range(50)]
    results = await burst(redis_url, sale, reqs, procs=2)
    assert Counter(r[3] for r in results) == {"RESERVED": 2, "LIMIT": 48}
    await check_holds(inventory, sale, results)
    assert await inventory.redis.hget(K.sale_keys(sale).buyers, "whale") == "2"
    assert (await inventory.counters(sale)).available == 98
