"""Lucky draws in SQL (``draws``): the terms when a draw opens, then its published result.

While a draw is open and for the rooms' retention window after it, it lives in Redis
(``keys.draw_keys``, decided by ``commerce/lua/draw_*.lua``); this row is what stays, and what
``GET /api/draws/{draw}`` and ``GET /api/draws/{draw}/entrants`` read once Redis forgot the draw. The
row is written when the draw opens (``seed`` and ``list_hash`` empty: the seed is secret until the
draw), completed when it is drawn and updated at each redraw round; every write is idempotent (two
processes writing the same result write the same values). The per-draw mask key of the entrants' ids
is never written here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata, orders

__all__ = ["DrawRecord", "DrawStore", "draws", "PRIZE_SALE_MARK"]

PRIZE_SALE_MARK = "--d-"  # in the id of a draw's prize sale, "<pool>--d-<draw>" (commerce/draws.py)

draws = Table(
    "draws", metadata,
    Column("draw_id", String(40), primary_key=True),  # unique across rooms
    Column("room_id", String(64), nullable=False),
    Column("title", String(256), nullable=False),
    Column("prize", Text, nullable=False),            # JSON: {pool, units} or {coupon: {...}}
    Column("rule", Text, nullable=False),             # JSON: the entry rule's parts
    Column("k", Integer, nullable=False),             # winners
    Column("pay_within_s", Integer, nullable=False),
    Column("commitment", String(64), nullable=False),  # hex SHA-256 of the seed
    Column("seed", String(64), nullable=False, default="", server_default=""),       # hex, once drawn
    Column("list_hash", String(64), nullable=False, default="", server_default=""),  # hex, once drawn
    Column("entrants", Text, nullable=False, default="[]", server_default="[]"),     # JSON: sorted entry ids
    Column("winner_ids", Text, nullable=False, default="[]", server_default="[]"),   # JSON: the first k
    Column("redraws", Text, nullable=False, default="[]", server_default="[]"),      # JSON: [{round, replaced, added}]
    Column("state", String(8), nullable=False),       # open | drawn
    Column("opened_at_ms", BigInteger, nullable=False),
    Column("entry_until_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("drawn_at_ms", BigInteger, nullable=False, default=0, server_default="0"),
    Index("ix_draws_room", "room_id"),
)


@dataclass(frozen=True, slots=True)
class DrawRecord:
    draw_id: str
    room_id: str
    title: str
    prize: str        # JSON text
    rule: str         # JSON text
    k: int
    pay_within_s: int
    commitment: str
    seed: str
    list_hash: str
    entrants: str     # JSON text
    winner_ids: str   # JSON text
    redraws: str      # JSON text
    state: str
    opened_at_ms: int
    entry_until_ms: int
    created_at_ms: int
    drawn_at_ms: int


def _rec(row: Any) -> DrawRecord:
    return DrawRecord(**{f.name: row._mapping[f.name] for f in dataclasses.fields(DrawRecord)})


class DrawStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def add(self, rec: DrawRecord) -> DrawRecord:
        """Insert the opened draw; the row already stored when its id exists (nothing changes)."""
        async with self.engine.begin() as conn:
            await conn.execute(self._insert(draws).values(dataclasses.asdict(rec))
                               .on_conflict_do_nothing(index_elements=[draws.c.draw_id]))
            row = (await conn.execute(select(draws).where(draws.c.draw_id == rec.draw_id))).first()
        assert row is not None
        return _rec(row)

    async def drawn(self, draw_id: str, seed: str, list_hash: str, entrants: str, winner_ids: str,
                    drawn_at_ms: int) -> None:
        """The draw's result (idempotent: the same result is written again unchanged)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(draws).where(draws.c.draw_id == draw_id).values(
                seed=seed, list_hash=list_hash, entrants=entrants, winner_ids=winner_ids, state="drawn",
                drawn_at_ms=drawn_at_ms))

    async def redrawn(self, draw_id: str, redraws: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(draws).where(draws.c.draw_id == draw_id).values(redraws=redraws))

    async def get(self, draw_id: str) -> DrawRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(draws).where(draws.c.draw_id == draw_id))).first()
        return None if row is None else _rec(row)

    async def paid_in_room(self, user_id: str, room_id: str) -> bool:
        """Whether the user has a settled order in the room (a draw's prize does not count)."""
        q = (select(orders.c.order_id).where(orders.c.user_id == user_id, orders.c.room_id == room_id,
                                             ~orders.c.sale_id.contains(PRIZE_SALE_MARK, autoescape=True))
             .limit(1))
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).first() is not None
