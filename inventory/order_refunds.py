"""Refunds of settled orders in SQL (``order_refunds``): one row per refunded order, ever.

The row is the refund's record and its progress: ``recorded`` (the order is refunded from now on;
its units are on their way back to the pool when ``restock``) -> ``done`` (the units are back in the
pool, once, under the transfer id ``refund_restock:<order id>``, and the buyer's money is on its way
through the provider's refund when the order was paid through one). A process that stops between the
two leaves a ``recorded`` row that ``unfinished`` returns, so the refund is finished by whoever looks
next; every step is idempotent, so finishing twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .growth import reverse_commission
from .store import Store, metadata, orders

__all__ = ["OrderRefund", "OrderRefundStore", "order_refunds"]

order_refunds = Table(
    "order_refunds", metadata,
    Column("order_id", String(128), primary_key=True),  # at most one refund per order
    Column("sale_id", String(64), nullable=False),
    Column("pool_id", String(64), nullable=False, default=""),
    Column("user_id", String(128), nullable=False),
    Column("units", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("restock", Boolean, nullable=False),
    Column("reason", String(200), nullable=False, default=""),
    Column("refunded_by", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # recorded | done
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Index("ix_order_refunds_state", "state", "updated_at_ms"),
)


@dataclass(frozen=True, slots=True)
class OrderRefund:
    order_id: str
    sale_id: str
    pool_id: str
    user_id: str
    units: int
    amount: int
    currency: str
    restock: bool
    reason: str
    refunded_by: str
    state: str
    created_at_ms: int
    updated_at_ms: int


def _rec(row: Any) -> OrderRefund:
    return OrderRefund(**{f.name: row._mapping[f.name] for f in dataclasses.fields(OrderRefund)})


class OrderRefundStore:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = sqlite.insert if self.engine.dialect.name == "sqlite" else postgresql.insert

    async def record(self, r: OrderRefund) -> tuple[bool, OrderRefund]:
        """Insert the refund; (False, the stored one) when this order was refunded before."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(order_refunds).values(dataclasses.asdict(r))
                                      .on_conflict_do_nothing(index_elements=[order_refunds.c.order_id])
                                      .returning(order_refunds.c.order_id))).first()
            if got is not None:  # the order's share commission is reversed with the refund, in its transaction
                await reverse_commission(conn, r.order_id, int(time.time() * 1000))
            row = (await conn.execute(select(order_refunds).where(order_refunds.c.order_id == r.order_id))).first()
        assert row is not None
        return got is not None, _rec(row)

    async def get(self, order_id: str) -> OrderRefund | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(order_refunds).where(order_refunds.c.order_id == order_id))).first()
        return None if row is None else _rec(row)

    async def refunded_among(self, order_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(order_ids))
        if not ids:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(order_refunds.c.order_id).where(order_refunds.c.order_id.in_(ids)))
            return {str(r[0]) for r in rows}

    async def mark_done(self, order_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(order_refunds)
                               .where(order_refunds.c.order_id == order_id, order_refunds.c.state == "recorded")
                               .values(state="done", updated_at_ms=int(time.time() * 1000)))

    async def unfinished(self, before_ms: int, limit: int = 100) -> list[OrderRefund]:
        q = (select(order_refunds).where(order_refunds.c.state == "recorded", order_refunds.c.updated_at_ms < before_ms)
             .order_by(order_refunds.c.updated_at_ms).limit(limit))
        async with self.engine.connect() as conn:
            return [_rec(r) for r in await conn.execute(q)]

    async def restocked_units(self, pool_id: str, before_ms: int | None = None) -> int:
        """Units of this pool's refunded orders put back (finished or not; refunded before ``before_ms``):
        what the pool's ``restocked`` counter must reach."""
        from sqlalchemy import func

        q = select(func.coalesce(func.sum(order_refunds.c.units), 0)).where(
            order_refunds.c.pool_id == pool_id, order_refunds.c.restock.is_(True))
        if before_ms is not None:
            q = q.where(order_refunds.c.created_at_ms < before_ms)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())


async def user_totals(store: Store, user_id: str) -> dict[str, dict[str, int]]:
    """A buyer's settled orders per currency: ``{currency: {orders, units, spent, refunded, net}}``
    (``spent``: the totals of every settled order; ``refunded``: of those refunded since)."""
    from sqlalchemy import case, func

    refunded = case((order_refunds.c.order_id.is_not(None), orders.c.total), else_=0)
    q = (select(orders.c.currency, func.count(), func.sum(orders.c.qty), func.sum(orders.c.total), func.sum(refunded))
         .select_from(orders.outerjoin(order_refunds, order_refunds.c.order_id == orders.c.order_id))
         .where(orders.c.user_id == user_id).group_by(orders.c.currency))
    async with store.engine.connect() as conn:
        out = {}
        for currency, n, units, spent, back in await conn.execute(q):
            out[str(currency)] = {"orders": int(n), "units": int(units or 0), "spent": int(spent or 0),
                                  "refunded": int(back or 0), "net": int(spent or 0) - int(back or 0)}
        return out
