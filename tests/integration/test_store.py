"""Store against the real database (SQLite by default, PostgreSQL with DATABASE_URL)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inventory.store import (
    OrderRecord, Store, ProductRecord, RoomRecord, SaleConflict, SaleRecord, async_url,
)


def order(uid: str, n: int, *, qty: int = 2, price: int = 1999, user: str = "alice", currency: str = "EUR",
          confirmed_at: int = 1_700_000_000_000) -> OrderRecord:
    return OrderRecord(
        order_id=f"{uid}-s.{n:04d}", sale_id=f"{uid}-s", room_id=f"{uid}-r", sku="sku-1", user_id=user, qty=qty,
        unit_price=price, total=qty * price, currency=currency, payment_ref=f"pay-{n}",
        reserved_at_ms=confirmed_at - 500, confirmed_at_ms=confirmed_at, settled_at_ms=confirmed_at + 10,
        stream_id=f"{confirmed_at}-{n}",
    )


def test_async_url() -> None:
    assert async_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert async_url("postgresql://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    assert async_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize("fresh", [True, False])
async def test_open_concurrently_is_safe(database_url: str, tmp_path: Path, fresh: bool) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if fresh else database_url
    stores = await asyncio.gather(*(Store.open(url) for _ in range(6)))
    assert await stores[0].sold_units("nothing") == 0
    for s in stores:
        await s.close()


async def test_insert_new_orders_is_idempotent(store: Store, uid: str) -> None:
    batch = [order(uid, i, qty=1 + i % 3) for i in range(25)]
    assert len(await store.insert_new_orders(batch)) == 25
    assert len(await store.insert_new_orders(batch)) == 0
    # overlap: 5 old + 5 new, and a duplicate inside one batch
    more = batch[20:] + [order(uid, i) for i in range(25, 30)] + [order(uid, 25)]
    assert len(await store.insert_new_orders(more)) == 5
    assert len(await store.insert_new_orders([])) == 0
    rows = await store.orders_for_room(f"{uid}-r", limit=1000)
    assert len(rows) == 30
    assert len({r.order_id for r in rows}) == 30
    assert await store.sold_units(f"{uid}-s") == sum(1 + i % 3 for i in range(25)) + 5 * 2
    got = await store.get_order(batch[3].order_id)
    assert got == batch[3]
    assert await store.get_order(f"{uid}-missing") is None


async def test_insert_new_orders_large_batch_one_transaction(store: Store, uid: str) -> None:
    batch = [order(uid, i, qty=1) for i in range(1234)]  # more than one INSERT chunk
    assert len(await store.insert_new_orders(batch)) == 1234
    assert len(await store.insert_new_orders(batch)) == 0
    assert await store.sold_units(f"{uid}-s") == 1234


async def test_order_queries(store: Store, uid: str) -> None:
    t0 = 1_700_000_020_000  # 40 s into a minute
    await store.insert_new_orders([
        order(uid, 1, qty=1, price=1000, user="alice", confirmed_at=t0),
        order(uid, 2, qty=2, price=1000, user="bob", confirmed_at=t0 + 5_000),
        order(uid, 3, qty=3, price=500, user="alice", confirmed_at=t0 + 30_000),       # next minute
        order(uid, 4, qty=1, price=700, user="carol", currency="USD", confirmed_at=t0 + 90_000),
    ])
    room = f"{uid}-r"
    assert await store.room_totals(room) == (4, 7, {"EUR": 1000 + 2000 + 1500, "USD": 700})
    assert await store.room_totals(f"{uid}-nothing") == (0, 0, {})
    minute = t0 - t0 % 60_000
    assert await store.orders_per_minute(room, 0) == [
        (minute, 2, 3000), (minute + 60_000, 1, 1500), (minute + 120_000, 1, 700),
    ]
    assert await store.orders_per_minute(room, t0 + 1) == [
        (minute, 1, 2000), (minute + 60_000, 1, 1500), (minute + 120_000, 1, 700),
    ]
    assert [o.order_id for o in await store.orders_for_room(room, limit=2)] == [f"{uid}-s.0004", f"{uid}-s.0003"]
    assert await store.sold_units(f"{uid}-nothing") == 0


async def test_rooms_crud(store: Store, uid: str) -> None:
    room = RoomRecord(room_id=f"{uid}-r", title="Spring drop", host_id="host-1", player_url="https://cdn/x.m3u8",
                      status="scheduled", created_at_ms=1000, updated_at_ms=1000)
    assert await store.get_room(room.room_id) is None
    await store.upsert_room(room)
    assert await store.get_room(room.room_id) == room
    changed = dataclasses.replace(room, title="Spring drop!", status="live", created_at_ms=5000, updated_at_ms=2000)
    await store.upsert_room(changed)
    assert await store.get_room(room.room_id) == dataclasses.replace(changed, created_at_ms=1000)  # created kept
    assert await store.set_room_status(room.room_id, "ended", at_ms=3000) is True
    got = await store.get_room(room.room_id)
    assert got is not None and got.status == "ended" and got.updated_at_ms == 3000
    assert await store.set_room_status(f"{uid}-none", "live") is False
    with pytest.raises(ValueError):
        await store.set_room_status(room.room_id, "paused")
    with pytest.raises(ValueError):
        await store.upsert_room(dataclasses.replace(room, status="bogus"))
    other = dataclasses.replace(room, room_id=f"{uid}-r2", status="live", created_at_ms=4000)
    await store.upsert_room(other)
    ids = [r.room_id for r in await store.list_rooms(limit=10_000)]
    assert room.room_id in ids and other.room_id in ids
    assert ids.index(other.room_id) < ids.index(room.room_id)  # newest first
    live = [r.room_id for r in await store.list_rooms(status="live", limit=10_000)]
    assert other.room_id in live and room.room_id not in live


async def test_products_crud(store: Store, uid: str) -> None:
    room = f"{uid}-r"
    p1 = ProductRecord(room, "p1", "sku-1", "Lipstick", "Red", "https://img/1.png", 1999, "EUR")
    p2 = ProductRecord(room, "p2", "sku-2", "Serum", "", "", 4500, "EUR")
    await store.upsert_product(p2)
    await store.upsert_product(p1)
    assert await store.list_products(room) == [p1, p2]
    p1b = dataclasses.replace(p1, title="Lipstick (new)", unit_price=1799)
    await store.upsert_product(p1b)
    assert await store.get_product(room, "p1") == p1b
    assert await store.get_product(room, "nope") is None
    assert await store.list_products(f"{uid}-other") == []


async def test_sales_idempotent_and_conflict(store: Store, uid: str) -> None:
    sale = SaleRecord(sale_id=f"{uid}-s", room_id=f"{uid}-r", product_id="p1", sku="sku-1", title="Flash",
                      unit_price=999, currency="EUR", allocated=100, per_user_limit=2, starts_at_ms=1000,
                      ends_at_ms=61_000, hold_ttl_ms=300_000, created_at_ms=500)
    assert await store.insert_sale(sale) is True
    assert await store.insert_sale(dataclasses.replace(sale, created_at_ms=900)) is False  # same content
    with pytest.raises(SaleConflict):
        await store.insert_sale(dataclasses.replace(sale, allocated=101))
    assert await store.get_sale(sale.sale_id) == sale
    assert await store.get_sale(f"{uid}-none") is None
    later = dataclasses.replace(sale, sale_id=f"{uid}-s2", starts_at_ms=2000, ends_at_ms=62_000)
    await store.insert_sale(later)
    assert await store.list_sales(sale.room_id) == [sale, later]
