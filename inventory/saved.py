"""Products a viewer saved for later (``saved_items``): no stock taken, an interest signal.

One row per (user, room, product): saving again keeps the first ``saved_at_ms``; unsaving deletes it.
Hosts see how many viewers saved each product of their room (the dashboard's ``saved``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Index, PrimaryKeyConstraint, String, Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata

__all__ = ["SavedItem", "SavedStore", "saved_items", "MAX_SAVED"]

MAX_SAVED = 500  # saved products per viewer

saved_items = Table(
    "saved_items", metadata,
    Column("user_id", String(128), nullable=False),
    Column("room_id", String(64), nullable=False),
    Column("product_id", String(128), nullable=False),
    Column("saved_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "room_id", "product_id", name="pk_saved_items"),
    Index("ix_saved_items_room", "room_id", "product_id"),
)


@dataclass(frozen=True, slots=True)
class SavedItem:
    user_id: str
    room_id: str
    product_id: str
    saved_at_ms: int


class SavedStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def save(self, item: SavedItem) -> bool:
        """True when saved now (False: it was saved before; nothing changes)."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(saved_items).values(
                user_id=item.user_id, room_id=item.room_id, product_id=item.product_id, saved_at_ms=item.saved_at_ms)
                .on_conflict_do_nothing().returning(saved_items.c.user_id))).first()
        return got is not None

    async def unsave(self, user_id: str, room_id: str, product_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(saved_items).where(
                saved_items.c.user_id == user_id, saved_items.c.room_id == room_id,
                saved_items.c.product_id == product_id))
        return bool(done.rowcount)

    async def count(self, user_id: str) -> int:
        q = select(func.count()).select_from(saved_items).where(saved_items.c.user_id == user_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def of_user(self, user_id: str, limit: int = MAX_SAVED) -> list[SavedItem]:
        q = (select(saved_items).where(saved_items.c.user_id == user_id)
             .order_by(saved_items.c.saved_at_ms.desc()).limit(limit))
        async with self.engine.connect() as conn:
            return [SavedItem(r.user_id, r.room_id, r.product_id, r.saved_at_ms) for r in await conn.execute(q)]

    async def counts_for_room(self, room_id: str) -> dict[str, int]:
        q = (select(saved_items.c.product_id, func.count()).where(saved_items.c.room_id == room_id)
             .group_by(saved_items.c.product_id))
        async with self.engine.connect() as conn:
            return {str(p): int(n) for p, n in await conn.execute(q)}
