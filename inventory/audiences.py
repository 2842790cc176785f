"""Interest audiences: rules over the ``signals`` table, compiled to ONE SQL query (SQLAlchemy Core,
SQLite and PostgreSQL alike), and the ``audiences`` table that keeps their definitions.

An audience is a list of conditions that must all hold (AND). A condition (``Cond``) selects the
viewer's signals of one kind (``signal``), narrowed by ``sku`` / ``product`` / ``room`` / ``sale`` /
``ref`` / ``detail`` and by age (``within_days``), and holds for a viewer who has at least
``min_count`` of them whose ``value`` sums to at least ``min_value``; with ``absent`` it holds for a
viewer who does NOT meet it. ``held_unpaid`` selects the ``held`` signals whose hold was not paid:
no ``orders`` row has the hold id nor a ``paid`` signal names it, and the pay-by (the signal's ``value``) is more than
``PAY_GRACE_MS`` in the past or the viewer released the hold. Anonymous viewers (``b:`` / ``s:``
ids) are never members: nobody can reach them.

The compiled query answers ``user_id, signals, last_at`` per member (``signals`` / ``last_at``: the
count and newest time of the matching signals of the first condition without ``absent``), ordered
by ``user_id``; ``after`` and ``limit`` page it by key, ``user`` narrows it to one viewer (pushed into
every condition's subquery, so it reads that viewer's rows only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger, Column, ColumnElement, Index, Select, String, Table, Text, and_, delete, exists, func, literal, or_,
    select,
)

from .signal_log import SignalKind, signals
from .store import Store, metadata, orders, products

__all__ = ["Cond", "AudienceRecord", "AudienceStore", "audiences", "members_query", "HELD_UNPAID", "RULE_KINDS",
           "PAY_GRACE_MS", "ANONYMOUS_PREFIXES", "MAX_CONDS"]

HELD_UNPAID = "held_unpaid"
RULE_KINDS = tuple(k.value for k in SignalKind) + (HELD_UNPAID,)
PAY_GRACE_MS = 10_000               # a payment confirmed just before its pay-by: its `paid` signal is in SQL by then
ANONYMOUS_PREFIXES = ("b:", "s:")   # per-browser and per-session ids: not reachable, never members
MAX_CONDS = 10
DAY_MS = 86_400_000

audiences = Table(
    "audiences", metadata,
    Column("audience_id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("owner_role", String(16), nullable=False),   # merchant | host
    Column("name", String(200), nullable=False),
    Column("rules", Text, nullable=False),               # JSON: the normalised conditions
    Column("created_at_ms", BigInteger, nullable=False),
    Index("ix_audiences_owner", "owner", "owner_role"),
)


@dataclass(frozen=True, slots=True)
class Cond:
    """One condition of an audience (validated by commerce/audiences.py)."""
    signal: str
    sku: str | None = None
    product: str | None = None
    room: str | None = None
    sale: str | None = None
    ref: str | None = None
    detail: str | None = None
    within_days: int | None = None
    min_count: int = 1
    min_value: int | None = None
    absent: bool = False

    def wire(self) -> dict[str, Any]:
        """The normalised JSON form: ``signal`` plus only the fields that narrow it."""
        out: dict[str, Any] = {"signal": self.signal}
        for name in ("sku", "product", "room", "sale", "ref", "detail", "within_days", "min_value"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        if self.min_count != 1:
            out["min_count"] = self.min_count
        if self.absent:
            out["absent"] = True
        return out

    @classmethod
    def of(cls, d: dict[str, Any]) -> Cond:
        return cls(**d)


@dataclass(frozen=True, slots=True)
class AudienceRecord:
    audience_id: str
    owner: str
    owner_role: str
    name: str
    rules: tuple[Cond, ...]
    created_at_ms: int

    def rules_json(self) -> str:
        return orjson.dumps([c.wire() for c in self.rules]).decode()


def _reachable(user: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(*[~user.startswith(p) for p in ANONYMOUS_PREFIXES])


def sku_matches(s: Any, sku: str) -> ColumnElement[bool]:
    """A signal about ``sku``: its own ``sku`` (the sink fills it for signals naming a sale), or the
    SKU of the room's product it names (``watched``, ``viewed``, ``saved`` name a product, no sale)."""
    of_product = exists(select(literal(1)).where(products.c.room_id == s.c.room_id,
                                                 products.c.product_id == s.c.product_id, products.c.sku == sku))
    return or_(s.c.sku == sku, and_(s.c.sku == "", s.c.product_id != "", of_product))


def _grouped(c: Cond, i: int, now_ms: int, user: str | None, after: str | None) -> Select[Any]:
    """Per viewer meeting ``c`` (ignoring ``absent``): ``user_id, n, total, last``."""
    s = signals.alias(f"s{i}")
    unpaid = c.signal == HELD_UNPAID
    where: list[ColumnElement[bool]] = [s.c.kind == (SignalKind.HELD.value if unpaid else c.signal),
                                        _reachable(s.c.user_id)]
    if user is not None:
        where.append(s.c.user_id == user)
    if after is not None:
        where.append(s.c.user_id > after)
    if c.sku is not None:
        where.append(sku_matches(s, c.sku))
    for name, col in (("product", s.c.product_id), ("room", s.c.room_id), ("sale", s.c.sale_id), ("ref", s.c.ref),
                      ("detail", s.c.detail)):
        v = getattr(c, name)
        if v is not None:
            where.append(col == v)
    if c.within_days is not None:
        where.append(s.c.at_ms >= now_ms - c.within_days * DAY_MS)
    if unpaid:
        r = signals.alias(f"r{i}")
        released = exists(select(literal(1)).where(r.c.kind == SignalKind.RELEASED.value, r.c.user_id == s.c.user_id,
                                                   r.c.ref == s.c.ref))
        where.append(or_(s.c.value + PAY_GRACE_MS <= now_ms, released))
        where.append(~exists(select(literal(1)).where(orders.c.order_id == s.c.ref)))
        p = signals.alias(f"p{i}")  # paid and not settled yet (settlement behind): not unpaid either
        where.append(~exists(select(literal(1)).where(p.c.kind == SignalKind.PAID.value, p.c.user_id == s.c.user_id,
                                                      p.c.ref == s.c.ref)))
    total = func.coalesce(func.sum(s.c.value), 0)
    q = (select(s.c.user_id.label("user_id"), func.count().label("n"), total.label("total"),
                func.max(s.c.at_ms).label("last"))
         .where(*where).group_by(s.c.user_id))
    having: list[ColumnElement[bool]] = []
    if c.min_count > 1:
        having.append(func.count() >= c.min_count)
    if c.min_value is not None:
        having.append(total >= c.min_value)
    if having:
        q = q.having(and_(*having))
    return q


def members_query(rules: Sequence[Cond], now_ms: int, *, user: str | None = None, after: str | None = None,
                  limit: int | None = None) -> Select[Any]:
    """The members of an audience as ONE query: ``user_id, signals, last_at``, ordered by ``user_id``."""
    positive = [(i, c) for i, c in enumerate(rules) if not c.absent]
    if not positive:
        raise ValueError("an audience needs a condition without absent")
    subs = [_grouped(c, i, now_ms, user, after).subquery(f"c{i}") for i, c in positive]
    base = subs[0]
    joined: Any = base
    for sub in subs[1:]:
        joined = joined.join(sub, sub.c.user_id == base.c.user_id)
    q = select(base.c.user_id, base.c.n.label("signals"), base.c.last.label("last_at")).select_from(joined)
    for i, c in enumerate(rules):
        if c.absent:
            without = _grouped(c, i, now_ms, user, after).subquery(f"n{i}")
            q = q.where(base.c.user_id.not_in(select(without.c.user_id)))
    q = q.order_by(base.c.user_id)
    if limit is not None:
        q = q.limit(limit)
    return q


class AudienceStore:
    """The ``audiences`` table and the member queries, over the store's engine."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._insert = store._insert

    async def add(self, rec: AudienceRecord) -> tuple[bool, AudienceRecord]:
        """Insert the audience: ``(True, rec)``; or ``(False, the one already stored under its id)`` (the
        caller compares)."""
        async with self.engine.begin() as conn:
            got = (await conn.execute(self._insert(audiences).values(
                audience_id=rec.audience_id, owner=rec.owner, owner_role=rec.owner_role, name=rec.name,
                rules=rec.rules_json(), created_at_ms=rec.created_at_ms).on_conflict_do_nothing()
                .returning(audiences.c.audience_id))).first()
            if got is not None:
                return True, rec
            row = (await conn.execute(select(audiences).where(audiences.c.audience_id == rec.audience_id))).first()
        assert row is not None
        return False, _record(row)

    async def get(self, audience_id: str) -> AudienceRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(audiences).where(audiences.c.audience_id == audience_id))).first()
        return None if row is None else _record(row)

    async def get_many(self, audience_ids: Sequence[str]) -> list[AudienceRecord]:
        if not audience_ids:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(audiences).where(audiences.c.audience_id.in_(list(audience_ids))))
            return [_record(r) for r in rows]

    async def of_owner(self, owner: str, role: str, limit: int = 1000) -> list[AudienceRecord]:
        q = (select(audiences).where(audiences.c.owner == owner, audiences.c.owner_role == role)
             .order_by(audiences.c.created_at_ms, audiences.c.audience_id).limit(limit))
        async with self.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(q)]

    async def all_ids(self) -> list[str]:
        async with self.engine.connect() as conn:
            return [str(a) for (a,) in await conn.execute(select(audiences.c.audience_id))]

    async def remove(self, audience_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(audiences).where(audiences.c.audience_id == audience_id))
        return bool(done.rowcount)

    # -- members -----------------------------------------------------------------------------------

    async def count(self, rules: Sequence[Cond], now_ms: int) -> int:
        q = select(func.count()).select_from(members_query(rules, now_ms).order_by(None).subquery())
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def page(self, rules: Sequence[Cond], now_ms: int, after: str | None,
                   limit: int) -> list[tuple[str, int, int]]:
        """One page of members after ``after`` (by user id): ``(user_id, signals, last_at)``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(members_query(rules, now_ms, after=after, limit=limit))
            return [(str(u), int(n), int(last or 0)) for u, n, last in rows]

    async def rows(self, rules: Sequence[Cond], now_ms: int, page: int = 1000) -> AsyncIterator[tuple[str, int, int]]:
        """Every member, a page (one query) at a time, so a big audience never sits in memory."""
        after: str | None = None
        while True:
            got = await self.page(rules, now_ms, after, page)
            for row in got:
                yield row
            if len(got) < page:
                return
            after = got[-1][0]

    async def holds(self, rules: Sequence[Cond], now_ms: int, user: str) -> bool:
        """Whether ``user`` is a member now (the query reads that viewer's signals only)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(members_query(rules, now_ms, user=user, limit=1))).first() is not None


def _record(row: Any) -> AudienceRecord:
    m = row._mapping
    return AudienceRecord(m["audience_id"], m["owner"], m["owner_role"], m["name"],
                          tuple(Cond.of(d) for d in orjson.loads(m["rules"])), int(m["created_at_ms"]))
