"""A buy burst through the Python client package: several OS processes (tests/client_burst_proc.py), each
with many livesale_client.aio connections to a `livesale serve`, all joined first, then every client buys
one unit in the same instant: exactly the sale's units are reserved, every other answer is SOLD_OUT, and
the sale's counters agree (no oversell, no lost unit)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token, setup_room
from proc_helpers import ROOT, ServerProc, free_port, spawn_with_config
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180, method="thread")]

UNITS, PROCS, PER_PROC = 25, 3, 40
PROC = ROOT / "tests" / "client_burst_proc.py"


async def test_client_burst_sells_exactly_the_units(settings: Settings, redis_url: str, database_url: str,
                                                    tmp_path: Path, uid: str) -> None:
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_BUY_RATE": "100"}
    server = await ServerProc.start(env)
    children: list[asyncio.subprocess.Process] = []
    try:
        await server.wait_lines("livesale listening on")
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host = host_token(settings.secret)
            room = uid + "c"
            await setup_room(api, host, room, products=1)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                                {"product_id": "p0", "units": UNITS, "per_user_limit": 1, "starts_in_s": 0,
                                 "duration_s": 120}, 201)
            tokens = [mint_viewer_token(settings.secret, f"b{i}", user=f"{uid}-b{i}")[0]
                      for i in range(PROCS * PER_PROC)]
            for k in range(PROCS):
                children.append(await spawn_with_config(PROC, {"base": base, "room": room, "sale": sale["sale_id"],
                                                               "tokens": tokens[k::PROCS]}))
            for p in children:
                assert p.stdout is not None and p.stderr is not None
                line = await asyncio.wait_for(p.stdout.readline(), timeout(60))
                if line.strip() != b"READY":
                    err = await asyncio.wait_for(p.stderr.read(), timeout(10))
                    raise AssertionError(f"client process not ready: {line!r} {err.decode()[-2000:]}")
            for p in children:
                assert p.stdin is not None
                p.stdin.write(b"GO\n")
            await asyncio.gather(*(p.stdin.drain() for p in children if p.stdin is not None))
            results: list[list[object]] = []
            for p in children:
                out, err = await asyncio.wait_for(p.communicate(), timeout(60))
                assert p.returncode == 0, err.decode()[-4000:]
                results += json.loads(out.decode().strip().splitlines()[-1])["results"]
            assert len(results) == PROCS * PER_PROC
            codes = Counter(code for code, _, _ in results)
            assert codes == {"RESERVED": UNITS, "SOLD_OUT": PROCS * PER_PROC - UNITS}, codes
            assert len({hold for code, hold, _ in results if code == "RESERVED"}) == UNITS
            counters = await api.ok("GET", f"/api/sales/{sale['sale_id']}", status=200)
            assert counters["held"] == UNITS and counters["units_left"] == 0 and counters["sold"] == 0, counters
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await server.stop(30)
