"""`order_confirmed` delivery (issue 9, item 6) against a real Redis/Valkey and a real database.

Two ways a settled order's `order_confirmed` was lost while the buyer's socket stayed open:

1. Publishing it failed after the SQL commit (Redis briefly away): the settlement worker logged
   the hook's failure and XACKed the batch anyway, so nothing ever published the rest of that
   batch again. Now a failed publish leaves the batch pending and it is published again (at least
   once; clients de-duplicate by order id); a redelivered order carries the values stored in SQL.
2. Its outbox entry was delivered more than LIVESALE_SETTLE_MAX_DELIVERIES times (workers killed
   between commit and ack) and went to the dead-letter stream although its order was in SQL. Now
   such an entry is notified and acked instead.
3. It was published while the gateway's Redis subscription was being re-established (pub/sub is
   fire and forget: PUBLISH reached no subscriber). The gateway notices and sends an unasked
   `snapshot`; the client then fetches `GET /api/me/orders?since=...`, which returns the order.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis as sync_redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conftest import Sale, timeout
from inventory import keys as K
from inventory.domain import SaleSpec
from inventory.scripts import Inventory
from inventory.outbox import parse_entry
from inventory.settlement import SettlementWorker
from inventory.store import OrderRecord, Store
from gateway_helpers import Api, WsClient, host_token, setup_room, viewer
from commerce.service import order_confirmed_message, settled_notifier
from server.app import create_app
from server.config import Settings
from server.appkeys import CORE
from commerce.room_bus import RoomBus
from inventory.keys import room_keys

pytestmark = pytest.mark.timeout(90, method="thread")


async def confirm_many(inv: Inventory, sale: Sale, n: int) -> dict[str, str]:
    """n confirmed orders of users u0..u4; returns order_id -> user."""
    out: dict[str, str] = {}
    for i in range(n):
        user = f"u{i % 5}"
        res = await inv.reserve(sale.sale_id, user, 1, f"req-{i}")
        assert res.ok and res.hold_id is not None, res
        conf = await inv.confirm(res.hold_id, f"pay-{i}")
        assert conf.code.value == "CONFIRMED" and conf.order_id
        out[conf.order_id] = user
    return out


class UserMessages:
    """Subscribes to a room channel like a gateway does and records the user-targeted messages."""

    def __init__(self, client: Redis, room_id: str) -> None:
        self.pubsub = client.pubsub()
        self.channel = room_keys(room_id).channel
        self.got: list[tuple[str, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UserMessages:
        await self.pubsub.ssubscribe(self.channel)  # room channels are sharded channels
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task
        await self.pubsub.aclose()

    async def _read(self) -> None:
        while True:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg and msg["type"] == "smessage" and msg["data"][:1] == b"U":
                body = orjson.loads(msg["data"][1:])
                self.got.append((body["u"], body["m"]))

    async def wait_for(self, order_ids: set[str], seconds: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout(seconds)
        while True:
            seen = {m["order"]["order_id"]: m for _, m in self.got if m.get("type") == "order_confirmed"}
            if order_ids <= set(seen):
                return seen
            if time.monotonic() > deadline:
                pytest.fail(f"order_confirmed never published for {sorted(order_ids - set(seen))}")
            await asyncio.sleep(0.01)  # polling a condition with a deadline


async def test_failed_publish_after_commit_is_retried_not_lost(inventory: Inventory, redis: Redis, redis_url: str,
                                                             store: Store, sale: Sale) -> None:
    """Redis stops answering between the SQL commit and the publish (a real CLIENT PAUSE, longer than
    the bus client's timeout): the publish fails. Before the fix the batch was acked anyway and its
    orders never got an order_confirmed; now it stays pending and is published once Redis answers."""
    expected = await confirm_many(inventory, sale, 6)
    bus_pool = BlockingConnectionPool.from_url(redis_url, max_connections=4, socket_timeout=0.1,
                                               retry=Retry(NoBackoff(), 0))
    bus_client = Redis(connection_pool=bus_pool)
    paused = False

    def fault(point: str) -> None:
        nonlocal paused
        if point == "after_commit" and not paused:  # committed; Redis now stalls for 0.5 s
            paused = True
            with sync_redis.Redis.from_url(redis_url) as admin:
                admin.client_pause(500, all=True)

    sub_client = Redis.from_url(redis_url)
    try:
        async with UserMessages(sub_client, sale.room_id) as messages:
            w = SettlementWorker(redis, store, consumer="w1", group=sale.group, registry=sale.registry, batch=50,
                                 on_committed=settled_notifier(RoomBus(bus_client)), fault=fault, backoff_max_s=0.2)
            await asyncio.wait_for(w.run(burst=True), timeout(30))
            assert paused
            seen = await messages.wait_for(set(expected), 5)
    finally:
        await sub_client.aclose()
        await bus_client.aclose()
        await bus_pool.disconnect()
    for order_id, user in expected.items():
        assert (user, seen[order_id]) in messages.got  # to the buyer
        stored = await store.get_order(order_id)
        assert stored is not None and seen[order_id]["order"]["settled_at"] == stored.settled_at_ms
    assert int((await redis.xpending(sale.outbox, sale.group))["pending"]) == 0
    assert w.stats.inserted == len(expected)


async def test_redelivered_order_carries_the_stored_settled_at(inventory: Inventory, redis: Redis,
                                                               store: Store, sale: Sale) -> None:
    """Committed, then the batch is processed again before its ack: the hook gets the rows as stored
    (the first settled_at), not a second settlement time, so `since` queries agree with the socket."""
    expected = await confirm_many(inventory, sale, 4)
    failed = False

    def fault(point: str) -> None:
        nonlocal failed
        if point == "after_commit" and not failed:
            failed = True
            raise RuntimeError("crash between commit and ack")

    seen: list[OrderRecord] = []

    async def on_committed(orders: list[OrderRecord]) -> None:
        seen.extend(orders)

    w = SettlementWorker(redis, store, consumer="w1", group=sale.group, registry=sale.registry, batch=50,
                         on_committed=on_committed, fault=fault, backoff_max_s=0.2)
    await asyncio.wait_for(w.run(burst=True), timeout(30))
    assert failed and sorted(o.order_id for o in seen) == sorted(expected)
    for o in seen:
        stored = await store.get_order(o.order_id)
        assert stored is not None and o == stored, (o, stored)
        assert stored.settled_at_ms >= stored.confirmed_at_ms


@pytest.mark.skipif(bool(os.environ.get("REDIS_URL")), reason="kills every pub/sub connection of the private Valkey")
async def test_message_published_while_the_gateway_resubscribes_is_recovered(
        aiohttp_client: Any, settings: Settings, uid: str, redis: Redis, drop_test_sales: None) -> None:
    app = create_app(settings.replace(settle_in_process=False, tick_ms=50))
    client = await aiohttp_client(app)
    api = Api(client)
    host = host_token(settings.secret)
    await setup_room(api, host, uid)
    sid = (await api.ok("POST", f"/api/rooms/{uid}/sales", host,
                        {"sale_id": f"{uid}-s", "product_id": "p0", "units": 5}, 201))["sale_id"]
    token, user = viewer(settings.secret, "Ana")
    ws = await WsClient.connect(client)
    try:
        assert (await ws.join(uid, token))["type"] == "snapshot"
        hold = await api.ok("POST", f"/api/sales/{sid}/reserve", token, {"request_id": f"{uid}-1", "qty": 1}, 201)
        order_id = (await api.ok("POST", f"/api/holds/{hold['hold_id']}/pay", token, {}, 201))["order_id"]
        # settle it (own consumer group, no hook), then publish its order_confirmed exactly as the
        # worker's hook does (bus.to_user), right after the gateway's subscription dropped
        outbox = K.sale_keys(sid).outbox
        await redis.sadd(f"{uid}:outboxes", outbox)
        try:
            w = SettlementWorker(redis, app[CORE].store, consumer="w1", group=f"settle-{uid}",
                                 registry=f"{uid}:outboxes")
            await asyncio.wait_for(w.run(burst=True), timeout(15))
        finally:
            await redis.delete(f"{uid}:outboxes")
        stored = await app[CORE].store.get_order(order_id)
        assert stored is not None
        start = len(ws.msgs)
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        receivers = await redis.publish(room_keys(uid).channel,
                                        b"U" + orjson.dumps({"u": user, "m": order_confirmed_message(stored)}))
        # the gateway resubscribes and, having possibly missed messages, sends an unasked snapshot
        await ws.wait(lambda m: m["type"] == "snapshot", timeout(10), start=start)
        if receivers == 0:  # no gateway was subscribed when it was published: it is gone for good
            assert not ws.of_type("order_confirmed", start)
        # the way back: the orders settled since the last one the client knows of
        got = await api.ok("GET", f"/api/me/orders?since={stored.settled_at_ms - 30_000}", token, status=200)
        assert [o["order_id"] for o in got["orders"]] == [order_id]
        assert got["orders"][0]["settled_at"] == stored.settled_at_ms and got["orders"][0]["user_id"] == user
    finally:
        await ws.close()


async def test_over_delivered_entry_already_in_sql_is_notified_not_dead_lettered(
        inventory: Inventory, redis: Redis, store: Store, sale: Sale) -> None:
    """Settlement killed again and again between commit and ack: the entry's delivery count passes
    LIVESALE_SETTLE_MAX_DELIVERIES although its order is in SQL. It was settled: its buyer is told
    and the entry acked, instead of a dead letter and no order_confirmed ever."""
    expected = await confirm_many(inventory, sale, 2)
    await redis.xgroup_create(sale.outbox, sale.group, id="0")
    ((_, entries),) = await redis.xreadgroup(sale.group, "dead", {sale.outbox: ">"})
    (settled_id, settled_fields), (unsettled_id, _) = entries
    sec, usec = await redis.time()
    committed = parse_entry(sale.outbox, settled_id, settled_fields, int(sec) * 1000 + int(usec) // 1000)
    assert await store.insert_new_orders([committed]) == [committed.order_id]  # ... and then it died, 10 times
    await redis.xclaim(sale.outbox, sale.group, "dead", 0, [settled_id, unsettled_id], idle=60_000, retrycount=10)
    seen: list[OrderRecord] = []

    async def on_committed(orders: list[OrderRecord]) -> None:
        seen.extend(orders)

    w = SettlementWorker(redis, store, consumer="w1", group=sale.group, registry=sale.registry,
                         claim_idle_ms=200, max_deliveries=2, on_committed=on_committed)
    await asyncio.wait_for(w.run(burst=True), timeout(30))
    assert seen == [committed]
    assert int((await redis.xpending(sale.outbox, sale.group))["pending"]) == 0
    dead = [f for _, f in await redis.xrevrange(K.DEAD_LETTER, count=500) if f.get("source_stream") == sale.outbox]
    assert [f["source_id"] for f in dead] == [unsettled_id]  # never committed: dead-lettered as before
    assert {committed.order_id, dead[0]["order_id"]} == set(expected)
