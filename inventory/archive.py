"""What SQL keeps of a sale and of a room once their Redis keys expire (bounded memory, issue 11).

SQL already holds every room, product, sale (its terms) and settled order. What only Redis knew is
copied here before the keys get their retention TTL:

- ``sale_archive``: a sale's final counters (sold, unsold, expired and released units, holds, buyers,
  reserve requests) and its final ``ends_at`` (earlier than ``sales.ends_at_ms`` when the host
  stopped it or ended the live). Written by the reaper (``inventory/reaper.py``) once the sale is
  settled, just before ``retire.lua`` gives its keys a TTL.
- ``room_archive``: a room's likes, funnel counters (tapped / reserved / paid), the number of
  sequenced events and the last comments. Written when the host ends the live, and again when one
  of the room's sales retires after that (late payments still count in the funnel).

The tables are defined on ``inventory.store.metadata``; ``Store.open`` creates them. Both are
upserts by primary key (idempotent: a repeated archive overwrites the row with the same values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, String, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata

__all__ = ["SaleArchive", "RoomArchive", "save_sale", "get_sale", "save_room", "get_room",
           "sale_archive", "room_archive"]

sale_archive = Table(
    "sale_archive", metadata,
    Column("sale_id", String(64), primary_key=True),
    Column("room_id", String(64), nullable=False),
    Column("allocated", BigInteger, nullable=False),
    Column("sold", BigInteger, nullable=False),
    Column("unsold", BigInteger, nullable=False),
    Column("expired_units", BigInteger, nullable=False),
    Column("released_units", BigInteger, nullable=False),
    Column("holds", BigInteger, nullable=False),
    Column("buyers", BigInteger, nullable=False),
    Column("reserve_requests", BigInteger, nullable=False),
    Column("ends_at_ms", BigInteger, nullable=False),
    Column("archived_at_ms", BigInteger, nullable=False),
)

room_archive = Table(
    "room_archive", metadata,
    Column("room_id", String(64), primary_key=True),
    Column("likes", BigInteger, nullable=False),
    Column("tapped", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("paid", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("comments", Text, nullable=False),
    Column("archived_at_ms", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class SaleArchive:
    sale_id: str
    room_id: str
    allocated: int
    sold: int
    unsold: int
    expired_units: int
    released_units: int
    holds: int
    buyers: int
    reserve_requests: int
    ends_at_ms: int
    archived_at_ms: int


@dataclass(frozen=True, slots=True)
class RoomArchive:
    room_id: str
    likes: int
    tapped: int
    reserved: int
    paid: int
    events: int
    comments: str  # JSON array of the last comments kept in Redis, oldest first
    archived_at_ms: int


def _insert(store: Store) -> Any:
    return sqlite.insert if store.engine.dialect.name == "sqlite" else postgresql.insert


async def _upsert(store: Store, table: Table, key: str, row: dict[str, Any]) -> None:
    stmt = _insert(store)(table).values(row)
    stmt = stmt.on_conflict_do_update(index_elements=[table.c[key]],
                                      set_={c: stmt.excluded[c] for c in row if c != key})
    async with store.engine.begin() as conn:
        await conn.execute(stmt)


async def _get(store: Store, table: Table, key: str, value: str, cls: type) -> Any:
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(table).where(table.c[key] == value))).first()
    if row is None:
        return None
    return cls(**{f.name: row._mapping[f.name] for f in dataclasses.fields(cls)})


async def save_sale(store: Store, rec: SaleArchive) -> None:
    await _upsert(store, sale_archive, "sale_id", dataclasses.asdict(rec))


async def get_sale(store: Store, sale_id: str) -> SaleArchive | None:
    found: SaleArchive | None = await _get(store, sale_archive, "sale_id", sale_id, SaleArchive)
    return found


async def save_room(store: Store, rec: RoomArchive) -> None:
    await _upsert(store, room_archive, "room_id", dataclasses.asdict(rec))


async def get_room(store: Store, room_id: str) -> RoomArchive | None:
    found: RoomArchive | None = await _get(store, room_archive, "room_id", room_id, RoomArchive)
    return found
