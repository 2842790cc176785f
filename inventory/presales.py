"""Pre-sales in SQL: what happened to each deposit whose balance was not paid (``deposit_outcomes``).

A pre-sale's hold is paid twice: a deposit (``confirm.lua`` makes the hold ``deposit``; its units stay
held) and, once the balance window opens, the balance (the hold is confirmed and settles as an order
of the full price). A hold whose balance window closes unpaid is expired by ``reap.lua`` (its units go
back, and to the pool once its sale has ended) and reported to the reaper, which records here, once per
hold (primary key), what the sale's rule did with the deposit: ``refunded`` or ``kept``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from .store import Store, metadata

__all__ = ["DepositOutcome", "DepositStore", "deposit_outcomes"]

deposit_outcomes = Table(
    "deposit_outcomes", metadata,
    Column("hold_id", String(128), primary_key=True),  # one outcome per deposit, ever
    Column("sale_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),       # the deposit: per-unit deposit x qty
    Column("currency", String(3), nullable=False),
    Column("rule", String(8), nullable=False),          # refund | keep
    Column("outcome", String(16), nullable=False),      # refunded | kept
    Column("deposit_ref", String(128), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_deposit_outcomes_sale", "sale_id"),
)


@dataclass(frozen=True, slots=True)
class DepositOutcome:
    hold_id: str
    sale_id: str
    user_id: str
    qty: int
    amount: int
    currency: str
    rule: str
    outcome: str
    deposit_ref: str
    at_ms: int


def _rec(row: Any) -> DepositOutcome:
    return DepositOutcome(**{f.name: row._mapping[f.name] for f in dataclasses.fields(DepositOutcome)})


class DepositStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def record(self, o: DepositOutcome) -> bool:
        """True when this deposit's outcome is recorded now (False: it was before)."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(deposit_outcomes).values(dataclasses.asdict(o))
                                      .on_conflict_do_nothing(index_elements=[deposit_outcomes.c.hold_id])
                                      .returning(deposit_outcomes.c.hold_id))).first()
        return got is not None

    async def of_sale(self, sale_id: str) -> list[DepositOutcome]:
        q = select(deposit_outcomes).where(deposit_outcomes.c.sale_id == sale_id).order_by(deposit_outcomes.c.hold_id)
        async with self.engine.connect() as conn:
            return [_rec(r) for r in await conn.execute(q)]

    async def get(self, hold_id: str) -> DepositOutcome | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(deposit_outcomes).where(deposit_outcomes.c.hold_id == hold_id))).first()
        return None if row is None else _rec(row)
