"""Bounded memory (issue 11, item 3): ended, settled sales and ended rooms are archived to SQL and
their Redis keys expire; live ones keep theirs. Real Redis/Valkey and SQL, retention windows of ~1 s.

Every wait polls a condition (Redis TTL / EXISTS, SQL rows, HTTP answers) with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from conftest import timeout
from gateway_helpers import Api, host_token, setup_room, viewer
from inventory import archive
from inventory import keys as K
from inventory.domain import RetireCode, SaleSpec
from inventory.reaper import Reaper
from inventory.scripts import Inventory
from inventory.store import Store
from server.app import create_app
from server.appkeys import COMMERCE
from server.config import Settings

pytestmark = pytest.mark.timeout(120, method="thread")


async def until(cond: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``seconds`` (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(seconds)
    while True:
        got = await cond()
        if got:
            return got
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling a condition with a deadline


async def ttls(redis: Redis, keys: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as p:
        for k in keys:
            p.pttl(k)
        return [int(x) for x in await p.execute()]


async def existing(redis: Redis, keys: list[str]) -> int:
    return int(await redis.exists(*keys))


def room_key_list(room_id: str) -> list[str]:
    k = K.room_keys(room_id)
    return [k.meta, k.log, k.state, k.once, k.comments, k.likes, k.viewers, k.funnel]


def _app_settings(settings: Settings, **kw: Any) -> Settings:
    return settings.replace(tick_ms=50, settle_block_ms=100, reap_interval_ms=50, **kw)


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    client = await aiohttp_client(create_app(_app_settings(settings, retain_ended_s=1, retain_room_s=30)))
    return Api(client)


async def _launch(api: Api, host: str, room: str, sale_id: str, **fields: Any) -> dict[str, Any]:
    body = {"product_id": "p0", "units": 5, "sale_id": sale_id, **fields}
    return await api.ok("POST", f"/api/rooms/{room}/sales", host, body, 201)


async def test_ended_settled_sale_is_archived_then_expires(api: Api, settings: Settings, redis: Redis,
                                                          store: Store, uid: str) -> None:
    host = host_token(settings.secret)
    room, sale = f"{uid}-r", f"{uid}-s"
    await setup_room(api, host, room, products=1)
    await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {})
    launched = await _launch(api, host, room, sale, duration_s=2)
    buyer, _ = viewer(settings.secret, "Ana")
    other, _ = viewer(settings.secret, "Bo")
    paid = await api.ok("POST", f"/api/sales/{sale}/reserve", buyer, {"request_id": "r1", "qty": 1}, 201)
    await api.ok("POST", f"/api/holds/{paid['hold_id']}/pay", buyer, {})
    released = await api.ok("POST", f"/api/sales/{sale}/reserve", other, {"request_id": "r1", "qty": 1}, 201)
    await api.ok("DELETE", f"/api/holds/{released['hold_id']}", other)
    keys = K.sale_keys(sale)

    # ended + settled: every key gets the 1 s window at once, after the order reached SQL
    await until(lambda: _has_ttl(redis, keys.sale), 15, "the sale's keys to get a TTL")
    got = await ttls(redis, keys.all)  # the deadlines zset is gone once empty (-2)
    assert all(0 < t <= 1000 for t in got if t != -2) and got.count(-2) <= 1, got
    assert await store.get_order(paid["hold_id"]) is not None
    row = await archive.get_sale(store, sale)
    assert row is not None
    assert (row.room_id, row.allocated, row.sold, row.unsold, row.released_units, row.expired_units) == \
        (room, 5, 1, 4, 1, 0)
    assert (row.holds, row.buyers, row.reserve_requests) == (2, 2, 2)
    assert not await redis.sismember(K.SALES_REGISTRY, sale)
    assert not await redis.sismember(K.OUTBOX_REGISTRY, keys.outbox)

    await until(lambda: _gone(redis, keys.all), 10, "the sale's keys to expire")
    # SQL keeps the sale, its order and the archive; the API answers from them
    assert await store.get_sale(sale) is not None
    assert await store.get_order(paid["hold_id"]) is not None
    wire = await api.ok("GET", f"/api/sales/{sale}")
    assert (wire["state"], wire["sold"], wire["units_left"], wire["held"]) == ("closed", 1, 4, 0), wire
    # launching the same sale again (same terms) does not bring its stock back
    again = await _launch(api, host, room, sale, starts_at=launched["starts_at"], ends_at=launched["ends_at"])
    assert again["state"] == "closed" and again["units_left"] == 4, again
    assert not await redis.exists(keys.sale)


async def _gone(redis: Redis, keys: list[str]) -> bool:
    return await existing(redis, keys) == 0


async def test_live_holds_keep_the_keys_until_they_end(api: Api, settings: Settings, redis: Redis,
                                                      store: Store, uid: str) -> None:
    host = host_token(settings.secret)
    room, sale = f"{uid}-r", f"{uid}-s"
    await setup_room(api, host, room, products=1)
    await _launch(api, host, room, sale, duration_s=1, hold_ttl_s=5)
    a, _ = viewer(settings.secret, "Ana")
    b, _ = viewer(settings.secret, "Bo")
    late = await api.ok("POST", f"/api/sales/{sale}/reserve", a, {"request_id": "r1", "qty": 1}, 201)
    lapsing = await api.ok("POST", f"/api/sales/{sale}/reserve", b, {"request_id": "r1", "qty": 1}, 201)
    keys = K.sale_keys(sale)

    await until(lambda: _state_is(api, sale, "closed"), 10, "the sale to end")
    # ended, two live holds: no TTL, still registered
    assert await ttls(redis, [keys.sale, keys.holds, keys.idem, keys.deadlines]) == [-1] * 4
    assert await redis.sismember(K.SALES_REGISTRY, sale)
    # a late (in time) payment after the end is confirmed and settled; the other hold is still live
    await api.ok("POST", f"/api/holds/{late['hold_id']}/pay", a, {})
    await until(lambda: store.get_order(late["hold_id"]), 10, "the late order in SQL")
    assert (await ttls(redis, [keys.sale]))[0] == -1
    # the other hold lapses, the reaper returns its unit, then the sale retires
    await until(lambda: _has_ttl(redis, keys.sale), 20, "the sale to retire once its last hold expired")
    row = await archive.get_sale(store, sale)
    assert row is not None and (row.sold, row.expired_units, row.unsold) == (1, 1, 4), row
    hold = await api.ok("GET", f"/api/holds/{lapsing['hold_id']}", b)
    assert hold["status"] == "expired"
    await until(lambda: _gone(redis, keys.all), 10, "the sale's keys to expire")


async def _has_ttl(redis: Redis, key: str) -> bool:
    return int(await redis.pttl(key)) > 0


async def _state_is(api: Api, sale: str, state: str) -> bool:
    return bool((await api.ok("GET", f"/api/sales/{sale}"))["state"] == state)


async def test_unacked_outbox_entries_keep_the_keys(inventory: Inventory, redis: Redis, store: Store,
                                                   uid: str, drop_test_sales: None) -> None:
    now = await inventory.now_ms()
    sale = f"{uid}-s"
    spec = SaleSpec(sale_id=sale, room_id=f"{uid}-r", sku="sku-1", unit_price=100, currency="EUR", allocated=3,
                    per_user_limit=1, starts_at_ms=now - 1000, ends_at_ms=now + 400, hold_ttl_ms=60_000)
    assert (await inventory.arm(spec)).ok
    hold = await inventory.reserve(sale, "u1", 1, "r1")
    assert hold.hold_id is not None
    assert (await inventory.confirm(hold.hold_id, "pay-1")).order_id == hold.hold_id
    keys = K.sale_keys(sale)
    reaper = Reaper(redis, inventory, 50, store=store, retain_ms=1000, gone_grace_s=0.2)

    async def ended() -> bool:
        return await inventory.now_ms() >= spec.ends_at_ms
    await until(ended, 5, "the sale to end")
    # no settlement group has read the entry yet: not settled
    assert await reaper.retire(sale) is RetireCode.PENDING
    await redis.xgroup_create(keys.outbox, K.SETTLE_GROUP, id="0")
    assert await reaper.retire(sale) is RetireCode.PENDING
    # delivered but not acked (a worker died before its commit): still pending
    got = await redis.xreadgroup(K.SETTLE_GROUP, "ghost", {keys.outbox: ">"}, count=10)
    entry_ids = [e[0] for _, entries in got for e in entries]
    assert len(entry_ids) == 1
    assert await reaper.retire(sale) is RetireCode.PENDING
    assert all(t == -1 for t in await ttls(redis, [keys.sale, keys.holds, keys.outbox]))
    assert await redis.sismember(K.SALES_REGISTRY, sale)
    assert await archive.get_sale(store, sale) is None
    # acked: settled, archived, expiring, dropped from both registries
    await redis.xack(keys.outbox, K.SETTLE_GROUP, *entry_ids)
    assert await reaper.retire(sale) is RetireCode.RETIRED
    got_ttls = await ttls(redis, keys.all)
    assert all(0 < t <= 1000 for t in got_ttls if t != -2) and got_ttls[0] > 0, got_ttls
    assert not await redis.sismember(K.SALES_REGISTRY, sale)
    assert not await redis.sismember(K.OUTBOX_REGISTRY, keys.outbox)
    row = await archive.get_sale(store, sale)
    assert row is not None and (row.sold, row.unsold, row.holds) == (1, 2, 1)
    # a second retire never extends the window
    first = (await ttls(redis, [keys.sale]))[0]
    assert await reaper.retire(sale) is RetireCode.RETIRED
    assert (await ttls(redis, [keys.sale]))[0] <= first
    await until(lambda: _gone(redis, keys.all), 10, "the sale's keys to expire")
    # nothing left: the sale is gone, and a registry entry left behind is dropped
    await redis.sadd(K.SALES_REGISTRY, sale)
    assert await reaper.retire(sale) is RetireCode.GONE
    assert await redis.sismember(K.SALES_REGISTRY, sale)  # not at once: it may be being armed right now
    await until(lambda: _dropped(reaper, redis, sale), 5, "the stale registry entry to be dropped")


async def _dropped(reaper: Reaper, redis: Redis, sale: str) -> bool:
    await reaper.retire(sale)
    return not await redis.sismember(K.SALES_REGISTRY, sale)


async def test_a_sale_being_armed_keeps_its_registry_entries(inventory: Inventory, redis: Redis, store: Store,
                                                             uid: str, drop_test_sales: None) -> None:
    """``arm`` registers the sale just before its hash exists: a sweep in between must not drop it."""
    sale = f"{uid}-s"
    outbox = K.sale_keys(sale).outbox
    await redis.sadd(K.SALES_REGISTRY, sale)
    await redis.sadd(K.OUTBOX_REGISTRY, outbox)
    reaper = Reaper(redis, inventory, 50, store=store, retain_ms=1000)
    assert await reaper.retire(sale) is RetireCode.GONE
    assert await redis.sismember(K.SALES_REGISTRY, sale) and await redis.sismember(K.OUTBOX_REGISTRY, outbox)
    now = await inventory.now_ms()
    spec = SaleSpec(sale_id=sale, room_id=f"{uid}-r", sku="sku-1", unit_price=100, currency="EUR", allocated=3,
                    per_user_limit=1, starts_at_ms=now - 1000, ends_at_ms=now + 600_000, hold_ttl_ms=60_000)
    assert (await inventory.arm(spec)).ok
    assert await reaper.retire(sale) is RetireCode.OPEN
    assert await redis.sismember(K.SALES_REGISTRY, sale) and await redis.sismember(K.OUTBOX_REGISTRY, outbox)


async def test_open_sale_is_not_retired(inventory: Inventory, redis: Redis, store: Store, uid: str,
                                        drop_test_sales: None) -> None:
    now = await inventory.now_ms()
    sale = f"{uid}-s"
    spec = SaleSpec(sale_id=sale, room_id=f"{uid}-r", sku="sku-1", unit_price=100, currency="EUR", allocated=3,
                    per_user_limit=1, starts_at_ms=now - 1000, ends_at_ms=now + 600_000, hold_ttl_ms=60_000)
    assert (await inventory.arm(spec)).ok
    reaper = Reaper(redis, inventory, 50, store=store, retain_ms=1000)
    await reaper.sweep()
    assert await reaper.retire(sale) is RetireCode.OPEN
    assert (await ttls(redis, [K.sale_keys(sale).sale]))[0] == -1
    assert await redis.sismember(K.SALES_REGISTRY, sale)


async def test_ended_room_expires_and_a_live_room_stays(api: Api, settings: Settings, redis: Redis, store: Store,
                                                       uid: str) -> None:
    host = host_token(settings.secret)
    ended, live = f"{uid}-a", f"{uid}-b"
    commerce = api.client.app[COMMERCE]
    for room in (ended, live):
        await setup_room(api, host, room, products=1)
        await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {})
        await commerce.chat.like(room, 3)
        await commerce.bus.comment(room, {"id": f"c-{room}", "user": "u1", "name": "Ana", "text": "hi", "ts": 1})
        commerce.funnel.count(room, "tapped")
    await commerce.funnel.flush()
    for room in (ended, live):  # every key of an active room carries the room window (30 s here)
        assert all(1000 < t <= 30_000 for t in await ttls(redis, room_key_list(room)) if t != -2)
    await api.ok("POST", f"/api/rooms/{ended}/actions/end_live", host, {})

    row = await until(lambda: archive.get_room(store, ended), 5, "the room archive")
    assert (row.likes, row.tapped, row.reserved, row.paid) == (3, 1, 0, 0)
    assert row.events >= 3  # room_updated, product_added, room_status x2
    assert [c["id"] for c in orjson.loads(row.comments)] == [f"c-{ended}"]
    assert all(t <= 1000 for t in await ttls(redis, room_key_list(ended)))
    await until(lambda: _gone(redis, room_key_list(ended)), 10, "the ended room's keys to expire")
    # the live room keeps its keys (its window is the room window, refreshed by activity)
    assert await existing(redis, room_key_list(live)) >= 5
    await commerce.chat.like(live, 1)
    assert (await ttls(redis, [K.room_keys(live).likes]))[0] > 20_000
    room = await api.ok("GET", f"/api/rooms/{ended}")
    assert room["status"] == "ended"
    dash = await api.ok("GET", f"/api/rooms/{ended}/dashboard", host)  # from the archive now
    assert dash["requests"]["tapped"] == 1 and dash["likes"] == 3, dash


async def test_idle_room_disappears(aiohttp_client: Any, settings: Settings, redis: Redis, uid: str) -> None:
    client = await aiohttp_client(create_app(_app_settings(settings, retain_ended_s=1, retain_room_s=1)))
    api = Api(client)
    host = host_token(settings.secret)
    room = f"{uid}-idle"
    await setup_room(api, host, room, products=1)
    assert await existing(redis, room_key_list(room)) >= 1
    await until(lambda: _gone(redis, room_key_list(room)), 10, "an unused room's keys to expire")
    assert (await api.ok("GET", f"/api/rooms/{room}"))["room_id"] == room  # SQL keeps the room
