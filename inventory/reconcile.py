"""Reconcile: compare every live sale's Redis state with SQL, and rebuild it from SQL (``lua/rebuild.lua``).

SQL is the system of record for sales (terms), orders and provider payments; Redis has the live
counters and holds. After Redis lost data (an operator's FLUSHALL, a restart without AOF, a failover
that lost writes) a sale's hash can be gone or behind SQL. ``check`` reports the drift of one sale;
``repair`` rebuilds it in one script (atomic, one hash tag):

- the sale hash from the SQL ``sales`` row (allocated, terms, times);
- sold units: every ``orders`` row, plus every provider payment ``paid``/``confirmed`` whose order is
  not in SQL. Such a payment's outbox entry may have been lost with Redis: the script appends it to
  the outbox again (same order id = hold id), so settlement inserts the order idempotently (the one
  writer of ``orders`` stays the settlement worker);
- holds Redis still has stay; ``available = allocated - sold - held`` (never more than SQL allows);
- ``rebuilt_at`` marks the sale: a hold id of it Redis does not have answers ``HOLD_LOST``.

A "live" sale: an SQL ``sales`` row without a ``sale_archive`` row (not retired) whose Redis hash
exists, or whose SQL ``ends_at_ms`` is still ahead, or (ended) that has a paid payment without its
order row (rebuilt closed, so the order is settled and the sale then retires as usual).
A sale whose room is ``ended`` is rebuilt closed
(``ends_at`` = now at the latest). A sale the host stopped early keeps its Redis ``ends_at`` when Redis
still has it; after a full loss it is rebuilt with its SQL ``ends_at`` (known limit: SQL has no stop time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select

from . import bucket_reconcile
from . import keys as K
from .archive import sale_archive
from .payments import payments
from .scripts import Inventory
from .store import OrderRecord, SaleRecord, Store, orders, rooms, sales

__all__ = ["SaleDrift", "RebuildResult", "Reconciler"]

_SALE_FIELDS = [f for f in SaleRecord.__dataclass_fields__]
_ORDER_FIELDS = [f for f in OrderRecord.__dataclass_fields__]


@dataclass(frozen=True, slots=True)
class Sold:
    """A unit sale SQL knows of: an order row (``in_sql``) or a paid/confirmed payment without one."""

    order_id: str
    user_id: str
    qty: int
    payment_ref: str
    reserved_at_ms: int
    confirmed_at_ms: int
    in_sql: bool


@dataclass(frozen=True, slots=True)
class SaleDrift:
    sale_id: str
    room_id: str
    problems: tuple[str, ...]
    missing: bool = False          # the Redis sale hash is gone while SQL says the sale is live
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        c = " ".join(f"{k}={v}" for k, v in self.counters.items())
        if self.ok:
            return f"{self.sale_id} OK {c}".rstrip()
        return f"{self.sale_id} DRIFT {'; '.join(self.problems)}"


@dataclass(frozen=True, slots=True)
class RebuildResult:
    sale_id: str
    code: str          # REBUILT | REFUSED | INVALID | POOL_BACKED (drawn from a stock pool: not rebuilt)
    allocated: int
    available: int
    held: int
    sold: int
    added: int         # units SQL knew that Redis did not
    requeued: int      # orders appended to the outbox again (payments without an order row)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Reconciler:
    def __init__(self, redis: Any, store: Store, inventory: Inventory) -> None:
        self.redis, self.store, self.inventory = redis, store, inventory

    # -- SQL -----------------------------------------------------------------------------------------

    async def _sales(self) -> list[tuple[SaleRecord, str]]:
        """Every sale not archived (retired), with its room's status."""
        q = (select(sales, rooms.c.status.label("room_status"))
             .select_from(sales.outerjoin(sale_archive, sale_archive.c.sale_id == sales.c.sale_id)
                          .outerjoin(rooms, rooms.c.room_id == sales.c.room_id))
             .where(sale_archive.c.sale_id.is_(None)).order_by(sales.c.sale_id))
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [(SaleRecord(**{f: r._mapping[f] for f in _SALE_FIELDS}), str(r._mapping["room_status"] or ""))
                for r in rows]

    async def sold_in_sql(self, sale: SaleRecord) -> list[Sold]:
        async with self.store.engine.connect() as conn:
            order_rows = (await conn.execute(select(orders).where(orders.c.sale_id == sale.sale_id))).all()
            pay_rows = (await conn.execute(select(payments).where(payments.c.sale_id == sale.sale_id,
                                                                  payments.c.status.in_(("paid", "confirmed")))
                                           .order_by(payments.c.created_at_ms))).all()
        out: dict[str, Sold] = {}
        for r in order_rows:
            o = OrderRecord(**{f: r._mapping[f] for f in _ORDER_FIELDS})
            out[o.order_id] = Sold(o.order_id, o.user_id, o.qty, o.payment_ref, o.reserved_at_ms, o.confirmed_at_ms,
                                   True)
        for r in pay_rows:
            m = r._mapping
            hold_id = str(m["hold_id"])
            if hold_id in out or sale.unit_price <= 0 or m["amount"] % sale.unit_price:
                continue  # the order is in SQL (or the quantity can't be derived from the amount)
            out[hold_id] = Sold(hold_id, str(m["user_id"]), int(m["amount"]) // sale.unit_price, str(m["payment_id"]),
                                int(m["created_at_ms"]), int(m["paid_at_ms"] or m["updated_at_ms"]), False)
        return list(out.values())

    # -- compare -------------------------------------------------------------------------------------

    async def live_sales(self) -> list[tuple[SaleRecord, str]]:
        """The sales to compare: not archived, and with a Redis hash, or still ahead of their end in SQL,
        or ended with a paid payment whose order is not in SQL (its outbox entry must come back)."""
        now = await self.inventory.now_ms()
        out = []
        for sale, room_status in await self._sales():
            exists = bool(await self.redis.exists(K.sale_keys(sale.sale_id).sale))
            if (exists or (sale.ends_at_ms > now and room_status != "ended")
                    or any(not s.in_sql for s in await self.sold_in_sql(sale))):
                out.append((sale, room_status))
        return out

    async def check(self, sale: SaleRecord) -> SaleDrift:
        if not sale.pool_id and len(ids := await self.inventory.buckets.discover(sale.sale_id)) > 1:
            return await bucket_reconcile.check(self, sale, ids)  # a hot sale's buckets, summed
        k = K.sale_keys(sale.sale_id)
        h = {_s(a): _s(b) for a, b in (await self.redis.hgetall(k.sale)).items()}
        if not h:
            return SaleDrift(sale.sale_id, sale.room_id, ("sale hash missing in Redis (SQL: live)",), missing=True)
        problems: list[str] = []
        terms = {"room": sale.room_id, "sku": sale.sku, "price": str(sale.unit_price), "currency": sale.currency,
                 "allocated": str(sale.allocated), "limit": str(sale.per_user_limit),
                 "starts_at": str(sale.starts_at_ms), "hold_ttl": str(sale.hold_ttl_ms)}
        if sale.pool_id:  # top-ups and returns move its allocation (pool_ledger has them; the pool audits it)
            del terms["allocated"]
            terms["pool"] = sale.pool_id
        for name, want in terms.items():
            if h.get(name) != want:
                problems.append(f"{name} {h.get(name)!r} in Redis, {want!r} in SQL")
        if int(h.get("ends_at", "0")) > sale.ends_at_ms:
            problems.append(f"ends_at {h.get('ends_at')} in Redis is after SQL's {sale.ends_at_ms}")
        holds = {_s(a): orjson.loads(b) for a, b in (await self.redis.hgetall(k.holds)).items()}
        sold = await self.sold_in_sql(sale)
        for s in sold:
            rec = holds.get(s.order_id)
            status = rec.get("s") if rec else None
            if status == "confirmed":
                continue
            if not s.in_sql and status == "held":
                continue  # a webhook in flight: the payment is recorded, the confirm is on its way
            what = "order" if s.in_sql else "paid payment"
            problems.append(f"{what} {s.order_id} ({s.qty} units) is not sold in Redis ({status or 'no hold'})")
        sql_units = sum(s.qty for s in sold)
        redis_sold = int(h.get("sold", "0"))
        if redis_sold < sql_units:
            problems.append(f"sold {redis_sold} in Redis < {sql_units} sold according to SQL")
        inv = await self.inventory.check_invariant(sale.sale_id)
        problems.extend(inv.problems)
        counters = {"allocated": inv.allocated, "available": inv.available, "held": inv.held, "sold": inv.sold,
                    "sql_sold": sql_units}
        return SaleDrift(sale.sale_id, sale.room_id, tuple(problems), counters=counters)

    async def check_all(self) -> list[SaleDrift]:
        return [await self.check(sale) for sale, _ in await self.live_sales()]

    # -- repair --------------------------------------------------------------------------------------

    async def repair(self, sale_id: str) -> RebuildResult:
        """Rebuild one sale from SQL (``rebuild.lua``); registers it for settlement and the reaper first."""
        for sale, room_status in await self._sales():
            if sale.sale_id == sale_id:
                return await self._repair(sale, room_status)
        return RebuildResult(sale_id, "NOT_FOUND", 0, 0, 0, 0, 0, 0)

    async def _repair(self, sale: SaleRecord, room_status: str) -> RebuildResult:
        if sale.pool_id:
            # its units belong to its pool: rebuilding it from the launch's allocation would create units
            # the pool does not give. Not rebuilt (yet): POOL_BACKED, for an operator (docs/DATABASE.md)
            return RebuildResult(sale.sale_id, "POOL_BACKED", 0, 0, 0, 0, 0, 0)
        if len(ids := await self.inventory.buckets.discover(sale.sale_id)) > 1:
            return await bucket_reconcile.repair(self, sale, room_status, ids)  # each lost bucket rebuilt
        k = K.sale_keys(sale.sale_id)
        ends = sale.ends_at_ms
        if room_status == "ended":  # end_live closed it: never reopen
            ends = max(sale.starts_at_ms + 1, min(ends, await self.inventory.now_ms()))
        args: list[Any] = [sale.sale_id, sale.room_id, sale.sku, sale.unit_price, sale.currency, sale.allocated,
                           sale.per_user_limit, sale.starts_at_ms, ends, sale.hold_ttl_ms, K.SETTLE_GROUP]
        for s in await self.sold_in_sql(sale):
            args += [s.order_id, s.user_id, s.qty, s.payment_ref, s.reserved_at_ms, s.confirmed_at_ms,
                     "1" if s.in_sql else "0"]
        # like arm: registered first (a crash between leaves a harmless registry entry)
        await self.redis.sadd(K.OUTBOX_REGISTRY, k.outbox)
        await self.redis.sadd(K.SALES_REGISTRY, sale.sale_id)
        code, allocated, available, held, sold, added, requeued = await self.inventory.rebuild(sale.sale_id, args)
        return RebuildResult(sale.sale_id, _s(code), int(allocated), int(available), int(held), int(sold),
                             int(added), int(requeued))

    async def repair_all(self, drifts: list[SaleDrift] | None = None) -> list[RebuildResult]:
        """Rebuild every drifting live sale (every one in ``drifts`` that is not OK)."""
        todo = drifts if drifts is not None else await self.check_all()
        out = []
        live = {s.sale_id: (s, st) for s, st in await self.live_sales()}
        for d in todo:
            if not d.ok and d.sale_id in live:
                out.append(await self._repair(*live[d.sale_id]))
        return out
