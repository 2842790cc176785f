"""The settlement worker against a real Redis/Valkey and a real database, with real crashes.

Every test uses its own sale, its own outbox registry and its own consumer group, so workers of
other tests (or of a server sharing the Redis) never take its entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from redis_helpers import redis_for
from sqlalchemy.engine import make_url

from conftest import SALE_PRICE as PRICE, Sale, timeout
from inventory import keys as K
from inventory.domain import SaleSpec
from inventory.scripts import Inventory
from inventory.outbox import parse_entry
from inventory.settlement import SettlementWorker
from inventory.store import OrderRecord, Store

ROOT = Path(__file__).resolve().parents[2]
PROC = ROOT / "tests" / "settle_proc.py"


def worker(redis: Redis, store: Store, sale: Sale, consumer: str = "w1", **kw: Any) -> SettlementWorker:
    return SettlementWorker(redis, store, consumer=consumer, group=sale.group, registry=sale.registry, **kw)


async def confirm_many(inv: Inventory, sale: Sale, n: int, start: int = 0) -> dict[str, int]:
    """Reserve and confirm n holds (users cycle, qty 1..3); returns order_id -> qty."""
    out: dict[str, int] = {}
    for i in range(start, start + n):
        qty = 1 + i % 3
        res = await inv.reserve(sale.sale_id, f"user{i % 7}", qty, f"req-{i}")
        assert res.ok, res
        assert res.hold_id is not None
        conf = await inv.confirm(res.hold_id, f"pay-{i}")
        assert conf.code.value == "CONFIRMED" and conf.order_id
        out[conf.order_id] = qty
    return out


async def eventually(pred: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not await pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def burst(w: SettlementWorker, seconds: float = 30) -> None:
    await asyncio.wait_for(w.run(burst=True), timeout(seconds))


async def pending(redis: Redis, sale: Sale) -> int:
    return int((await redis.xpending(sale.outbox, sale.group))["pending"])


async def rows(store: Store, sale: Sale) -> dict[str, OrderRecord]:
    got = await store.orders_for_room(sale.room_id, limit=10_000)
    assert len(got) == len({o.order_id for o in got})
    return {o.order_id: o for o in got}


def assert_orders(got: dict[str, OrderRecord], expected: dict[str, int], sale: Sale) -> None:
    assert set(got) == set(expected)
    for oid, qty in expected.items():
        o = got[oid]
        assert (o.qty, o.unit_price, o.total, o.currency, o.sale_id) == (qty, PRICE, qty * PRICE, "EUR", sale.sale_id)
        assert o.confirmed_at_ms >= o.reserved_at_ms > 0 and o.settled_at_ms > 0 and o.stream_id


async def run_doomed(redis_url: str, database_url: str, sale: Sale, consumer: str, kill_at: str) -> None:
    cfg = {"redis_url": redis_url, "database_url": database_url, "consumer": consumer, "group": sale.group,
           "registry": sale.registry, "kill_at": kill_at, "claim_idle_ms": 200}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(PROC), json.dumps(cfg), env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")


# -- parsing -------------------------------------------------------------------------------------

def test_parse_entry_rejects_malformed() -> None:
    stream = K.sale_keys("s1").outbox
    good = {"v": "1", "order_id": "s1.ab", "sale_id": "s1", "room_id": "r1", "sku": "k", "user_id": "u",
            "qty": "2", "unit_price": "150", "currency": "EUR", "payment_ref": "p", "reserved_at": "5",
            "confirmed_at": "6"}
    rec = parse_entry(stream, "1-0", good, 7)
    assert (rec.qty, rec.total, rec.settled_at_ms, rec.stream_id) == (2, 300, 7, "1-0")
    for change in ({"qty": "abc"}, {"qty": "0"}, {"qty": "1.5"}, {"qty": "1e3"}, {"qty": "-1"}, {"qty": " 1"},
                   {"unit_price": "0x10"}, {"currency": "eur"}, {"v": "2"}, {"order_id": ""},
                   {"sale_id": "other"}, {"reserved_at": ""}, {"user_id": "a b"}):
        with pytest.raises(ValueError):
            parse_entry(stream, "1-0", {**good, **change}, 7)
    with pytest.raises(ValueError):
        parse_entry(stream, "1-0", {k: v for k, v in good.items() if k != "payment_ref"}, 7)


# -- the happy path ------------------------------------------------------------------------------

async def test_end_to_end_burst(inventory: Inventory, redis: Redis, store: Store, sale: Sale) -> None:
    expected = await confirm_many(inventory, sale, 37)
    seen: list[OrderRecord] = []

    async def on_committed(orders: list[OrderRecord]) -> None:
        seen.extend(orders)

    w = worker(redis, store, sale, batch=10, on_committed=on_committed)
    await burst(w)
    assert_orders(await rows(store, sale), expected, sale)
    assert await store.sold_units(sale.sale_id) == sum(expected.values())
    counters = await inventory.counters(sale.sale_id)
    assert counters is not None and counters.sold == sum(expected.values())
    assert await pending(redis, sale) == 0
    if len(await redis.xinfo_groups(sale.outbox)) == 1:  # no foreign group holding the trim back
        assert await redis.xlen(sale.outbox) == 0  # acked and trimmed
    assert sorted(o.order_id for o in seen) == sorted(expected)
    assert (w.stats.settled, w.stats.inserted, w.stats.batches) == (37, 37, 4)
    # a second burst finds nothing and changes nothing
    await burst(worker(redis, store, sale))
    assert len(await rows(store, sale)) == 37


async def test_discovers_new_streams_while_running(inventory: Inventory, redis: Redis, store: Store,
                                                   sale: Sale, uid: str) -> None:
    w = worker(redis, store, sale, block_ms=100, registry_refresh_s=0.05)
    task = asyncio.create_task(w.run())
    try:
        first = await confirm_many(inventory, sale, 3)
        await eventually(lambda: _count(store, sale, 3), 10, "first orders")
        # a second sale armed while the worker runs: found through the registry
        now = await inventory.now_ms()
        spec = SaleSpec(sale_id=f"{uid}-s2", room_id=sale.room_id, sku="sku-2", unit_price=PRICE, currency="EUR",
                        allocated=10, per_user_limit=10, starts_at_ms=now - 1000, ends_at_ms=now + 60_000,
                        hold_ttl_ms=60_000)
        assert (await inventory.arm(spec)).ok
        second = Sale(spec.sale_id, spec.room_id, K.sale_keys(spec.sale_id).outbox, sale.group, sale.registry)
        await redis.srem(K.OUTBOX_REGISTRY, second.outbox)
        await redis.sadd(sale.registry, second.outbox)
        more = await confirm_many(inventory, second, 4, start=100)
        await eventually(lambda: _count(store, sale, 7), 10, "orders of the second sale")
        assert set(await rows(store, sale)) == set(first) | set(more)
    finally:
        await asyncio.wait_for(w.stop(), timeout(10))
        await task
    assert task.done() and not task.cancelled()


async def _count(store: Store, sale: Sale, n: int) -> bool:
    return len(await rows(store, sale)) == n


# -- crashes -------------------------------------------------------------------------------------

async def test_kill_after_commit_before_ack(inventory: Inventory, redis: Redis, store: Store, sale: Sale,
                                            redis_url: str, database_url: str) -> None:
    expected = await confirm_many(inventory, sale, 12)
    await run_doomed(redis_url, database_url, sale, "doomed", "after_commit")
    assert set(await rows(store, sale)) == set(expected)  # committed ...
    assert await pending(redis, sale) == 12                # ... but never acked
    w = worker(redis, store, sale, consumer="survivor", claim_idle_ms=200)
    await burst(w)
    assert_orders(await rows(store, sale), expected, sale)  # still exactly one row per order
    assert await pending(redis, sale) == 0
    assert (w.stats.reclaimed, w.stats.inserted, w.stats.settled) == (12, 0, 12)


async def test_kill_before_commit(inventory: Inventory, redis: Redis, store: Store, sale: Sale,
                                  redis_url: str, database_url: str) -> None:
    expected = await confirm_many(inventory, sale, 9)
    await run_doomed(redis_url, database_url, sale, "doomed", "before_commit")
    assert await rows(store, sale) == {}
    assert await pending(redis, sale) == 9
    # restarted under the same consumer name: its own pending entries are read first, no waiting
    w = worker(redis, store, sale, consumer="doomed", claim_idle_ms=60_000)
    await burst(w)
    assert_orders(await rows(store, sale), expected, sale)
    assert await pending(redis, sale) == 0
    assert (w.stats.reclaimed, w.stats.inserted) == (0, 9)


async def test_kill_before_commit_reclaimed_by_other(inventory: Inventory, redis: Redis, store: Store,
                                                     sale: Sale, redis_url: str, database_url: str) -> None:
    expected = await confirm_many(inventory, sale, 5)
    await run_doomed(redis_url, database_url, sale, "doomed", "before_commit")
    w = worker(redis, store, sale, consumer="other", claim_idle_ms=200)
    await burst(w)
    assert_orders(await rows(store, sale), expected, sale)
    assert await pending(redis, sale) == 0
    assert (w.stats.reclaimed, w.stats.inserted) == (5, 5)


async def test_poison_goes_to_dead_letter(inventory: Inventory, redis: Redis, store: Store,
                                          sale: Sale) -> None:
    before = await confirm_many(inventory, sale, 3)
    bad_fields = {"v": "1", "order_id": f"{sale.sale_id}.bad", "sale_id": sale.sale_id, "room_id": sale.room_id,
                  "sku": "sku-1", "user_id": "mallory", "qty": "abc", "unit_price": str(PRICE),
                  "currency": "EUR", "payment_ref": "p", "reserved_at": "1", "confirmed_at": "2"}
    bad_id = await redis.xadd(sale.outbox, bad_fields)
    after = await confirm_many(inventory, sale, 4, start=50)
    w = worker(redis, store, sale, claim_idle_ms=30, max_deliveries=2)
    await burst(w)
    assert_orders(await rows(store, sale), {**before, **after}, sale)
    assert await pending(redis, sale) == 0
    assert w.stats.dead_lettered == 1 and w.stats.poison == 3  # read once, reclaimed twice
    dead = [f for _, f in await redis.xrevrange(K.DEAD_LETTER, count=500)
            if f.get("source_stream") == sale.outbox and f.get("source_id") == bad_id]
    assert len(dead) == 1
    assert dead[0]["qty"] == "abc" and "qty" in dead[0]["reason"] and dead[0]["deliveries"] == "3"
    assert dead[0]["order_id"] == bad_fields["order_id"]
    assert await store.get_order(bad_fields["order_id"]) is None


async def test_trim_keeps_unacked_entries(inventory: Inventory, redis: Redis, store: Store,
                                          sale: Sale) -> None:
    first = await confirm_many(inventory, sale, 3)
    poison_id = await redis.xadd(sale.outbox, {"v": "1", "order_id": "x", "qty": "-1"})
    rest = await confirm_many(inventory, sale, 3, start=10)
    all_ids = [i for i, _ in await redis.xrange(sale.outbox)]
    # a consumer that dies holding the two oldest entries
    await redis.xgroup_create(sale.outbox, sale.group, id="0")
    await redis.xreadgroup(sale.group, "dead", {sale.outbox: ">"}, count=2)
    w = worker(redis, store, sale, block_ms=100, claim_idle_ms=60_000)
    task = asyncio.create_task(w.run())
    try:
        async def settled() -> bool:
            return w.stats.settled == 4
        await eventually(settled, 20, "the entries nobody holds")
    finally:
        await asyncio.wait_for(w.stop(), timeout(10))
        await task
    assert await pending(redis, sale) == 3  # two held by the dead consumer, the poison by w1
    left = [i for i, _ in await redis.xrange(sale.outbox)]
    assert all_ids[:2] == left[:2] and poison_id in left  # nothing unacked was trimmed
    w2 = worker(redis, store, sale, consumer="w2", claim_idle_ms=20, max_deliveries=1)
    await burst(w2)
    assert_orders(await rows(store, sale), {**first, **rest}, sale)
    assert await pending(redis, sale) == 0 and w2.stats.dead_lettered == 1
    if len(await redis.xinfo_groups(sale.outbox)) == 1:
        assert await redis.xlen(sale.outbox) == 0


async def test_sqlite_locked_no_ack_no_loss(inventory: Inventory, redis: Redis, sale: Sale, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await Store.open(f"sqlite:///{path}", busy_timeout_ms=50)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        expected = await confirm_many(inventory, sale, 8)
        w = worker(redis, store, sale, block_ms=100, backoff_max_s=0.2)
        task = asyncio.create_task(w.run())
        try:
            async def failing() -> bool:
                return w.stats.db_failures >= 3
            await eventually(failing, 20, "failed batch transactions")
            assert await pending(redis, sale) == 8  # nothing acked
            assert await redis.xlen(sale.outbox) == 8  # nothing trimmed
            assert locker.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
            locker.execute("ROLLBACK")  # released

            async def drained() -> bool:
                return await pending(redis, sale) == 0 and len(await rows(store, sale)) == 8
            await eventually(drained, 20, "the batch to land")
        finally:
            await asyncio.wait_for(w.stop(), timeout(10))
            await task
        assert_orders(await rows(store, sale), expected, sale)
        assert w.stats.inserted == 8 and w.stats.batches == 1
    finally:
        locker.close()
        await store.close()


class TcpProxy:
    """A TCP forwarder we can take down (close every link, refuse new ones) and bring back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.links: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
            self.links.discard(dst)

    def down(self) -> None:
        self.up = False
        for w in list(self.links):
            w.close()

    async def close(self) -> None:
        self.down()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_postgres_down_no_ack_no_loss(inventory: Inventory, redis: Redis, sale: Sale,
                                            database_url: str) -> None:
    if not database_url.startswith(("postgresql", "postgres")):
        pytest.skip("needs DATABASE_URL=postgresql://...")
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    store = await Store.open(url.set(port=port).render_as_string(hide_password=False))
    try:
        await store.sold_units(sale.sale_id)  # a pooled connection through the proxy ...
        proxy.down()                           # ... that dies with the database
        expected = await confirm_many(inventory, sale, 6)
        w = worker(redis, store, sale, block_ms=100, backoff_max_s=0.2)
        task = asyncio.create_task(w.run())
        try:
            async def failing() -> bool:
                return w.stats.db_failures >= 3
            await eventually(failing, 30, "failed batch transactions")
            assert await pending(redis, sale) == 6 and await redis.xlen(sale.outbox) == 6
            proxy.up = True

            async def drained() -> bool:
                return await pending(redis, sale) == 0
            await eventually(drained, 30, "the batch to land")
        finally:
            await asyncio.wait_for(w.stop(), timeout(10))
            await task
        assert_orders(await rows(store, sale), expected, sale)
        assert w.stats.inserted == 6
    finally:
        await store.close()
        await proxy.close()


# -- shutdown ------------------------------------------------------------------------------------

async def test_stop_drains_in_flight_batch(inventory: Inventory, redis: Redis, store: Store,
                                           sale: Sale) -> None:
    expected = await confirm_many(inventory, sale, 12)
    stopper: list[asyncio.Task[None]] = []
    w: SettlementWorker

    def fault(point: str) -> None:  # stop is requested while the first batch is in flight
        if point == "before_commit" and not stopper:
            stopper.append(asyncio.get_running_loop().create_task(w.stop()))

    w = worker(redis, store, sale, batch=5, fault=fault)
    await asyncio.wait_for(w.run(), timeout(30))  # returns after draining, although not in burst mode
    assert len(stopper) == 1
    await asyncio.wait_for(stopper[0], timeout(5))
    got = await rows(store, sale)
    assert len(got) == 5 and set(got) <= set(expected)  # the in-flight batch landed and was acked;
    assert await pending(redis, sale) == 0              # the rest was never read (neither pending nor stored)
    w2 = worker(redis, store, sale, consumer="w2")
    await burst(w2)
    assert_orders(await rows(store, sale), expected, sale)
    assert w2.stats.inserted == 7


async def test_stop_while_idle_and_cancel(redis: Redis, store: Store, sale: Sale, redis_url: str) -> None:
    w = worker(redis, store, sale, block_ms=300)
    task = asyncio.create_task(w.run())
    await eventually(lambda: _xreading(redis, sale), 10, "the worker to be reading")
    await asyncio.wait_for(w.stop(), timeout(5))
    assert task.done()
    await w.stop()  # idempotent
    # a stopped worker stays stopped
    await asyncio.wait_for(w.run(), timeout(5))
    # cancelled at various points of start-up, the run ends promptly (even where redis-py, while
    # connecting, swallows the CancelledError) and stop() afterwards returns at once
    for yields in range(12):
        client = redis_for(redis_url)  # fresh: connecting is the risky part
        w2 = worker(client, store, sale, consumer="w2", block_ms=300)
        task2 = asyncio.create_task(w2.run())
        for _ in range(yields):
            await asyncio.sleep(0)  # let the run reach a different await each round
        task2.cancel()
        done, _ = await asyncio.wait([task2], timeout=timeout(5))
        assert done and task2.cancelled(), f"cancellation lost after {yields} yields"
        await asyncio.wait_for(w2.stop(), timeout(5))
        await client.aclose()


async def _xreading(redis: Redis, sale: Sale) -> bool:
    groups = await redis.xinfo_groups(sale.outbox) if await redis.exists(sale.outbox) else []
    return any(g["name"] == sale.group for g in groups)


# -- the `livesale settle` command -------------------------------------------------------------------

async def test_settle_command_settles_and_stops_on_sigterm(inventory: Inventory, store: Store, uid: str,
                                                           redis_url: str, database_url: str, settings: Any,
                                                           tmp_path: Path, drop_test_sales: None) -> None:
    """`livesale settle` as deployed next to gateways that run with LIVESALE_SETTLE_IN_PROCESS=0: it
    settles what is already waiting and what comes while it runs, then stops cleanly on SIGTERM."""
    from proc_helpers import ServerProc

    now = await inventory.now_ms()
    spec = SaleSpec(sale_id=f"{uid}-cli", room_id=f"{uid}-r", sku="sku-1", unit_price=PRICE, currency="EUR",
                    allocated=100, per_user_limit=50, starts_at_ms=now - 1000, ends_at_ms=now + 600_000,
                    hold_ttl_ms=600_000)
    assert (await inventory.arm(spec)).ok  # registered in the production registry, as the gateways do
    sale = Sale(spec.sale_id, spec.room_id, K.sale_keys(spec.sale_id).outbox, K.SETTLE_GROUP, K.OUTBOX_REGISTRY)
    waiting = await confirm_many(inventory, sale, 5)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_DATA_DIR": str(tmp_path),
           "LIVESALE_SECRET": settings.secret, "LIVESALE_SETTLE_BLOCK_MS": "200"}
    proc = await ServerProc.start(env, command="settle")
    try:
        await proc.wait_lines("livesale settlement worker running")
        await eventually(lambda: _count(store, sale, 5), 30, "the waiting orders settled by `livesale settle`")
        later = await confirm_many(inventory, sale, 3, start=5)
        await eventually(lambda: _count(store, sale, 8), 30, "orders confirmed while it runs")
        assert_orders(await rows(store, sale), {**waiting, **later}, sale)
    finally:
        rc = await proc.stop()
    assert rc == 0, "\n".join(proc.lines[-30:])


def test_settle_command_needs_redis_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), LIVESALE_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "server.cli", "settle"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "REDIS_URL" in out.stderr
