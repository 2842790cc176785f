"""Reconcile after Redis data loss (issue 11, item 4), with real engines: a PRIVATE embedded Valkey (started
here, so FLUSHALL and a restart never touch the session's server), SQLite and the gateway app over real
sockets (instant payment mode; provider payments are rows of the payments table, as the webhook writes them).

A live sale has settled orders, provider payments recorded in SQL whose orders are not (one `confirmed`,
one `paid` with its webhook in flight), a started checkout and an open hold. Then the Redis data is lost
(FLUSHALL; separately a restart without AOF). Reconcile reports the drift; the repair (the function, and
`livesale reconcile --repair` as a subprocess) rebuilds the sale from SQL. Then: sold units equal SQL
orders plus recorded payments, every recorded payment gets its order in SQL through settlement, nothing
is oversold, lost holds answer HOLD_LOST (WS pay, HTTP GET and pay), the room comes back for viewers and
buying resumes until sold out.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from redis_helpers import redis_for

from commerce.recovery import Recovery
from conftest import timeout
from gateway_helpers import JSON, Api, WsClient, host_token, setup_room, viewer
from inventory.keys import room_keys, sale_keys
from inventory.payments import PaymentRecord, PaymentStore
from inventory.scripts import Inventory
from inventory.store import Store
from server.app import create_app
from server.appkeys import COMMERCE
from server.config import Settings
from server.embedded import EmbeddedRedis

pytestmark = pytest.mark.timeout(120, method="thread")

ROOT = Path(__file__).resolve().parents[2]
PRICE = 1500
UNITS = 10


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    d = tempfile.mkdtemp(prefix="ls-rc-", dir="/tmp")
    server = EmbeddedRedis(Path(d))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Env:
    api: Api
    client: Any
    settings: Settings
    host: str
    redis: Redis
    store: Store
    inventory: Inventory
    server: EmbeddedRedis


@pytest.fixture
def reconcile_interval() -> float:
    return 0.0  # no automatic repair: the tests run it (test_automatic_repair overrides this)


@pytest.fixture
async def env(private_redis: EmbeddedRedis, aiohttp_client: Any, settings: Settings,
              reconcile_interval: float) -> AsyncIterator[Env]:
    d = private_redis.dir
    s = settings.replace(redis_url=private_redis.url, database_url=f"sqlite:///{d / 'rc.db'}", data_dir=str(d),
                         tick_ms=50, settle_block_ms=100, reconcile_interval_s=reconcile_interval)
    client = await aiohttp_client(create_app(s))
    redis = redis_for(private_redis.url)
    store = await Store.open(s.database_url)
    inventory = Inventory(redis)
    await inventory.load()
    try:
        yield Env(Api(client), client, s, host_token(s.secret), redis, store, inventory, private_redis)
    finally:
        await store.close()
        await redis.aclose()


async def until(what: str, check: Callable[[], Awaitable[Any]], limit: float = 15.0) -> Any:
    """Wait for a condition (polled) with a timeout."""
    deadline = time.monotonic() + timeout(limit)
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def buyer(env: Env, room: str, name: str) -> tuple[WsClient, str]:
    token, _user = viewer(env.settings.secret, name)
    ws = await WsClient.connect(env.client, "/ws", JSON)
    snap = await ws.join(room, token, timeout=timeout(10))
    assert snap["type"] == "snapshot", snap
    return ws, token


async def reserve(ws: WsClient, sale_id: str, qty: int = 1) -> str:
    r = await ws.request({"type": "buy", "sale": sale_id, "qty": qty}, timeout(10))
    assert r["type"] == "buy_result" and r["code"] == "RESERVED", r
    return str(r["hold"])


async def add_payment(env: Env, hold_id: str, sale_id: str, room: str, user: str, status: str) -> str:
    """A provider payment as the webhook path records it (docs/DATABASE.md, payments)."""
    now = int(time.time() * 1000)
    pid = "pay_" + secrets.token_hex(8)
    await PaymentStore(env.store).add(PaymentRecord(
        payment_id=pid, provider="sandbox", hold_id=hold_id, sale_id=sale_id, room_id=room, user_id=user,
        buyer_name=user[:64], amount=PRICE, currency="EUR", status=status, redirect_url="", client_secret="",
        event_id="evt_" + pid if status != "started" else "", order_id=hold_id if status == "confirmed" else "",
        created_at_ms=now, paid_at_ms=now if status != "started" else 0, updated_at_ms=now))
    return pid


async def sql_units(env: Env, sale_id: str) -> int:
    return await env.store.sold_units(sale_id)


def cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": env.settings.redis_url,
         "DATABASE_URL": env.settings.database_url, "LIVESALE_DATA_DIR": env.settings.data_dir,
         "LIVESALE_SECRET": env.settings.secret, "LIVESALE_PAYMENT_MODE": "instant", "LIVESALE_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "server.cli", "reconcile", *args], cwd=ROOT, env=e, text=True,
                          capture_output=True, timeout=timeout(60))


@dataclass
class Before:
    room: str
    sale_id: str
    settled: list[str]      # orders settled into SQL before the loss
    recorded: list[str]     # hold ids of payments paid/confirmed in SQL, orders not in SQL
    lost: dict[str, str]    # hold id -> token of its owner: holds only Redis knew
    lost_ws: tuple[WsClient, str]  # a lost hold's owner, still connected


async def live_sale(env: Env, uid: str) -> Before:
    room = f"{uid}-room"
    await setup_room(env.api, env.host, room, products=1, unit_price=PRICE)
    sale = await env.api.ok("POST", f"/api/rooms/{room}/sales", env.host,
                            {"product_id": "p0", "units": UNITS, "per_user_limit": 2, "hold_ttl_s": 300}, 201)
    sale_id = str(sale["sale_id"])
    settled = []
    for name in ("ann", "bob"):  # paid (instant) and settled
        ws, _ = await buyer(env, room, f"{uid}-{name}")
        hold = await reserve(ws, sale_id)
        r = await ws.request({"type": "pay", "hold": hold}, timeout(10))
        assert r["code"] == "CONFIRMED", r
        settled.append(hold)
        await ws.close()
    await until("both orders settled", lambda: _all_in_sql(env, settled))
    recorded, lost = [], {}
    for name, status in (("cat", "confirmed"), ("dan", "paid"), ("eve", "started")):
        ws, token = await buyer(env, room, f"{uid}-{name}")
        hold = await reserve(ws, sale_id)
        hold_rec = await env.inventory.get_hold(hold)
        assert hold_rec is not None
        await add_payment(env, hold, sale_id, room, hold_rec.user_id, status)
        if status == "started":
            lost[hold] = token
        else:
            recorded.append(hold)
        await ws.close()
    ws, token = await buyer(env, room, f"{uid}-gus")  # an open hold, no payment
    hold = await reserve(ws, sale_id)
    lost[hold] = token
    c = await env.inventory.counters(sale_id)
    assert c is not None and c.sold == 2 and c.held == 4 and c.available == UNITS - 6, c
    return Before(room, sale_id, settled, recorded, lost, (ws, hold))


async def _all_in_sql(env: Env, ids: list[str]) -> bool:
    return len(await env.store.get_orders(ids)) == len(ids)


async def check_drift(env: Env, b: Before) -> None:
    recovery = Recovery(env.client.app[COMMERCE])
    drifts = {d.sale_id: d for d in await recovery.check()}
    assert b.sale_id in drifts and not drifts[b.sale_id].ok and drifts[b.sale_id].missing, drifts
    out = cli(env)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert f"{b.sale_id} DRIFT" in out.stdout, out.stdout


async def check_recovered(env: Env, b: Before, uid: str) -> None:
    # sold = SQL orders + recorded payments; the lost holds gave their units back
    c = await env.inventory.counters(b.sale_id)
    assert c is not None
    assert c.sold == len(b.settled) + len(b.recorded), c
    assert c.held == 0 and c.available == UNITS - c.sold, c
    assert (await env.inventory.check_invariant(b.sale_id)).ok
    # every payment recorded before the loss gets its order in SQL (the outbox entry was appended again)
    await until("recorded payments settled", lambda: _all_in_sql(env, b.settled + b.recorded))
    assert await sql_units(env, b.sale_id) == c.sold
    # the reconcile is clean now
    out = cli(env)
    assert out.returncode == 0 and f"{b.sale_id} OK" in out.stdout, (out.stdout, out.stderr)
    # lost holds: HOLD_LOST on WS pay, HTTP GET and HTTP pay
    ws, hold = b.lost_ws
    r = await ws.request({"type": "pay", "hold": hold}, timeout(10))
    assert r["type"] == "pay_result" and r["code"] == "HOLD_LOST", r
    r = await ws.request({"type": "release", "hold": hold}, timeout(10))
    assert r["type"] == "release_result" and r["code"] == "HOLD_LOST", r
    await ws.close()
    for hold_id, token in b.lost.items():
        st, body = await env.api.call("GET", f"/api/holds/{hold_id}", token)
        assert st == 410 and body["error"]["code"] == "HOLD_LOST", (st, body)
        st, body = await env.api.call("POST", f"/api/holds/{hold_id}/pay", token, {})
        assert st == 410 and body["error"]["code"] == "HOLD_LOST", (st, body)
    # an unknown sale's hold stays NOT_FOUND
    st, body = await env.api.call("GET", f"/api/holds/{uid}-nosale.0123456789abcdef", next(iter(b.lost.values())))
    assert st == 404, (st, body)
    # the room is back for viewers, and buying resumes until sold out, never oversold
    ws, _ = await buyer(env, b.room, f"{uid}-new")
    snap = ws.msgs[-1] if ws.msgs and ws.msgs[-1].get("type") == "snapshot" else await ws.wait(
        lambda m: m["type"] == "snapshot")
    assert any(s["sale_id"] == b.sale_id for s in snap["sales"]), snap
    await reserve(ws, b.sale_id)
    await ws.close()
    left = UNITS - c.sold - 1
    codes = []
    for i in range(left + 2):
        token, _ = viewer(env.settings.secret, f"{uid}-late{i}")
        st, body = await env.api.call("POST", f"/api/sales/{b.sale_id}/reserve", token,
                                      {"request_id": f"r{i}", "qty": 1})
        codes.append("RESERVED" if st == 201 else body["error"]["code"])
    assert codes == ["RESERVED"] * left + ["SOLD_OUT"] * 2, codes
    inv = await env.inventory.check_invariant(b.sale_id)
    assert inv.ok and inv.available == 0 and inv.held + inv.sold == UNITS, inv


async def test_flushall_mid_sale_then_repair(env: Env, uid: str) -> None:
    b = await live_sale(env, uid)
    await env.redis.flushall()
    await check_drift(env, b)
    results = await Recovery(env.client.app[COMMERCE]).repair()
    assert [(r.sale_id, r.code) for r in results] == [(b.sale_id, "REBUILT")], results
    assert results[0].requeued == 2  # the orders of the `confirmed` and the `paid` payment, appended again
    await check_recovered(env, b, uid)


async def test_restart_without_aof_then_cli_repair(env: Env, uid: str) -> None:
    b = await live_sale(env, uid)
    server = env.server
    server.stop()
    for p in server.dir.iterdir():  # the AOF (appendonlydir) and any RDB: the data is gone
        if p.name.startswith("appendonly") or p.suffix == ".rdb":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    server.start()
    await until("redis back", lambda: _ping(env.redis))
    await env.inventory.load()
    await check_drift(env, b)
    out = cli(env, "--repair")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert f"{b.sale_id} REBUILT" in out.stdout, out.stdout
    await check_recovered(env, b, uid)


async def _ping(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except Exception:
        return False


@pytest.mark.parametrize("reconcile_interval", [0.2])
async def test_automatic_repair_of_a_vanished_sale(env: Env, uid: str) -> None:
    """The gateway's comparison (LIVESALE_RECONCILE_INTERVAL_S, its Upkeep) rebuilds a sale whose hash
    vanished by itself; the same checks then hold."""
    b = await live_sale(env, uid)
    await env.redis.flushall()

    async def rebuilt() -> bool:
        return bool(await env.redis.hexists(sale_keys(b.sale_id).sale, "rebuilt_at")
                    and await env.redis.hexists(room_keys(b.room).state, f"sale:{b.sale_id}"))

    await until("the sale and its room rebuilt by the gateway", rebuilt)
    await check_recovered(env, b, uid)


async def test_one_process_a_round_runs_the_comparison(env: Env) -> None:
    """Every gateway runs a ReconcileLoop; the Redis lock gives each round to one of them."""
    from commerce.recovery import ReconcileLoop
    from server.appkeys import COMMERCE

    commerce = env.client.app[COMMERCE]
    first, second = ReconcileLoop(commerce, 0.5), ReconcileLoop(commerce, 0.5)
    assert await first._my_round()
    assert not await second._my_round() and not await first._my_round()
    await until("the round's lock to lapse", second._my_round, limit=5)
