"""An interest audience from a real show, on several processes (issue "Growth and data", Done when: "an
audience export of 'held but did not pay' matches, row for row, the viewers whose holds expired").

Two `livesale serve` gateways and one `livesale settle` process (settlement and the signal sink) on one
Redis and one SQL database. 600 viewers on real WebSockets from several OS processes
(tests/commission_proc.py, each from its own 127.0.0.x address) tap buy on one sale at once; a third of
them pay, the rest leave their holds to expire (pay-by 5 s). Once the reaper has expired them and the
signals reached SQL, the host defines the audience "held SKU X and did not pay" and exports it as CSV
and JSON Lines: both list exactly the users whose holds are `expired` in Redis, one row each.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from inventory.keys import sale_keys
from goods_helpers import until
from proc_helpers import ServerProc, free_port, split_env, stop_all
from redis.asyncio import Redis

from redis_helpers import redis_for
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "commission_proc.py"
VIEWERS, PROCS, HOLD_TTL_S = 600, 3, 5
AUDIENCE_ENV = {"LIVESALE_REAP_INTERVAL_MS": "100", "LIVESALE_SIGNAL_FLUSH_MS": "100"}


async def test_held_but_did_not_pay_matches_the_expired_holds_row_for_row(
        settings: Settings, redis_url: str, database_url: str, tmp_path: Path, uid: str) -> None:
    def env(name: str) -> dict[str, str]:
        return split_env(settings.secret, redis_url, database_url, tmp_path / name, free_port(), **AUDIENCE_ENV)

    gws = [await ServerProc.start(env(f"g{k}")) for k in range(2)]
    settler = await ServerProc.start(env("s"), command="settle")
    redis = redis_for(redis_url)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout(60)))
    children: list[asyncio.subprocess.Process] = []
    try:
        bases = [ls[0].split()[-1] for ls in await asyncio.gather(*(g.wait_lines("livesale listening on")
                                                                    for g in gws))]
        await settler.wait_lines("livesale settlement worker running")
        api = Api(session, bases[0])
        host = host_token(settings.secret)
        room, sku = f"a{uid}", f"SKU-A-{uid}"
        await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Audience night"}, 201)
        await api.ok("POST", f"/api/rooms/{room}/products", host,
                     {"product_id": "p0", "sku": sku, "title": "Boots", "unit_price": 2500}, 201)
        sale = (await api.ok("POST", f"/api/rooms/{room}/sales", host,
                             {"product_id": "p0", "units": VIEWERS, "per_user_limit": 1, "hold_ttl_s": HOLD_TTL_S,
                              "duration_s": 600}, 201))["sale_id"]
        users = [f"{uid}-u{i}" for i in range(VIEWERS)]
        pays = {u: i % 3 == 0 for i, u in enumerate(users)}
        parts = [users[k::PROCS] for k in range(PROCS)]
        for k, part in enumerate(parts):
            cfg = {"src": f"127.0.0.{20 + k}", "timeout": timeout(60), "concurrency": 100, "base": bases[k % 2],
                   "room": room, "sale": sale,
                   "viewers": [[mint_viewer_token(settings.secret, u, user=u)[0], None, pays[u]] for u in part]}
            p = await asyncio.create_subprocess_exec(sys.executable, str(PROC), cwd=str(ROOT), limit=2**24,
                                                     stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
            children.append(p)
            assert p.stdin is not None
            p.stdin.write((json.dumps(cfg) + "\n").encode())
            await p.stdin.drain()
        for p in children:
            assert p.stdout is not None and p.stderr is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout(120))
            assert line.strip() == b"READY", (line, (await p.stderr.read()).decode()[-3000:])
        for p in children:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
            await p.stdin.drain()
        results: list[list[Any]] = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(120))
            assert p.returncode == 0, err.decode()[-3000:]
            results.extend(json.loads(out.decode().strip().splitlines()[-1]))
        assert [r[0] for r in results] == ["RESERVED"] * VIEWERS
        assert sum(1 for r in results if r[2] == "CONFIRMED") == VIEWERS // 3

        # the unpaid holds expire (the reaper), and the pay-by + grace of held_unpaid passes
        holds_key = sale_keys(sale).holds

        async def expired_users() -> set[str] | None:
            raw = await redis.hgetall(holds_key)
            states = [orjson.loads(v) for v in raw.values()]
            if any(h["s"] == "held" for h in states):
                return None
            return {h["u"] for h in states if h["s"] == "expired"}
        expired = await until("every unpaid hold expired", expired_users, 60)
        assert expired == {u for u, paid in pays.items() if not paid}
        aud = await api.ok("POST", "/api/audiences", host, {"name": "held, did not pay",
                                                             "rules": [{"signal": "held_unpaid", "sku": sku}]}, 201)

        async def export(fmt: str) -> str:
            async with session.get(f"{bases[1]}/api/audiences/{aud['audience_id']}/export?format={fmt}",
                                   headers={"Authorization": f"Bearer {host}"}) as r:
                assert r.status == 200
                return await r.text()

        async def complete() -> list[dict[str, str]] | None:
            rows = list(csv.DictReader(io.StringIO(await export("csv"))))
            return rows if len(rows) >= len(expired) else None
        rows = await until("the audience holds every expired hold's viewer", complete, 60)
        assert [r["user_id"] for r in rows] == sorted(expired)  # row for row, ordered by user id
        assert all(r["signals"] == "1" for r in rows)
        lines = [json.loads(x) for x in (await export("jsonl")).splitlines() if x.strip()]
        assert [x["user_id"] for x in lines] == sorted(expired)
        count = await api.ok("GET", f"/api/audiences/{aud['audience_id']}", host)
        assert count["count"] == len(expired)
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await session.close()
        await redis.aclose()
        await stop_all(*gws, settler)
