"""Polls in SQL: the final result of each closed poll (``polls``), written once when it closes.

While a poll is open (and for the rooms' retention window after it closes) it lives in Redis
(``keys.poll_keys``, decided by ``commerce/lua/poll_*.lua``); this row is what stays: ``GET
/api/polls/{poll}`` reads it after Redis forgets the poll. One row per poll id, ever (primary key):
two processes closing the same poll insert one row, the second insert does nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, select
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata

__all__ = ["PollRecord", "PollStore", "polls"]

polls = Table(
    "polls", metadata,
    Column("poll_id", String(40), primary_key=True),  # unique across rooms
    Column("room_id", String(64), nullable=False),
    Column("question", Text, nullable=False),
    Column("options", Text, nullable=False),        # JSON list of the option texts
    Column("counts", Text, nullable=False),         # JSON list: the final votes per option
    Column("total", Integer, nullable=False),
    Column("opened_at_ms", BigInteger, nullable=False),
    Column("ends_at_ms", BigInteger, nullable=False),
    Column("closed_at_ms", BigInteger, nullable=False),
    Index("ix_polls_room", "room_id"),
)


@dataclass(frozen=True, slots=True)
class PollRecord:
    poll_id: str
    room_id: str
    question: str
    options: str   # JSON text
    counts: str    # JSON text
    total: int
    opened_at_ms: int
    ends_at_ms: int
    closed_at_ms: int


def _rec(row: Any) -> PollRecord:
    return PollRecord(**{f.name: row._mapping[f.name] for f in dataclasses.fields(PollRecord)})


class PollStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def record(self, rec: PollRecord) -> bool:
        """True when the result is written now (False: it was before; nothing changes)."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(polls).values(dataclasses.asdict(rec))
                                      .on_conflict_do_nothing(index_elements=[polls.c.poll_id])
                                      .returning(polls.c.poll_id))).first()
        return got is not None

    async def get(self, poll_id: str) -> PollRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(polls).where(polls.c.poll_id == poll_id))).first()
        return None if row is None else _rec(row)

    async def of_room(self, room_id: str, limit: int = 200) -> list[PollRecord]:
        """The room's closed polls, newest first."""
        q = (select(polls).where(polls.c.room_id == room_id)
             .order_by(polls.c.closed_at_ms.desc(), polls.c.poll_id).limit(limit))
        async with self.engine.connect() as conn:
            return [_rec(r) for r in await conn.execute(q)]
